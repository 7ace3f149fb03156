package shard

import (
	"crypto/ed25519"
	"errors"
	"slices"

	"securefastchat/proto"
	"securefastchat/store"
)

// Group management runs in the requesting connection's reader: it is
// rare, and every change is one atomic, optimistic store transaction, so
// two admins' concurrent changes cannot both apply.

// Reply size limits, under one frame.
const (
	maxChainReply = 48 << 10
	maxKeysReply  = 150
	maxGroupsList = 1500
)

// groupUpload accumulates a multi-part GroupChange.
type groupUpload struct {
	group, statement []byte
	epoch, rosterSeq uint32
	parts, got       uint16
	keys             map[string][]byte
}

// toRoster turns the server's cached state into a roster to apply
// statements to.
func toRoster(g *store.GroupState) *proto.Roster {
	if g == nil {
		return nil
	}
	r := &proto.Roster{Group: g.Name, Seq: g.Seq, Last: g.Last}
	for _, m := range g.Members {
		r.Members = append(r.Members, proto.RosterMember{Name: m.Name, Admin: m.Admin})
	}
	return r
}

func (c *conn) signKey(user string) ed25519.PublicKey {
	u, err := c.set.opts.Store.GetUser(user)
	if err != nil || u.Disabled {
		return nil
	}
	return ed25519.PublicKey(u.SignKey)
}

// canonicalGroup checks a group name; group names follow the user-name
// rule and must be sent in canonical form.
func canonicalGroup(b []byte) (string, bool) {
	c, err := proto.AppendCanonicalUsername(nil, b)
	return string(c), err == nil && string(c) == string(b)
}

func (c *conn) groupChange(id uint32, body []byte) {
	var m proto.GroupChange
	if err := m.Parse(body); err != nil {
		c.replyBad(id, err)
		return
	}
	group, ok := canonicalGroup(m.Group)
	if !ok {
		c.replyErr(id, proto.CodeBadRequest, "group names are 1 to 32 of a-z 0-9 _, in lower case")
		return
	}
	up := c.upload
	if m.Part == 1 {
		up = &groupUpload{group: append([]byte(nil), m.Group...), statement: append([]byte(nil), m.Statement...),
			epoch: m.Epoch, rosterSeq: m.RosterSeq, parts: m.Parts, keys: map[string][]byte{}}
		c.upload = up
	}
	if up == nil || string(up.group) != group || up.epoch != m.Epoch || up.rosterSeq != m.RosterSeq || up.parts != m.Parts || m.Part != up.got+1 {
		c.upload = nil
		c.replyErr(id, proto.CodeBadRequest, "group change parts out of order")
		return
	}
	up.got = m.Part
	for _, k := range m.Keys {
		if len(up.keys) >= proto.MaxGroupMembers {
			c.upload = nil
			c.replyErr(id, proto.CodeGroupFull, "too many wrapped keys")
			return
		}
		up.keys[string(k.Member)] = append([]byte(nil), k.Wrapped...)
	}
	if up.got < up.parts {
		c.reply(proto.AppendEmpty(nil, proto.TOK, id))
		return
	}
	c.upload = nil
	if code, text := c.applyGroupChange(group, up); code != 0 {
		c.replyErr(id, code, text)
		return
	}
	c.reply(proto.AppendEmpty(nil, proto.TOK, id))
}

