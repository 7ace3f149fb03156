package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"securefastchat/proto"
)

// Config configures a Client.
type Config struct {
	// Addr is the server's host:port. Required.
	Addr string
	// Home is the client's home directory: pinned server keys, identity
	// keys and pinned contact keys. Required unless Storage is set.
	Home string
	// Storage keeps the home (storage.go). If nil, Dir(Home).
	Storage Storage
	// ServerKey, if set, is the fingerprint the server must present.
	ServerKey string
	// NoPinNew refuses a server whose key is not pinned yet.
	NoPinNew bool
	// KDF protects the identity file. If zero, DefaultKDF.
	KDF KDFParams
	// OutDir receives files. If empty, the current directory.
	OutDir string
	// Downloads is where received files are assembled and saved. If nil,
	// DownloadDir(OutDir).
	Downloads Downloads
	// DeviceName names this device in the account's device list when
	// this client makes the list. If empty, DefaultDeviceName.
	DeviceName string
	// MaxFileSize caps files sent and received. If zero, 100 MiB.
	MaxFileSize int64
	// Dial opens the byte stream. If nil, TCP.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// HoldOnKeyChange refuses to seal text or files for a user whose keys
	// changed until AcceptKeyChange (a *KeyChangeHeldError): for programs
	// that cannot hold a message themselves, as the chat does.
	HoldOnKeyChange bool
	// PingInterval is how often an idle connection is pinged. If zero,
	// 60 s; negative turns pings off.
	PingInterval time.Duration
	// Events is the capacity of the Events channel. If zero, 256.
	Events int
	// NoReconnect turns off reconnecting by itself when the connection
	// drops.
	NoReconnect bool
	// Invite is the invite code Signup presents, for servers that sign up
	// by invitation only.
	Invite string
	// DeliveryReceipts sends a delivery receipt to the sender of each
	// message handed to the application.
	DeliveryReceipts bool
	// ChangeGrace is how long after learning of a group's roster change a
	// message signed under the roster before it is still accepted from a
	// member the change removed. If zero, DefaultChangeGrace.
	ChangeGrace time.Duration
	// SendOnly logs in as a session that takes no deliveries
	// (proto.LoginNoDeliveries): nothing queued for the user is fetched,
	// acknowledged or lost by it, it does not replace the user's receiving
	// session elsewhere, and it does not show the user online. Commands
	// that only send or ask use it; Events then carries no messages.
	SendOnly bool
	// PerDevice asks, of a server of protocol version 6, what became of
	// each direct message sealed for devices on every device of its
	// receiver (Receipt.Devices).
	PerDevice bool
}

// loginFlags are the flags of this client's logins.
func (c *Config) loginFlags() uint8 {
	if c.SendOnly {
		return proto.LoginNoDeliveries
	}
	return 0
}

func (c *Config) setDefaults() error {
	if c.Addr == "" {
		return errors.New("client: no server address")
	}
	if c.Storage == nil {
		if c.Home == "" {
			return errors.New("client: no home directory")
		}
		c.Storage = Dir(c.Home)
	}
	if c.KDF == (KDFParams{}) {
		c.KDF = DefaultKDF
	}
	if c.OutDir == "" {
		c.OutDir = "."
	}
	if c.Downloads == nil {
		c.Downloads = DownloadDir(c.OutDir)
	}
	if c.MaxFileSize == 0 {
		c.MaxFileSize = 100 << 20
	}
	if c.PingInterval == 0 {
		c.PingInterval = time.Minute
	}
	if c.Events == 0 {
		c.Events = 256
	}
	if c.DeviceName == "" {
		c.DeviceName = DefaultDeviceName
	}
	if len(c.DeviceName) > proto.MaxDeviceName {
		return fmt.Errorf("client: a device name is at most %d bytes", proto.MaxDeviceName)
	}
	if c.ChangeGrace == 0 {
		c.ChangeGrace = DefaultChangeGrace
	}
	return nil
}

// UserDir returns the directory of a user's keys inside a home directory.
func UserDir(home, canonUser string) string { return filepath.Join(home, "users", canonUser) }

// IdentityPath returns where a user's identity key lives.
func IdentityPath(home, canonUser string) string {
	return filepath.Join(UserDir(home, canonUser), "identity")
}

