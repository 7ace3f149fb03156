package shard

import (
	"time"

	"securefastchat/store"
)

// inbox is what a connection's shard loop owns: the deliveries waiting
// for the receiver's ack, and where its device's stored queue stands. Only
// the loop of the connection's shard reads or writes it; its logic (the
// Shard methods below) lives here beside it.
type inbox struct {
	pending     []pendingAck
	backlog     bool   // the store may hold messages for the device not yet fetched
	barrier     bool   // waiting for the login barrier: deliver nothing yet
	persisting  int    // messages for the device this loop sent to the committer, not yet committed
	lastFetched uint64 // the highest server id fetched from the store
	dead        bool   // gone has run
}

// pendingAck is a delivery waiting for its receiver's ack.
type pendingAck struct {
	serverID uint64 // in the receiver's sequence
	queued   time.Time
	stored   bool      // it came from the store: the ack dequeues it
	env      *envelope // not stored: the message, told its outcome on the ack, or stored if the receiver goes away
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
	if rc.dead || env.storeFirst || rc.backlog || rc.persisting > 0 || len(rc.pending) >= sh.set.opts.MaxUnacked {
		sh.persist(rc, env)
		return
	}
	if rc.sess.Version < env.minVersion() {
		sh.persist(rc, env)
		sh.tooOld(rc)
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

// persist stores a message in rc's device's inbox through the committer.
// For a direct message it keeps what comes after it for rc out of the way
// until it has committed, so the device's messages stay in order; a group
// message's copy is stored without holding the rest back, as it always
// was: holding back costs the mixed load about 6%, but without it a
// member's group message stored because its unacked window was full can
// arrive after later ones (left for the throughput work).
func (sh *Shard) persist(rc *conn, env *envelope) {
	if rc.dead || env.group != "" {
		sh.set.persist(rc.box(), env, nil)
		return
	}
	rc.persisting++
	rc.backlog = true
	sh.set.persist(rc.box(), env, func() { sh.post2(mail{c: rc, kind: mailCommitted}) })
}

// fetch delivers queued messages up to the unacked limit.
func (sh *Shard) fetch(c *conn) {
	if c.barrier || c.dead {
		return
	}
	var requests map[string]bool // sender -> what they send c's user is a request (for this fetch)
	isRequest := func(from string) bool {
		if c.sess.Version < 2 {
			return false // version 1 knows no requests
		}
		r, ok := requests[from]
		if !ok {
			if requests == nil {
				requests = map[string]bool{}
			}
			r = !c.accepts(from)
			requests[from] = r
		}
		return r
	}
	for c.backlog && len(c.pending) < sh.set.opts.MaxUnacked {
		items, err := sh.set.opts.Store.Peek(c.box(), c.lastFetched, sh.set.opts.MaxUnacked-len(c.pending))
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
				sh.set.dequeue(c.box(), q.ServerID) // expired: never served
				sh.set.Stats.dropped(DropExpired)
				continue
			}
			if c.sess.Version < storedMinVersion(q) {
				sh.tooOld(c) // it stays queued for a client that can open it
				return
			}
			sh.scratch = appendStored(sh.scratch[:0], q, q.Group == "" && q.From != c.user && isRequest(q.From))
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

// tooOld closes a connection whose device has been sent a message its
// version cannot take (sealed for devices, before 4; a group message
// from another device, before 5): its client is told to upgrade, and the
// message waits in the device's inbox.
func (sh *Shard) tooOld(c *conn) {
	sh.set.closeLog.log(c.logger(), CloseUpgrade, "closing: a message this device's client cannot open waits for it (sealed for devices, or a group message from another device): its version is too old", "version", c.sess.Version)
	c.closeGraceful(CloseUpgrade)
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
			sh.set.dequeue(rc.box(), p.serverID)
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
// acknowledged are queued for its device (the queued ones are still there),
// and their senders get Sent(queued) once they are on disk.
func (sh *Shard) gone(c *conn) {
	c.dead = true
	for _, p := range c.pending {
		if !p.stored {
			sh.set.persist(c.box(), p.env, nil)
		}
	}
	c.pending = nil
	delete(sh.waiting, c)
	sh.mu.Lock()
	delete(sh.conns, c)
	sh.mu.Unlock()
	sh.nconns.Add(-1)
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
