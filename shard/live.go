package shard

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"securefastchat/proto"
	"securefastchat/ratelimit"
	"securefastchat/store"
)

// Live signals: presence, broadcast and ephemeral signals. They go
// straight to the receivers' connections, are never stored, and are
// dropped for a receiver whose output is full: a user who is away or
// behind misses them, and the next login's presence list sets things
// right.

// PresenceMode says who is told when a user comes online or goes.
type PresenceMode string

// Presence modes.
const (
	// PresenceContacts tells a user's contacts: whoever shares a group
	// with them, or has written to them and been written to back.
	PresenceContacts PresenceMode = "contacts"
	// PresenceAll tells everyone online.
	PresenceAll PresenceMode = "all"
	// PresenceOff tells nobody.
	PresenceOff PresenceMode = "off"
)

// BroadcastPolicy says who may broadcast.
type BroadcastPolicy string

// Broadcast policies.
const (
	BroadcastAnyone BroadcastPolicy = "anyone"
	BroadcastAdmins BroadcastPolicy = "admins"
	BroadcastOff    BroadcastPolicy = "off"
)

// ParsePresenceMode checks a presence mode's name.
func ParsePresenceMode(s string) (PresenceMode, error) {
	switch m := PresenceMode(s); m {
	case PresenceContacts, PresenceAll, PresenceOff:
		return m, nil
	}
	return "", fmt.Errorf("unknown presence mode %q: use contacts, all or off", s)
}

// ParseBroadcastPolicy checks a broadcast policy's name.
func ParseBroadcastPolicy(s string) (BroadcastPolicy, error) {
	switch p := BroadcastPolicy(s); p {
	case BroadcastAnyone, BroadcastAdmins, BroadcastOff:
		return p, nil
	}
	return "", fmt.Errorf("unknown broadcast policy %q: use anyone, admins or off", s)
}

// liveState is a connection's view of its user's relations, guarded by
// liveMu: its contacts (who see its presence), nil until the first; the
// users it has written to who have not written back (its requests, so
// each is recorded once), bounded by maxAsked; and the users it blocks
// (requests.go), whose number nblocks is read without the lock.
type liveState struct {
	liveMu   sync.Mutex
	contacts map[string]struct{}
	asked    map[string]struct{}
	blocks   map[string]struct{}
	nblocks  atomic.Int32
}

// loadContacts reads the user's contacts from the store into c's set, at
// login, merging with any that were added meanwhile.
func (c *conn) loadContacts() {
	names, err := c.set.opts.Store.Contacts(c.user)
	if err != nil {
		c.logger().Error("reading contacts", "err", err)
		return
	}
	c.liveMu.Lock()
	for _, n := range names {
		c.addContactLocked(n)
	}
	c.liveMu.Unlock()
}

func (c *conn) addContactLocked(name string) bool {
	if _, ok := c.contacts[name]; ok {
		return false
	}
	if c.contacts == nil {
		c.contacts = make(map[string]struct{})
	}
	c.contacts[name] = struct{}{}
	delete(c.asked, name)
	return true
}

// contactList copies c's contacts.
func (c *conn) contactList() []string {
	c.liveMu.Lock()
	defer c.liveMu.Unlock()
	out := make([]string, 0, len(c.contacts))
	for n := range c.contacts {
		out = append(out, n)
	}
	return out
}

// cameOnline runs in c's reader once c receives for its device: it sends
// c the users online it may see (a full list, even if empty) and, if c is
// the user's first device online (first), tells them that c's user is
// online.
func (c *conn) cameOnline(first bool) {
	mode := c.set.opts.Presence
	if mode == PresenceOff {
		return
	}
	var online []string
	c.set.forPresence(c, func(rc *conn) {
		online = append(online, rc.user)
		if first {
			rc.sendPresence(c.user, true)
		}
	})
	slices.Sort(online)
	online = slices.Compact(online)
	for first := true; first || len(online) > 0; first = false {
		n := min(len(online), proto.MaxPresenceEntries)
		m := proto.Presence{Reset: first}
		for _, u := range online[:n] {
			m.Entries = append(m.Entries, proto.PresenceEntry{User: []byte(u), Online: true})
		}
		online = online[n:]
		_ = c.enqueue(m.Append(nil, 0))
	}
}

// wentOffline tells the users who may see c's user that it has gone (its
// last device online went).
func (c *conn) wentOffline() {
	if c.set.opts.Presence == PresenceOff {
		return
	}
	c.set.forPresence(c, func(rc *conn) { rc.sendPresence(c.user, false) })
}

// forPresence calls fn for each receiving connection of another user
// that sees c's user come and go.
func (s *Set) forPresence(c *conn, fn func(rc *conn)) {
	if s.opts.Presence == PresenceAll {
		s.dir.each(func(rc *conn) {
			if rc.user != c.user {
				fn(rc)
			}
		})
		return
	}
	for _, n := range c.contactList() {
		for _, rc := range s.dir.receivers([]byte(n)) {
			fn(rc)
		}
	}
}