// KnownServersPath returns the server pin file of a home directory.
func KnownServersPath(home string) string { return Dir(home).Where(knownServers) }

// The records of a home (Storage).
const knownServers = "known_servers"

// userRecord names one of a user's records in the home: identity,
// contacts, contacts.changed, session, seen.
func userRecord(canonUser, what string) string { return "users/" + canonUser + "/" + what }

// Receipt is the server's acknowledgement of a sent message: the receiver's
// client has it.
type Receipt struct {
	ServerID uint64
	Time     time.Time
	Status   uint8
	// Devices says, with Config.PerDevice, for a direct message sealed
	// for devices on a server of protocol version 6, what became of it on
	// each device of the receiver's list (proto.StatusDelivered,
	// StatusQueued, StatusRefused or StatusNotSent); Status is delivered if
	// one device has it. Otherwise it is nil.
	Devices []proto.DeviceStatus
}

func (cfg *Config) dialOptions() DialOptions {
	return DialOptions{Pins: cfg.Storage, ServerKey: cfg.ServerKey, NoPinNew: cfg.NoPinNew, Dial: cfg.Dial}
}

// FirstContact describes a server whose key was pinned for the first
// time.
type FirstContact struct {
	Addr        string
	Fingerprint string
	// Checked: the key matched the one given (Config.ServerKey).
	Checked bool
}

// FirstContact returns the server this Dial pinned for the first time,
// or nil if it was pinned before.
func (c *Conn) FirstContact() *FirstContact { return c.firstContact }

// PinServer connects to the server once, without logging in, so that its
// key is checked against the pin or, on a first contact, pinned: it then
// returns what was pinned, before any credential has gone to the server,
// so a program can show it. With Config.NoPinNew a new server is refused
// with an *UnknownServerError that carries its key: a program that asks
// its user calls PinServer again with Config.ServerKey set to the key the
// user accepted.
func PinServer(ctx context.Context, cfg Config) (*FirstContact, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	conn, err := Dial(ctx, cfg.Addr, cfg.dialOptions())
	if err != nil {
		return nil, err
	}
	return conn.FirstContact(), conn.Close()
}

// Signup asks for a new account on a fresh connection. keys must be the
// user's published keys (Identity.PublicKeys). Most callers want the
// package-level Signup, which also makes and saves the identity.
func (c *Conn) Signup(ctx context.Context, user, password string, keys proto.Keys) (*proto.LoginOK, error) {
	return c.SignupInvite(ctx, user, password, keys, "")
}

// SignupInvite is Signup with an invite code, for servers that sign up by
// invitation only ("" sends none).
func (c *Conn) SignupInvite(ctx context.Context, user, password string, keys proto.Keys, invite string) (*proto.LoginOK, error) {
	m := proto.Signup{User: []byte(user), Password: []byte(password), Keys: keys}
	if invite != "" {
		m.Invite = []byte(invite)
	}
	return loginRequest(ctx, c, func(b []byte, rid uint32) []byte { return m.Append(b, rid) })
}

// Login logs in on a fresh connection with a password, as a session that
// takes deliveries.
func (c *Conn) Login(ctx context.Context, user, password string) (*proto.LoginOK, error) {
	return c.LoginWith(ctx, user, password, 0)
}

// LoginWith is Login with login flags (proto.LoginNoDeliveries).
func (c *Conn) LoginWith(ctx context.Context, user, password string, flags uint8) (*proto.LoginOK, error) {
	m := proto.Login{User: []byte(user), Password: []byte(password), Flags: flags}
	return loginRequest(ctx, c, func(b []byte, rid uint32) []byte { return m.Append(b, rid) })
}

// LoginDevice logs in on a fresh connection with a device's own key
// instead of the password (protocol version 3): deviceID must be in the
// account's device list.
func (c *Conn) LoginDevice(ctx context.Context, user string, deviceID uint64, key ed25519.PrivateKey, flags uint8) (*proto.LoginOK, error) {
	m := proto.LoginDevice{User: []byte(user), DeviceID: deviceID, Flags: flags}
	m.Sign(key, c.sess.Binding())
	return loginRequest(ctx, c, func(b []byte, rid uint32) []byte { return m.Append(b, rid) })
}

// Resume logs in on a fresh connection with a session token, as a session
// that takes deliveries.
func (c *Conn) Resume(ctx context.Context, user string, token []byte) (*proto.LoginOK, error) {
	return c.ResumeWith(ctx, user, token, 0)
}

