package proto

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Live signals: presence, broadcast and ephemeral signals (typing). None
// of them is ever stored by the server; a user who is away misses them.
const (
	// TSignal asks the server to pass a sealed body to a user who is
	// online now, and to drop it otherwise. The server answers only a
	// refusal (and only when the id is not 0).
	TSignal MsgType = 0x13 // to str8 | body str16 (<= MaxSignalLen)
	// TBroadcast sends a text to everyone online. It is not end-to-end
	// encrypted: only the transport protects it.
	TBroadcast MsgType = 0x14 // text str16 (<= MaxBroadcastLen, UTF-8)

	// TSignalMsg is a signal from a user.
	TSignalMsg MsgType = 0x8C // from str8 | body str16
	// TPresence tells who is online. A message with reset set starts a
	// full list (the server sends one after every login); without it, the
	// entries are changes.
	TPresence MsgType = 0x8D // reset u8 | count u16 | (user str8 | online u8) x count
	// TBroadcastSent answers a broadcast with how many users it reached,
	// or CountHidden to a user who is not one of the server's admins.
	TBroadcastSent MsgType = 0x8E // count u32
	// TBroadcastMsg is a broadcast from a user.
	TBroadcastMsg MsgType = 0x8F // time i64 (unix ms) | from str8 | text str16
)

// Live signal limits.
const (
	// MaxSignalLen bounds a signal's sealed body: one padded inner.
	MaxSignalLen = SealedOverhead + PadBucket
	// CountHidden is BroadcastSent's count when the server does not say
	// (it tells how many users are online to its admins only).
	CountHidden = ^uint32(0)
	// MaxBroadcastLen bounds a broadcast's text.
	MaxBroadcastLen = 4096
	// MaxPresenceEntries bounds one presence message; longer lists go in
	// several messages, the first with reset set.
	MaxPresenceEntries = 1000
)

// Signal is an ephemeral sealed body for a user who is online.
type Signal struct {
	To   []byte
	Body []byte
}

// Append appends the message to b.
func (m *Signal) Append(b []byte, id uint32) []byte {
	return appendStr16(appendStr8(AppendHeader(b, TSignal, id), m.To), m.Body)
}

// Parse decodes a body.
func (m *Signal) Parse(body []byte) error {
	d := dec{b: body}
	m.To, m.Body = d.str8(), d.str16()
	if d.err == nil && len(m.Body) > MaxSignalLen {
		return fmt.Errorf("%w: signal of %d bytes, limit %d", ErrTooLarge, len(m.Body), MaxSignalLen)
	}
	return d.done()
}

// SignalMsg is a signal delivered from a user.
type SignalMsg struct {
	From []byte
	Body []byte
}

// Append appends the message to b.
func (m *SignalMsg) Append(b []byte, id uint32) []byte {
	return appendStr16(appendStr8(AppendHeader(b, TSignalMsg, id), m.From), m.Body)
}

// Parse decodes a body.
func (m *SignalMsg) Parse(body []byte) error {
	d := dec{b: body}
	m.From, m.Body = d.str8(), d.str16()
	return d.done()
}

// Typing signals sealed for devices (version 5), as direct messages are
// (devsealed.go): the payload once, its key wrapped for each device of
// the receiver (those the sender trusts). The server passes each device
// of the receiver online its own wrap (sessions from version 5 on), and
// drops the signal for the others; nothing is checked against the list,
// and nothing is stored.
const (
	TSignalDevices    MsgType = 0x1F // to str8 | count u8 (1..MaxDevices) | (device_id u64 | wrap 104) x count | payload str16 (<= MaxSignalLen)
	TSignalDevicesMsg MsgType = 0xA0 // from str8 | from_device u64 | wrap 104 | payload str16
)

// SignalDevices is a signal sealed for devices.
type SignalDevices struct {
	To      []byte
	Copies  []DeviceCopy
	Payload []byte
}

