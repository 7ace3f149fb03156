package shard

import (
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"securefastchat/proto"
)

type evKind uint8

const (
	evAdd   evKind = iota + 1 // a new connection from the balancer
	evRoute                   // a message for one of this shard's connections
	evAck                     // a receiver acknowledged a delivery
	evGone                    // a connection's reader has exited
)

// event is what goes over a shard's channel. It is passed by value and
// carries pointers only to pooled or long-lived objects.
type event struct {
	kind     evKind
	nc       net.Conn // evAdd
	c        *conn    // evRoute, evAck: the receiver; evGone: the connection
	from     *conn    // evRoute: the sender
	reqID    uint32   // evRoute: the sender's request id
	serverID uint64   // evRoute, evAck
	time     int64    // evRoute: the server's stamp, unix ms
	buf      *[]byte  // evRoute: the Deliver plaintext, pooled
}

// pendingAck is a delivery waiting for its receiver's ack.
type pendingAck struct {
	serverID uint64
	time     int64 // the server's stamp, unix ms
	queued   time.Time
	from     *conn
	reqID    uint32
}

// inboxSize bounds each shard's channel. A full inbox makes senders'
// readers wait (backpressure on their sockets); the shard loop itself never
// sends on a channel, so shards cannot deadlock each other.
const inboxSize = 4096

// Shard is one goroutine-backed shard.
type Shard struct {
	// Static after construction.
	set  *Set
	id   int
	in   chan event
	stop chan struct{} // closed by Set.Shutdown
	done chan struct{} // closed when the loop has returned

	// Guarded by mu: the shard's connections. The loop adds and removes;
	// forceClose reads.
	mu    sync.Mutex
	conns map[*conn]struct{}

	// Owned by the loop.
	scratch []byte
	waiting map[*conn]struct{} // connections with deliveries pending

	// Counters, read by the balancer's strategies and by stats.
	nconns atomic.Int64 // open connections, logged in or not
	msgs   atomic.Int64 // messages routed to this shard's connections
}

func newShard(s *Set, id int) *Shard {
	return &Shard{
		set: s, id: id,
		in:      make(chan event, inboxSize),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		conns:   make(map[*conn]struct{}),
		scratch: make([]byte, 0, 256),
		waiting: make(map[*conn]struct{}),
	}
}

// ID returns the shard's index.
func (sh *Shard) ID() int { return sh.id }

// Conns returns the number of open connections.
func (sh *Shard) Conns() int64 { return sh.nconns.Load() }

// Messages returns the number of messages routed to this shard.
func (sh *Shard) Messages() int64 { return sh.msgs.Load() }

func (sh *Shard) loop() {
	defer close(sh.done)
	stop := sh.stop
	stopping := false
	tick := time.NewTicker(sh.set.opts.AckTimeout / 4)
	defer tick.Stop()
	for {
		if stopping {
			sh.mu.Lock()
			n := len(sh.conns)
			sh.mu.Unlock()
			if n == 0 {
				return
			}
		}
		select {
		case ev := <-sh.in:
			sh.handle(ev, stopping)
		case <-tick.C:
			sh.reapStuck()
		case <-stop:
			stopping, stop = true, nil
			sh.mu.Lock()
			for c := range sh.conns {
				c.closeGraceful(proto.CloseShutdown)
			}
			sh.mu.Unlock()
		}
	}
}

