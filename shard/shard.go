package shard

import (
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"securefastchat/proto"
	"securefastchat/store"
)

type evKind uint8

const (
	evAdd     evKind = iota + 1 // a new connection from the balancer
	evDeliver                   // a message for one or more of this shard's connections
	evAck                       // a receiver acknowledged a delivery
	evGone                      // a connection's reader has exited
	evLogin                     // a connection logged in: deliver its queue first
)

// event is what goes over a shard's channel. It is passed by value and
// carries pointers only to pooled or long-lived objects.
type event struct {
	kind     evKind
	nc       net.Conn  // evAdd
	c        *conn     // evDeliver (one receiver), evAck: the receiver; evGone, evLogin: the connection
	recips   []*conn   // evDeliver (a group's members on this shard)
	env      *envelope // evDeliver
	serverID uint64    // evAck: in the receiver's sequence
}

// groupAck is a group message's outcome: the sender gets Sent once every
// receiver has acknowledged it or it is stored for them, or the first
// refusal.
type groupAck struct {
	remaining atomic.Int32
	queuedAny atomic.Bool
	failed    atomic.Bool
	from      *conn
	reqID     uint32
	sentID    uint64 // in the sender's sequence
	time      int64
}

func (g *groupAck) delivered(*Shard) { g.done(false) }
func (g *groupAck) queued(uint64)    { g.done(true) }

// done records one receiver's outcome.
func (g *groupAck) done(queued bool) {
	if queued {
		g.queuedAny.Store(true)
	}
	if g.remaining.Add(-1) == 0 && !g.failed.Load() {
		st := proto.StatusDelivered
		if g.queuedAny.Load() {
			st = proto.StatusQueued
		}
		_ = g.from.enqueue((&proto.Sent{ServerID: g.sentID, Time: g.time, Status: st}).Append(nil, g.reqID))
	}
}

// refused answers the sender with the first refusal; the rest is ignored.
func (g *groupAck) refused(code proto.ErrorCode, text string) {
	if g.failed.CompareAndSwap(false, true) {
		g.from.replyErr(g.reqID, code, text)
	}
}

// mail is a note from the committer to a shard loop; it goes through a
// mutex-guarded mailbox so the committer never blocks on a shard.
type mail struct {
	c    *conn
	kind mailKind
}

type mailKind uint8

const (
	mailBarrier   mailKind = iota + 1 // the login barrier has committed
	mailCommitted                     // a message this loop persisted for c has committed
	mailWake                          // something was queued for c's user: fetch
)

// inboxSize bounds each shard's channel. A full inbox makes senders'
// readers wait (backpressure on their sockets). The shard loop sends on
// no shard's channel and the committer on none at all, so they cannot
// deadlock each other.
const inboxSize = 4096

// Shard is one goroutine-backed shard.
type Shard struct {
	// Static after construction.
	set  *Set
	id   int
	in   chan event
	kick chan struct{} // capacity 1: mail is waiting
	stop chan struct{} // closed by Set.Shutdown
	done chan struct{} // closed when the loop has returned

	// Guarded by mu: the shard's connections. The loop adds and removes;
	// forceClose reads.
	mu    sync.Mutex
	conns map[*conn]struct{}

	// Guarded by mailMu.
	mailMu  sync.Mutex
	mailbox []mail

	// Owned by the loop.
	batching bool    // handling a batch of events: writes are held
	held     []*conn // connections with writes held until the batch ends
	scratch  []byte
	waiting  map[*conn]struct{} // connections with deliveries pending

	// Counters, read by the balancer's strategies and by stats.
	nconns atomic.Int64 // open connections, logged in or not
	// handing counts connections handed to the shard and not yet taken
	// in, so the balancer's picks see them at once.
	handing atomic.Int64
	msgs    atomic.Int64 // messages routed to this shard's connections
}

func newShard(s *Set, id int) *Shard {
	return &Shard{
		set: s, id: id,
		in:      make(chan event, inboxSize),
		kick:    make(chan struct{}, 1),
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

// Load is the shard's connections and those handed to it on their way
// in: what the balancer weighs (a burst of newcomers does not all go to
// the shard that looked emptiest before they arrived).
func (sh *Shard) Load() int64 { return sh.nconns.Load() + sh.handing.Load() }

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
			sh.handleBatch(ev, stopping)
		case <-sh.kick:
			sh.readMail()
		case <-tick.C:
			sh.reapStuck()
		case <-stop:
			stopping, stop = true, nil
			sh.mu.Lock()
			for c := range sh.conns {
				c.closeGraceful(CloseShutdown)
			}
			sh.mu.Unlock()
		}
	}
}

// maxBatch bounds the events handled before held writes are released.
const maxBatch = 256

