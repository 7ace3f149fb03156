package shard

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

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

// groupUpload is a multi-part GroupChange under way: planned and checked
// at its first part, each later part checked as it comes, committed at its
// last. Owned by the connection's reader.
type groupUpload struct {
	plan      GroupPlan
	perDevice bool
	parts     uint16
	got       uint16
	keys      map[store.WrapFor][]byte
	started   time.Time
}

// An upload under way must end within Options.GroupUploadTimeout of its
// first part, and the keys it carries are bounded by its parts (at most
// MaxEpochPartsV3 of MaxWrapsPerPart keys, each at most MaxWrappedLen,
// for the members of the roster they are for): what one connection holds
// of it is bounded in time and size.

// canonicalGroup checks a group name; group names follow the user-name
// rule and must be sent in canonical form.
func canonicalGroup(b []byte) (string, bool) {
	c, err := proto.AppendCanonicalUsername(nil, b)
	return string(c), err == nil && string(c) == string(b)
}

func (c *conn) groupChange(t proto.MsgType, id uint32, body []byte) {
	if t == proto.TGroupChange {
		c.replyErr(id, proto.CodeUnsupportedFeature, "group changes need a client that signs each key epoch (protocol version 2): upgrade securefastchat")
		return
	}
	if c.set.opts.Groups == nil {
		c.replyErr(id, proto.CodeUnsupportedFeature, "this server keeps no groups")
		return
	}
	var m proto.GroupChange
	if err := m.ParseAs(t, body); err != nil {
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
		c.upload = nil
		plan, refusal := c.set.opts.Groups.Plan(c.user, c.dev, group, &m)
		if refusal != nil {
			c.replyErr(id, refusal.Code, refusal.Message)
			return
		}
		up = &groupUpload{plan: plan, perDevice: m.PerDevice, parts: m.Parts, keys: map[store.WrapFor][]byte{}, started: c.set.opts.Now()}
		c.upload = up
	}
	switch {
	case up == nil || up.plan.Group() != group || up.plan.Epoch() != m.Epoch || up.plan.RosterSeq() != m.RosterSeq || up.parts != m.Parts || m.Part != up.got+1 || up.perDevice != m.PerDevice:
		c.upload = nil
		c.replyErr(id, proto.CodeBadRequest, "group change parts out of order")
		return
	case c.set.opts.Now().Sub(up.started) > c.set.opts.GroupUploadTimeout:
		c.upload = nil
		c.replyErr(id, proto.CodeBadRequest, fmt.Sprintf("the change took longer than %s from its first part to its last; send it again", c.set.opts.GroupUploadTimeout))
		return
	}
	up.got = m.Part
	for _, k := range m.Keys {
		f := store.WrapFor{Member: string(k.Member), Device: k.Device}
		_, dup := up.keys[f]
		if !up.plan.Member(f.Member) || dup {
			c.upload = nil
			c.replyErr(id, proto.CodeBadRequest, fmt.Sprintf("a key wrapped for %q, who is not in the roster it is for (or twice for one device)", k.Member))
			return
		}
		up.keys[f] = append([]byte(nil), k.Wrapped...)
	}
	if up.got < up.parts {
		c.reply(proto.AppendEmpty(nil, proto.TOK, id))
		return
	}
	c.upload = nil
	if up.perDevice {
		// Wrapped for devices that are not the lists' (a list changed, or
		// the client's copy is old): nothing is stored, and the client
		// reads the lists named again and makes the epoch again.
		if diffs := up.plan.Mismatch(up.keys); diffs != nil {
			c.reply((&proto.DevicesMismatch{Users: diffs}).Append(nil, id))
			return
		}
	}
	if refusal := c.commitGroupChange(up.plan, up.keys); refusal != nil {
		c.replyErr(id, refusal.Code, refusal.Message)
		return
	}
	c.reply(proto.AppendEmpty(nil, proto.TOK, id))
}

// commitGroupChange stores a planned change with its wrapped keys (the
// group rules decide), then links a member added with the members online
// and tells every member online to fetch and check what changed.
func (c *conn) commitGroupChange(p GroupPlan, keys map[store.WrapFor][]byte) *proto.RemoteError {
	ch, refusal := c.set.opts.Groups.Commit(c.user, p, keys)
	if refusal != nil {
		return refusal
	}
	if ch.Added != "" {
		c.set.joined(ch.Group, ch.Added)
	}
	// Every member online fetches and checks what changed at once: a new
	// member sees the group, and a bad key is found and reported before
	// anyone sends under it.
	c.set.groupChanged(ch.Group, ch.ChainLen, ch.Members, ch.Gone)
	return nil
}

