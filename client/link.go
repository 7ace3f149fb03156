package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"time"

	"securefastchat/proto"
	"securefastchat/termtext"
)

// Linking a new device to an account (proto link.go). The existing device
// offers a link (OfferLink) and shows its code; the new device joins with
// the code (JoinLink), makes its own keys and asks to be added; the
// existing device's user sees the new device's name and id and accepts
// (the existing device signs the statement that adds it, with the
// account's master key) or refuses. The server only relays sealed frames.

// Linking errors.
var (
	// ErrLinkRefused: the existing device's user refused the new device.
	ErrLinkRefused = errors.New("client: the existing device refused the link")
	// ErrLinkBroken: the other device left, the link expired, or a frame
	// did not open (the relay altered or reordered it).
	ErrLinkBroken = errors.New("client: the link broke")
	// ErrNotManaging: this device does not hold the account's master key,
	// so it cannot add devices.
	ErrNotManaging = errors.New("client: this device does not manage the account's devices: do it from your first device, or one linked with 'device link --manage'")
)

// linkPeer is one device's end of a link channel: its connection and the
// frames the other device sent.
type linkPeer struct {
	conn   *Conn
	ciph   *proto.LinkCipher
	joined chan struct{} // closed when the new device joined (offer side)
	frames chan []byte
	closed chan struct{} // closed when the link ended
}

func newLinkPeer(conn *Conn, ciph *proto.LinkCipher) *linkPeer {
	// As many frames as a link relays, so a history copied in a burst
	// waits here rather than being dropped.
	p := &linkPeer{conn: conn, ciph: ciph, joined: make(chan struct{}), frames: make(chan []byte, proto.LinkMaxFrames), closed: make(chan struct{})}
	var joined, closed bool
	conn.OnPush(func(t proto.MsgType, body []byte) {
		switch t {
		case proto.TLinkJoined:
			if !joined {
				joined = true
				close(p.joined)
			}
		case proto.TLinkRelay:
			var m proto.LinkData
			if m.Parse(body) == nil {
				select {
				case p.frames <- append([]byte(nil), m.Data...):
				default: // more than a link relays: the server misbehaves
				}
			}
		case proto.TLinkClosed:
			if !closed {
				closed = true
				close(p.closed)
			}
		}
	})
	return p
}

// send seals a frame for the other device.
func (p *linkPeer) send(plain []byte) error {
	m := proto.LinkData{Data: p.ciph.Seal(nil, plain)}
	return p.conn.send(m.Append(nil, proto.TLinkData, 0))
}

// next waits for the other device's next frame and opens it.
func (p *linkPeer) next(ctx context.Context) ([]byte, error) {
	select {
	case f := <-p.frames:
		plain, err := p.ciph.Open(nil, f)
		if err != nil {
			return nil, fmt.Errorf("%w: a frame from the other device did not open (the server altered it, or the code is not this link's)", ErrLinkBroken)
		}
		return plain, nil
	case <-p.closed:
		return nil, fmt.Errorf("%w: the other device left, or the link expired", ErrLinkBroken)
	case <-p.conn.Done():
		return nil, fmt.Errorf("%w: %v", ErrLinkBroken, p.conn.Err())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// nextAs waits for the other device's next frame and decodes it into m;
// a frame that is not one, as what names it, breaks the link.
func (p *linkPeer) nextAs(ctx context.Context, m interface{ Parse([]byte) error }, what string) error {
	plain, err := p.next(ctx)
	if err != nil {
		return err
	}
	if err := m.Parse(plain); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrLinkBroken, what, err)
	}
	return nil
}

// LinkOffer is a link this device offers to a new device of its account.
type LinkOffer struct {
	c       *Client
	code    *proto.LinkCode
	peer    *linkPeer
	req     *proto.LinkRequest
	history func() ([]proto.LinkHistoryEntry, error)
	copied  HistoryCopied
}

// LinkOptions says what a link gives the new device beyond the account's
// contacts, marks and holds.
type LinkOptions struct {
	// Manage makes the new device manage the account's devices: it gets
	// the account's master key (see OfferManagingLink).
	Manage bool
	// History, if set, copies the conversations this device kept: it is
	// called when the new device is accepted, and returns the entries,
	// oldest first. The newest that fit a link (LinkHistoryBudget) go.
	History func() ([]proto.LinkHistoryEntry, error)
}

