package proto

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// An account's devices are client-authoritative, like a group's roster:
// every change is a DeviceStatement signed by the account's master key
// (the sign key of the account's key record, made on its first device),
// and the statements form a hash chain per account. A client replays the
// chain with DeviceList.Apply and trusts no device the server did not
// prove with it, so a server cannot add a device by itself.
//
//	device statement = version u8 (1) | user str8 | seq u32 | prev 32
//	                   | op u8 | device_id u64 | name str8 | box_key 32
//	                   | sign_key 32 | time i64 (unix seconds) | sig 64
//
// prev is the SHA-256 of the previous statement's bytes (zero for seq 0).
// device_id is KeyRecordID of the device's box and sign keys. time is the
// signer's clock when it signed. sig is Ed25519 by the master key over
// DeviceSigContext and every byte before sig. A remove names the device by
// its id and repeats its keys.
const (
	DeviceStatementVersion = 1
	DeviceSigContext       = "securefastchat v1 device statement"
	// MaxDevices is how many devices an account may have at once.
	MaxDevices = 10
	// MaxDeviceName is the longest device name, in bytes.
	MaxDeviceName = 64
	// MaxDeviceStatements bounds an account's device chain (adds and
	// removes over its life).
	MaxDeviceStatements = 1000
	// DeviceSilentAfter is how long a device may go without logging in
	// before nothing more is sent to it (while another device of its
	// account has logged in since): its user is asked to remove it.
	// DeviceSilentWarning before that, its user is warned.
	DeviceSilentAfter   = 30 * 24 * time.Hour
	DeviceSilentWarning = 7 * 24 * time.Hour
)

// Device operations.
const (
	DeviceAdd    uint8 = 1
	DeviceRemove uint8 = 2
)

// Device chain errors. ErrBadChain and ErrBadSignature (group.go) serve
// both chains.
var (
	ErrBadDeviceStatement = errors.New("proto: malformed device statement")
	ErrTooManyDevices     = fmt.Errorf("proto: an account has at most %d devices", MaxDevices)
	ErrDeviceNotAllowed   = errors.New("proto: device statement not allowed by the device list")
)

// DeviceStatement is one signed change to an account's devices.
type DeviceStatement struct {
	User     []byte
	Seq      uint32
	Prev     [32]byte
	Op       uint8
	DeviceID uint64
	Name     []byte
	BoxKey   []byte // 32
	SignKey  []byte // 32
	Time     int64
	Sig      []byte // 64
}

func (s *DeviceStatement) appendUnsigned(b []byte) []byte {
	b = appendStr8(append(b, DeviceStatementVersion), s.User)
	b = binary.BigEndian.AppendUint32(b, s.Seq)
	b = append(append(b, s.Prev[:]...), s.Op)
	b = binary.BigEndian.AppendUint64(b, s.DeviceID)
	b = appendStr8(b, s.Name)
	b = append(append(b, s.BoxKey...), s.SignKey...)
	return binary.BigEndian.AppendUint64(b, uint64(s.Time))
}

func (s *DeviceStatement) signedBytes() []byte {
	return s.appendUnsigned([]byte(DeviceSigContext))
}

// Append appends the statement (signature included) to b.
func (s *DeviceStatement) Append(b []byte) []byte { return append(s.appendUnsigned(b), s.Sig...) }

// Hash is the SHA-256 of the statement's bytes, the next statement's prev.
func (s *DeviceStatement) Hash() [32]byte { return sha256.Sum256(s.Append(nil)) }

// Sign signs the statement with the account's master key.
func (s *DeviceStatement) Sign(master ed25519.PrivateKey) {
	s.Sig = ed25519.Sign(master, s.signedBytes())
}

// Verify reports whether master signed the statement.
func (s *DeviceStatement) Verify(master ed25519.PublicKey) bool {
	return len(master) == ed25519.PublicKeySize && ed25519.Verify(master, s.signedBytes(), s.Sig)
}