// sendPresence tells c that user came online or went.
func (c *conn) sendPresence(user string, online bool) {
	m := proto.Presence{Entries: []proto.PresenceEntry{{User: []byte(user), Online: online}}}
	c.enqueueLive(m.Append(nil, 0))
}

// enqueueLive queues a live signal for c. It is dropped, rather than c
// cut off as a slow consumer, when c's output is already half full.
func (c *conn) enqueueLive(msg []byte) bool {
	c.wmu.Lock()
	full := c.out != nil && len(*c.out)+len(msg) > c.set.opts.MaxPending/2
	c.wmu.Unlock()
	if full {
		c.set.Stats.dropped(DropLiveBehind)
		return false
	}
	return c.enqueue(msg) == nil
}

// noteContact records a direct message from c's user to another user.
// The pair become contacts (stored, and each told of the other's presence
// if both are online) once each has written to the other: a message to
// someone who has not written back is a request, and makes no contact.
func (c *conn) noteContact(to []byte) {
	if string(to) == c.user {
		return
	}
	c.liveMu.Lock()
	_, known := c.contacts[string(to)]
	_, asked := c.asked[string(to)]
	c.liveMu.Unlock()
	if known || asked {
		return
	}
	_ = c.set.batcher.Submit(&store.Op{Contact: [2]string{c.user, string(to)}})
	back, _ := c.set.opts.Store.Wrote(string(to), c.user)
	for _, rc := range c.set.dir.sessions(string(to)) {
		if back {
			break
		}
		rc.liveMu.Lock() // written back a moment ago, not yet committed
		_, back = rc.asked[c.user]
		rc.liveMu.Unlock()
	}
	if !back {
		c.liveMu.Lock()
		if len(c.asked) >= maxAsked {
			clear(c.asked) // only a cache of what the store holds
		}
		if c.asked == nil {
			c.asked = make(map[string]struct{})
		}
		c.asked[string(to)] = struct{}{}
		c.liveMu.Unlock()
		return
	}
	c.set.linkOnline(c.user, string(to))
}

// maxAsked bounds a connection's memory of the users it has written to
// who have not written back.
const maxAsked = 1024

// linkOnline makes two users contacts in memory, on every connection
// either has online, and, under contact presence, tells each one's
// devices that the other is online, unless one blocks the other.
func (s *Set) linkOnline(a, b string) {
	as, bs := s.dir.sessions(a), s.dir.sessions(b)
	for _, x := range as {
		if x.blocksUser([]byte(b)) {
			return // no contacts while one blocks the other
		}
	}
	for _, y := range bs {
		if y.blocksUser([]byte(a)) {
			return
		}
	}
	added := false
	link := func(conns []*conn, other string) {
		for _, x := range conns {
			x.liveMu.Lock()
			added = x.addContactLocked(other) || added
			x.liveMu.Unlock()
		}
	}
	link(as, b)
	link(bs, a)
	if s.opts.Presence != PresenceContacts || !added {
		return
	}
	ra, rb := s.dir.receivers([]byte(a)), s.dir.receivers([]byte(b))
	if len(ra) == 0 || len(rb) == 0 {
		return
	}
	for _, x := range ra {
		x.sendPresence(b, true)
	}
	for _, y := range rb {
		y.sendPresence(a, true)
	}
}

// joined links a user just added to (or who just joined) a group with its
// members online, unless the user is only invited.
func (s *Set) joined(group, user string) {
	if len(s.dir.sessions(user)) == 0 {
		return
	}
	g, err := s.opts.Store.Group(group)
	if err != nil {
		return
	}
	if _, invited := g.Pending[user]; invited {
		return
	}
	for _, m := range g.Members {
		if _, invited := g.Pending[m.Name]; invited || m.Name == user {
			continue
		}
		if len(s.dir.sessions(m.Name)) > 0 {
			s.linkOnline(user, m.Name)
		}
	}
}

// signal passes an ephemeral sealed body to a user who is online now.
func (c *conn) signal(id uint32, body []byte) {
	var m proto.Signal
	if err := m.Parse(body); err != nil {
		c.replyBad(id, err)
		return
	}
	to, ok := c.signalTo(id, m.To)
	if !ok {
		return
	}
	var msg []byte
	for _, rc := range c.set.dir.receivers(to) {
		if msg == nil {
			msg = (&proto.SignalMsg{From: []byte(c.user), Body: m.Body}).Append(nil, 0)
		}
		if rc.enqueueLive(msg) {
			c.set.Stats.Signals.Add(1)
		}
	}
}

