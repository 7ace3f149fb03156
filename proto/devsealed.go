package proto

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"golang.org/x/crypto/nacl/box"
	"golang.org/x/crypto/nacl/secretbox"
)

// Direct messages sealed for devices (version 4). An account has several
// devices (devices.go), each with its own box key, so a direct message is
// sealed once and its key is wrapped for every device that gets it: each
// current device of the receiver, and each other device of the sender
// (which so shows what was sent from the one device on the others).
//
//	payload = secretbox(inner, nonce 0, message_key)
//	wrap    = nonce 24 | box(message_key 32 | SHA-256(WrapContext | payload) 32,
//	                         nonce, receiving device's box key, sending device's box private)
//
// inner is the direct message's plaintext (e2e.go), padded as there.
// message_key is fresh for every message, so the zero nonce is used once.
// A wrap opens only with the two devices' keys, and it names the one
// payload it is for by its hash: a device that can read a message (any
// receiver) cannot make another payload that a wrap of the sender's
// vouches for, and the server cannot swap payloads or wraps between
// messages. The receiver checks, as for a direct message, that the
// inner's from, to, msg_id and kind match the envelope.
const (
	// WrapLen is the length of one device's wrap.
	WrapLen = 24 + 32 + 32 + box.Overhead
	// PayloadOverhead is what sealing adds to an inner plaintext.
	PayloadOverhead = secretbox.Overhead
	// WrapContext prefixes the payload in the hash a wrap carries.
	WrapContext = "securefastchat v4 device payload"
	// MaxCopies bounds the wraps of one message: every device of the
	// receiver and every other device of the sender.
	MaxCopies = 2*MaxDevices - 1
)

// MessageKey is the key of one device-sealed message.
type MessageKey [32]byte

// SealPayload seals an inner plaintext under a fresh message key from r
// (crypto/rand if nil) and returns the payload and the key.
func SealPayload(inner []byte, r io.Reader) ([]byte, *MessageKey, error) {
	if r == nil {
		r = rand.Reader
	}
	k := new(MessageKey)
	if _, err := io.ReadFull(r, k[:]); err != nil {
		return nil, nil, fmt.Errorf("proto: reading randomness: %w", err)
	}
	var nonce [24]byte
	return secretbox.Seal(nil, inner, &nonce, (*[32]byte)(k)), k, nil
}

// OpenPayload opens a payload with its message key and appends the inner
// plaintext to dst.
func OpenPayload(dst, payload []byte, k *MessageKey) ([]byte, error) {
	var nonce [24]byte
	out, ok := secretbox.Open(dst, payload, &nonce, (*[32]byte)(k))
	if !ok {
		return dst, ErrDecrypt
	}
	return out, nil
}

// PayloadHash is what a wrap vouches for: SHA-256(WrapContext | payload).
func PayloadHash(payload []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(WrapContext))
	h.Write(payload)
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// WrapKey appends the wrap of a message key for one device to dst:
// shared is SharedKey of the sending device's box private key and the
// receiving device's box key; hash is PayloadHash of the payload.
func WrapKey(dst []byte, k *MessageKey, hash *[32]byte, shared *[32]byte, r io.Reader) ([]byte, error) {
	var plain [64]byte
	copy(plain[:32], k[:])
	copy(plain[32:], hash[:])
	defer clear(plain[:])
	return SealBody(dst, plain[:], shared, r)
}

// OpenWrap opens a wrap with SharedKey of the receiving device's box
// private key and the sending device's box key, checks that it is for
// payload, and returns the message key.
func OpenWrap(wrap, payload []byte, shared *[32]byte) (*MessageKey, error) {
	if len(wrap) != WrapLen {
		return nil, ErrDecrypt
	}
	plain, err := OpenBody(make([]byte, 0, 64), wrap, shared)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	if want := PayloadHash(payload); [32]byte(plain[32:]) != want {
		return nil, fmt.Errorf("%w: the wrap is for another payload", ErrDecrypt)
	}
	k := new(MessageKey)
	copy(k[:], plain[:32])
	return k, nil
}

