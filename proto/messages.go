package proto

import (
	"encoding/binary"
	"fmt"
)

// MsgType is the first byte of every sealed frame's plaintext.
type MsgType uint8

// MsgHeaderLen is the size of the message header: type(1) | id(4).
// The id is chosen by the client for a request and echoed in its response;
// server pushes (Deliver) carry id 0.
const MsgHeaderLen = 5

// Message types. Strings are str8 (u8 length + bytes) or str16 (u16 length
// + bytes); integers are big endian. Every field has a fixed or explicit
// length and nothing may follow the last one, so no strict prefix of a
// message parses.
const (
	// Client to server.
	TSignup        MsgType = 0x01 // user str8 | password str16 | box_key 32 | sign_key 32 | key_sig 64
	TLogin         MsgType = 0x02 // user str8 | password str16
	TResume        MsgType = 0x03 // user str8 | token 32
	TCheckUsername MsgType = 0x04 // user str8
	TLogout        MsgType = 0x05 // (empty): revokes this session's token
	TSignupInvite  MsgType = 0x06 // as TSignup, then invite str8: on servers that sign up by invitation
	TLoginWith     MsgType = 0x07 // user str8 | password str16 | flags u8 (version 2)
	TResumeWith    MsgType = 0x08 // user str8 | token 32 | flags u8 (version 2)
	TGetKeys       MsgType = 0x10 // user str8
	TSendDM        MsgType = 0x11 // to str8 | msg_id 16 | kind u8 | body str16 (<= MaxBodyLen)
	TAck           MsgType = 0x12 // count u8 (1..255) | server_id u64 x count
	TSendDMFor     MsgType = 0x15 // to str8 | key_id u64 | msg_id 16 | kind u8 | body str16 (version 2)
	TPing          MsgType = 0x20 // data str8 (<= 64)

	// Either direction.
	TClose MsgType = 0x3F // reason u8

	// Server to client.
	TOK        MsgType = 0x80 // (empty)
	TError     MsgType = 0x81 // code u16 | message str16
	TLoginOK   MsgType = 0x82 // user str8 | token 32 | expires i64 (unix seconds)
	TKeys      MsgType = 0x83 // user str8 | box_key 32 | sign_key 32 | key_sig 64
	TSent      MsgType = 0x84 // server_id u64 | time i64 (unix ms) | status u8
	TDeliver   MsgType = 0x85 // server_id u64 | time i64 (unix ms) | from str8 | msg_id 16 | kind u8 | body str16
	TPong      MsgType = 0x86 // data str8 (<= 64)
	TAvailable MsgType = 0x87 // available u8 (0 or 1)
	// TKeysChanged carries a user's current key record: as the answer to a
	// SendDMFor sealed for another record (nothing was sent), or as a push
	// (id 0) to the contacts online when a user's record changes.
	TKeysChanged MsgType = 0x90 // user str8 | box_key 32 | sign_key 32 | key_sig 64 (version 2)
)

// Login flags (the flags byte of LoginWith and ResumeWith).
const (
	// LoginNoDeliveries opens a session that only sends and asks: the
	// server pushes it no deliveries and no presence, fetches nothing from
	// the user's queue for it, shows nobody the user online because of
	// it, and never lets it replace the session that receives.
	LoginNoDeliveries uint8 = 1 << 0
	// LoginFlagsKnown are the flags this version defines; a server
	// refuses others with unsupported_feature.
	LoginFlagsKnown = LoginNoDeliveries
)

// Field sizes and limits.
const (
	TokenLen    = 32
	MsgIDLen    = 16
	SignKeyLen  = 32
	KeySigLen   = 64
	MaxPingData = 64
	// MaxBodyLen is the largest sealed body of one message (60 KiB).
	// Larger payloads (files) travel as several messages.
	MaxBodyLen = 60 << 10
)

// Message kinds (the kind byte of SendDM and Deliver).
const (
	KindText uint8 = 1
	KindFile uint8 = 2
)