// ResumeWith is Resume with login flags (proto.LoginNoDeliveries).
func (c *Conn) ResumeWith(ctx context.Context, user string, token []byte, flags uint8) (*proto.LoginOK, error) {
	m := proto.Resume{User: []byte(user), Token: token, Flags: flags}
	return loginRequest(ctx, c, func(b []byte, rid uint32) []byte { return m.Append(b, rid) })
}

func loginRequest(ctx context.Context, conn *Conn, build func([]byte, uint32) []byte) (*proto.LoginOK, error) {
	t, body, err := conn.Request(ctx, build)
	if err := expect(t, proto.TLoginOK, err); err != nil {
		return nil, err
	}
	ok := new(proto.LoginOK)
	if err := ok.Parse(body); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return ok, nil
}

// User returns the canonical user name.
func (c *Client) User() string { return c.user }

// DuplicatesDropped returns how many received messages were repeats
// (redeliveries or resends) dropped before the application saw them.
func (c *Client) DuplicatesDropped() int64 {
	if c.recv == nil {
		return 0
	}
	return c.recv.dups.Load()
}

// Available reports whether a user name can be signed up.
func Available(ctx context.Context, cfg Config, user string) (bool, error) {
	if err := cfg.setDefaults(); err != nil {
		return false, err
	}
	conn, err := Dial(ctx, cfg.Addr, cfg.dialOptions())
	if err != nil {
		return false, err
	}
	defer conn.Close()
	return conn.available(ctx, user)
}

// available asks whether a user name can be signed up.
func (c *Conn) available(ctx context.Context, user string) (bool, error) {
	m := proto.UserReq{User: []byte(user)}
	t, body, err := c.Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, proto.TCheckUsername, id) })
	if err := expect(t, proto.TAvailable, err); err != nil {
		return false, err
	}
	var a proto.Available
	if err := a.Parse(body); err != nil {
		return false, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return a.Available, nil
}

// PeerKeys returns a user's verified keys. Keys are fetched from the
// server once per client, checked against their signature and against the
// pinned keys; a change posts EventKeyChange and re-pins.
func (c *Client) PeerKeys(ctx context.Context, user string) (*PeerKeys, error) {
	canon, err := proto.CanonicalUsername(user)
	if err != nil {
		return nil, &proto.RemoteError{Code: proto.CodeNoSuchRecipient, Message: err.Error()}
	}
	if k := c.contacts.fresh(canon); k != nil {
		return k, nil
	}
	m := proto.UserReq{User: []byte(canon)}
	t, body, err := c.s.request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, proto.TGetKeys, id) })
	if err := expect(t, proto.TKeys, err); err != nil {
		return nil, err
	}
	return c.acceptKeys(canon, body)
}

// acceptKeys checks a key record the server sent for canon (a Keys reply,
// or KeysChanged), makes it the session's keys for canon and pins it; a
// change from the pinned keys posts EventKeyChange.
func (c *Client) acceptKeys(canon string, body []byte) (*PeerKeys, error) {
	var r proto.KeysReply
	if err := r.Parse(body); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	if canon == "" {
		canon = string(r.User)
	}
	if string(r.User) != canon {
		return nil, fmt.Errorf("%w: asked for %s, got keys for %q", ErrPeerKey, canon, r.User)
	}
	if err := proto.VerifyKeys([]byte(canon), &r.Keys); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrPeerKey, canon, err)
	}
	box, _ := proto.ParsePublicKey(r.BoxKey)
	pk := &PeerKeys{User: canon, Box: box, Sign: append([]byte(nil), r.SignKey...), ID: proto.KeyRecordID(&r.Keys)}
	pk.shared = proto.SharedKey(&c.id.Box.Private, box)
	old, changed, err := c.contacts.pin(pk)
	if err != nil {
		return nil, err
	}
	if changed {
		// Another account by that name: its device chain is its own.
		c.devLists.drop(canon)
		if err := c.devHeads.forget(canon); err != nil {
			return nil, err
		}
		pk.Changed = true
		c.post(Event{Kind: EventKeyChange, User: canon, OldFingerprint: old, Fingerprint: pk.Fingerprint(), Time: time.Now()})
	}
	return pk, nil
}

