package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"securefastchat/proto"
	"securefastchat/termtext"
)

// Direct messages sealed for devices (proto devsealed.go, version 4). Once
// the receiver or the sender has more than its account's first device, a
// direct message is sealed once under a fresh key, which is wrapped for
// each device on the receiver's list and each other device on the
// sender's: every device opens it with its own key, and the sender's other
// devices show what was sent. The lists are the ones this client checked
// against each account's master key (devices.go); the server refuses a
// send whose devices are not the lists as they stand (a device added or
// removed since), and the client reads the lists again and resends.

// deviceLists holds each account's device list as this client last
// checked it, and the box keys it shares with devices. Owner: the Client;
// mu guards the maps; fetching is held by one caller at a time, so the
// sends of a burst to someone read their list once.
type deviceLists struct {
	fetching sync.Mutex

	mu     sync.Mutex
	lists  map[string]*proto.DeviceList
	at     map[string]time.Time // when each list was checked
	none   map[string]time.Time // accounts found with no list yet, and when
	shared map[proto.PublicKey]*[32]byte
}

// noListFor is how long an account found with no device list is taken
// to have none before it is asked again (its client makes the list on its
// next connection to a server that keeps lists).
const noListFor = time.Minute

// maxSharedKeys bounds the shared keys kept; past it they are made again.
const maxSharedKeys = 4096

// get returns user's list if it was checked after since.
func (l *deviceLists) get(user string, since time.Time) *proto.DeviceList {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.at[user].Before(since) {
		return nil
	}
	return l.lists[user]
}

func (l *deviceLists) put(user string, list *proto.DeviceList) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lists == nil {
		l.lists, l.at = map[string]*proto.DeviceList{}, map[string]time.Time{}
	}
	l.lists[user], l.at[user] = list, time.Now()
	delete(l.none, user)
}

// noList reports whether user was found with no list after since, within
// noListFor.
func (l *deviceLists) noList(user string, since time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.none[user]
	return ok && !at.Before(since) && time.Since(at) < noListFor
}

// putNoList records that user has no list yet.
func (l *deviceLists) putNoList(user string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.none == nil || len(l.none) >= maxSharedKeys {
		l.none = map[string]time.Time{}
	}
	l.none[user] = time.Now()
}

// reset forgets every list (the shared keys stay: they follow from the
// keys alone).
func (l *deviceLists) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lists, l.at, l.none = nil, nil, nil
}

// drop forgets user's list.
func (l *deviceLists) drop(user string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.lists, user)
	delete(l.at, user)
	delete(l.none, user)
}

// sharedWith returns the box key this device shares with a device's box
// key.
func (c *Client) sharedWith(dev proto.PublicKey) *[32]byte {
	l := &c.devLists
	l.mu.Lock()
	defer l.mu.Unlock()
	if k, ok := l.shared[dev]; ok {
		return k
	}
	if l.shared == nil || len(l.shared) >= maxSharedKeys {
		l.shared = map[proto.PublicKey]*[32]byte{}
	}
	k := proto.SharedKey(&c.id.Box.Private, dev)
	l.shared[dev] = k
	return k
}

// listOf returns canon's device list: the one last checked, unless fresh
// asks for one read and checked from now on.
func (c *Client) listOf(ctx context.Context, canon string, fresh bool) (*proto.DeviceList, error) {
	var since time.Time
	if fresh {
		since = time.Now()
	}
	noList := fmt.Errorf("%w: %s's client makes it on its next connection", ErrNoDeviceChain, canon)
	if l := c.devLists.get(canon, since); l != nil {
		return l, nil
	}
	if c.devLists.noList(canon, since) {
		return nil, noList
	}
	c.devLists.fetching.Lock()
	defer c.devLists.fetching.Unlock()
	if l := c.devLists.get(canon, since); l != nil {
		return l, nil // read by the caller before
	}
	if c.devLists.noList(canon, since) {
		return nil, noList
	}
	l, err := c.Devices(ctx, canon)
	if errors.Is(err, ErrNoDeviceChain) {
		c.devLists.putNoList(canon)
	}
	return l, err
}