// Sent statuses.
const (
	// StatusDelivered: the receiver's client acknowledged the message.
	StatusDelivered uint8 = 1
	// StatusQueued: the receiver is away or slow; the message is stored
	// durably (fsynced) and will be delivered when the receiver is back.
	StatusQueued uint8 = 2
)

// Close reasons.
const (
	CloseNormal      uint8 = 0
	CloseReplaced    uint8 = 1 // the user logged in on another connection
	CloseShutdown    uint8 = 2 // the server is stopping
	CloseSlowConsume uint8 = 3 // the receiver did not read fast enough
	CloseRekey       uint8 = 4 // the nonce counter reached its limit
	CloseProtocol    uint8 = 5 // the peer broke the protocol
	CloseRevoked     uint8 = 6 // an admin revoked the user's sessions or disabled the account
	CloseUpgrade     uint8 = 7 // a message waits that this client's version cannot open: upgrade it (version 4)
	CloseLoginAgain  uint8 = 8 // the account's password changed: this session's token is revoked; log in again (version 6)
)

// AppendHeader appends a message header.
func AppendHeader(b []byte, t MsgType, id uint32) []byte {
	return binary.BigEndian.AppendUint32(append(b, byte(t)), id)
}

// ParseHeader splits a message into its type, id and body.
func ParseHeader(b []byte) (MsgType, uint32, []byte, error) {
	if len(b) < MsgHeaderLen {
		return 0, 0, nil, fmt.Errorf("%w: message of %d bytes", ErrMalformed, len(b))
	}
	return MsgType(b[0]), binary.BigEndian.Uint32(b[1:]), b[MsgHeaderLen:], nil
}

// Keys are a user's public end-to-end keys: an X25519 box key and the
// Ed25519 key that signs it.
type Keys struct {
	BoxKey  []byte // 32
	SignKey []byte // 32
	KeySig  []byte // 64: Ed25519(SignKey, KeySigContext || user || BoxKey)
}

// Signup asks for a new account. With an Invite it is sent as
// TSignupInvite.
type Signup struct {
	User, Password []byte
	Keys
	Invite []byte
}

// Append appends the message to b: TSignupInvite if it has an invite.
func (m *Signup) Append(b []byte, id uint32) []byte {
	t := TSignup
	if m.Invite != nil {
		t = TSignupInvite
	}
	b = AppendHeader(b, t, id)
	b = appendStr16(appendStr8(b, m.User), m.Password)
	b = m.Keys.append(b)
	if m.Invite != nil {
		b = appendStr8(b, m.Invite)
	}
	return b
}

// Parse decodes a TSignup body.
func (m *Signup) Parse(body []byte) error {
	d := dec{b: body}
	m.User, m.Password = d.str8(), d.str16()
	m.Keys.parse(&d)
	m.Invite = nil
	return d.done()
}

// ParseInvite decodes a TSignupInvite body.
func (m *Signup) ParseInvite(body []byte) error {
	d := dec{b: body}
	m.User, m.Password = d.str8(), d.str16()
	m.Keys.parse(&d)
	m.Invite = d.str8()
	if m.Invite == nil && d.err == nil {
		m.Invite = []byte{}
	}
	return d.done()
}

func (k *Keys) append(b []byte) []byte {
	b = append(b, k.BoxKey...)
	b = append(b, k.SignKey...)
	return append(b, k.KeySig...)
}

func (k *Keys) parse(d *dec) {
	k.BoxKey, k.SignKey, k.KeySig = d.fixed(KeyLen), d.fixed(SignKeyLen), d.fixed(KeySigLen)
}

// Login authenticates with a password. It is sent as TLoginWith, which
// carries the login flags; TLogin is its version 1 form, without them.
type Login struct {
	User, Password []byte
	Flags          uint8 // Login* flags
}

// Append appends the message to b as TLoginWith.
func (m *Login) Append(b []byte, id uint32) []byte {
	return append(m.AppendV1(b, id, TLoginWith), m.Flags)
}