// Parse decodes a statement.
func (s *DeviceStatement) Parse(b []byte) error {
	d := dec{b: b}
	if v := d.u8(); d.err == nil && v != DeviceStatementVersion {
		return fmt.Errorf("%w: version %d", ErrBadDeviceStatement, v)
	}
	s.User, s.Seq = d.str8(), d.u32()
	copy(s.Prev[:], d.fixed(32))
	s.Op, s.DeviceID, s.Name = d.u8(), d.u64(), d.str8()
	s.BoxKey, s.SignKey = d.fixed(KeyLen), d.fixed(ed25519.PublicKeySize)
	s.Time = int64(d.u64())
	s.Sig = d.fixed(ed25519.SignatureSize)
	if err := d.done(); err != nil {
		return fmt.Errorf("%w: %v", ErrBadDeviceStatement, err)
	}
	if !ValidUsername(s.User) || (s.Op != DeviceAdd && s.Op != DeviceRemove) || len(s.Name) > MaxDeviceName {
		return fmt.Errorf("%w: user, op or name", ErrBadDeviceStatement)
	}
	return nil
}

// Device is one device of an account.
type Device struct {
	ID      uint64
	Name    string
	BoxKey  PublicKey
	SignKey ed25519.PublicKey
	Added   int64 // unix seconds, by the signer's clock
}

// DeviceList is an account's devices as its chain proves them.
type DeviceList struct {
	User    string
	Seq     uint32
	Last    [32]byte // hash of the last statement
	Devices []Device // in the order they were added
	// Removed are the devices the chain removed, the newest
	// MaxRemembered, in the order they were removed: what one sent before
	// its removal may still be waiting for a receiver.
	Removed []RemovedDevice
}

// RemovedDevice is a device a chain removed, and when.
type RemovedDevice struct {
	Device
	At int64 // unix seconds: the remove statement's time, by the signer's clock
}

// MaxRemembered is how many removed devices a list remembers.
const MaxRemembered = 4 * MaxDevices

// RemovedDevice returns a device the chain removed, or nil; a device
// removed more than once is its last removal.
func (l *DeviceList) RemovedDevice(id uint64) *RemovedDevice {
	for i := len(l.Removed) - 1; i >= 0; i-- {
		if l.Removed[i].ID == id {
			return &l.Removed[i]
		}
	}
	return nil
}

// Index returns the position of a device, or -1.
func (l *DeviceList) Index(id uint64) int {
	for i, d := range l.Devices {
		if d.ID == id {
			return i
		}
	}
	return -1
}

// Apply checks a statement against the list (chain, rules, signature by
// master) and returns the list after it; l is nil before the first. On
// error l is unchanged.
func (l *DeviceList) Apply(s *DeviceStatement, master ed25519.PublicKey) (*DeviceList, error) {
	next := &DeviceList{User: string(s.User)}
	if l == nil {
		if s.Seq != 0 || s.Prev != ([32]byte{}) || s.Op != DeviceAdd {
			return nil, fmt.Errorf("%w: a device chain starts with its first device's add", ErrBadChain)
		}
	} else {
		if string(s.User) != l.User || s.Seq != l.Seq+1 || s.Prev != l.Last {
			return nil, fmt.Errorf("%w: device statement %d after %d", ErrBadChain, s.Seq, l.Seq)
		}
		next.Devices = append([]Device(nil), l.Devices...)
		next.Removed = append([]RemovedDevice(nil), l.Removed...)
	}
	box, err := ParsePublicKey(s.BoxKey)
	if err != nil || len(s.SignKey) != ed25519.PublicKeySize || KeyRecordID(&Keys{BoxKey: s.BoxKey, SignKey: s.SignKey}) != s.DeviceID {
		return nil, fmt.Errorf("%w: the device's keys or id", ErrBadDeviceStatement)
	}
	i := next.Index(s.DeviceID)
	switch s.Op {
	case DeviceAdd:
		if i >= 0 {
			return nil, fmt.Errorf("%w: device %016x is there already", ErrDeviceNotAllowed, s.DeviceID)
		}
		if len(next.Devices) >= MaxDevices {
			return nil, ErrTooManyDevices
		}
		next.Devices = append(next.Devices, Device{ID: s.DeviceID, Name: string(s.Name), BoxKey: box,
			SignKey: ed25519.PublicKey(append([]byte(nil), s.SignKey...)), Added: s.Time})
	case DeviceRemove:
		if i < 0 || !next.Devices[i].BoxKey.Equal(box) || string(next.Devices[i].SignKey) != string(s.SignKey) {
			return nil, fmt.Errorf("%w: no device %016x with those keys", ErrDeviceNotAllowed, s.DeviceID)
		}
		if len(next.Devices) == 1 {
			return nil, fmt.Errorf("%w: the last device stays (reset the account to start again)", ErrDeviceNotAllowed)
		}
		next.Removed = append(next.Removed, RemovedDevice{Device: next.Devices[i], At: s.Time})
		if len(next.Removed) > MaxRemembered {
			next.Removed = next.Removed[len(next.Removed)-MaxRemembered:]
		}
		next.Devices = append(next.Devices[:i], next.Devices[i+1:]...)
	}
	if !s.Verify(master) {
		return nil, fmt.Errorf("%w: device statement %d is not signed by %s's master key", ErrBadSignature, s.Seq, s.User)
	}
	next.Seq, next.Last = s.Seq, s.Hash()
	return next, nil
}