// applyGroupChange checks a complete change against the roster and the
// epoch rules and commits it. It returns 0 on success.
func (c *conn) applyGroupChange(group string, up *groupUpload) (proto.ErrorCode, string) {
	st := c.set.opts.Store
	cur, err := st.Group(group)
	if errors.Is(err, store.ErrNotFound) {
		cur = nil
	} else if err != nil {
		return proto.CodeInternal, "reading the group failed"
	}
	var epoch *store.Epoch
	if up.epoch != 0 {
		epoch = &store.Epoch{N: up.epoch, RosterSeq: up.rosterSeq, Created: c.set.opts.Now(), Wrapper: c.user, Keys: up.keys}
	}
	next := cur
	var stmt *proto.Statement
	if len(up.statement) > 0 {
		stmt = new(proto.Statement)
		if err := stmt.Parse(up.statement); err != nil || string(stmt.Group) != group {
			return proto.CodeBadRequest, "malformed statement"
		}
		if string(stmt.Signer) != c.user {
			return proto.CodeForbidden, "statements are signed by the user who sends them"
		}
		switch {
		case cur == nil && stmt.Op != proto.OpCreate:
			return proto.CodeNoSuchGroup, "no such group"
		case cur != nil && stmt.Op == proto.OpCreate:
			return proto.CodeGroupTaken, "a group by that name exists"
		case cur != nil:
			if m, _ := cur.Member(c.user); !m {
				return proto.CodeNoSuchGroup, "no such group"
			}
		}
		if stmt.Op == proto.OpAdd && c.signKey(string(stmt.Target)) == nil {
			return proto.CodeNoSuchUser, "no such user"
		}
		r, err := toRoster(cur).Apply(stmt, c.signKey)
		switch {
		case errors.Is(err, proto.ErrNotAllowed):
			return proto.CodeForbidden, err.Error()
		case errors.Is(err, proto.ErrBadChain):
			return proto.CodeStaleGroup, "the group has changed; fetch it and retry"
		case err != nil:
			return proto.CodeInvalidKey, err.Error()
		}
		if len(r.Members) > proto.MaxGroupMembers {
			return proto.CodeGroupFull, "the group is full"
		}
		next = &store.GroupState{Name: group, Seq: r.Seq, Last: r.Last}
		if cur != nil {
			next.Epoch, next.EpochSeq, next.Created = cur.Epoch, cur.EpochSeq, cur.Created
		} else {
			next.Created = c.set.opts.Now()
		}
		for _, m := range r.Members {
			next.Members = append(next.Members, store.GroupMember{Name: m.Name, Admin: m.Admin})
		}
	} else {
		if cur == nil {
			return proto.CodeNoSuchGroup, "no such group"
		}
		if m, _ := cur.Member(c.user); !m {
			return proto.CodeNoSuchGroup, "no such group"
		}
		if epoch == nil {
			return proto.CodeBadRequest, "a change needs a statement or an epoch"
		}
		cp := *cur
		next = &cp
	}
	// Epochs: a new one whenever membership changes (none for a leave,
	// which the next sender rekeys; none needed for a promote), wrapped
	// for exactly the roster it names.
	if stmt != nil && stmt.Op == proto.OpLeave && epoch != nil {
		return proto.CodeBadRequest, "whoever leaves cannot make the next key"
	}
	if stmt != nil && (stmt.Op == proto.OpCreate || stmt.Op == proto.OpAdd || stmt.Op == proto.OpRemove) && epoch == nil {
		return proto.CodeBadRequest, "a membership change needs a new key epoch"
	}
	if epoch != nil {
		want := uint32(1)
		if cur != nil {
			want = cur.Epoch + 1
		}
		if epoch.N != want || epoch.RosterSeq != next.Seq {
			return proto.CodeStaleGroup, "the key epoch is not the next one for this roster"
		}
		if !sameMembers(next.Members, epoch.Keys) {
			return proto.CodeBadRequest, "the new key must be wrapped for exactly the members"
		}
		next.Epoch, next.EpochSeq = epoch.N, epoch.RosterSeq
	}
	if cur == nil {
		err = st.CreateGroup(next, up.statement, epoch)
	} else {
		err = st.ChangeGroup(next, cur.Seq, cur.Epoch, up.statement, epoch)
	}
	switch {
	case errors.Is(err, store.ErrGroupExists):
		return proto.CodeGroupTaken, "a group by that name exists"
	case errors.Is(err, store.ErrConflict):
		return proto.CodeStaleGroup, "the group has changed; fetch it and retry"
	case errors.Is(err, store.ErrUnavailable):
		return proto.CodeStorageUnavailable, "storage is unavailable; retry"
	case err != nil:
		c.logger().Error("group change failed", "group", group, "err", err)
		return proto.CodeInternal, "internal error"
	}
	if stmt != nil && stmt.Op == proto.OpAdd {
		c.set.joined(string(stmt.Target), next.Members)
	}
	if stmt != nil {
		var gone string
		if stmt.Op == proto.OpRemove || stmt.Op == proto.OpLeave {
			gone = string(stmt.Target)
		}
		c.set.groupChanged(group, next.Seq+1, next.Members, gone)
	}
	return 0, ""
}

// groupChanged tells a group's members online, and a member who has just
// gone, that its roster changed: their clients fetch and check the chain
// and show the change (a member added learns of the group at once).
func (s *Set) groupChanged(group string, chainLen uint32, members []store.GroupMember, gone string) {
	msg := (&proto.GroupReq{Group: []byte(group), From: chainLen}).Append(nil, proto.TGroupChanged, 0)
	tell := func(name string) {
		if rc := s.dir.lookup([]byte(name)); rc != nil {
			rc.enqueueLive(msg)
		}
	}
	for _, m := range members {
		tell(m.Name)
	}
	if gone != "" {
		tell(gone)
	}
}

func sameMembers(members []store.GroupMember, keys map[string][]byte) bool {
	if len(members) != len(keys) {
		return false
	}
	for _, m := range members {
		if _, ok := keys[m.Name]; !ok {
			return false
		}
	}
	return true
}

