package client

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"time"

	"securefastchat/proto"
	"securefastchat/termtext"
)

// An account's devices are a chain of statements signed by its master key
// (proto.DeviceStatement): the sign key of the account's identity, made on
// its first device. The server keeps the chain; this client checks every
// chain it reads against the master key it pinned, and remembers the
// head it last saw of each account (the "devices" record, sealed: lines
// "user seq hex(hash)"), so a server that adds a device by itself, drops
// a statement, or shows a different history (a fork) is caught.
//
// An account made before devices has no chain: its client makes the
// first statement (its identity becomes its master key and first device)
// on its first connection to a server that keeps chains (version 3).

// Errors of device chains.
var (
	// ErrDeviceChain: the chain the server sent is not signed by the
	// account's master key or does not follow the rules; nothing of it
	// is trusted.
	ErrDeviceChain = errors.New("client: the server's device list for this account is not signed by its master key")
	// ErrDeviceChainForked: the chain differs from the one this client
	// saw before (a statement dropped, or another history).
	ErrDeviceChainForked = errors.New("client: the server shows a device list that does not continue the one seen before")
	// ErrNoDeviceChain: the account has no device list yet (its client
	// makes it on its next connection).
	ErrNoDeviceChain = errors.New("client: the account has no device list yet")
	// ErrNoDevices: the server is older than device lists.
	ErrNoDevices = errors.New("client: the server does not keep device lists (protocol version 3); upgrade it")
)

// DefaultDeviceName names a device whose program gave it no name.
const DefaultDeviceName = "first device"

// deviceHeads remembers the last head seen of each account's device chain.
// Owner: the Client; mu guards m and the record.
type deviceHeads struct {
	st   Storage
	name string
	key  *[32]byte

	mu     sync.Mutex
	m      map[string]deviceHead
	loaded bool
}

type deviceHead struct {
	seq  uint32
	hash [32]byte
}

// devicesMagic: the devices record has been sealed since its first version.
const devicesMagic = "SFCDEV1"