// AppendV1 appends the version 1 form (type t, normally TLogin: no flags).
func (m *Login) AppendV1(b []byte, id uint32, t MsgType) []byte {
	return appendStr16(appendStr8(AppendHeader(b, t, id), m.User), m.Password)
}

// Parse decodes a TLoginWith body.
func (m *Login) Parse(body []byte) error {
	d := dec{b: body}
	m.User, m.Password, m.Flags = d.str8(), d.str16(), d.u8()
	return d.done()
}

// ParseAs decodes a body of type t: TLoginWith or its version 1 form
// TLogin.
func (m *Login) ParseAs(t MsgType, body []byte) error {
	if t == TLogin {
		return m.ParseV1(body)
	}
	return m.Parse(body)
}

// ParseV1 decodes a TLogin body (no flags).
func (m *Login) ParseV1(body []byte) error {
	d := dec{b: body}
	m.User, m.Password, m.Flags = d.str8(), d.str16(), 0
	return d.done()
}

// TChangePassword replaces the account's password (version 6), on a
// logged-in session, given the current one: old and new are what a
// login sends (a client's login key, docs/PROTOCOL.md §5). Answered
// OK, invalid_credentials if old is not the password, invalid_password
// if new is out of bounds.
const TChangePassword MsgType = 0x21 // old str16 | new str16 (version 6)

// ChangePassword is a password change.
type ChangePassword struct {
	Old, New []byte
}

// Append appends the message to b.
func (m *ChangePassword) Append(b []byte, id uint32) []byte {
	return appendStr16(appendStr16(AppendHeader(b, TChangePassword, id), m.Old), m.New)
}

// Parse decodes a body.
func (m *ChangePassword) Parse(body []byte) error {
	d := dec{b: body}
	m.Old, m.New = d.str16(), d.str16()
	return d.done()
}

// Resume authenticates with a session token after a fresh handshake. It
// is sent as TResumeWith; TResume is its version 1 form, without flags.
type Resume struct {
	User, Token []byte
	Flags       uint8 // Login* flags
}

// Append appends the message to b as TResumeWith.
func (m *Resume) Append(b []byte, id uint32) []byte {
	return append(m.AppendV1(b, id, TResumeWith), m.Flags)
}

// AppendV1 appends the version 1 form (type t, normally TResume).
func (m *Resume) AppendV1(b []byte, id uint32, t MsgType) []byte {
	return append(appendStr8(AppendHeader(b, t, id), m.User), m.Token...)
}

// Parse decodes a TResumeWith body.
func (m *Resume) Parse(body []byte) error {
	d := dec{b: body}
	m.User, m.Token, m.Flags = d.str8(), d.fixed(TokenLen), d.u8()
	return d.done()
}

// ParseAs decodes a body of type t: TResumeWith or its version 1 form
// TResume.
func (m *Resume) ParseAs(t MsgType, body []byte) error {
	if t == TResume {
		return m.ParseV1(body)
	}
	return m.Parse(body)
}

// ParseV1 decodes a TResume body (no flags).
func (m *Resume) ParseV1(body []byte) error {
	d := dec{b: body}
	m.User, m.Token, m.Flags = d.str8(), d.fixed(TokenLen), 0
	return d.done()
}

// UserReq is the body of CheckUsername and GetKeys: one user name.
type UserReq struct{ User []byte }

// Append appends the message with type t to b.
func (m *UserReq) Append(b []byte, t MsgType, id uint32) []byte {
	return appendStr8(AppendHeader(b, t, id), m.User)
}

// Parse decodes a body.
func (m *UserReq) Parse(body []byte) error {
	d := dec{b: body}
	m.User = d.str8()
	return d.done()
}

// SendDM carries one end-to-end sealed direct message. It is sent as
// TSendDMFor, which names the receiver's key record the body was sealed
// for (KeyRecordID); the server refuses it with TKeysChanged when that is
// not the receiver's current record. TSendDM is its version 1 form,
// without the key id and unchecked.
type SendDM struct {
	To    []byte
	KeyID uint64 // KeyRecordID of the receiver's keys the body is sealed for
	MsgID []byte // 16, chosen by the sender; the server drops repeats
	Kind  uint8
	Body  []byte // sealed; at most MaxBodyLen
}