// KeyChangeHeld reports whether user's keys changed since they were
// first pinned and the change was not accepted (AcceptKeyChange), with
// the fingerprint from before. Every program on the account sees it.
func (c *Client) KeyChangeHeld(user string) (oldFingerprint string, held bool) {
	return c.contacts.heldFor(user)
}

// AcceptKeyChange records that the user accepted user's current keys:
// messages to them are no longer held.
func (c *Client) AcceptKeyChange(user string) error {
	canon, err := proto.CanonicalUsername(user)
	if err != nil {
		return err
	}
	return c.contacts.accept(canon)
}

// MarkVerified records that the user verified user's keys of fingerprint
// (PeerKeys.Fingerprint), having compared safety numbers out of band. The
// mark holds while the keys pinned for user have that fingerprint, and
// goes to the account's new devices when they are linked.
func (c *Client) MarkVerified(user, fingerprint string) error {
	canon, err := proto.CanonicalUsername(user)
	if err != nil {
		return err
	}
	return c.contacts.markVerified(canon, fingerprint)
}

// VerifiedFingerprint returns the fingerprint of user's keys the user
// verified, or "" if none.
func (c *Client) VerifiedFingerprint(user string) string {
	canon, err := proto.CanonicalUsername(user)
	if err != nil {
		return ""
	}
	return c.contacts.verifiedFor(canon)
}

// VerifiedContacts returns each contact whose keys the user verified,
// with the fingerprint verified (a mark ends when the contact's keys
// change).
func (c *Client) VerifiedContacts() map[string]string { return c.contacts.verifiedAll() }

// Fingerprint returns the fingerprint of this account's published keys:
// the same on each of its devices.
func (c *Client) Fingerprint() string {
	return proto.Fingerprint(append(append([]byte(nil), c.acct.keys.BoxKey...), c.acct.keys.SignKey...))
}

// SendText seals text for user and sends it. It returns once the
// receiver's client has the message.
func (c *Client) SendText(ctx context.Context, to, text string) (*Receipt, error) {
	return c.sendBody(ctx, to, proto.KindText, []byte(text))
}

func (c *Client) sendBody(ctx context.Context, to string, kind uint8, body []byte) (*Receipt, error) {
	out, err := c.Prepare(ctx, to, kind, body)
	if err != nil {
		return nil, err
	}
	return c.Send(ctx, out)
}

// Outgoing is a message sealed for its receiver and not yet acknowledged.
// Sending it again sends the same bytes with the same msg_id, so the
// server and the receiver drop the repeat.
type Outgoing struct {
	To    string // canonical
	MsgID []byte
	Kind  uint8
	keyID uint64 // the receiver's key record it is sealed for
	body  []byte // sealed for the receiver's first device
	// Sealed for devices (devsealed.go): the inner plaintext, kept to seal
	// for devices should the lists call for it; its key and payload, made
	// once; and the wraps for the lists it was last sealed for. copies is
	// nil while the message goes in the form for the first device.
	inner   []byte
	key     *proto.MessageKey
	payload []byte
	copies  []proto.DeviceCopy
	own     []proto.DeviceCopy
}

// Prepare seals body for user (a proto.Kind* message).
func (c *Client) Prepare(ctx context.Context, to string, kind uint8, body []byte) (*Outgoing, error) {
	return c.prepare(ctx, to, kind, kind, body)
}

// PrepareAs is Prepare with the message id chosen by the caller: an
// application that keeps what was typed until it is sent (across restarts)
// sends it with the same id every time, so the server and the receiver
// keep one copy.
func (c *Client) PrepareAs(ctx context.Context, to string, kind uint8, body []byte, id [proto.MsgIDLen]byte) (*Outgoing, error) {
	return c.prepareAs(ctx, to, kind, kind, body, id[:])
}

// prepare seals an inner of innerKind in an envelope of kind.
func (c *Client) prepare(ctx context.Context, to string, kind, innerKind uint8, body []byte) (*Outgoing, error) {
	msgID := make([]byte, proto.MsgIDLen)
	if _, err := rand.Read(msgID); err != nil {
		return nil, err
	}
	return c.prepareAs(ctx, to, kind, innerKind, body, msgID)
}

