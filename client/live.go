package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"securefastchat/proto"
)

// liveQueue is how many pushes wait for the live goroutine; beyond it
// they are dropped (they are never stored by the server either).
const liveQueue = 512

// maxSignalAge bounds how old (by the sender's clock) a typing signal may
// be: the server cannot replay an old one later.
const maxSignalAge = 2 * time.Minute

// live holds presence as the server last told it.
type live struct {
	mu     sync.Mutex
	known  bool // a presence list has arrived on this connection
	online map[string]bool
	ch     chan push
}

// onPush is the connection's OnPush: it hands the push to liveLoop.
func (c *Client) onPush(t proto.MsgType, body []byte) {
	select {
	case c.live.ch <- push{t: t, body: append([]byte(nil), body...)}:
	default:
	}
}

// liveLoop handles pushes off the connection's reader, since opening a
// signal may need a key lookup on that connection.
func (c *Client) liveLoop() {
	for {
		select {
		case p := <-c.live.ch:
			if err := c.handlePush(p); err != nil {
				c.post(Event{Kind: EventRejected, Err: err})
			}
		case <-c.stop:
			return
		}
	}
}

func (c *Client) handlePush(p push) error {
	switch p.t {
	case proto.TPresence:
		var m proto.Presence
		if err := m.Parse(p.body); err != nil {
			return fmt.Errorf("%w: presence: %v", ErrProtocol, err)
		}
		c.live.mu.Lock()
		if m.Reset || c.live.online == nil {
			c.live.online = map[string]bool{}
		}
		c.live.known = true
		for _, e := range m.Entries {
			if e.Online {
				c.live.online[string(e.User)] = true
			} else {
				delete(c.live.online, string(e.User))
			}
		}
		c.live.mu.Unlock()
		if m.Reset {
			c.post(Event{Kind: EventPresence, Reset: true})
		}
		for _, e := range m.Entries {
			c.post(Event{Kind: EventPresence, User: string(e.User), Online: e.Online})
		}
	case proto.TBroadcastMsg:
		var m proto.BroadcastMsg
		if err := m.Parse(p.body); err != nil {
			return fmt.Errorf("%w: broadcast: %v", ErrProtocol, err)
		}
		c.post(Event{Kind: EventBroadcast, User: string(m.From), Text: string(m.Text), Time: time.UnixMilli(m.Time)})
	case proto.TSignalMsg:
		var m proto.SignalMsg
		if err := m.Parse(p.body); err != nil {
			return fmt.Errorf("%w: signal: %v", ErrProtocol, err)
		}
		if c.acct.linked {
			// Sealed for the account keys, by a sender who read this
			// account's list before this device was on it: for the first
			// device, which alone opens it.
			return nil
		}
		return c.openSignal(string(m.From), m.Body)
	case proto.TSignalDevicesMsg:
		var m proto.SignalDevicesMsg
		if err := m.Parse(p.body); err != nil {
			return fmt.Errorf("%w: signal: %v", ErrProtocol, err)
		}
		return c.openSignalDevices(&m)
	case proto.TKeysChanged:
		// A contact's key record changed: check and pin it now, so nothing
		// more is sealed to the old keys (a change posts EventKeyChange).
		_, err := c.acceptKeys("", p.body)
		return err
	case proto.TDevicesChanged:
		var m proto.DeviceReq
		if err := m.Parse(p.body); err != nil {
			return fmt.Errorf("%w: devices changed: %v", ErrProtocol, err)
		}
		return c.devicesChanged(string(m.User))
	case proto.TGroupChanged:
		var m proto.GroupReq
		if err := m.Parse(p.body); err != nil {
			return fmt.Errorf("%w: group change: %v", ErrProtocol, err)
		}
		return c.groups.groupChanged(string(m.Group), m.From)
	}
	return nil
}