// handleBatch handles ev and whatever else is waiting (up to maxBatch),
// holding the writes they make until the end: a receiver of several
// messages in the batch gets them in one write.
func (sh *Shard) handleBatch(ev event, stopping bool) {
	sh.batching = true
	sh.handle(ev, stopping)
	for n := 1; n < maxBatch; n++ {
		select {
		case ev = <-sh.in:
			sh.handle(ev, stopping)
			continue
		default:
		}
		break
	}
	sh.batching = false
	for i, c := range sh.held {
		c.release()
		sh.held[i] = nil
	}
	sh.held = sh.held[:0]
}

// guard contains a panic to the event being handled: it is counted and
// logged, and the shard goes on.
func (sh *Shard) guard() {
	if r := recover(); r != nil {
		sh.set.Stats.Panics.Add(1)
		sh.set.log.Error("shard: panic handling event", "shard", sh.id, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	}
}

func (sh *Shard) handle(ev event, stopping bool) {
	defer sh.guard()
	switch ev.kind {
	case evAdd:
		sh.add(ev.nc, stopping)
		sh.handing.Add(-1)
	case evDeliver:
		if ev.c != nil {
			defer func() {
				if r := recover(); r != nil {
					// Not acknowledged: the sender may retry.
					ev.env.out.refused(proto.CodeInternal, "internal error")
					panic(r)
				}
			}()
			sh.deliver(ev.c, ev.env)
		}
		for _, rc := range ev.recips {
			sh.deliver(rc, ev.env)
		}
	case evAck:
		sh.ack(ev.c, ev.serverID)
	case evGone:
		sh.gone(ev.c)
	case evLogin:
		sh.login(ev.c)
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
	// Until its login has passed the committer barrier, anything routed to
	// the connection is queued, so the queue keeps its order.
	c.backlog, c.barrier = true, true
	ok, evicted := s.gate.admit(c)
	if evicted != nil {
		s.Stats.Evicted.Add(1)
		evicted.abort(CloseEvicted)
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

// post2 leaves mail for the loop without ever blocking.
func (sh *Shard) post2(m mail) {
	sh.mailMu.Lock()
	sh.mailbox = append(sh.mailbox, m)
	sh.mailMu.Unlock()
	select {
	case sh.kick <- struct{}{}:
	default:
	}
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
		c.abort(CloseServerStop)
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

// persist stores a message in a device's inbox through the committer. Its
// outcome is told once it is on disk (queued) or refused; then the
// device's current connection, if any, is told to fetch, and after (if
// set) runs, in the committer's goroutine.
func (s *Set) persist(to store.Inbox, env *envelope, after func()) {
	q := env.record(to, s.opts.Now())
	err := s.batcher.Submit(&store.Op{Put: q, Done: func(r store.Result) {
		s.persisted(q, r, env.out)
		env.done()
		if after != nil {
			after()
		}
		if r.Err == nil && !r.Dropped {
			if rc := s.dir.lookup([]byte(to.User), to.Device); rc != nil {
				rc.sh.post2(mail{c: rc, kind: mailWake})
			}
		}
	}})
	if err != nil {
		env.out.refused(proto.CodeServerShuttingDown, "the server is shutting down; retry")
		env.done()
	}
}

// persisted tells a stored message's outcome.
func (s *Set) persisted(q *store.Queued, r store.Result, out outcome) {
	who := "the receiver's"
	if q.Group != "" {
		who = "a member's"
	}
	switch {
	case r.Err == nil:
		// Dropped (the receiver blocks the sender) is told as any
		// stored message is: the sender cannot tell.
		if r.Dropped {
			s.Stats.dropped(DropBlocked)
		} else {
			s.Stats.Queued.Add(1)
		}
		out.queued(r.SentID)
	case errors.Is(r.Err, store.ErrQueueFull):
		s.Stats.QueueFull.Add(1)
		out.refused(proto.CodeQueueFull, who+" queue is full; nothing was lost, retry later")
	case errors.Is(r.Err, store.ErrShareFull):
		s.Stats.QueueFull.Add(1)
		out.refused(proto.CodeShareFull, shareText(q.To, r.Err))
	default:
		s.Stats.StoreErrors.Add(1)
		s.log.Error("queueing a message failed", "err", r.Err)
		out.refused(proto.CodeStorageUnavailable, "storage is unavailable; the message was not accepted, retry")
	}
}

// shareText tells a sender past its share of to's queue what the share is.
func shareText(to string, err error) string {
	var sf *store.ShareFullError
	if !errors.As(err, &sf) {
		return "you hold your share of " + to + "'s queue; more goes once they read"
	}
	who := "a tenth, until " + to + " writes to you"
	if sf.Contact {
		who = "a quarter"
	}
	return fmt.Sprintf("while %s is away you may hold %d messages and %d MiB of their queue (%s); it is full: nothing was lost, more goes once they read (files to them are limited to about that size meanwhile)",
		to, sf.Count, sf.Bytes>>20, who)
}

// dequeue removes a delivered message from a device's inbox (batched).
func (s *Set) dequeue(in store.Inbox, id uint64) {
	_ = s.batcher.Submit(&store.Op{Del: in, DelIDs: []uint64{id}})
}