// Append appends the message to b.
func (m *SignalDevices) Append(b []byte, id uint32) []byte {
	b = appendCopies(appendStr8(AppendHeader(b, TSignalDevices, id), m.To), m.Copies)
	return appendStr16(b, m.Payload)
}

// Parse decodes a body.
func (m *SignalDevices) Parse(body []byte) error {
	d := dec{b: body}
	m.To, m.Copies, m.Payload = d.str8(), d.copies(MaxDevices), d.str16()
	switch {
	case d.err != nil:
	case len(m.Copies) == 0:
		d.err = fmt.Errorf("%w: a signal for no device", ErrMalformed)
	case len(m.Payload) > MaxSignalLen:
		return fmt.Errorf("%w: signal of %d bytes, limit %d", ErrTooLarge, len(m.Payload), MaxSignalLen)
	}
	return d.done()
}

// SignalDevicesMsg is one device's copy of a signal sealed for devices.
type SignalDevicesMsg struct {
	From       []byte
	FromDevice uint64
	Wrap       []byte // WrapLen
	Payload    []byte
}

// Append appends the message to b.
func (m *SignalDevicesMsg) Append(b []byte, id uint32) []byte {
	b = binary.BigEndian.AppendUint64(appendStr8(AppendHeader(b, TSignalDevicesMsg, id), m.From), m.FromDevice)
	return appendStr16(append(b, m.Wrap...), m.Payload)
}

// Parse decodes a body.
func (m *SignalDevicesMsg) Parse(body []byte) error {
	d := dec{b: body}
	m.From, m.FromDevice, m.Wrap, m.Payload = d.str8(), d.u64(), d.fixed(WrapLen), d.str16()
	return d.done()
}

// PresenceEntry is one user's state.
type PresenceEntry struct {
	User   []byte
	Online bool
}

// Presence lists users' states; Reset starts a full list.
type Presence struct {
	Reset   bool
	Entries []PresenceEntry
}

// Append appends the message to b.
func (m *Presence) Append(b []byte, id uint32) []byte {
	b = append(AppendHeader(b, TPresence, id), boolByte(m.Reset))
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Entries)))
	for _, e := range m.Entries {
		b = append(appendStr8(b, e.User), boolByte(e.Online))
	}
	return b
}

// Parse decodes a body.
func (m *Presence) Parse(body []byte) error {
	d := dec{b: body}
	m.Reset = d.bool()
	n := int(d.u16())
	if d.err == nil && n > MaxPresenceEntries {
		return fmt.Errorf("%w: %d presence entries, limit %d", ErrMalformed, n, MaxPresenceEntries)
	}
	m.Entries = m.Entries[:0]
	for i := 0; i < n && d.err == nil; i++ {
		m.Entries = append(m.Entries, PresenceEntry{User: d.str8(), Online: d.bool()})
	}
	return d.done()
}

// Broadcast is a text for everyone online.
type Broadcast struct{ Text []byte }

// Append appends the message to b.
func (m *Broadcast) Append(b []byte, id uint32) []byte {
	return appendStr16(AppendHeader(b, TBroadcast, id), m.Text)
}

// Parse decodes a body; the text must be valid UTF-8 within the limit.
func (m *Broadcast) Parse(body []byte) error {
	d := dec{b: body}
	m.Text = d.str16()
	if err := d.done(); err != nil {
		return err
	}
	return checkBroadcastText(m.Text)
}

func checkBroadcastText(t []byte) error {
	switch {
	case len(t) == 0:
		return fmt.Errorf("%w: empty broadcast", ErrMalformed)
	case len(t) > MaxBroadcastLen:
		return fmt.Errorf("%w: broadcast of %d bytes, limit %d", ErrTooLarge, len(t), MaxBroadcastLen)
	case !utf8.Valid(t):
		return fmt.Errorf("%w: broadcast text is not UTF-8", ErrMalformed)
	}
	return nil
}