// Device-sealed direct messages (version 4).
const (
	// TSendDMDevices sends a direct message sealed for devices: one copy
	// per current device of the receiver, and one per other device of the
	// sender. The server refuses it with TDevicesMismatch if either set
	// is not the device list as it stands.
	TSendDMDevices MsgType = 0x1D // to str8 | msg_id 16 | kind u8 | to_count u8 | copy x to_count | own_count u8 | copy x own_count | payload str16 (version 4)
	// TSendDMDevicesDetail is SendDMDevices answered with SentDevices.
	TSendDMDevicesDetail MsgType = 0x22 // as SendDMDevices (version 6)
	// TDevicesMismatch refuses a send whose devices are not the lists'.
	TDevicesMismatch MsgType = 0x9C // count u8 (1..255) | (user str8 | missing_count u8 | device_id u64 x missing_count | extra_count u8 | device_id u64 x extra_count) x count (version 4)
	// TDeliverDevices pushes one device's copy of a device-sealed direct
	// message. to is the message's receiver: the device's own user, or,
	// on a copy of what the user sent from another device, the one they
	// sent it to.
	TDeliverDevices MsgType = 0x9D // server_id u64 | time i64 | flags u8 | from str8 | from_device u64 | to str8 | msg_id 16 | kind u8 | wrap 104 | payload str16 (version 4)
)

// DeliverFlagRequest: the receiver has not accepted the sender (as
// TDeliverRequest).
const DeliverFlagRequest uint8 = 1

// DeviceCopy is one device's wrap of a message.
type DeviceCopy struct {
	Device uint64
	Wrap   []byte // WrapLen
}

// SendDMDevices is a direct message sealed for devices.
type SendDMDevices struct {
	To      []byte
	MsgID   []byte // 16
	Kind    uint8
	Copies  []DeviceCopy // the receiver's devices
	Own     []DeviceCopy // the sender's other devices
	Payload []byte       // at most MaxBodyLen
	// Detail sends it as SendDMDevicesDetail (version 6): answered
	// SentDevices, what became of it on each of the receiver's devices.
	Detail bool
}

func appendCopies(b []byte, cs []DeviceCopy) []byte {
	b = append(b, byte(len(cs)))
	for _, c := range cs {
		b = append(binary.BigEndian.AppendUint64(b, c.Device), c.Wrap...)
	}
	return b
}

func (d *dec) copies(max int) []DeviceCopy {
	n := int(d.u8())
	if d.err == nil && n > max {
		d.err = fmt.Errorf("%w: %d copies, limit %d", ErrMalformed, n, max)
	}
	var cs []DeviceCopy
	for i := 0; i < n && d.err == nil; i++ {
		cs = append(cs, DeviceCopy{Device: d.u64(), Wrap: d.fixed(WrapLen)})
	}
	return cs
}

// Append appends the message to b.
func (m *SendDMDevices) Append(b []byte, id uint32) []byte {
	t := TSendDMDevices
	if m.Detail {
		t = TSendDMDevicesDetail
	}
	b = appendStr8(AppendHeader(b, t, id), m.To)
	b = append(append(b, m.MsgID...), m.Kind)
	b = appendCopies(appendCopies(b, m.Copies), m.Own)
	return appendStr16(b, m.Payload)
}

// Parse decodes a body (of either type; Detail is left as it is). A
// message has at least one copy for the receiver, and at most MaxCopies
// in all.
func (m *SendDMDevices) Parse(body []byte) error {
	d := dec{b: body}
	m.To, m.MsgID, m.Kind = d.str8(), d.fixed(MsgIDLen), d.u8()
	m.Copies = d.copies(MaxDevices)
	m.Own = d.copies(MaxDevices - 1)
	m.Payload = d.bytes16(MaxBodyLen)
	if d.err == nil && (len(m.Copies) == 0 || len(m.Payload) == 0) {
		d.err = fmt.Errorf("%w: no copy for the receiver, or an empty payload", ErrMalformed)
	}
	return d.done()
}