func (h *deviceHeads) loadLocked() error {
	if h.loaded {
		return nil
	}
	h.m = map[string]deviceHead{}
	b, _, err := readSealed(h.st, h.key, devicesMagic, h.name)
	if errors.Is(err, fs.ErrNotExist) {
		h.loaded = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("client: reading the device heads: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		seq, err1 := strconv.ParseUint(f[1], 10, 32)
		raw, err2 := hex.DecodeString(f[2])
		if err1 != nil || err2 != nil || len(raw) != 32 {
			continue
		}
		h.m[f[0]] = deviceHead{seq: uint32(seq), hash: [32]byte(raw)}
	}
	h.loaded = true
	return nil
}

// forget drops what was seen of user's chain: the account was made again
// (a new master key), and its new chain starts afresh.
func (h *deviceHeads) forget(user string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.loadLocked(); err != nil {
		return err
	}
	if _, ok := h.m[user]; !ok {
		return nil
	}
	delete(h.m, user)
	return h.writeLocked()
}

func (h *deviceHeads) writeLocked() error {
	var b strings.Builder
	for u, hd := range h.m {
		fmt.Fprintf(&b, "%s %d %x\n", u, hd.seq, hd.hash)
	}
	return writeSealed(h.st, h.key, devicesMagic, h.name, []byte(b.String()))
}

// has reports whether a head of user's chain was seen.
func (h *deviceHeads) has(user string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.loadLocked() != nil {
		return false
	}
	_, ok := h.m[user]
	return ok
}

// check reports whether list continues what was seen of user's chain
// (chain holds every statement), remembers its head, and returns the
// statements new since the head seen before (all, if none was seen).
func (h *deviceHeads) check(user string, chain []*proto.DeviceStatement, list *proto.DeviceList) ([]*proto.DeviceStatement, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.loadLocked(); err != nil {
		return nil, err
	}
	news := chain
	if seen, ok := h.m[user]; ok {
		if int(seen.seq) >= len(chain) || chain[seen.seq].Hash() != seen.hash {
			return nil, fmt.Errorf("%w: %s's list had statement %d before, which the server no longer shows as it was; do not trust its devices, and tell your server's operator",
				ErrDeviceChainForked, user, seen.seq)
		}
		if seen.seq == list.Seq {
			return nil, nil
		}
		news = chain[seen.seq+1:]
	}
	h.m[user] = deviceHead{seq: list.Seq, hash: list.Last}
	return news, h.writeLocked()
}

// Devices returns user's devices as the account's chain proves them,
// checked against the master key this client pinned for the account
// (its own for the user itself) and against the chain it saw before. What
// changed in a contact's list since this client last saw it is posted as
// EventDevice. For the user itself, a chain is made first if the account
// has none.
func (c *Client) Devices(ctx context.Context, user string) (*proto.DeviceList, error) {
	canon, err := proto.CanonicalUsername(user)
	if err != nil {
		return nil, &proto.RemoteError{Code: proto.CodeNoSuchRecipient, Message: err.Error()}
	}
	if canon == c.user {
		return c.ensureDevices(ctx)
	}
	seen := c.devHeads.has(canon)
	list, news, err := c.contactDevices(ctx, canon)
	if seen {
		c.postDeviceNews(canon, news)
	}
	return list, err
}

// devicesChanged checks a contact's device list the server says grew, and
// posts what changed since this client last saw it (the last statement,
// if it had not seen the list before).
func (c *Client) devicesChanged(user string) error {
	if user == c.user {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seen := c.devHeads.has(user)
	_, news, err := c.contactDevices(ctx, user)
	if !seen && len(news) > 0 {
		news = news[len(news)-1:]
	}
	c.postDeviceNews(user, news)
	return err
}

func (c *Client) postDeviceNews(user string, news []*proto.DeviceStatement) {
	for _, st := range news {
		c.post(Event{Kind: EventDevice, User: user, Op: st.Op, Text: string(st.Name), Time: time.Unix(st.Time, 0)})
	}
}

// contactDevices checks another account's chain against the master key
// pinned for it.
func (c *Client) contactDevices(ctx context.Context, canon string) (*proto.DeviceList, []*proto.DeviceStatement, error) {
	pk, err := c.PeerKeys(ctx, canon)
	if err != nil {
		return nil, nil, err
	}
	return c.deviceList(ctx, canon, ed25519.PublicKey(pk.Sign))
}

// deviceList fetches and checks an account's chain, and returns with it
// the statements new since this client last saw it (every one, the first
// time).
func (c *Client) deviceList(ctx context.Context, canon string, master ed25519.PublicKey) (*proto.DeviceList, []*proto.DeviceStatement, error) {
	chain, err := c.fetchDeviceChain(ctx, canon)
	if err != nil {
		return nil, nil, err
	}
	if len(chain) == 0 {
		return nil, nil, fmt.Errorf("%w: %s's client makes it on its next connection", ErrNoDeviceChain, canon)
	}
	list, err := proto.ReplayDevices(chain, master)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (%s): %v", ErrDeviceChain, canon, err)
	}
	news, err := c.devHeads.check(canon, chain, list)
	if err != nil {
		return nil, nil, err
	}
	c.devLists.put(canon, list)
	return list, news, nil
}

func (c *Client) fetchDeviceChain(ctx context.Context, canon string) ([]*proto.DeviceStatement, error) {
	var chain []*proto.DeviceStatement
	for from := uint32(0); ; {
		conn, err := c.s.liveConn(ctx)
		if err != nil {
			return nil, err
		}
		if conn.Version() < 3 {
			return nil, ErrNoDevices
		}
		m := proto.DeviceReq{User: []byte(canon), Seq: from}
		t, body, err := c.s.request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, proto.TDeviceChain, id) })
		if err := expect(t, proto.TDeviceChainReply, err); err != nil {
			return nil, err
		}
		var r proto.DeviceChainReply
		if err := r.Parse(body); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		if string(r.User) != canon {
			return nil, fmt.Errorf("%w: asked for %s's devices, got %q's", ErrProtocol, canon, r.User)
		}
		for _, raw := range r.Statements {
			var st proto.DeviceStatement
			if err := st.Parse(raw); err != nil {
				return nil, fmt.Errorf("%w (%s): %v", ErrDeviceChain, canon, err)
			}
			if st.Seq != uint32(len(chain)) || st.Seq >= proto.MaxDeviceStatements {
				return nil, fmt.Errorf("%w (%s): statement %d where %d belongs", ErrDeviceChain, canon, st.Seq, len(chain))
			}
			chain = append(chain, &st)
		}
		if !r.More || len(r.Statements) == 0 {
			return chain, nil
		}
		from = uint32(len(chain))
	}
}

