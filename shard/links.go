package shard

import (
	"sync"
	"time"

	"securefastchat/proto"
)

// Device links (proto link.go). A logged-in device offers a channel; the
// new device joins it before any login, knowing only the channel id that
// the link's secret names; the server then passes their sealed frames
// between them, which it can neither read nor alter unseen, until one
// leaves or the link expires. A channel takes one join: a wrong or second
// join gets link_unknown, and the offer stays for the right one.
const (
	// LinkTTL is how long a link lives from its offer.
	LinkTTL = proto.LinkTTL
	// LinkMaxOffers is how many links one account may offer at once.
	LinkMaxOffers = 2
	// LinkMaxFrames and LinkMaxBytes bound what one link relays.
	LinkMaxFrames = proto.LinkMaxFrames
	LinkMaxBytes  = proto.LinkMaxBytes
)

// links holds the channels offered and joined. Its mutex guards every
// link's fields and each conn's link pointer.
type links struct {
	mu      sync.Mutex
	m       map[[proto.LinkChannelLen]byte]*link
	offered map[string]int // user -> links offered now
}

// link is one channel: the device that offered it and the one that
// joined, and what it has relayed.
type link struct {
	channel       [proto.LinkChannelLen]byte
	offer, join   *conn
	joinAuthed    bool // the joining connection has logged in
	expires       time.Time
	timer         *time.Timer
	frames, bytes int
}

func (l *links) init() {
	l.m = make(map[[proto.LinkChannelLen]byte]*link)
	l.offered = make(map[string]int)
}

// linkOpen offers a channel (a logged-in device) or joins one.
func (c *conn) linkOpen(id uint32, body []byte) {
	var m proto.LinkOpen
	if err := m.Parse(body); err != nil {
		c.replyBad(id, err)
		return
	}
	s := c.set
	ls := &s.links
	ls.mu.Lock()
	if c.link != nil {
		ls.mu.Unlock()
		c.replyErr(id, proto.CodeBadRequest, "this connection already has a link open")
		return
	}
	switch m.Role {
	case proto.LinkOffer:
		if !c.authed {
			ls.mu.Unlock()
			c.replyErr(id, proto.CodeUnauthenticated, "log in on the existing device to offer a link")
			return
		}
		if ls.offered[c.user] >= LinkMaxOffers {
			ls.mu.Unlock()
			c.replyErr(id, proto.CodeRateLimited, "your account has links open already: finish or cancel one first")
			return
		}
		if _, taken := ls.m[m.Channel]; taken {
			ls.mu.Unlock()
			c.replyErr(id, proto.CodeBadRequest, "that channel is taken: make a new link")
			return
		}
		l := &link{channel: m.Channel, offer: c, expires: s.opts.Now().Add(LinkTTL)}
		ls.m[m.Channel] = l
		ls.offered[c.user]++
		c.link = l
		l.timer = time.AfterFunc(LinkTTL, func() { s.closeLink(l) })
		ls.mu.Unlock()
		c.logger().Info("link offered")
		c.reply(proto.AppendEmpty(nil, proto.TOK, id))
	case proto.LinkJoin:
		l := ls.m[m.Channel]
		if l == nil || l.join != nil {
			ls.mu.Unlock()
			c.replyErr(id, proto.CodeLinkUnknown, "no device offers a link with that code: it expired or was used, or the code is wrong; make a new link on the existing device")
			return
		}
		l.join, l.joinAuthed = c, c.authed
		c.link = l
		offer, expires := l.offer, l.expires
		ls.mu.Unlock()
		if !c.authed {
			// It has shown a channel only the link's secret names: it
			// waits for the existing device's user, not for a login.
			s.gate.release(c)
			_ = c.nc.SetReadDeadline(expires)
		}
		c.reply(proto.AppendEmpty(nil, proto.TOK, id))
		_ = offer.enqueue(proto.AppendEmpty(nil, proto.TLinkJoined, 0))
	}
}

// linkData passes a sealed frame to the other device of c's link.
func (c *conn) linkData(id uint32, body []byte) {
	var m proto.LinkData
	if err := m.Parse(body); err != nil {
		c.replyBad(id, err)
		return
	}
	ls := &c.set.links
	ls.mu.Lock()
	l := c.link
	var peer *conn
	if l != nil {
		peer = l.join
		if c == l.join {
			peer = l.offer
		}
	}
	over := false
	if peer != nil {
		l.frames++
		l.bytes += len(m.Data)
		over = l.frames > LinkMaxFrames || l.bytes > LinkMaxBytes
	}
	ls.mu.Unlock()
	switch {
	case peer == nil:
		c.replyErr(id, proto.CodeLinkUnknown, "no other device is on this link")
	case over:
		c.replyErr(id, proto.CodeTooLarge, "the link carried as much as one link may; make a new one")
		c.set.closeLink(l)
	default:
		_ = peer.enqueue((&proto.LinkData{Data: m.Data}).Append(nil, proto.TLinkRelay, 0))
	}
}

// closeLink ends a link: both devices are told, and a new device that has
// not logged in has the login deadline again.
func (s *Set) closeLink(l *link) {
	ls := &s.links
	ls.mu.Lock()
	if ls.m[l.channel] != l {
		ls.mu.Unlock()
		return // closed already
	}
	delete(ls.m, l.channel)
	if ls.offered[l.offer.user]--; ls.offered[l.offer.user] <= 0 {
		delete(ls.offered, l.offer.user)
	}
	l.timer.Stop()
	conns := []*conn{l.offer, l.join}
	for _, c := range conns {
		if c != nil {
			c.link = nil
		}
	}
	restore := l.join != nil && !l.joinAuthed
	ls.mu.Unlock()
	for _, c := range conns {
		if c != nil {
			_ = c.enqueue(proto.AppendEmpty(nil, proto.TLinkClosed, 0))
		}
	}
	if restore {
		_ = l.join.nc.SetReadDeadline(s.opts.Now().Add(s.opts.LoginTimeout))
	}
}

// linkLoggedIn records that c, which may have joined a link, logged in:
// its deadlines are a logged-in connection's from now on.
func (c *conn) linkLoggedIn() {
	ls := &c.set.links
	ls.mu.Lock()
	if l := c.link; l != nil && l.join == c {
		l.joinAuthed = true
	}
	ls.mu.Unlock()
}

// leaveLink closes c's link, if any, as c goes.
func (c *conn) leaveLink() {
	c.set.links.mu.Lock()
	l := c.link
	c.set.links.mu.Unlock()
	if l != nil {
		c.set.closeLink(l)
	}
}
