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

// pendingAck is a delivery waiting for its receiver's ack.
type pendingAck struct {
	serverID uint64 // in the receiver's sequence
	queued   time.Time
	stored   bool      // it came from the store: the ack dequeues it
	env      *envelope // not stored: the message, told its outcome on the ack, or stored if the receiver goes away
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

// login starts a logged-in connection with its queue: a barrier through
// the committer makes sure every message accepted for the user before now
// is on disk, then the queue is delivered before anything new.
func (sh *Shard) login(c *conn) {
	err := sh.set.batcher.Submit(&store.Op{Done: func(store.Result) { sh.post2(mail{c: c, kind: mailBarrier}) }})
	if err != nil {
		c.barrier = false // shutting down: nothing more will commit
	}
}

// deliver writes a message to a connection of this shard, numbered in the
// receiver's sequence, or stores it when the receiver has a backlog, is
// full, slow or gone.
func (sh *Shard) deliver(rc *conn, env *envelope) {
	failpoint("route", rc.user)
	if rc.dead || rc.backlog || rc.persisting > 0 || len(rc.pending) >= sh.set.opts.MaxUnacked {
		sh.persist(rc, env)
		return
	}
	id := env.id
	if id == 0 || env.shared {
		id = rc.seq.Add(1)
	}
	rc.acks.expect() // before the write: the receiver's ack may come back at once
	if err := rc.enqueueHeld(sh, env.frameFor(id, &sh.scratch)); err != nil {
		rc.acks.unexpect()
		sh.persist(rc, env)
		return
	}
	if len(rc.pending) == 0 {
		sh.waiting[rc] = struct{}{}
	}
	rc.pending = append(rc.pending, pendingAck{serverID: id, queued: sh.set.opts.Now(), env: env})
	sh.msgs.Add(1)
	sh.set.Stats.Routed.Add(1)
}

// persist stores a message for rc's user through the committer, and keeps
// what comes after it for rc out of the way until it has committed, so
// the user's messages stay in order.
func (sh *Shard) persist(rc *conn, env *envelope) {
	if rc.dead {
		sh.set.persist(rc.user, env, nil)
		return
	}
	rc.persisting++
	rc.backlog = true
	sh.set.persist(rc.user, env, func() { sh.post2(mail{c: rc, kind: mailCommitted}) })
}

// fetch delivers queued messages up to the unacked limit.
func (sh *Shard) fetch(c *conn) {
	if c.barrier || c.dead {
		return
	}
	for c.backlog && len(c.pending) < sh.set.opts.MaxUnacked {
		items, err := sh.set.opts.Store.Peek(c.user, c.lastFetched, sh.set.opts.MaxUnacked-len(c.pending))
		if err != nil {
			c.logger().Error("reading the queue", "err", err)
			return
		}
		if len(items) == 0 {
			if c.persisting == 0 {
				c.backlog = false
			}
			return
		}
		cutoff := sh.set.opts.Now().Add(-sh.set.opts.Retention)
		for _, q := range items {
			c.lastFetched = q.ServerID
			if q.Stored.Before(cutoff) {
				sh.set.dequeue(c.user, q.ServerID) // expired: never served
				sh.set.Stats.dropped(DropExpired)
				continue
			}
			sh.scratch = appendStored(sh.scratch[:0], q, q.Group == "" && c.sess.Version >= 2 && !c.accepts(q.From))
			c.acks.expect()
			if err := c.enqueue(sh.scratch); err != nil {
				c.acks.unexpect()
				return // the connection is going; its queue stays for next time
			}
			if len(c.pending) == 0 {
				sh.waiting[c] = struct{}{}
			}
			c.pending = append(c.pending, pendingAck{serverID: q.ServerID, queued: sh.set.opts.Now(), stored: true})
			sh.set.Stats.FromQueue.Add(1)
		}
	}
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
		if ob := sh.set.opts.Observer; ob != nil && !p.stored {
			ob.Delivered(sh.set.opts.Now().Sub(p.queued))
		}
		if p.stored {
			sh.set.dequeue(rc.user, p.serverID)
		} else {
			p.env.out.delivered(sh)
			p.env.done()
		}
		if rc.backlog {
			sh.fetch(rc)
		}
		return
	}
	rc.acks.unmatched() // an id the reader let through that matched nothing
}

// gone forgets a connection whose reader has exited. Deliveries it had not
// acknowledged are queued for its user (the queued ones are still there),
// and their senders get Sent(queued) once they are on disk.
func (sh *Shard) gone(c *conn) {
	c.dead = true
	for _, p := range c.pending {
		if !p.stored {
			sh.set.persist(c.user, p.env, nil)
		}
	}
	c.pending = nil
	delete(sh.waiting, c)
	sh.mu.Lock()
	delete(sh.conns, c)
	sh.mu.Unlock()
	sh.nconns.Add(-1)
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

func (sh *Shard) readMail() {
	defer sh.guard()
	sh.mailMu.Lock()
	box := sh.mailbox
	sh.mailbox = nil
	sh.mailMu.Unlock()
	for _, m := range box {
		c := m.c
		switch m.kind {
		case mailBarrier:
			c.barrier = false
		case mailCommitted:
			c.persisting--
			c.backlog = true
		case mailWake:
			c.backlog = true
		}
		sh.fetch(c)
	}
}

// reapStuck disconnects receivers whose oldest delivery has waited longer
// than AckTimeout; their pending deliveries are queued when they are gone.
func (sh *Shard) reapStuck() {
	now := sh.set.opts.Now()
	for c := range sh.waiting {
		if len(c.pending) > 0 && now.Sub(c.pending[0].queued) > sh.set.opts.AckTimeout {
			sh.set.Stats.SlowConsumers.Add(1)
			sh.set.closeLog.log(c.logger(), CloseStuck, "closing stuck receiver: deliveries not acknowledged", "pending", len(c.pending))
			c.abort(CloseStuck)
			delete(sh.waiting, c)
		}
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

// persist stores a message for receiver to through the committer. Its
// outcome is told once it is on disk (queued) or refused; then the
// receiver's current connection, if any, is told to fetch, and after (if
// set) runs, in the committer's goroutine.
func (s *Set) persist(to string, env *envelope, after func()) {
	q := env.record(to, s.opts.Now())
	err := s.batcher.Submit(&store.Op{Put: q, Done: func(r store.Result) {
		s.persisted(q, r, env.out)
		env.done()
		if after != nil {
			after()
		}
		if r.Err == nil && !r.Dropped {
			if rc := s.dir.lookup([]byte(to)); rc != nil {
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

// dequeue removes a delivered message from the store (batched).
func (s *Set) dequeue(user string, id uint64) {
	_ = s.batcher.Submit(&store.Op{DelUser: user, DelIDs: []uint64{id}})
}