// ensureDevices returns this account's devices, making its chain first if
// it has none: its identity becomes its master key and first device.
func (c *Client) ensureDevices(ctx context.Context) (*proto.DeviceList, error) {
	c.devMu.Lock()
	defer c.devMu.Unlock()
	master := c.acct.master()
	list, _, err := c.deviceList(ctx, c.user, master)
	if !errors.Is(err, ErrNoDeviceChain) || c.acct.masterKey == nil {
		return list, err
	}
	keys := c.id.PublicKeys(c.user)
	st := &proto.DeviceStatement{User: []byte(c.user), Op: proto.DeviceAdd, DeviceID: proto.KeyRecordID(&keys),
		Name: []byte(c.cfg.DeviceName), BoxKey: keys.BoxKey, SignKey: keys.SignKey, Time: time.Now().Unix()}
	st.Sign(c.acct.masterKey)
	m := proto.DeviceAppend{Statement: st.Append(nil)}
	t, _, err := c.s.request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
	if err := expect(t, proto.TOK, err); err != nil && !errors.Is(err, proto.CodeStaleDevices) {
		return nil, fmt.Errorf("client: making the device list: %w", err)
	}
	list, _, err = c.deviceList(ctx, c.user, master)
	return list, err
}

// makeDevicesOnConnect makes the account's chain, if it has none, once a
// connection to a server that keeps chains is up (an account from before
// devices, or a sign-up). A failure is tried again on the next connection.
func (c *Client) makeDevicesOnConnect(conn *Conn) {
	if conn.Version() < 3 || c.devicesMade.Load() || c.devHeads.has(c.user) {
		return
	}
	c.onConnectTask(func(ctx context.Context) {
		if _, err := c.ensureDevices(ctx); err == nil {
			c.devicesMade.Store(true)
		}
	})
}

// onConnectTask runs fn in a tracked goroutine with a context that ends
// after 30 seconds or when the client closes.
func (c *Client) onConnectTask(fn func(ctx context.Context)) {
	c.goTracked(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		go func() {
			select {
			case <-c.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		fn(ctx)
	})
}

// checkSilentDevices tells the application, once per device, of this
// account's other devices that have not logged in for long
// (EventDeviceSilent): within a week of being sent nothing more, or past
// it. Only the device that manages the list, which can remove them,
// asks.
func (c *Client) checkSilentDevices(conn *Conn) {
	if conn.Version() < 3 {
		return
	}
	c.onConnectTask(func(ctx context.Context) {
		self, _, ok := c.thisDevice()
		if !ok {
			return
		}
		list, err := c.Devices(ctx, c.user)
		if err != nil || !c.manages(list) {
			return
		}
		idle, err := c.DevicesSeen(ctx)
		if err != nil {
			return
		}
		for _, d := range list.Devices {
			since, known := idle[d.ID]
			if d.ID == self || !known || since < proto.DeviceSilentAfter-proto.DeviceSilentWarning {
				continue
			}
			c.silentMu.Lock()
			told := c.silentTold[d.ID]
			if c.silentTold == nil {
				c.silentTold = map[uint64]bool{}
			}
			c.silentTold[d.ID] = true
			c.silentMu.Unlock()
			if !told {
				c.post(Event{Kind: EventDeviceSilent, User: c.user, Text: d.Name, Idle: since})
			}
		}
	})
}

// thisDevice returns this device's id and sign key once the account's
// device list is known to hold it (this client made or checked it).
func (c *Client) thisDevice() (uint64, ed25519.PrivateKey, bool) {
	if !c.acct.linked && !c.devicesMade.Load() && !c.devHeads.has(c.user) {
		return 0, nil, false
	}
	keys := c.id.PublicKeys(c.user)
	return proto.KeyRecordID(&keys), c.id.Sign, true
}

// DevicesSeen returns how long ago each device of this account last
// logged in (or was added, if it has not logged in since), by the
// server's clock.
func (c *Client) DevicesSeen(ctx context.Context) (map[uint64]time.Duration, error) {
	t, body, err := c.s.request(ctx, func(b []byte, id uint32) []byte { return proto.AppendEmpty(b, proto.TDeviceSeen, id) })
	if err := expect(t, proto.TDeviceSeenReply, err); err != nil {
		return nil, err
	}
	var m proto.DeviceSeenReply
	if err := m.Parse(body); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	out := make(map[uint64]time.Duration, len(m.Devices))
	for _, d := range m.Devices {
		out[d.DeviceID] = time.Duration(d.Idle) * time.Second
	}
	return out, nil
}

// RemoveDevice removes one of this account's devices, named by its name
// or its id (hex), with a statement signed by the master key: the device's
// sessions end at once and nothing more is sent to it. Then every group
// the user is in gets a new key epoch, which the removed device does not
// get. Only the device holding the master key (the account's first)
// removes devices, and not itself. If the device was removed but a group
// could not be rekeyed, it returns the device and an error naming the
// groups (ErrRekeyAfterRemove).
func (c *Client) RemoveDevice(ctx context.Context, which string) (*proto.Device, error) {
	d, err := c.removeDevice(ctx, which)
	if err != nil {
		return nil, err
	}
	c.devLists.drop(c.user)
	if err := c.rekeyGroups(ctx); err != nil {
		return d, fmt.Errorf("%w (the server takes no message under their old keys; rekey them with 'securefastchat group rekey'): %w", ErrRekeyAfterRemove, err)
	}
	return d, nil
}

// rekeyGroups makes a new key epoch in every group the user is in, for
// the members' devices as their lists stand.
func (c *Client) rekeyGroups(ctx context.Context) error {
	groups, err := c.Groups(ctx)
	if err != nil {
		return fmt.Errorf("listing your groups: %w", err)
	}
	var failed []error
	for _, g := range groups {
		if err := c.Rekey(ctx, g); err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", g, err))
		}
	}
	return errors.Join(failed...)
}

