package shard

import (
	"errors"
	"time"

	"securefastchat/proto"
	"securefastchat/ratelimit"
	"securefastchat/store"
)

// Message requests and blocks. A direct message from someone the receiver
// has not accepted (written to, or shares a group with) is a request: it
// is always stored first and answered "queued" (sendDM), and it reaches
// the receiver as TDeliverRequest, so the receiver's client shows it as a
// request and sends nothing back (no receipts) until its user accepts.
// Accepting is writing to the sender, or TRelation accept; blocking makes
// the store drop what the blocked user sends the blocker (at enqueue,
// answered "queued" like any request), drops what of theirs is queued,
// and ends the pair's contact; group messages from a blocked member are
// dropped for the blocker too (routeGroup, and the store).

// Relation changes per user: a burst of relationBurst, then one per
// relationEvery.
const (
	relationBurst = 30
	relationEvery = 2 * time.Second
)

// changeRelation handles TRelation.
func (c *conn) changeRelation(id uint32, body []byte) {
	var m proto.Relation
	if err := m.Parse(body); err != nil {
		c.replyBad(id, err)
		return
	}
	if err := ratelimit.Refuse(c.set.relations.Take(c.user), "changing contacts too fast"); err != nil {
		c.replyFailure(id, err)
		return
	}
	canon, err := proto.AppendCanonicalUsername(nil, m.User)
	if err != nil {
		c.replyErr(id, proto.CodeInvalidUsername, "not a valid user name")
		return
	}
	other := string(canon)
	if other == c.user {
		c.replyErr(id, proto.CodeBadRequest, "that is your own name")
		return
	}
	// Whether the name exists is not looked at: accepting or blocking a
	// name nobody has says nothing, and costs one record.
	switch m.Action {
	case proto.RelationAccept:
		err := c.set.batcher.Submit(&store.Op{Contact: [2]string{c.user, other}, Done: func(r store.Result) {
			if r.Err != nil {
				c.replyFailure(id, r.Err)
				return
			}
			c.accepted(other)
			c.reply(proto.AppendEmpty(nil, proto.TOK, id))
		}})
		if err != nil {
			c.replyErr(id, proto.CodeServerShuttingDown, "the server is shutting down; retry")
		}
	case proto.RelationBlock:
		dropped, err := c.set.opts.Store.Block(c.user, other, proto.MaxBlocked)
		if errors.Is(err, store.ErrTooManyBlocked) {
			c.replyErr(id, proto.CodeForbidden, "you block as many users as an account may (1000): unblock some first")
			return
		}
		if err != nil {
			c.replyFailure(id, err)
			return
		}
		c.set.blocked(c.user, other, true)
		c.logger().Info("blocked a user", "dropped", dropped)
		c.reply(proto.AppendEmpty(nil, proto.TOK, id))
	case proto.RelationUnblock:
		if err := c.set.opts.Store.Unblock(c.user, other); err != nil {
			c.replyFailure(id, err)
			return
		}
		c.set.blocked(c.user, other, false)
		c.reply(proto.AppendEmpty(nil, proto.TOK, id))
	}
}

// listBlocked handles TBlockedList.
func (c *conn) listBlocked(id uint32) {
	names, err := c.set.opts.Store.BlockedBy(c.user)
	if err != nil {
		c.replyFailure(id, err)
		return
	}
	var m proto.Blocked
	for _, n := range names {
		m.Users = append(m.Users, []byte(n))
	}
	c.reply(m.Append(nil, id))
}

// accepted records in memory that c's user accepted other (the store
// has it): if other had written to c's user, they are contacts now, and
// each online sees the other.
func (c *conn) accepted(other string) {
	back, _ := c.set.opts.Store.Wrote(other, c.user)
	for _, mine := range c.set.dir.sessions(c.user) {
		mine.liveMu.Lock()
		if back {
			mine.addContactLocked(other)
		} else {
			if mine.asked == nil {
				mine.asked = make(map[string]struct{})
			}
			mine.asked[other] = struct{}{}
		}
		mine.liveMu.Unlock()
	}
	if !back {
		return
	}
	c.set.linkOnline(c.user, other)
}