// handle processes one event. A panic is contained to the event: it is
// counted and logged, and the shard goes on.
func (sh *Shard) handle(ev event, stopping bool) {
	defer func() {
		if r := recover(); r != nil {
			sh.set.Stats.Panics.Add(1)
			sh.set.log.Error("shard: panic handling event", "shard", sh.id, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	switch ev.kind {
	case evAdd:
		sh.add(ev.nc, stopping)
	case evRoute:
		sh.route(ev)
	case evAck:
		sh.ack(ev.c, ev.serverID)
	case evGone:
		sh.gone(ev.c)
	}
}

func (sh *Shard) add(nc net.Conn, stopping bool) {
	s := sh.set
	s.Stats.Accepted.Add(1)
	c := newConn(sh, nc, remoteIP(nc))
	if stopping {
		s.Stats.Refused.Add(1)
		nc.Close()
		return
	}
	ok, evicted := s.gate.admit(c)
	if evicted != nil {
		s.Stats.Evicted.Add(1)
		evicted.abort()
	}
	if !ok {
		s.Stats.Refused.Add(1)
		nc.Close()
		return
	}
	sh.mu.Lock()
	sh.conns[c] = struct{}{}
	sh.mu.Unlock()
	sh.nconns.Add(1)
	s.goTracked(c.run)
}

func (sh *Shard) route(ev event) {
	defer putMsgBuf(ev.buf)
	rc := ev.c
	if len(rc.pending) >= sh.set.opts.MaxUnacked {
		sh.reply(ev.from, ev.reqID, proto.CodeRecipientBusy)
		return
	}
	if err := rc.enqueue(*ev.buf); err != nil {
		code := proto.CodeRecipientOffline
		if err == errSlowConsumer {
			code = proto.CodeRecipientBusy
		}
		sh.reply(ev.from, ev.reqID, code)
		return
	}
	if len(rc.pending) == 0 {
		sh.waiting[rc] = struct{}{}
	}
	rc.pending = append(rc.pending, pendingAck{serverID: ev.serverID, time: ev.time, queued: sh.set.opts.Now(), from: ev.from, reqID: ev.reqID})
	sh.msgs.Add(1)
	sh.set.Stats.Routed.Add(1)
}

func (sh *Shard) ack(rc *conn, serverID uint64) {
	for i, p := range rc.pending {
		if p.serverID != serverID {
			continue
		}
		rc.pending = append(rc.pending[:i], rc.pending[i+1:]...)
		if len(rc.pending) == 0 {
			delete(sh.waiting, rc)
		}
		sh.set.Stats.Delivered.Add(1)
		m := proto.Sent{ServerID: p.serverID, Time: p.time, Status: proto.StatusDelivered}
		sh.scratch = m.Append(sh.scratch[:0], p.reqID)
		_ = p.from.enqueue(sh.scratch) // a sender that has gone needs no ack
		return
	}
}

// gone forgets a connection whose reader has exited; every delivery still
// waiting for its ack is refused to its sender, who will retry.
func (sh *Shard) gone(c *conn) {
	for _, p := range c.pending {
		sh.reply(p.from, p.reqID, proto.CodeRecipientOffline)
	}
	c.pending = nil
	delete(sh.waiting, c)
	sh.mu.Lock()
	delete(sh.conns, c)
	sh.mu.Unlock()
	sh.nconns.Add(-1)
}

// reapStuck disconnects receivers whose oldest delivery has waited longer
// than AckTimeout; their pending deliveries are refused when they are gone.
func (sh *Shard) reapStuck() {
	now := sh.set.opts.Now()
	for c := range sh.waiting {
		if len(c.pending) > 0 && now.Sub(c.pending[0].queued) > sh.set.opts.AckTimeout {
			sh.set.Stats.SlowConsumers.Add(1)
			c.logger().Info("closing stuck receiver: deliveries not acknowledged", "pending", len(c.pending))
			c.abort()
			delete(sh.waiting, c)
		}
	}
}

// reply sends an error response to a sender from the shard loop.
func (sh *Shard) reply(to *conn, reqID uint32, code proto.ErrorCode) {
	m := proto.Error{Code: code}
	sh.scratch = m.Append(sh.scratch[:0], reqID)
	_ = to.enqueue(sh.scratch)
}

// post sends an event to the shard; it fails if the shard has stopped.
func (sh *Shard) post(ev event) bool {
	select {
	case sh.in <- ev:
		return true
	case <-sh.done:
		return false
	}
}

func (sh *Shard) forceClose() {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for c := range sh.conns {
		c.abort()
	}
}

func remoteIP(nc net.Conn) string {
	a := nc.RemoteAddr()
	if a == nil {
		return ""
	}
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