// ErrRekeyAfterRemove: a device was removed, and some of the user's groups
// still have a key epoch made before.
var ErrRekeyAfterRemove = errors.New("client: the device is removed, but not every group has a new key")

func (c *Client) removeDevice(ctx context.Context, which string) (*proto.Device, error) {
	c.devMu.Lock()
	defer c.devMu.Unlock()
	if c.acct.masterKey == nil {
		return nil, ErrNotManaging
	}
	master := c.acct.master()
	self := c.selfDevice()
	for attempt := 0; ; attempt++ {
		list, _, err := c.deviceList(ctx, c.user, master)
		if err != nil {
			return nil, err
		}
		if list.Index(self) < 0 {
			return nil, ErrNotManaging
		}
		var found []proto.Device
		for _, d := range list.Devices {
			if d.Name == which || fmt.Sprintf("%016x", d.ID) == strings.ToLower(which) {
				found = append(found, d)
			}
		}
		switch {
		case len(found) == 0:
			return nil, fmt.Errorf("client: %s has no device %q (see 'device list')", c.user, which)
		case len(found) > 1:
			return nil, fmt.Errorf("client: %d devices are named %q: name one by its id (see 'device list')", len(found), which)
		case found[0].ID == self:
			return nil, fmt.Errorf("client: this is the device that manages %s's devices; it cannot remove itself", c.user)
		}
		d := found[0]
		st := &proto.DeviceStatement{User: []byte(c.user), Seq: list.Seq + 1, Prev: list.Last, Op: proto.DeviceRemove, DeviceID: d.ID,
			Name: []byte(d.Name), BoxKey: d.BoxKey.Bytes(), SignKey: d.SignKey, Time: time.Now().Unix()}
		st.Sign(c.acct.masterKey)
		m := proto.DeviceAppend{Statement: st.Append(nil)}
		t, _, err := c.s.request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
		err = expect(t, proto.TOK, err)
		if err == nil {
			return &d, nil
		}
		if !errors.Is(err, proto.CodeStaleDevices) || attempt == 2 {
			return nil, fmt.Errorf("client: removing the device: %w", err)
		}
	}
}

// DeviceSilence says, for its user, how long ago their device name last
// logged in and what follows from it (a device silent for
// proto.DeviceSilentAfter is sent nothing more).
func DeviceSilence(name string, d time.Duration) string {
	days := int(d / (24 * time.Hour))
	switch {
	case d >= proto.DeviceSilentAfter:
		return fmt.Sprintf("silent for %d days: nothing more is sent to it until it logs in; remove it with 'securefastchat device remove %s'", days, termtext.Line(name))
	case d >= proto.DeviceSilentAfter-proto.DeviceSilentWarning:
		left := int((proto.DeviceSilentAfter - d + 24*time.Hour - 1) / (24 * time.Hour))
		return fmt.Sprintf("silent for %d days: log in on it within %d days, or nothing more is sent to it", days, left)
	case days == 0:
		return "seen today"
	}
	return fmt.Sprintf("last seen %d days ago", days)
}