// BroadcastSent answers a broadcast.
type BroadcastSent struct{ Count uint32 }

// Append appends the message to b.
func (m *BroadcastSent) Append(b []byte, id uint32) []byte {
	return binary.BigEndian.AppendUint32(AppendHeader(b, TBroadcastSent, id), m.Count)
}

// Parse decodes a body.
func (m *BroadcastSent) Parse(body []byte) error {
	d := dec{b: body}
	m.Count = d.u32()
	return d.done()
}

// BroadcastMsg is a broadcast delivered from a user.
type BroadcastMsg struct {
	Time int64 // the server's stamp, unix ms
	From []byte
	Text []byte
}

// Append appends the message to b.
func (m *BroadcastMsg) Append(b []byte, id uint32) []byte {
	b = binary.BigEndian.AppendUint64(AppendHeader(b, TBroadcastMsg, id), uint64(m.Time))
	return appendStr16(appendStr8(b, m.From), m.Text)
}

// Parse decodes a body; the text must be valid UTF-8 within the limit.
func (m *BroadcastMsg) Parse(body []byte) error {
	d := dec{b: body}
	m.Time = int64(d.u64())
	m.From, m.Text = d.str8(), d.str16()
	if err := d.done(); err != nil {
		return err
	}
	return checkBroadcastText(m.Text)
}

// Kinds of inner plaintexts besides KindText and KindFile. They travel
// inside sealed bodies only: a receipt goes as a KindText message, so the
// server cannot tell it from one; typing goes as a Signal.
const (
	// KindReceipt: the body is a Receipt.
	KindReceipt uint8 = 3
	// KindTyping: the body is a Typing.
	KindTyping uint8 = 4
)

// Receipt types.
const (
	ReceiptDelivered uint8 = 1 // the receiver's client has the messages
	ReceiptRead      uint8 = 2 // the receiver has seen them
)

// MaxReceiptIDs bounds the message ids of one receipt.
const MaxReceiptIDs = 64

// Receipt is the body of a KindReceipt inner: it says that messages from
// the inner's receiver were delivered to or read by its sender. Group is
// the group the messages were sent to, or empty for direct messages.
type Receipt struct {
	Type   uint8
	Group  []byte
	MsgIDs [][]byte // 16 bytes each
}

// Append appends the receipt body to b:
// type u8 | group str8 | count u8 (1..MaxReceiptIDs) | msg_id 16 x count.
func (r *Receipt) Append(b []byte) []byte {
	b = appendStr8(append(b, r.Type), r.Group)
	b = append(b, byte(len(r.MsgIDs)))
	for _, id := range r.MsgIDs {
		b = append(b, id...)
	}
	return b
}

// Parse decodes a receipt body.
func (r *Receipt) Parse(b []byte) error {
	d := dec{b: b}
	r.Type = d.u8()
	r.Group = d.str8()
	n := int(d.u8())
	if d.err == nil && (r.Type < ReceiptDelivered || r.Type > ReceiptRead || n == 0 || n > MaxReceiptIDs) {
		return fmt.Errorf("%w: receipt type %d with %d ids", ErrMalformed, r.Type, n)
	}
	r.MsgIDs = r.MsgIDs[:0]
	for i := 0; i < n && d.err == nil; i++ {
		r.MsgIDs = append(r.MsgIDs, d.fixed(MsgIDLen))
	}
	return d.done()
}

// Typing is the body of a KindTyping inner: its sender started (Active)
// or stopped typing in a direct conversation (Group empty) or a group.
type Typing struct {
	Active bool
	Group  []byte
}

// Append appends the typing body to b: active u8 | group str8.
func (t *Typing) Append(b []byte) []byte {
	return appendStr8(append(b, boolByte(t.Active)), t.Group)
}

// Parse decodes a typing body.
func (t *Typing) Parse(b []byte) error {
	d := dec{b: b}
	t.Active = d.bool()
	t.Group = d.str8()
	return d.done()
}