func (c *Client) prepareAs(ctx context.Context, to string, kind, innerKind uint8, body, msgID []byte) (*Outgoing, error) {
	pk, err := c.PeerKeys(ctx, to)
	if err != nil {
		return nil, err
	}
	if c.cfg.HoldOnKeyChange && (innerKind == proto.KindText || innerKind == proto.KindFile) {
		if old, held := c.contacts.heldFor(pk.User); held {
			return nil, &KeyChangeHeldError{User: pk.User, Old: old, New: pk.Fingerprint()}
		}
	}
	in := proto.Inner{Kind: innerKind, From: []byte(c.user), To: []byte(pk.User), MsgID: msgID, SentAt: time.Now().UnixNano(), Body: body}
	plain, err := in.Append(nil)
	if err != nil {
		return nil, err
	}
	out := &Outgoing{To: pk.User, MsgID: msgID, Kind: kind, keyID: pk.ID, inner: plain}
	toList, own, err := c.deviceForm(ctx, pk, false)
	if err != nil {
		return nil, err
	}
	if toList != nil {
		return out, c.sealForDevices(out, toList, own)
	}
	if c.acct.linked {
		return nil, fmt.Errorf("client: %s has no device list yet (their program is older), so only your first device can write to them", pk.User)
	}
	out.body, err = proto.SealBody(nil, plain, pk.shared, nil)
	return out, err
}

// Send sends a prepared message and waits for the server's Sent: the
// receiver's client has it, or the server has stored it on disk. If the
// connection drops first, it waits for the client to reconnect and sends
// the same message again, until ctx ends.
//
// If the receiver's keys are no longer those it was sealed for (they
// signed up again, or someone stands in between), nothing is sent: the new
// keys are checked and pinned (a change posts EventKeyChange) and Send
// returns a *KeysChangedError; Prepare it again to seal for the new keys.
//
// If the receiver's devices, or the sender's, are not those it was
// sealed for (one was added or removed), it reads the lists again, seals
// for them and sends again.
func (c *Client) Send(ctx context.Context, out *Outgoing) (*Receipt, error) {
	for try := 1; ; try++ {
		var build func(b []byte, id uint32) []byte
		if out.copies != nil {
			m := proto.SendDMDevices{To: []byte(out.To), MsgID: out.MsgID, Kind: out.Kind, Copies: out.copies, Own: out.own, Payload: out.payload,
				Detail: c.cfg.PerDevice}
			if m.Detail {
				if conn := c.Conn(); conn != nil && conn.Version() < 6 {
					m.Detail = false // (a server before version 6 is told nothing new)
				}
			}
			build = func(b []byte, id uint32) []byte { return m.Append(b, id) }
		} else {
			m := proto.SendDM{To: []byte(out.To), KeyID: out.keyID, MsgID: out.MsgID, Kind: out.Kind, Body: out.body}
			build = func(b []byte, id uint32) []byte { return m.Append(b, id) }
		}
		r, err := c.sendRequest(ctx, build)
		var mm *devicesMismatchError
		if errors.As(err, &mm) && try < sendTries {
			if err := c.resealAfterMismatch(ctx, out, mm); err != nil {
				return nil, err
			}
			continue
		}
		if err == nil {
			c.noteRequest(out.To, false) // writing to them accepts them
		}
		return r, err
	}
}

// sendRequest sends a message request and waits for its Sent, sending the
// same bytes again after a reconnect if the connection drops first.
func (c *Client) sendRequest(ctx context.Context, build func(b []byte, id uint32) []byte) (*Receipt, error) {
	t, rb, err := c.s.request(ctx, build)
	if err == nil && t == proto.TDevicesMismatch {
		return nil, parseMismatch(rb)
	}
	if err == nil && t == proto.TKeysChanged {
		pk, kerr := c.acceptKeys("", rb)
		if kerr != nil {
			return nil, kerr
		}
		return nil, &KeysChangedError{User: pk.User, Fingerprint: pk.Fingerprint()}
	}
	if err != nil {
		return nil, err
	}
	s, err := proto.ParseSent(t, rb)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return &Receipt{ServerID: s.ServerID, Time: time.UnixMilli(s.Time), Status: s.Status, Devices: s.Devices}, nil
}

// MaxTextLen is the longest text one message can carry for this pair of
// users.
func MaxTextLen(from, to string) int { return proto.MaxInnerBody([]byte(from), []byte(to)) }