// openSignal opens a typing signal sealed for the account keys (the
// form for first devices) and checks it (typing).
func (c *Client) openSignal(from string, body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pk, err := c.PeerKeys(ctx, from)
	if err != nil {
		return fmt.Errorf("%w: signal from %s: %v", ErrRejected, from, err)
	}
	plain, err := proto.OpenBody(nil, body, pk.shared)
	if err != nil {
		return fmt.Errorf("%w: a signal does not open with %s's key", ErrRejected, from)
	}
	return c.typing(ctx, from, plain)
}

// openSignalDevices opens this device's copy of a typing signal sealed
// for devices: from a device on the sender's list, for this device, for
// the payload it came with; then checks it (typing).
func (c *Client) openSignalDevices(m *proto.SignalDevicesMsg) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	from := string(m.From)
	dev, err := c.groups.deviceOf(ctx, from, m.FromDevice)
	if err != nil {
		return fmt.Errorf("%w: a signal from a device that is not on %s's list: %v", ErrRejected, from, err)
	}
	k, err := proto.OpenWrap(m.Wrap, m.Payload, c.sharedWith(dev.BoxKey))
	if err != nil {
		return fmt.Errorf("%w: a signal's wrap does not open with %s's device key", ErrRejected, from)
	}
	plain, err := proto.OpenPayload(nil, m.Payload, k)
	if err != nil {
		return fmt.Errorf("%w: a signal does not open with its key", ErrRejected)
	}
	return c.typing(ctx, from, plain)
}

// typing checks an opened typing signal like a direct message (the sealed
// sender and receiver match, and it is recent; in a group, the sender is a
// member) and tells the application.
func (c *Client) typing(ctx context.Context, from string, plain []byte) error {
	var in proto.Inner
	if err := in.Parse(plain); err != nil {
		return fmt.Errorf("%w: signal: %v", ErrRejected, err)
	}
	if string(in.From) != from || string(in.To) != c.user || in.Kind != proto.KindTyping {
		return fmt.Errorf("%w: a signal's sealed sender, receiver or kind do not match", ErrRejected)
	}
	if age := time.Since(time.Unix(0, in.SentAt)); age > maxSignalAge || age < -maxSignalAge {
		return nil // stale or from a skewed clock: ignored
	}
	var t proto.Typing
	if err := t.Parse(in.Body); err != nil {
		return fmt.Errorf("%w: typing: %v", ErrRejected, err)
	}
	if len(t.Group) > 0 {
		g, err := c.groups.group(ctx, string(t.Group))
		if err != nil {
			return fmt.Errorf("%w: typing in %s: %v", ErrRejected, t.Group, err)
		}
		c.groups.mu.Lock()
		member := g.roster().Index(from) >= 0
		c.groups.mu.Unlock()
		if !member {
			return fmt.Errorf("%w: %s is not a member of %s", ErrRejected, from, t.Group)
		}
	}
	c.post(Event{Kind: EventTyping, User: from, Typing: t.Active, Group: string(t.Group), Time: time.Unix(0, in.SentAt)})
	return nil
}

// Online returns the users the server says are online, sorted, and
// whether the server tells presence at all (false until a presence list
// has arrived, or when the server's presence is off).
func (c *Client) Online() ([]string, bool) {
	c.live.mu.Lock()
	defer c.live.mu.Unlock()
	out := make([]string, 0, len(c.live.online))
	for u := range c.live.online {
		out = append(out, u)
	}
	slices.Sort(out)
	return out, c.live.known
}

// IsOnline reports whether the server said user is online.
func (c *Client) IsOnline(user string) bool {
	c.live.mu.Lock()
	defer c.live.mu.Unlock()
	return c.live.online[user]
}

// SendTyping tells a user (to), or the members of group, that this user
// started or stopped typing. It is sealed end to end and never stored: a
// user who is offline does not get it. In a group it goes to the members
// presence says are online (to all of them if presence is unknown).
func (c *Client) SendTyping(ctx context.Context, to, group string, active bool) error {
	body := (&proto.Typing{Active: active, Group: []byte(group)}).Append(nil)
	if group == "" {
		return c.signal(ctx, to, body)
	}
	g, err := c.groups.group(ctx, group)
	if err != nil {
		return err
	}
	c.groups.mu.Lock()
	names := g.roster().Names()
	c.groups.mu.Unlock()
	c.live.mu.Lock()
	known, online := c.live.known, c.live.online
	var targets []string
	for _, n := range names {
		if n != c.user && (!known || online[n]) {
			targets = append(targets, n)
		}
	}
	c.live.mu.Unlock()
	var errs []error
	for _, n := range targets {
		errs = append(errs, c.signal(ctx, n, body))
	}
	return errors.Join(errs...)
}