// LinkHistoryBudget is how much history (bytes of history frames) a
// link copies at most: the newest entries that fit, leaving the rest of
// what a server relays on one link (proto.LinkMaxBytes) to the other
// frames.
const LinkHistoryBudget = proto.LinkMaxBytes * 3 / 4

// HistoryCopied is how much of a device's history a link copied.
type HistoryCopied struct {
	Asked  bool // the link copies history (code version 5)
	Copied int  // entries sent (the newest)
	Total  int  // entries the existing device had
}

// HistoryCopiedText says in a sentence how much history a link copied,
// for either device's user.
func HistoryCopiedText(h HistoryCopied) string {
	switch {
	case !h.Asked:
		return "No history was copied: it starts empty (a link copies history only when asked to)."
	case h.Total == 0:
		return "There was no history to copy."
	case h.Copied == h.Total:
		return fmt.Sprintf("It has a copy of the history: all %d entries.", h.Total)
	}
	return fmt.Sprintf("It has a copy of the newest %d of %d entries of the history (a link carries about %d MiB of it).", h.Copied, h.Total, LinkHistoryBudget>>20)
}

// OfferLink offers a link for a new device, on a connection of its own,
// and returns it: show its Code to the user, then wait for the new device
// with Request. Only a device that manages the account's devices (holds
// its master key: its first device, or one it made manage) may offer one.
func (c *Client) OfferLink(ctx context.Context) (*LinkOffer, error) {
	return c.OfferLinkWith(ctx, LinkOptions{})
}

// OfferManagingLink is OfferLink for a new device that will manage the
// account's devices too: once accepted, it gets the account's master key
// through the link (code version 4), and adds and removes devices and
// changes group memberships as this device does. Whoever holds a managing
// device can remove every other device: offer it only for a device the
// user keeps as safely as this one.
func (c *Client) OfferManagingLink(ctx context.Context) (*LinkOffer, error) {
	return c.OfferLinkWith(ctx, LinkOptions{Manage: true})
}

// OfferLinkWith is OfferLink with options. A link that copies history
// has a code of version 5, which a new device of a build from before
// history copies refuses, saying to update it.
func (c *Client) OfferLinkWith(ctx context.Context, opts LinkOptions) (*LinkOffer, error) {
	if _, _, ok := c.thisDevice(); !ok {
		return nil, fmt.Errorf("client: the account's device list is not known yet; connect first")
	}
	list, err := c.Devices(ctx, c.user)
	if err != nil {
		return nil, err
	}
	master := c.acct.master()
	if !c.manages(list) {
		return nil, ErrNotManaging
	}
	if len(list.Devices) >= proto.MaxDevices {
		return nil, fmt.Errorf("client: %w: remove one first", proto.ErrTooManyDevices)
	}
	token := c.Token()
	if token == nil {
		return nil, ErrNotConnected
	}
	conn, err := Dial(ctx, c.cfg.Addr, c.cfg.dialOptions())
	if err != nil {
		return nil, err
	}
	if _, err := conn.ResumeWith(ctx, c.user, token, proto.LoginNoDeliveries); err != nil {
		conn.Close()
		return nil, err
	}
	code := &proto.LinkCode{Version: 3, User: []byte(c.user), Addr: c.cfg.Addr, ServerKey: conn.ServerKey(), Master: master}
	switch {
	case opts.History != nil:
		code.Version, code.Flags = 5, proto.LinkFlagHistory
		if opts.Manage {
			code.Flags |= proto.LinkFlagManage
		}
	case opts.Manage:
		code.Version = 4
	}
	if _, err := rand.Read(code.Secret[:]); err != nil {
		conn.Close()
		return nil, err
	}
	peer := newLinkPeer(conn, proto.NewLinkCipher(code.Secret, true))
	open := proto.LinkOpen{Channel: code.Channel(), Role: proto.LinkOffer}
	t, _, err := conn.Request(ctx, func(b []byte, id uint32) []byte { return open.Append(b, id) })
	if err := expect(t, proto.TOK, err); err != nil {
		conn.Close()
		return nil, fmt.Errorf("client: offering a link: %w", err)
	}
	return &LinkOffer{c: c, code: code, peer: peer, history: opts.History, copied: HistoryCopied{Asked: opts.History != nil}}, nil
}