// ReplayDevices applies a whole chain from its first statement.
func ReplayDevices(chain []*DeviceStatement, master ed25519.PublicKey) (*DeviceList, error) {
	var l *DeviceList
	for i, s := range chain {
		next, err := l.Apply(s, master)
		if err != nil {
			return nil, fmt.Errorf("device statement %d: %w", i, err)
		}
		l = next
	}
	if l == nil {
		return nil, fmt.Errorf("%w: empty device chain", ErrBadChain)
	}
	return l, nil
}

// Device chain messages (version 3).
const (
	TDeviceChain      MsgType = 0x18 // user str8 | from u32 (version 3)
	TDeviceAppend     MsgType = 0x19 // statement str16 (version 3)
	TDeviceChainReply MsgType = 0x96 // user str8 | more u8 | count u16 | statement str16 x count (version 3)
)

// DeviceReq names an account and a seq in its device list: a request for
// the statements from Seq on (TDeviceChain), or the news that the list has
// statement Seq (TDevicesChanged).
type DeviceReq struct {
	User []byte
	Seq  uint32
}

// Append appends the message with type t (TDeviceChain or
// TDevicesChanged).
func (m *DeviceReq) Append(b []byte, t MsgType, id uint32) []byte {
	return binary.BigEndian.AppendUint32(appendStr8(AppendHeader(b, t, id), m.User), m.Seq)
}

// Parse decodes a body.
func (m *DeviceReq) Parse(body []byte) error {
	d := dec{b: body}
	m.User, m.Seq = d.str8(), d.u32()
	return d.done()
}

// DeviceAppend adds a signed statement to the requester's own device chain.
type DeviceAppend struct{ Statement []byte }

// Append appends the message to b.
func (m *DeviceAppend) Append(b []byte, id uint32) []byte {
	return appendStr16(AppendHeader(b, TDeviceAppend, id), m.Statement)
}

// Parse decodes a body.
func (m *DeviceAppend) Parse(body []byte) error {
	d := dec{b: body}
	m.Statement = d.str16()
	return d.done()
}

// DeviceChainReply carries device statements in order; More says the
// requester should ask again from the next seq.
type DeviceChainReply struct {
	User       []byte
	More       bool
	Statements [][]byte
}

// Append appends the message to b.
func (m *DeviceChainReply) Append(b []byte, id uint32) []byte {
	return appendChainPage(AppendHeader(b, TDeviceChainReply, id), m.User, m.More, m.Statements)
}

// Parse decodes a body.
func (m *DeviceChainReply) Parse(body []byte) error {
	var err error
	m.User, m.More, m.Statements, err = parseChainPage(&dec{b: body})
	return err
}

// TLoginDevice logs a device in with its own key instead of the password
// (version 3): the server finds the device in the account's device list
// and checks the signature with the device's sign key.
const TLoginDevice MsgType = 0x09 // user str8 | device_id u64 | flags u8 | sig 64 (version 3)

// DeviceLoginContext starts what a device signs to log in.
const DeviceLoginContext = "securefastchat v3 device login"

// LoginDevice is a device's login. Sig is Ed25519 by the device's sign key
// over DeviceLoginContext, the connection's binding (Session.Binding) and
// every field before sig, so it is good on this connection only.
type LoginDevice struct {
	User     []byte
	DeviceID uint64
	Flags    uint8
	Sig      []byte // 64
}