// signal seals a typing body for one user and sends it: sealed for the
// devices on their list this user trusts (SignalDevices) when this is a
// linked device or they have more than one, else for their account keys
// (Signal), which their first device opens.
func (c *Client) signal(ctx context.Context, to string, body []byte) error {
	pk, err := c.PeerKeys(ctx, to)
	if err != nil {
		return err
	}
	msgID := make([]byte, proto.MsgIDLen)
	if _, err := rand.Read(msgID); err != nil {
		return err
	}
	in := proto.Inner{Kind: proto.KindTyping, From: []byte(c.user), To: []byte(pk.User), MsgID: msgID, SentAt: time.Now().UnixNano(), Body: body}
	plain, err := in.Append(nil)
	if err != nil {
		return err
	}
	conn := c.Conn()
	if conn == nil {
		return ErrNotConnected // a signal is for now or never
	}
	if conn.Version() >= 5 {
		list, err := c.listOf(ctx, pk.User, false)
		switch {
		case err == nil && (c.acct.linked || len(list.Devices) > 1 || list.Devices[0].ID != pk.ID):
			return c.signalDevices(conn, pk.User, list.Devices, plain)
		case err != nil && !errors.Is(err, ErrNoDeviceChain):
			return fmt.Errorf("client: %s's devices: %w", pk.User, err)
		}
	}
	sealed, err := proto.SealBody(nil, plain, pk.shared, nil)
	if err != nil {
		return err
	}
	return conn.SendRaw((&proto.Signal{To: []byte(pk.User), Body: sealed}).Append(nil, 0))
}

// signalDevices seals a typing inner for user's devices devs, leaving out
// any the user holds (hold.go), and sends it.
func (c *Client) signalDevices(conn *Conn, user string, devs []proto.Device, plain []byte) error {
	held, err := c.hold.check(user, devs)
	if err != nil {
		return err
	}
	payload, k, err := proto.SealPayload(plain, nil)
	if err != nil {
		return err
	}
	hash := proto.PayloadHash(payload)
	m := proto.SignalDevices{To: []byte(user), Payload: payload}
	for _, d := range devs {
		if slices.ContainsFunc(held, func(h proto.Device) bool { return h.ID == d.ID }) {
			continue
		}
		w, err := proto.WrapKey(nil, k, &hash, c.sharedWith(d.BoxKey), nil)
		if err != nil {
			return err
		}
		m.Copies = append(m.Copies, proto.DeviceCopy{Device: d.ID, Wrap: w})
	}
	if len(m.Copies) == 0 {
		return nil // every device held: nothing to tell
	}
	return conn.SendRaw(m.Append(nil, 0))
}

// Broadcast sends text to everyone online and returns how many it
// reached, or -1 if the server does not say (it tells its admins only).
// It is NOT end-to-end encrypted: the server sees it. Servers may allow it
// to anyone, to their admins only, or to no one.
func (c *Client) Broadcast(ctx context.Context, text string) (int, error) {
	m := proto.Broadcast{Text: []byte(text)}
	if err := m.Parse(m.Append(nil, 0)[proto.MsgHeaderLen:]); err != nil {
		return 0, fmt.Errorf("client: broadcast: %w", err)
	}
	conn, err := c.s.liveConn(ctx)
	if err != nil {
		return 0, err
	}
	t, body, err := conn.Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
	if err := expect(t, proto.TBroadcastSent, err); err != nil {
		return 0, err
	}
	var r proto.BroadcastSent
	if err := r.Parse(body); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	if r.Count == proto.CountHidden {
		return -1, nil
	}
	return int(r.Count), nil
}