// memberGroup returns the group if the user is a member.
func (c *conn) memberGroup(id uint32, name []byte) *store.GroupState {
	g, err := c.set.opts.Store.Group(string(name))
	if err == nil {
		if m, _ := g.Member(c.user); m {
			return g
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		c.replyFailure(id, err)
		return nil
	}
	c.replyErr(id, proto.CodeNoSuchGroup, "no such group")
	return nil
}

func (c *conn) groupRead(t proto.MsgType, id uint32, body []byte) {
	st := c.set.opts.Store
	switch t {
	case proto.TGroupList:
		if err := proto.ParseEmpty(body); err != nil {
			c.replyBad(id, err)
			return
		}
		names, err := st.UserGroups(c.user)
		if err != nil {
			c.replyFailure(id, err)
			return
		}
		slices.Sort(names)
		var m proto.Groups
		for _, n := range names[:min(len(names), maxGroupsList)] {
			m.Names = append(m.Names, []byte(n))
		}
		c.reply(m.Append(nil, id))
	case proto.TGroupChain:
		var m proto.GroupReq
		if err := m.Parse(body); err != nil {
			c.replyBad(id, err)
			return
		}
		if c.memberGroup(id, m.Group) == nil {
			return
		}
		chain, more, err := st.GroupChain(string(m.Group), m.From, maxChainReply)
		if err != nil {
			c.replyFailure(id, err)
			return
		}
		c.reply((&proto.GroupChainReply{Group: m.Group, More: more, Statements: chain}).Append(nil, id))
	case proto.TGroupKeys:
		var m proto.GroupReq
		if err := m.Parse(body); err != nil {
			c.replyBad(id, err)
			return
		}
		g := c.memberGroup(id, m.Group)
		if g == nil {
			return
		}
		keys, err := st.MemberKeys(g.Name, c.user, m.From)
		if err != nil {
			c.replyFailure(id, err)
			return
		}
		r := proto.GroupKeysReply{Group: m.Group, Current: g.Epoch}
		for _, k := range keys[:min(len(keys), maxKeysReply)] {
			r.Keys = append(r.Keys, proto.EpochKeyMsg{Epoch: k.Epoch, RosterSeq: k.RosterSeq, Created: k.Created.UnixMilli(), Wrapper: []byte(k.Wrapper), Wrapped: k.Wrapped})
		}
		c.reply(r.Append(nil, id))
	}
}

// sendGroup fans a group message out: one event per shard carrying that
// shard's receivers, and a durable put per offline member. The sender gets
// Sent once every member has acknowledged it or it is stored for them.
func (c *conn) sendGroup(id uint32, body []byte, file bool) {
	var m proto.SendGroup
	if err := m.Parse(body); err != nil {
		c.replyBad(id, err)
		return
	}
	// As for direct messages: every message counts, a file chunk as one.
	if err := c.set.chargeMessage(c.user, len(m.Body)); err != nil {
		c.replyFailure(id, err)
		return
	}
	g := c.memberGroup(id, m.Group)
	if g == nil {
		return
	}
	if m.Epoch != g.Epoch || g.EpochSeq != g.Seq {
		c.replyErr(id, proto.CodeRekeyNeeded, "the group's key is not current for its members: fetch it, rekey if needed, and send again")
		return
	}
	now := c.set.opts.Now()
	d := proto.DeliverGroup{ServerID: c.set.newServerID(), Time: now.UnixMilli(), Group: m.Group, From: []byte(c.user),
		Epoch: m.Epoch, MsgID: m.MsgID, Body: m.Body, Sig: m.Sig}
	gmsg := d.Append(nil, 0)
	ack := &groupAck{from: c, reqID: id, serverID: d.ServerID, time: d.Time}
	ack.remaining.Store(int32(len(g.Members) - 1))
	if ob := c.set.opts.Observer; ob != nil {
		ob.FannedOut(len(g.Members) - 1)
	}
	if len(g.Members) == 1 {
		c.reply((&proto.Sent{ServerID: d.ServerID, Time: d.Time, Status: proto.StatusDelivered}).Append(nil, id))
		return
	}
	byShard := map[*Shard][]*conn{}
	for _, mem := range g.Members {
		if mem.Name == c.user {
			continue
		}
		if rc := c.set.dir.lookup([]byte(mem.Name)); rc != nil {
			byShard[rc.sh] = append(byShard[rc.sh], rc)
		} else {
			c.set.persistGroup(mem.Name, gmsg, ack)
		}
	}
	for sh, recips := range byShard {
		if !sh.post(event{kind: evRouteGroup, recips: recips, gmsg: gmsg, gack: ack, serverID: d.ServerID, time: d.Time}) {
			for _, rc := range recips {
				c.set.persistGroup(rc.user, gmsg, ack)
			}
		}
	}
}

// sharesGroup reports whether the requester and user are members of a
// common group.
func (c *conn) sharesGroup(user []byte) bool {
	canon, err := proto.AppendCanonicalUsername(nil, user)
	if err != nil {
		return false
	}
	mine, err := c.set.opts.Store.UserGroups(c.user)
	if err != nil || len(mine) == 0 {
		return false
	}
	theirs, err := c.set.opts.Store.UserGroups(string(canon))
	if err != nil {
		return false
	}
	for _, g := range theirs {
		if slices.Contains(mine, g) {
			return true
		}
	}
	return false
}