// DevicesDiff names, for one account, the devices a send missed (on the
// list, no copy) and those it had extra (a copy, not on the list).
type DevicesDiff struct {
	User           []byte
	Missing, Extra []uint64
}

// DevicesMismatch refuses a SendDMDevices (naming the receiver, the
// sender, or both) or a group epoch wrapped per device (TGroupChangeV3:
// naming up to 255 members): the accounts whose lists it did not match.
type DevicesMismatch struct{ Users []DevicesDiff }

func appendIDs(b []byte, ids []uint64) []byte {
	b = append(b, byte(len(ids)))
	for _, id := range ids {
		b = binary.BigEndian.AppendUint64(b, id)
	}
	return b
}

func (d *dec) ids(max int) []uint64 {
	n := int(d.u8())
	if d.err == nil && n > max {
		d.err = fmt.Errorf("%w: %d device ids, limit %d", ErrMalformed, n, max)
	}
	var ids []uint64
	for i := 0; i < n && d.err == nil; i++ {
		ids = append(ids, d.u64())
	}
	return ids
}

// Append appends the message to b.
func (m *DevicesMismatch) Append(b []byte, id uint32) []byte {
	b = append(AppendHeader(b, TDevicesMismatch, id), byte(len(m.Users)))
	for _, u := range m.Users {
		b = appendIDs(appendIDs(appendStr8(b, u.User), u.Missing), u.Extra)
	}
	return b
}

// Parse decodes a body.
func (m *DevicesMismatch) Parse(body []byte) error {
	d := dec{b: body}
	n := int(d.u8())
	if d.err == nil && n == 0 {
		return fmt.Errorf("%w: a mismatch names no account", ErrMalformed)
	}
	m.Users = nil
	for i := 0; i < n && d.err == nil; i++ {
		m.Users = append(m.Users, DevicesDiff{User: d.str8(), Missing: d.ids(MaxDevices), Extra: d.ids(MaxDevices)})
	}
	return d.done()
}

// DeliverDevices is one device's copy of a device-sealed direct message.
type DeliverDevices struct {
	ServerID   uint64
	Time       int64 // unix milliseconds, stamped by the server
	Flags      uint8 // DeliverFlagRequest
	From       []byte
	FromDevice uint64
	To         []byte
	MsgID      []byte // 16
	Kind       uint8
	Wrap       []byte // WrapLen
	Payload    []byte
}

// Append appends the message to b.
func (m *DeliverDevices) Append(b []byte, id uint32) []byte {
	b = binary.BigEndian.AppendUint64(AppendHeader(b, TDeliverDevices, id), m.ServerID)
	b = append(binary.BigEndian.AppendUint64(b, uint64(m.Time)), m.Flags)
	b = binary.BigEndian.AppendUint64(appendStr8(b, m.From), m.FromDevice)
	b = append(append(appendStr8(b, m.To), m.MsgID...), m.Kind)
	return appendStr16(append(b, m.Wrap...), m.Payload)
}

// Parse decodes a body.
func (m *DeliverDevices) Parse(body []byte) error {
	d := dec{b: body}
	m.ServerID, m.Time, m.Flags = d.u64(), int64(d.u64()), d.u8()
	m.From, m.FromDevice = d.str8(), d.u64()
	m.To, m.MsgID, m.Kind = d.str8(), d.fixed(MsgIDLen), d.u8()
	m.Wrap, m.Payload = d.fixed(WrapLen), d.bytes16(MaxBodyLen)
	if d.err == nil && (m.Flags&^DeliverFlagRequest != 0 || len(m.Payload) == 0) {
		d.err = fmt.Errorf("%w: unknown flags or an empty payload", ErrMalformed)
	}
	return d.done()
}