// blocked updates the connections online after blocker blocked (on) or
// unblocked user: the pair are no contacts in memory either (so nothing
// goes live between them, and neither sees the other's presence), and the
// blocker's connections drop user's group messages.
func (s *Set) blocked(blocker, user string, on bool) {
	mine, theirs := s.dir.sessions(blocker), s.dir.sessions(user)
	wereContacts := false
	for _, c := range mine {
		c.liveMu.Lock()
		if on {
			if _, ok := c.contacts[user]; ok {
				wereContacts = true
			}
			delete(c.contacts, user)
			delete(c.asked, user)
			if c.blocks == nil {
				c.blocks = make(map[string]struct{})
			}
			c.blocks[user] = struct{}{}
		} else {
			delete(c.blocks, user)
		}
		c.nblocks.Store(int32(len(c.blocks)))
		c.liveMu.Unlock()
	}
	if !on {
		return
	}
	for _, c := range theirs {
		c.liveMu.Lock()
		delete(c.contacts, blocker)
		delete(c.asked, blocker)
		c.liveMu.Unlock()
	}
	if wereContacts && s.opts.Presence == PresenceContacts {
		for _, c := range mine {
			c.sendPresence(user, false)
		}
		for _, c := range theirs {
			c.sendPresence(blocker, false)
		}
	}
}

// blocksUser reports whether c's user blocks user (from memory: loaded
// at login, kept by Set.blocked). It takes the name in bytes, so the
// direct-message path asks without allocating.
func (c *conn) blocksUser(user []byte) bool {
	if c.nblocks.Load() == 0 {
		return false
	}
	c.liveMu.Lock()
	_, ok := c.blocks[string(user)]
	c.liveMu.Unlock()
	return ok
}

// loadBlocks reads whom c's user blocks, at login.
func (c *conn) loadBlocks() {
	names, err := c.set.opts.Store.BlockedBy(c.user)
	if err != nil {
		c.logger().Error("reading blocks", "err", err)
		return
	}
	c.liveMu.Lock()
	for _, n := range names {
		if c.blocks == nil {
			c.blocks = make(map[string]struct{})
		}
		c.blocks[n] = struct{}{}
	}
	c.nblocks.Store(int32(len(c.blocks)))
	c.liveMu.Unlock()
}

// accepts reports whether c's user has accepted from (written to them, or
// shares a group with them): what from sends is no request.
func (c *conn) accepts(from string) bool {
	if from == c.user {
		return true
	}
	c.liveMu.Lock()
	_, known := c.contacts[from]
	_, asked := c.asked[from]
	c.liveMu.Unlock()
	if known || asked {
		return true
	}
	if w, _ := c.set.opts.Store.Wrote(c.user, from); w {
		return true
	}
	return c.sharesGroup([]byte(from))
}

// joinGroup handles GroupJoin: an invited member accepts the invitation,
// and from then on gets the group's messages.
func (c *conn) joinGroup(id uint32, body []byte) {
	var m proto.GroupJoin
	if err := m.Parse(body); err != nil {
		c.replyBad(id, err)
		return
	}
	// A join is a store write: it shares the limit of relation changes.
	if err := ratelimit.Refuse(c.set.relations.Take(c.user), "joining groups too fast"); err != nil {
		c.replyFailure(id, err)
		return
	}
	canon, err := proto.AppendCanonicalUsername(nil, m.Group)
	if err != nil {
		c.replyErr(id, proto.CodeNoSuchGroup, "no such group")
		return
	}
	group := string(canon)
	err = c.set.opts.Store.AcceptGroupInvite(group, c.user)
	if errors.Is(err, store.ErrNotFound) {
		c.replyErr(id, proto.CodeNoSuchGroup, "no invitation to "+group+" (you may have joined it already)")
		return
	}
	if err != nil {
		c.replyFailure(id, err)
		return
	}
	c.set.joined(group, c.user)
	c.reply(proto.AppendEmpty(nil, proto.TOK, id))
}

// listInvites handles GroupInvites.
func (c *conn) listInvites(id uint32) {
	invs, err := c.set.opts.Store.GroupInvites(c.user)
	if err != nil {
		c.replyFailure(id, err)
		return
	}
	var r proto.GroupInvitesReply
	for _, inv := range invs {
		r.Invites = append(r.Invites, proto.GroupInvite{Group: []byte(inv.Group), By: []byte(inv.By)})
	}
	c.reply(r.Append(nil, id))
}