// signalDevices passes a signal sealed for devices to each device of its
// receiver online now that it has a wrap for (a session of version 5 or
// later), with that wrap.
func (c *conn) signalDevices(id uint32, body []byte) {
	var m proto.SignalDevices
	if err := m.Parse(body); err != nil {
		c.replyBad(id, err)
		return
	}
	to, ok := c.signalTo(id, m.To)
	if !ok {
		return
	}
	for _, rc := range c.set.dir.receivers(to) {
		if rc.sess.Version < 5 {
			continue
		}
		for _, cp := range m.Copies {
			if cp.Device != rc.dev {
				continue
			}
			msg := (&proto.SignalDevicesMsg{From: []byte(c.user), FromDevice: c.dev, Wrap: cp.Wrap, Payload: m.Payload}).Append(nil, 0)
			if rc.enqueueLive(msg) {
				c.set.Stats.Signals.Add(1)
			}
			break
		}
	}
}

// signalTo checks a signal's rate and receiver: its canonical name, and
// false if the signal is dropped.
func (c *conn) signalTo(id uint32, rawTo []byte) ([]byte, bool) {
	if wait := c.set.signals.Take(c.user); wait > 0 {
		if id != 0 {
			c.replyFailure(id, ratelimit.Refuse(wait, "signalling too fast"))
		}
		return nil, false
	}
	to, err := proto.AppendCanonicalUsername(nil, rawTo)
	if err != nil {
		return nil, false
	}
	// Dropped silently when the user is away (a signal is never queued,
	// and its sender learns nothing it could not see from presence), and
	// unless each has accepted the other (contacts, or members of a
	// shared group): a stranger cannot make "typing..." appear, and the
	// receiver of a request shows nothing back before accepting.
	if accepted, wrote := c.relation(to); !accepted || !wrote && !c.sharesGroup(to) {
		c.set.Stats.dropped(DropNotAccepted)
		return nil, false
	}
	return to, true
}

// broadcast sends a text to everyone online but its sender.
func (c *conn) broadcast(id uint32, body []byte) {
	var m proto.Broadcast
	if err := m.Parse(body); err != nil {
		c.replyBad(id, err)
		return
	}
	switch c.set.opts.Broadcast {
	case BroadcastOff:
		c.replyErr(id, proto.CodeForbidden, "broadcasts are turned off on this server")
		return
	case BroadcastAdmins:
		if !slices.Contains(c.set.opts.Admins, c.user) {
			c.replyErr(id, proto.CodeForbidden, "only the server's admins may broadcast here")
			return
		}
	}
	if wait := c.set.broadcasts.Take(c.user); wait > 0 {
		c.replyFailure(id, ratelimit.Refuse(wait, "broadcasting too often"))
		return
	}
	if wait := c.set.broadcastsAddr.Take(c.ip); wait > 0 {
		c.replyFailure(id, ratelimit.Refuse(wait, "too many broadcasts from this address"))
		return
	}
	if wait := c.set.broadcastsAll.Take(""); wait > 0 {
		c.replyFailure(id, ratelimit.Refuse(wait, "too many broadcasts on this server just now"))
		return
	}
	msg := (&proto.BroadcastMsg{Time: c.set.opts.Now().UnixMilli(), From: []byte(c.user), Text: m.Text}).Append(nil, 0)
	var n uint32
	c.set.dir.each(func(rc *conn) {
		if rc != c && rc.enqueueLive(msg) {
			n++
		}
	})
	c.set.Stats.Broadcasts.Add(1)
	c.logger().Info("broadcast", "reached", n)
	if !slices.Contains(c.set.opts.Admins, c.user) {
		n = proto.CountHidden // how many are online is the admins' to know
	}
	c.reply((&proto.BroadcastSent{Count: n}).Append(nil, id))
}

// keysChanged tells the users online who know user (contacts, or who
// wrote to user and so pinned the keys) that user's key record is now
// keys (a sign-up under a name they knew: the account was deleted and
// made again), so their clients warn before they seal anything more to
// the old keys. Sign-ups are rare and rate-limited, so walking the users
// online is affordable.
func (s *Set) keysChanged(user string, keys *proto.Keys) {
	s.tellContacts(user, (&proto.KeysReply{User: []byte(user), Keys: *keys}).AppendType(nil, proto.TKeysChanged, 0))
}

// devicesChanged tells user's contacts online that user's device list has
// statement seq.
func (s *Set) devicesChanged(user string, seq uint32) {
	s.tellContacts(user, (&proto.DeviceReq{User: []byte(user), Seq: seq}).Append(nil, proto.TDevicesChanged, 0))
}

// tellContacts pushes msg to every connection online of someone who has
// user as a contact, or wrote to user.
func (s *Set) tellContacts(user string, msg []byte) {
	s.dir.each(func(rc *conn) {
		if rc.user == user {
			return
		}
		rc.liveMu.Lock()
		_, known := rc.contacts[user]
		_, asked := rc.asked[user]
		rc.liveMu.Unlock()
		if !known && !asked {
			asked, _ = s.opts.Store.Wrote(rc.user, user)
		}
		if known || asked {
			rc.enqueueLive(msg)
		}
	})
}