// Append appends the message to b as TSendDMFor.
func (m *SendDM) Append(b []byte, id uint32) []byte {
	b = appendStr8(AppendHeader(b, TSendDMFor, id), m.To)
	b = binary.BigEndian.AppendUint64(b, m.KeyID)
	b = append(append(b, m.MsgID...), m.Kind)
	return appendStr16(b, m.Body)
}

// AppendV1 appends the version 1 form (TSendDM: no key id).
func (m *SendDM) AppendV1(b []byte, id uint32) []byte {
	b = appendStr8(AppendHeader(b, TSendDM, id), m.To)
	b = append(append(b, m.MsgID...), m.Kind)
	return appendStr16(b, m.Body)
}

// Parse decodes a TSendDMFor body.
func (m *SendDM) Parse(body []byte) error {
	d := dec{b: body}
	m.To, m.KeyID = d.str8(), d.u64()
	return m.parseRest(&d)
}

// ParseAs decodes a body of type t: TSendDMFor or its version 1 form
// TSendDM.
func (m *SendDM) ParseAs(t MsgType, body []byte) error {
	if t == TSendDM {
		return m.ParseV1(body)
	}
	return m.Parse(body)
}

// ParseV1 decodes a TSendDM body (KeyID is left 0).
func (m *SendDM) ParseV1(body []byte) error {
	d := dec{b: body}
	m.To, m.KeyID = d.str8(), 0
	return m.parseRest(&d)
}

func (m *SendDM) parseRest(d *dec) error {
	m.MsgID, m.Kind = d.fixed(MsgIDLen), d.u8()
	m.Body = d.bytes16(MaxBodyLen)
	if d.err == nil && len(m.Body) == 0 {
		d.err = fmt.Errorf("%w: empty body", ErrMalformed)
	}
	return d.done()
}

// MaxAckIDs is the most deliveries one Ack can acknowledge.
const MaxAckIDs = 255

// Ack acknowledges delivered messages by their server ids; a receiver
// batches the acks of a burst into one frame.
type Ack struct{ ServerIDs []uint64 }

// Append appends the message to b. It panics on more than MaxAckIDs ids
// (a caller bug).
func (m *Ack) Append(b []byte, id uint32) []byte {
	if len(m.ServerIDs) == 0 || len(m.ServerIDs) > MaxAckIDs {
		panic("proto: an Ack carries 1 to 255 ids")
	}
	b = append(AppendHeader(b, TAck, id), byte(len(m.ServerIDs)))
	for _, s := range m.ServerIDs {
		b = binary.BigEndian.AppendUint64(b, s)
	}
	return b
}

// Parse decodes a body into m.ServerIDs, reusing its capacity.
func (m *Ack) Parse(body []byte) error {
	d := dec{b: body}
	n := int(d.u8())
	if d.err == nil && n == 0 {
		return fmt.Errorf("%w: empty ack", ErrMalformed)
	}
	m.ServerIDs = m.ServerIDs[:0]
	for i := 0; i < n && d.err == nil; i++ {
		m.ServerIDs = append(m.ServerIDs, d.u64())
	}
	return d.done()
}

// AckIDs is a parsed Ack body read in place, without allocating.
type AckIDs []byte

// ParseAckIDs checks an Ack body and returns its ids.
func ParseAckIDs(body []byte) (AckIDs, error) {
	if len(body) < 1 || body[0] == 0 || len(body) != 1+8*int(body[0]) {
		return nil, fmt.Errorf("%w: ack of %d bytes", ErrMalformed, len(body))
	}
	return AckIDs(body[1:]), nil
}

// Len returns the number of ids.
func (a AckIDs) Len() int { return len(a) / 8 }

// At returns id i.
func (a AckIDs) At(i int) uint64 { return binary.BigEndian.Uint64(a[8*i:]) }

// Ping and Pong carry up to MaxPingData bytes back.
type Ping struct{ Data []byte }