// memberDevices returns canon's devices as its checked list proves them
// (fresh: read again), or, for an account without a list yet, its
// account keys as its one device (its first).
func (c *Client) memberDevices(ctx context.Context, canon string, fresh bool) ([]proto.Device, error) {
	list, err := c.listOf(ctx, canon, fresh)
	if err == nil {
		return list.Devices, nil
	}
	if !errors.Is(err, ErrNoDeviceChain) {
		return nil, err
	}
	if canon != c.user {
		pk, err := c.PeerKeys(ctx, canon)
		if err != nil {
			return nil, err
		}
		return []proto.Device{{ID: pk.ID, BoxKey: pk.Box, SignKey: pk.Sign}}, nil
	}
	box, err := proto.ParsePublicKey(c.acct.keys.BoxKey)
	if err != nil {
		return nil, fmt.Errorf("client: your box key: %w", err)
	}
	return []proto.Device{{ID: proto.KeyRecordID(&c.acct.keys), BoxKey: box, SignKey: c.acct.keys.SignKey}}, nil
}

// selfDevice is this device's id.
func (c *Client) selfDevice() uint64 { return c.id.KeyID(c.user) }

// deviceForm returns the lists a message to pk's user is sealed for, or
// nil ones when the form for the account's first device serves: a server
// before version 4, a receiver without a device list, or both accounts
// with that device alone (unless force).
func (c *Client) deviceForm(ctx context.Context, pk *PeerKeys, force bool) (to, own *proto.DeviceList, err error) {
	conn, err := c.s.liveConn(ctx)
	if err != nil {
		return nil, nil, err
	}
	if conn.Version() < 4 {
		return nil, nil, nil
	}
	to, err = c.listOf(ctx, pk.User, force)
	if errors.Is(err, ErrNoDeviceChain) || errors.Is(err, ErrNoDevices) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("client: %s's devices: %w", pk.User, err)
	}
	if err := c.checkHeld(pk.User, to.Devices); err != nil {
		return nil, nil, err // nothing sealed for a device the user has not approved
	}
	own = to
	if pk.User != c.user {
		if own, err = c.listOf(ctx, c.user, force); err != nil {
			return nil, nil, fmt.Errorf("client: your devices: %w", err)
		}
	}
	if !force && len(to.Devices) == 1 && to.Devices[0].ID == pk.ID && len(own.Devices) == 1 {
		return nil, nil, nil
	}
	return to, own, nil
}

// sealForDevices seals out (its inner, under its message key, made once)
// for the devices of to and the sender's other devices of own.
func (c *Client) sealForDevices(out *Outgoing, to, own *proto.DeviceList) error {
	if out.key == nil {
		payload, key, err := proto.SealPayload(out.inner, nil)
		if err != nil {
			return err
		}
		out.payload, out.key = payload, key
	}
	hash := proto.PayloadHash(out.payload)
	wrap := func(devs []proto.Device, skip uint64) ([]proto.DeviceCopy, error) {
		var cs []proto.DeviceCopy
		for _, d := range devs {
			if d.ID == skip {
				continue
			}
			w, err := proto.WrapKey(nil, out.key, &hash, c.sharedWith(d.BoxKey), nil)
			if err != nil {
				return nil, err
			}
			cs = append(cs, proto.DeviceCopy{Device: d.ID, Wrap: w})
		}
		return cs, nil
	}
	var err error
	if out.copies, err = wrap(to.Devices, 0); err != nil {
		return err
	}
	out.own = nil
	if out.To != c.user {
		if out.own, err = wrap(own.Devices, c.selfDevice()); err != nil {
			return err
		}
	}
	return nil
}

// DevicesMismatchError: the server refused a send whose devices were not
// the lists as they stand.
type devicesMismatchError struct{ users []string }

func (e *devicesMismatchError) Error() string {
	return fmt.Sprintf("client: the device lists of %v changed", e.users)
}