// groupChanged tells a group's members online, and a member who has just
// gone, that its roster (chainLen: its new length) or only its keys
// (chainLen 0) changed: their clients fetch and check it and show the
// change (a member added learns of the group at once).
func (s *Set) groupChanged(group string, chainLen uint32, members []store.GroupMember, gone string) {
	msg := (&proto.GroupReq{Group: []byte(group), From: chainLen}).Append(nil, proto.TGroupChanged, 0)
	tell := func(name string) {
		for _, rc := range s.dir.receivers([]byte(name)) {
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
		from, max := m.From, maxKeysReply
		if from == 0 { // the current epoch only
			from, max = g.Epoch, 1
		}
		ds, err := c.set.devices([]byte(c.user), c.set.opts.Now().UnixMilli())
		if err != nil || ds == nil {
			c.replyFailure(id, fmt.Errorf("shard: %s's devices: %w", c.user, cmp.Or(err, store.ErrNotFound)))
			return
		}
		// The device's own copies, and, on the account's first device,
		// those wrapped for the account keys before devices. A session
		// before version 5 opens only those.
		dev, first := c.dev, c.dev == ds.Key
		var keys []store.EpochKey
		switch {
		case c.sess.Version >= 5:
			keys, err = st.MemberKeys(g.Name, c.user, dev, first, from, max)
		case first:
			keys, err = st.MemberKeys(g.Name, c.user, 0, true, from, max)
		}
		if err != nil {
			c.replyFailure(id, err)
			return
		}
		if c.sess.Version < 5 && m.From == 0 && g.Epoch > 0 && len(keys) == 0 {
			// The current key reaches each device of each member, in a
			// form this session cannot open: say so, rather than nothing.
			c.replyErr(id, proto.CodeUnsupportedFeature, "this group's key is wrapped for each device of its members (protocol version 5): upgrade securefastchat to read and write in it")
			return
		}
		r := proto.GroupKeysReply{Group: m.Group, Current: g.Epoch}
		for _, k := range keys {
			r.Keys = append(r.Keys, proto.EpochKeyMsg{Epoch: k.Epoch, RosterSeq: k.RosterSeq, Created: k.Created.UnixMilli(), Wrapper: []byte(k.Wrapper), WrapperDevice: k.WrapperDevice,
				Wrapped: k.Wrapped, Stmt: k.Stmt, BadBy: []byte(k.BadBy), BadDevice: k.BadDevice, BadSig: k.BadSig})
		}
		t := proto.TGroupKeysReplyV3
		switch {
		case c.sess.Version < 2:
			t = proto.TGroupKeysReply
		case c.sess.Version < 5:
			t = proto.TGroupKeysReplyV2
		}
		c.reply(r.Append(nil, t, id))
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
	if _, invited := g.Pending[c.user]; invited {
		c.replyErr(id, proto.CodeForbidden, "you are invited to "+g.Name+" and have not joined: join it first (or leave it to decline)")
		return
	}
	if m.Epoch != g.Epoch || g.EpochSeq != g.Seq || g.EpochBad || g.DevicesStale() {
		c.replyErr(id, proto.CodeRekeyNeeded, "the group's key is not current for its members and their devices (or a member reported it bad): fetch it, make a new one, and send again")
		return
	}
	// Where each member's copies go: their devices, and the sender's
	// other devices.
	now := c.set.opts.Now().UnixMilli()
	sets := make([]*DeviceSet, len(g.Members))
	var fromDevice uint64
	for i, mem := range g.Members {
		if _, invited := g.Pending[mem.Name]; invited {
			continue
		}
		ds, err := c.set.devices([]byte(mem.Name), now)
		if err != nil {
			c.replyFailure(id, err)
			return
		}
		sets[i] = ds
		if mem.Name == c.user && ds != nil && c.dev != ds.Key {
			fromDevice = c.dev
		}
	}
	// Each member device's copy gets the device's number as it is
	// written (or stored); the sender's receipt its own.
	ack := &groupAck{from: c, reqID: id, sentID: c.seq.Add(1), time: now}
	env := groupEnvelope(c.user, fromDevice, &m, now, ack)
	if ob := c.set.opts.Observer; ob != nil {
		ob.FannedOut(len(g.Members) - 1)
	}
	// One outcome is held until every copy is on its way, so the last
	// copy's cannot answer the sender early.
	ack.remaining.Store(1)
	byShard := map[*Shard][]*conn{}
	for i, mem := range g.Members {
		if _, invited := g.Pending[mem.Name]; invited {
			// Not joined: nothing reaches or waits for them (the sender
			// cannot tell).
			c.set.Stats.dropped(DropInvited)
			ack.queuedAny.Store(true)
			continue
		}
		if sets[i] == nil {
			c.set.Stats.dropped(DropNoAccount) // deleted by an admin, still on the roster
			ack.queuedAny.Store(true)
			continue
		}
		name := []byte(mem.Name)
		for _, dev := range sets[i].IDs {
			if mem.Name == c.user && dev == c.dev {
				continue
			}
			ack.remaining.Add(1)
			ep := deviceEndpoint(name, dev)
			rc := c.set.router.find(ep)
			switch {
			case rc == nil:
				c.set.persist(ep.inbox(), env, nil)
			case rc.blocksUser([]byte(c.user)):
				c.set.Stats.dropped(DropBlocked)
				ack.done(true) // as if stored: the sender cannot tell
			default:
				byShard[rc.sh] = append(byShard[rc.sh], rc)
			}
		}
	}
	for sh, recips := range byShard {
		if !sh.post(event{kind: evDeliver, recips: recips, env: env}) {
			for _, rc := range recips {
				c.set.persist(rc.box(), env, nil)
			}
		}
	}
	ack.done(false)
}

// badEpoch takes a member's signed report that its copy of an epoch's key
// does not open or does not match the epoch statement: the report is
// stored with the epoch (every member's client sees who made the bad key
// and who reported it), sends under it stop if it is the current epoch,
// and the members online are told to fetch.
func (c *conn) badEpoch(t proto.MsgType, id uint32, body []byte) {
	var m proto.BadEpoch
	if err := m.ParseAs(t, body); err != nil {
		c.replyBad(id, err)
		return
	}
	g := c.memberGroup(id, m.Group)
	if g == nil {
		return
	}
	if c.set.opts.Groups == nil {
		c.replyErr(id, proto.CodeUnsupportedFeature, "this server keeps no groups")
		return
	}
	if refusal := c.set.opts.Groups.ReportBad(c.user, c.dev, g, &m); refusal != nil {
		c.replyErr(id, refusal.Code, refusal.Message)
		return
	}
	c.logger().Info("group epoch reported bad", "group", g.Name, "epoch", m.Epoch)
	c.set.groupChanged(g.Name, 0, g.Members, "")
	c.reply(proto.AppendEmpty(nil, proto.TOK, id))
}

// lookedUp notes that this session looked up user's keys (a canonical
// name); owned by the reader.
func (c *conn) lookedUp(user string) {
	if c.looked == nil || len(c.looked) >= maxLooked {
		c.looked = map[string]struct{}{}
	}
	c.looked[user] = struct{}{}
}

// freeLookup reports whether looking up user's keys costs the requester
// nothing from its lookup budget: user shares a group with the requester,
// or has written to them (the requester needs the keys to open what came,
// so junk from a stranger can never spend the budget the requester needs
// for everyone else), or the requester wrote to them before; it reveals
// nothing new either way.
func (c *conn) freeLookup(user []byte) bool {
	canon, err := proto.AppendCanonicalUsername(nil, user)
	if err != nil {
		return false
	}
	if string(canon) == c.user {
		return true // one's own keys and devices
	}
	if c.inGroupWith(canon, false) {
		return true // a member's keys, which every member needs to wrap keys for them
	}
	if _, ok := c.looked[string(canon)]; ok {
		return true // looked up before on this session: its device list comes with it
	}
	accepted, wrote := c.relation(canon)
	return accepted || wrote
}

// relation tells how c's user stands with another (a canonical name):
// accepted, user has accepted c's user (they are contacts, share a group,
// or user wrote to c's user), so what c's user sends is not a request;
// wrote, c's user has written to them before. A contact, or someone
// already written to who has not written back, costs no allocation and no
// store read: a reply or a shared group links them as contacts (noteContact,
// joined) and so moves them from asked to contacts.
func (c *conn) relation(canon []byte) (accepted, wrote bool) {
	c.liveMu.Lock()
	_, known := c.contacts[string(canon)]
	_, asked := c.asked[string(canon)]
	c.liveMu.Unlock()
	if known {
		return true, true
	}
	if asked {
		return false, true
	}
	if b, _ := c.set.opts.Store.Blocks(string(canon), c.user); b {
		// Blocked: what c's user sends them is dropped in the store.
		wrote, _ = c.set.opts.Store.Wrote(c.user, string(canon))
		return false, wrote
	}
	if c.sharesGroup(canon) {
		wrote, _ = c.set.opts.Store.Wrote(c.user, string(canon))
		return true, wrote
	}
	accepted, _ = c.set.opts.Store.Wrote(string(canon), c.user)
	wrote, _ = c.set.opts.Store.Wrote(c.user, string(canon))
	return accepted, wrote
}

// sharesGroup reports whether the requester and user are members of a
// common group, both joined (not only invited).
func (c *conn) sharesGroup(user []byte) bool { return c.inGroupWith(user, true) }

// inGroupWith reports whether the requester and user are members of a
// common group; with joined, both must have joined it (not only be
// invited).
func (c *conn) inGroupWith(user []byte, joined bool) bool {
	canon, err := proto.AppendCanonicalUsername(nil, user)
	if err != nil {
		return false
	}
	ok, _ := c.set.opts.Store.ShareGroup(c.user, string(canon), joined)
	return ok
}