func (m *LoginDevice) signedBytes(binding [32]byte) []byte {
	b := append([]byte(DeviceLoginContext), binding[:]...)
	b = binary.BigEndian.AppendUint64(appendStr8(b, m.User), m.DeviceID)
	return append(b, m.Flags)
}

// Sign signs the login for the connection whose binding is given.
func (m *LoginDevice) Sign(device ed25519.PrivateKey, binding [32]byte) {
	m.Sig = ed25519.Sign(device, m.signedBytes(binding))
}

// Verify checks the signature with the device's sign key.
func (m *LoginDevice) Verify(device ed25519.PublicKey, binding [32]byte) bool {
	return len(device) == ed25519.PublicKeySize && ed25519.Verify(device, m.signedBytes(binding), m.Sig)
}

// Append appends the message to b.
func (m *LoginDevice) Append(b []byte, id uint32) []byte {
	b = binary.BigEndian.AppendUint64(appendStr8(AppendHeader(b, TLoginDevice, id), m.User), m.DeviceID)
	return append(append(b, m.Flags), m.Sig...)
}

// Parse decodes a body.
func (m *LoginDevice) Parse(body []byte) error {
	d := dec{b: body}
	m.User, m.DeviceID, m.Flags, m.Sig = d.str8(), d.u64(), d.u8(), d.fixed(ed25519.SignatureSize)
	return d.done()
}

// TDevicesChanged is pushed (id 0) to a user's contacts online when the
// user's device list grows: they fetch and check it (version 3).
const TDevicesChanged MsgType = 0x97 // user str8 | seq u32 (version 3)

// When each device of one's own account last logged in.
const (
	TDeviceSeen      MsgType = 0x1C // (empty) (version 3)
	TDeviceSeenReply MsgType = 0x9B // count u8 | (device_id u64 | idle u32 (seconds)) x count (version 3)
)

// DeviceSeen is how long ago one device last logged in (or was added,
// if it has not since), by the server's clock: the one that decides
// when it goes silent.
type DeviceSeen struct {
	DeviceID uint64
	Idle     uint32 // seconds
}

// DeviceSeenReply answers DeviceSeen.
type DeviceSeenReply struct{ Devices []DeviceSeen }

// Append appends the message to b.
func (m *DeviceSeenReply) Append(b []byte, id uint32) []byte {
	b = append(AppendHeader(b, TDeviceSeenReply, id), byte(len(m.Devices)))
	for _, d := range m.Devices {
		b = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint64(b, d.DeviceID), d.Idle)
	}
	return b
}

// Parse decodes a body.
func (m *DeviceSeenReply) Parse(body []byte) error {
	d := dec{b: body}
	n := int(d.u8())
	if d.err == nil && n > MaxDevices {
		return fmt.Errorf("%w: %d devices", ErrMalformed, n)
	}
	m.Devices = nil
	for i := 0; i < n && d.err == nil; i++ {
		m.Devices = append(m.Devices, DeviceSeen{DeviceID: d.u64(), Idle: d.u32()})
	}
	return d.done()
}

// TRecover starts an account again from a new first device when all its
// devices are lost (version 4): before any login, with the account's
// password, the new published keys (whose sign key is the new master key)
// and the statement that makes the new device the first of a new device
// list, signed by that key. Answered with LoginOK for the new device.
const TRecover MsgType = 0x1E // user str8 | password str16 | box_key 32 | sign_key 32 | key_sig 64 | statement str16 (version 4)

// Recover is an account's recovery.
type Recover struct {
	User, Password []byte
	Keys
	Statement []byte
}

// Append appends the message to b.
func (m *Recover) Append(b []byte, id uint32) []byte {
	b = appendStr16(appendStr8(AppendHeader(b, TRecover, id), m.User), m.Password)
	return appendStr16(m.Keys.append(b), m.Statement)
}

// Parse decodes a body.
func (m *Recover) Parse(body []byte) error {
	d := dec{b: body}
	m.User, m.Password = d.str8(), d.str16()
	m.Keys.parse(&d)
	m.Statement = d.str16()
	return d.done()
}