func parseMismatch(body []byte) error {
	var m proto.DevicesMismatch
	if err := m.Parse(body); err != nil {
		return fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	e := &devicesMismatchError{}
	for _, u := range m.Users {
		e.users = append(e.users, string(u.User))
	}
	return e
}

// sendTries bounds how often a send is sealed again for lists that
// changed while it was being sent.
const sendTries = 3

// resealAfterMismatch reads again the lists the server said changed and
// seals out for them.
func (c *Client) resealAfterMismatch(ctx context.Context, out *Outgoing, mm *devicesMismatchError) error {
	for _, u := range mm.users {
		if _, err := c.listOf(ctx, u, true); err != nil {
			return fmt.Errorf("client: reading %s's devices again: %w", u, err)
		}
	}
	pk, err := c.PeerKeys(ctx, out.To)
	if err != nil {
		return err
	}
	to, own, err := c.deviceForm(ctx, pk, true)
	if err != nil {
		return err
	}
	if to == nil {
		return fmt.Errorf("%w: the server refused the message's devices but keeps no device lists", ErrProtocol)
	}
	return c.sealForDevices(out, to, own)
}

// openDevices opens and checks one device's copy of a message sealed for
// devices: from a device on the sender's list, for this device, for the
// payload it came with; and, on a copy of what this user sent from
// another device, to the receiver the envelope names.
func (r *receiver) openDevices(d *proto.DeliverDevices) (_ *Message, seen bool, _ error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	from, to, self := string(d.From), string(d.To), r.c.user
	mine := from == self && to != self // what this user sent from another device
	if to != self && !mine {
		return nil, false, fmt.Errorf("%w: a message for %s reached %s", ErrRejected, to, self)
	}
	pk, err := r.c.PeerKeys(ctx, from)
	if err != nil {
		return nil, false, fmt.Errorf("%w: sender keys: %w", ErrRejected, err)
	}
	list, err := r.c.listOf(ctx, from, false)
	if err == nil && list.Index(d.FromDevice) < 0 && r.mayRefetch(from) {
		list, err = r.c.listOf(ctx, from, true) // a device added since the list was read
	}
	if err != nil {
		if transient(err) {
			return nil, false, fmt.Errorf("%w: sender devices: %w", ErrRejected, err)
		}
		return nil, false, fmt.Errorf("%w: %s's devices: %v", ErrRejected, from, err)
	}
	var dev *proto.Device
	var removed *proto.RemovedDevice // the device that sent it, removed since
	if i := list.Index(d.FromDevice); i >= 0 {
		dev = &list.Devices[i]
	} else if removed = list.RemovedDevice(d.FromDevice); removed != nil {
		dev = &removed.Device
	} else {
		return nil, false, fmt.Errorf("%w: it comes from a device that is not on %s's list", ErrRejected, from)
	}
	key, err := proto.OpenWrap(d.Wrap, d.Payload, r.c.sharedWith(dev.BoxKey))
	if err != nil {
		return nil, false, fmt.Errorf("%w: its key does not open with %s's device %q and this device's key (it was sealed for another device, or it is not from %s)",
			ErrRejected, from, dev.Name, from)
	}
	plain, err := proto.OpenPayload(nil, d.Payload, key)
	if err != nil {
		return nil, false, fmt.Errorf("%w: the payload does not open with its key", ErrRejected)
	}
	var in proto.Inner
	if err := in.Parse(plain); err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrRejected, err)
	}
	if string(in.From) != from || string(in.To) != to || !bytes.Equal(in.MsgID, d.MsgID) || !envelopeHolds(d.Kind, in.Kind) || in.Roster != nil {
		return nil, false, fmt.Errorf("%w: sealed sender, receiver, id or kind do not match the envelope", ErrRejected)
	}
	if removed != nil {
		if err := fromRemoved(removed, time.Unix(0, in.SentAt), time.Now()); err != nil {
			return nil, false, fmt.Errorf("%w: it comes from %s's device %q, %v", ErrRejected, from, termtext.Line(dev.Name), err)
		}
	}
	msg, seen, err := r.accept(&in, d.ServerID, d.Time, d.Flags&proto.DeliverFlagRequest != 0 && !mine, pk.Changed)
	if msg != nil && removed != nil {
		msg.FromRemovedDevice = dev.Name
	}
	return msg, seen, err
}

// RemovedDeviceGrace is how long after a device's removal what it sent
// before is still read: the time a server keeps a message for a receiver
// who is away (7 days by default). The removal's time is the managing
// device's, signed by the master key; the sending time is the removed
// device's own. So whoever holds a removed device can, with the server's
// help (an honest server takes nothing from it once it is removed), have
// a message read as sent before the removal, until the grace ends.
const RemovedDeviceGrace = 7 * 24 * time.Hour

// RemovedDeviceSkew is how far the removed device's clock may be ahead of
// the managing device's: a message it says it sent up to this long after
// the removal (which is in whole seconds) counts as sent before it.
const RemovedDeviceSkew = 5 * time.Minute

// fromRemoved says why a message sent at sent from a device removed since
// is not read at now, or nil if it is.
func fromRemoved(r *proto.RemovedDevice, sent, now time.Time) error {
	at := time.Unix(r.At, 0)
	switch {
	case sent.After(at.Add(RemovedDeviceSkew)):
		return fmt.Errorf("removed from the list at %s, and this was sent after that (%s)", at.UTC().Format(time.RFC3339), sent.UTC().Format(time.RFC3339))
	case now.Sub(at) > RemovedDeviceGrace:
		return fmt.Errorf("removed from the list at %s: what it sent before is read for %d days after", at.UTC().Format(time.RFC3339), int(RemovedDeviceGrace.Hours()/24))
	}
	return nil
}