// Append appends the message with type t (TPing or TPong) to b.
func (m *Ping) Append(b []byte, t MsgType, id uint32) []byte {
	return appendStr8(AppendHeader(b, t, id), m.Data)
}

// Parse decodes a body.
func (m *Ping) Parse(body []byte) error {
	d := dec{b: body}
	m.Data = d.str8()
	if d.err == nil && len(m.Data) > MaxPingData {
		d.err = fmt.Errorf("%w: ping data of %d bytes", ErrTooLarge, len(m.Data))
	}
	return d.done()
}

// Close ends a session. After sending it a peer sends nothing more.
type Close struct{ Reason uint8 }

// Append appends the message to b.
func (m *Close) Append(b []byte, id uint32) []byte {
	return append(AppendHeader(b, TClose, id), m.Reason)
}

// Parse decodes a body.
func (m *Close) Parse(body []byte) error {
	d := dec{b: body}
	m.Reason = d.u8()
	return d.done()
}

// Error answers a request that failed.
type Error struct {
	Code    ErrorCode
	Message []byte
}

// Append appends the message to b.
func (m *Error) Append(b []byte, id uint32) []byte {
	b = binary.BigEndian.AppendUint16(AppendHeader(b, TError, id), uint16(m.Code))
	return appendStr16(b, m.Message)
}

// Parse decodes a body.
func (m *Error) Parse(body []byte) error {
	d := dec{b: body}
	m.Code, m.Message = ErrorCode(d.u16()), d.str16()
	return d.done()
}

// LoginOK answers Signup, Login and Resume.
type LoginOK struct {
	User    []byte // the display form of the name
	Token   []byte // 32
	Expires int64  // unix seconds
}

// Append appends the message to b.
func (m *LoginOK) Append(b []byte, id uint32) []byte {
	b = append(appendStr8(AppendHeader(b, TLoginOK, id), m.User), m.Token...)
	return binary.BigEndian.AppendUint64(b, uint64(m.Expires))
}

// Parse decodes a body.
func (m *LoginOK) Parse(body []byte) error {
	d := dec{b: body}
	m.User, m.Token, m.Expires = d.str8(), d.fixed(TokenLen), int64(d.u64())
	return d.done()
}

// KeysReply answers GetKeys.
type KeysReply struct {
	User []byte
	Keys
}

// Append appends the message to b (TKeys).
func (m *KeysReply) Append(b []byte, id uint32) []byte { return m.AppendType(b, TKeys, id) }

// AppendType appends the message with type t (TKeys or TKeysChanged).
func (m *KeysReply) AppendType(b []byte, t MsgType, id uint32) []byte {
	return m.Keys.append(appendStr8(AppendHeader(b, t, id), m.User))
}

// Parse decodes a body.
func (m *KeysReply) Parse(body []byte) error {
	d := dec{b: body}
	m.User = d.str8()
	m.Keys.parse(&d)
	return d.done()
}

// Sent acknowledges a SendDM.
type Sent struct {
	ServerID uint64
	Time     int64 // unix milliseconds
	Status   uint8
}

// Append appends the message to b.
func (m *Sent) Append(b []byte, id uint32) []byte {
	b = binary.BigEndian.AppendUint64(AppendHeader(b, TSent, id), m.ServerID)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Time))
	return append(b, m.Status)
}

// Parse decodes a body.
func (m *Sent) Parse(body []byte) error {
	d := dec{b: body}
	m.ServerID, m.Time, m.Status = d.u64(), int64(d.u64()), d.u8()
	return d.done()
}

// TSentDevices answers SendDMDevicesDetail (version 6): the Sent fields,
// then what became of the message on each device of the receiver's
// list, in the list's order.
const TSentDevices MsgType = 0xA1 // server_id u64 | time i64 | status u8 | count u8 (<= MaxDevices) | (device_id u64 | status u8) x count (version 6)