// HistoryCopied says how much history the link copied, once Accept has
// returned.
func (o *LinkOffer) HistoryCopied() HistoryCopied { return o.copied }

// Code returns the link's code, for the new device (as text or a QR
// code). It holds the link's secret: whoever has it can ask to join.
func (o *LinkOffer) Code() string { return o.code.String() }

// LinkRequestInfo is what a new device says of itself.
type LinkRequestInfo struct {
	Name     string
	DeviceID uint64
}

// Request waits for the new device to join and say its name and keys.
// The user compares the id with the one the new device shows before
// accepting.
func (o *LinkOffer) Request(ctx context.Context) (*LinkRequestInfo, error) {
	select {
	case <-o.peer.joined:
	case <-o.peer.closed:
		return nil, fmt.Errorf("%w: the link expired before a device joined", ErrLinkBroken)
	case <-o.peer.conn.Done():
		return nil, fmt.Errorf("%w: %v", ErrLinkBroken, o.peer.conn.Err())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var req proto.LinkRequest
	if err := o.peer.nextAs(ctx, &req, "the new device's request"); err != nil {
		return nil, err
	}
	if err := req.Verify(o.code.Channel()); err != nil {
		return nil, fmt.Errorf("%w: the new device's request: %v", ErrLinkBroken, err)
	}
	o.req = &req
	return &LinkRequestInfo{Name: string(req.Name), DeviceID: req.DeviceID()}, nil
}

// Accept adds the new device to the account's device list, signed by the
// master key, and sends it the statement. Request must have returned.
// Then every group the user is in gets a new key epoch, which reaches the
// new device; a group whose rekey fails here gets one with its next
// message (the server takes none under an epoch made before the device).
func (o *LinkOffer) Accept(ctx context.Context) error {
	if err := o.accept(ctx); err != nil {
		return err
	}
	o.c.devLists.drop(o.c.user)
	_ = o.c.rekeyGroups(ctx)
	return nil
}

func (o *LinkOffer) accept(ctx context.Context) error {
	if o.req == nil {
		return errors.New("client: no device has asked to join yet")
	}
	c := o.c
	c.devMu.Lock()
	defer c.devMu.Unlock()
	var st *proto.DeviceStatement
	for attempt := 0; ; attempt++ {
		list, _, err := c.deviceList(ctx, c.user, o.code.Master)
		if err != nil {
			return err
		}
		st = &proto.DeviceStatement{User: []byte(c.user), Seq: list.Seq + 1, Prev: list.Last, Op: proto.DeviceAdd, DeviceID: o.req.DeviceID(),
			Name: o.req.Name, BoxKey: o.req.BoxKey, SignKey: o.req.SignKey, Time: time.Now().Unix()}
		st.Sign(c.acct.masterKey)
		if _, err := list.Apply(st, o.code.Master); err != nil {
			return fmt.Errorf("client: adding the device: %w", err)
		}
		m := proto.DeviceAppend{Statement: st.Append(nil)}
		t, _, err := c.s.request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
		err = expect(t, proto.TOK, err)
		if err == nil {
			break
		}
		if !errors.Is(err, proto.CodeStaleDevices) || attempt == 2 {
			return fmt.Errorf("client: adding the device: %w", err)
		}
	}
	ans := proto.LinkAnswer{Statement: st.Append(nil)}
	if err := o.peer.send(ans.Append(nil)); err != nil {
		return err
	}
	// What the new device needs to start where this one stands: the keys
	// pinned for each contact, with the user's verification marks.
	cs := c.contacts.snapshot(c.user)
	for {
		n := min(len(cs), proto.LinkSyncPerFrame)
		sync := proto.LinkSync{More: n < len(cs), Contacts: cs[:n]}
		if err := o.peer.send(sync.Append(nil)); err != nil {
			return err
		}
		if cs = cs[n:]; len(cs) == 0 {
			break
		}
	}
	// And whether it holds contacts' new devices, with those approved.
	on, hs, err := c.hold.snapshot()
	if err != nil {
		return err
	}
	for {
		n := min(len(hs), proto.LinkHoldPerFrame)
		h := proto.LinkHold{More: n < len(hs), On: on, Contacts: hs[:n]}
		if err := o.peer.send(h.Append(nil)); err != nil {
			return err
		}
		if hs = hs[n:]; len(hs) == 0 {
			break
		}
	}
	// A device made to manage gets the master key.
	if o.code.Manages() {
		m := proto.LinkManage{Seed: c.acct.masterKey.Seed()}
		if err := o.peer.send(m.Append(nil)); err != nil {
			return err
		}
	}
	// Then the history, when asked for.
	var historyErr error
	if o.code.CopiesHistory() {
		var err error
		if historyErr, err = o.sendHistory(); err != nil {
			return err
		}
	}
	// The new device says when it has it all, so leaving now loses it
	// nothing.
	plain, err := o.peer.next(ctx)
	if err != nil {
		return fmt.Errorf("client: the device is on your list, but it did not confirm it was set up (remove it with 'device remove %s' unless it works): %w", termtext.Line(string(o.req.Name)), err)
	}
	if err := proto.ParseLinkDone(plain); err != nil {
		return fmt.Errorf("%w: %v", ErrLinkBroken, err)
	}
	return historyErr
}

// sendHistory sends the newest entries of the history that fit
// LinkHistoryBudget, oldest first. A history that cannot be read goes as
// none, so the device is still set up: readErr says why (for after the
// new device is done); err is a send's.
func (o *LinkOffer) sendHistory() (readErr, err error) {
	all, readErr := o.history()
	if readErr != nil {
		all = nil
		readErr = fmt.Errorf("client: the device is set up, but no history was copied: reading it: %w", readErr)
	}
	start, budget := len(all), LinkHistoryBudget
	for start > 0 {
		n, ok := proto.LinkHistorySize(&all[start-1])
		if ok && n > budget {
			break
		}
		if ok {
			budget -= n
		}
		start--
	}
	total := uint32(math.MaxUint32) // (a count past it is said as it)
	if uint64(len(all)) < uint64(total) {
		total = uint32(len(all))
	}
	frames, skipped := proto.PackLinkHistory(all[start:], total)
	for _, f := range frames {
		if err := o.peer.send(f); err != nil {
			return readErr, err
		}
	}
	o.copied.Copied, o.copied.Total = len(all)-start-skipped, len(all)
	return readErr, nil
}

// Refuse tells the new device it is not added.
func (o *LinkOffer) Refuse(why string) error {
	ans := proto.LinkAnswer{Refusal: []byte(why)}
	return o.peer.send(ans.Append(nil))
}

// Close ends the link (the new device is told).
func (o *LinkOffer) Close() error { return o.peer.conn.Close() }

// LinkedDevice is a new device that joined its account.
type LinkedDevice struct {
	User      string // canonical
	Master    ed25519.PublicKey
	Statement *proto.DeviceStatement // the one that added this device
	Box       proto.KeyPair
	Sign      ed25519.PrivateKey
	// Conn is logged in as the device, taking its deliveries, with the
	// session Login.
	Conn  *Conn
	Login *proto.LoginOK
	// Contacts are the keys the existing device pinned for the account's
	// contacts, and whether its user verified them.
	Contacts []proto.LinkContact
	// Hold is whether the existing device holds contacts' new devices,
	// and the devices it approved (from a code of version 3).
	Hold proto.LinkHold
	// MasterKey is the account's master key, when the link made this
	// device manage the account's devices (a code of version 4); else nil.
	MasterKey ed25519.PrivateKey
	// History is the existing device's history, oldest first, when the
	// link copied it (a code of version 5 with its flag): the newest
	// entries that fit a link, of HistoryTotal.
	History      []proto.LinkHistoryEntry
	HistoryTotal int
}

// DeviceID returns the device's id in the account's list.
func (d *LinkedDevice) DeviceID() uint64 { return d.Statement.DeviceID }

// JoinLink joins the link of code as a new device named name: it makes the
// device's keys, asks the existing device to add it (shown returns the
// device's id at once, for the user to compare with the existing
// device's screen), checks the statement it gets against the account's
// master key in the code, and logs in as the device. The server must
// present the key the code names.
func JoinLink(ctx context.Context, code, name string, opts DialOptions, shown func(deviceID uint64)) (*LinkedDevice, error) {
	return joinLink(ctx, code, "", name, opts, shown)
}

// joinLink is JoinLink reaching the server at addr ("": the code's).
func joinLink(ctx context.Context, code, addr, name string, opts DialOptions, shown func(deviceID uint64)) (*LinkedDevice, error) {
	lc, err := proto.ParseLinkCode(code)
	if err != nil {
		return nil, err
	}
	if addr == "" {
		addr = lc.Addr
	}
	if name == "" || len(name) > proto.MaxDeviceName {
		return nil, fmt.Errorf("client: a device name is 1 to %d bytes", proto.MaxDeviceName)
	}
	box, err := proto.NewKeyPair(rand.Reader)
	if err != nil {
		return nil, err
	}
	signPub, sign, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	opts.ServerKey = lc.ServerKey.Fingerprint()
	conn, err := Dial(ctx, addr, opts)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	peer := newLinkPeer(conn, proto.NewLinkCipher(lc.Secret, false))
	open := proto.LinkOpen{Channel: lc.Channel(), Role: proto.LinkJoin}
	t, _, err := conn.Request(ctx, func(b []byte, id uint32) []byte { return open.Append(b, id) })
	if err := expect(t, proto.TOK, err); err != nil {
		return nil, fmt.Errorf("client: joining the link: %w", err)
	}
	req := proto.LinkRequest{Name: []byte(name), BoxKey: box.Public.Bytes(), SignKey: signPub}
	req.Sign(sign, lc.Channel())
	if err := peer.send(req.Append(nil)); err != nil {
		return nil, err
	}
	if shown != nil {
		shown(req.DeviceID())
	}
	var ans proto.LinkAnswer
	if err := peer.nextAs(ctx, &ans, "the existing device's answer"); err != nil {
		return nil, err
	}
	if ans.Statement == nil {
		return nil, fmt.Errorf("%w: %s", ErrLinkRefused, ans.Refusal)
	}
	var st proto.DeviceStatement
	if err := st.Parse(ans.Statement); err != nil {
		return nil, fmt.Errorf("%w: the statement that adds this device: %v", ErrLinkBroken, err)
	}
	if string(st.User) != string(lc.User) || st.Op != proto.DeviceAdd || st.DeviceID != req.DeviceID() ||
		!bytes.Equal(st.BoxKey, req.BoxKey) || !bytes.Equal(st.SignKey, req.SignKey) || !st.Verify(lc.Master) {
		return nil, fmt.Errorf("%w: the statement that adds this device is not the account's master key's for these keys", ErrLinkBroken)
	}
	var contacts []proto.LinkContact
	for more := true; more; {
		var sync proto.LinkSync
		if err := peer.nextAs(ctx, &sync, "the existing device's contacts"); err != nil {
			return nil, err
		}
		contacts, more = append(contacts, sync.Contacts...), sync.More
	}
	var hold proto.LinkHold
	for more := lc.Version >= 3; more; {
		var h proto.LinkHold
		if err := peer.nextAs(ctx, &h, "the existing device's hold on new devices"); err != nil {
			return nil, err
		}
		hold.On, hold.Contacts, more = h.On, append(hold.Contacts, h.Contacts...), h.More
	}
	var masterKey ed25519.PrivateKey
	if lc.Manages() {
		var m proto.LinkManage
		if err := peer.nextAs(ctx, &m, "the account's master key"); err != nil {
			return nil, err
		}
		if masterKey, err = m.Key(lc.Master); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrLinkBroken, err)
		}
	}
	var history []proto.LinkHistoryEntry
	total := 0
	for more := lc.CopiesHistory(); more; {
		var h proto.LinkHistory
		if err := peer.nextAs(ctx, &h, "the existing device's history"); err != nil {
			return nil, err
		}
		history, total, more = append(history, h.Entries...), int(h.Total), h.More
	}
	if err := peer.send(proto.LinkDone); err != nil {
		return nil, err
	}
	login, err := conn.LoginDevice(ctx, string(lc.User), st.DeviceID, sign, 0)
	if err != nil {
		return nil, fmt.Errorf("client: logging in as the new device: %w", err)
	}
	ok = true
	return &LinkedDevice{User: string(lc.User), Master: lc.Master, Statement: &st, Box: box, Sign: sign, Conn: conn, Login: login, Contacts: contacts, Hold: hold, MasterKey: masterKey,
		History: history, HistoryTotal: total}, nil
}