// Per-device statuses (SentDevices), besides StatusDelivered (that
// device's client acknowledged it) and StatusQueued (stored for it).
const (
	// StatusRefused: the device's queue is full; nothing was stored for
	// it (the others have the message).
	StatusRefused uint8 = 3
	// StatusNotSent: the device has not logged in for DeviceSilentAfter
	// while another of its account's has: it is sent nothing.
	StatusNotSent uint8 = 4
)

// DeviceStatus is what became of a message on one device.
type DeviceStatus struct {
	Device uint64
	Status uint8
}

// SentDevices acknowledges a SendDMDevices, per device.
type SentDevices struct {
	Sent
	Devices []DeviceStatus
}

// Append appends the message to b.
func (m *SentDevices) Append(b []byte, id uint32) []byte {
	b = binary.BigEndian.AppendUint64(AppendHeader(b, TSentDevices, id), m.ServerID)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Time))
	b = append(b, m.Status, uint8(len(m.Devices)))
	for _, d := range m.Devices {
		b = append(binary.BigEndian.AppendUint64(b, d.Device), d.Status)
	}
	return b
}

// Parse decodes a body.
func (m *SentDevices) Parse(body []byte) error {
	d := dec{b: body}
	m.ServerID, m.Time, m.Status = d.u64(), int64(d.u64()), d.u8()
	n := int(d.u8())
	if d.err == nil && n > MaxDevices {
		return fmt.Errorf("%w: %d devices", ErrMalformed, n)
	}
	m.Devices = nil
	for i := 0; i < n && d.err == nil; i++ {
		m.Devices = append(m.Devices, DeviceStatus{Device: d.u64(), Status: d.u8()})
	}
	return d.done()
}

// ParseSent decodes the answer to a message, of type t: Sent, or
// SentDevices (its devices are nil for a Sent).
func ParseSent(t MsgType, body []byte) (*SentDevices, error) {
	var m SentDevices
	switch t {
	case TSent:
		return &m, m.Sent.Parse(body)
	case TSentDevices:
		return &m, m.Parse(body)
	}
	return nil, fmt.Errorf("%w: answer %#x to a message", ErrMalformed, uint8(t))
}

// Deliver pushes a message to its receiver.
type Deliver struct {
	ServerID uint64
	Time     int64 // unix milliseconds, stamped by the server
	From     []byte
	MsgID    []byte // 16
	Kind     uint8
	Body     []byte
	// Request: the receiver has not accepted the sender; sent as
	// TDeliverRequest (Parse leaves it to the caller, who knows the type).
	Request bool
}

// Append appends the message to b.
func (m *Deliver) Append(b []byte, id uint32) []byte {
	t := TDeliver
	if m.Request {
		t = TDeliverRequest
	}
	b = binary.BigEndian.AppendUint64(AppendHeader(b, t, id), m.ServerID)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Time))
	b = append(appendStr8(b, m.From), m.MsgID...)
	return appendStr16(append(b, m.Kind), m.Body)
}

// Parse decodes a body.
func (m *Deliver) Parse(body []byte) error {
	d := dec{b: body}
	m.ServerID, m.Time = d.u64(), int64(d.u64())
	m.From, m.MsgID, m.Kind = d.str8(), d.fixed(MsgIDLen), d.u8()
	m.Body = d.bytes16(MaxBodyLen)
	if d.err == nil && len(m.Body) == 0 {
		d.err = fmt.Errorf("%w: empty body", ErrMalformed)
	}
	return d.done()
}

// Available answers CheckUsername.
type Available struct{ Available bool }

// Append appends the message to b.
func (m *Available) Append(b []byte, id uint32) []byte {
	return append(AppendHeader(b, TAvailable, id), boolByte(m.Available))
}

// Parse decodes a body.
func (m *Available) Parse(body []byte) error {
	d := dec{b: body}
	m.Available = d.bool()
	return d.done()
}

// AppendEmpty appends a message that has no body (TOK, TLogout).
func AppendEmpty(b []byte, t MsgType, id uint32) []byte { return AppendHeader(b, t, id) }

// ParseEmpty checks a body is empty.
func ParseEmpty(body []byte) error {
	d := dec{b: body}
	return d.done()
}
