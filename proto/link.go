package proto

import (
	"bytes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// Linking a new device. A device of the account (the existing one, E)
// offers a link; the new device (N) joins it with the link's code, which
// the user carries from E's screen to N (as a QR code or text). The code
// holds a secret of 256 bits and the account's master key; the two
// devices meet at the server on a channel named by a hash of the secret,
// and everything they say is sealed with keys derived from it, so the
// server that relays the channel can neither read nor alter it, and
// nobody without the code can join it.
//
//	link code  = LinkCodePrefix base64url(version u8 (3 to 5) | user str8 | addr str8
//	             | server_key 32 | master 32 | secret 32 [| flags u8 (version 5)])
//	channel id = HKDF-SHA256(secret, info LinkChannelInfo), 16 bytes
//	keys       = HKDF-SHA256(secret, info LinkKeyInfo "existing to new" or
//	             "new to existing"), 32 bytes each
//	frame      = ChaCha20-Poly1305(key of its direction, nonce = its number
//	             in that direction (u64 big endian, zero padded to 12), plain)
//
// Frames are numbered from 0 in each direction: one dropped, repeated,
// reordered or altered by the relay does not open.
//
// What the devices say (the plaintexts):
//
//	link request = kind u8 (1) | name str8 | box_key 32 | sign_key 32 | sig 64
//	link accept  = kind u8 (2) | statement str16
//	link refuse  = kind u8 (3) | reason str16
//	link sync    = kind u8 (4) | more u8 | count u16
//	               | (user str8 | box_key 32 | sign_key 32 | verified u8 | held str8) x count
//	link done    = kind u8 (5)
//	link hold    = kind u8 (6) | more u8 | on u8 | count u16
//	               | (user str8 | n u8 (<= MaxHoldApproved) | device_id u64 x n) x count
//	link manage  = kind u8 (7) | master_seed 32
//	link history = kind u8 (8) | more u8 | total u32 | count u16 | history entry x count
//	               (linkhistory.go)
//
// N sends the request: its name and the keys it made, signed by its sign
// key over LinkRequestContext, the channel id and every byte before sig
// (so it holds that key). E, once its user agrees, appends a statement
// adding N to the account's device list (signed by the master key) and
// sends it back: N checks it against the master key in the code. Then E
// sends what N needs to start where E stands, in sync frames (the last with
// more 0): the keys E pinned for each contact, whether its user verified
// them (compared safety numbers), and, if they changed and the user has not
// accepted the change, the fingerprint from before (held: messages to them
// wait), so N trusts the same keys and not whatever the server shows it
// first. From code version 3, hold frames follow (the last with more 0):
// whether the user holds contacts' new devices, and the devices approved
// of each contact, so N holds what E holds. A code of version 4 makes N a
// device that manages the account's devices: after the hold frames E
// sends one manage frame, the seed of the account's master key, which N
// checks against the master key in the code and keeps (the key goes to
// another device only this way, and only when E's user asked for it).
// A code of version 5 says in its flags what follows the hold frames: a
// manage frame (LinkFlagManage, as version 4), then history frames
// (LinkFlagHistory), the conversations E kept, when E's user asked to
// copy them. N answers the last frame with done: E then knows N has it
// all, and may leave. (Code version 1 had no sync, version 2 no hold
// frames; N reads codes of versions 2 to 5, and E makes version 3, or 4 to
// make the new device manage, unless asked to copy history, so a new
// device of an older build reads what it can.)
const (
	LinkCodePrefix     = "securefastchat-link:"
	LinkCodeVersion    = 5 // the newest read; a code that copies no history is 3 or 4
	LinkSecretLen      = 32
	LinkChannelLen     = 16
	LinkChannelInfo    = "securefastchat v1 link channel"
	LinkKeyInfo        = "securefastchat v1 link key "
	LinkRequestContext = "securefastchat v1 link request"
	// MaxLinkData is the largest sealed frame a device may relay.
	MaxLinkData = 60 << 10
	// LinkTTL is how long a link lives from its offer: the server ends it
	// then, and the devices wait no longer.
	LinkTTL = 10 * time.Minute
	// LinkMaxFrames and LinkMaxBytes bound what a server relays on one
	// link, both ways together: past them it ends the link.
	LinkMaxFrames = 256
	LinkMaxBytes  = 4 << 20
)

// Link roles (LinkOpen).
const (
	LinkOffer uint8 = 1 // an existing device, logged in, offers a link
	LinkJoin  uint8 = 2 // the new device joins it, before any login
)

// Link frame kinds.
const (
	LinkKindRequest uint8 = 1
	LinkKindAccept  uint8 = 2
	LinkKindRefuse  uint8 = 3
	LinkKindSync    uint8 = 4
	LinkKindDone    uint8 = 5
	LinkKindHold    uint8 = 6
	LinkKindManage  uint8 = 7
	LinkKindHistory uint8 = 8
)

// Link code flags (version 5): what the existing device sends after the
// hold frames.
const (
	LinkFlagManage  uint8 = 1 // a manage frame: the new device manages the account's devices
	LinkFlagHistory uint8 = 2 // history frames: the conversations the existing device kept
	linkFlagsKnown        = LinkFlagManage | LinkFlagHistory
)

// ErrBadLinkCode is the error for a code that does not parse.
var ErrBadLinkCode = errors.New("proto: not a securefastchat link code")

// LinkCode is what a link carries from the existing device to the new one.
type LinkCode struct {
	Version   uint8  // 0: LinkCodeVersion
	User      []byte // canonical
	Addr      string // the server, host:port
	ServerKey PublicKey
	Master    ed25519.PublicKey
	Secret    [LinkSecretLen]byte
	Flags     uint8 // version 5
}

// Manages reports whether the code makes the new device manage the
// account's devices (a manage frame follows the hold frames).
func (l *LinkCode) Manages() bool {
	return l.Version == 4 || l.Version >= 5 && l.Flags&LinkFlagManage != 0
}

// CopiesHistory reports whether history frames follow.
func (l *LinkCode) CopiesHistory() bool {
	return l.Version >= 5 && l.Flags&LinkFlagHistory != 0
}

// String returns the code as text (for a QR code or to copy).
func (l *LinkCode) String() string {
	v := l.Version
	if v == 0 {
		v = LinkCodeVersion
	}
	b := appendStr8(appendStr8([]byte{v}, l.User), []byte(l.Addr))
	b = append(append(append(b, l.ServerKey.Bytes()...), l.Master...), l.Secret[:]...)
	if v >= 5 {
		b = append(b, l.Flags)
	}
	return LinkCodePrefix + base64.RawURLEncoding.EncodeToString(b)
}

// ParseLinkCode reads a code made by LinkCode.String. Spaces and line
// breaks in it, as a copy off a screen may add, are ignored.
func ParseLinkCode(s string) (*LinkCode, error) {
	s = strings.Join(strings.Fields(s), "")
	rest, ok := strings.CutPrefix(s, LinkCodePrefix)
	if !ok {
		return nil, fmt.Errorf("%w: it starts with %q", ErrBadLinkCode, LinkCodePrefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadLinkCode, err)
	}
	d := dec{b: b}
	v := d.u8()
	if d.err == nil && (v < 2 || v > LinkCodeVersion) {
		return nil, fmt.Errorf("%w: version %d (this build reads 2 to %d); update securefastchat on both devices", ErrBadLinkCode, v, LinkCodeVersion)
	}
	l := &LinkCode{Version: v, User: d.str8(), Addr: string(d.str8())}
	sk := d.fixed(KeyLen)
	l.Master = ed25519.PublicKey(d.fixed(ed25519.PublicKeySize))
	copy(l.Secret[:], d.fixed(LinkSecretLen))
	if v >= 5 {
		l.Flags = d.u8()
	}
	if err := d.done(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadLinkCode, err)
	}
	if l.Flags&^linkFlagsKnown != 0 {
		return nil, fmt.Errorf("%w: it asks for something this build does not know (flags %#x); update securefastchat on this device", ErrBadLinkCode, l.Flags)
	}
	if !ValidUsername(l.User) || l.Addr == "" {
		return nil, fmt.Errorf("%w: no user or server in it", ErrBadLinkCode)
	}
	if l.ServerKey, err = ParsePublicKey(sk); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadLinkCode, err)
	}
	l.Master = append(ed25519.PublicKey(nil), l.Master...)
	return l, nil
}

// Channel returns the channel id the code's devices meet on.
func (l *LinkCode) Channel() [LinkChannelLen]byte { return LinkChannel(l.Secret) }

// LinkChannel derives a channel id from a link secret.
func LinkChannel(secret [LinkSecretLen]byte) [LinkChannelLen]byte {
	var c [LinkChannelLen]byte
	copy(c[:], linkKDF(secret, LinkChannelInfo, LinkChannelLen))
	return c
}

func linkKDF(secret [LinkSecretLen]byte, info string, n int) []byte {
	out, err := hkdf.Key(sha256.New, secret[:], nil, info, n)
	if err != nil {
		panic("proto: hkdf: " + err.Error()) // only for an impossible length
	}
	return out
}

// LinkCipher seals and opens one device's frames on a link channel. It is
// not safe for concurrent use.
type LinkCipher struct {
	send, recv   cipher.AEAD
	sent, opened uint64
}

// NewLinkCipher returns the cipher of the existing device (existing) or
// of the new one.
func NewLinkCipher(secret [LinkSecretLen]byte, existing bool) *LinkCipher {
	toNew, _ := chacha20poly1305.New(linkKDF(secret, LinkKeyInfo+"existing to new", chacha20poly1305.KeySize))
	toExisting, _ := chacha20poly1305.New(linkKDF(secret, LinkKeyInfo+"new to existing", chacha20poly1305.KeySize))
	if existing {
		return &LinkCipher{send: toNew, recv: toExisting}
	}
	return &LinkCipher{send: toExisting, recv: toNew}
}

func linkNonce(n uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 4, chacha20poly1305.NonceSize), n)
}

// Seal appends the next frame, sealing plain, to dst.
func (c *LinkCipher) Seal(dst, plain []byte) []byte {
	out := c.send.Seal(dst, linkNonce(c.sent), plain, nil)
	c.sent++
	return out
}

// Open opens the next frame from the other device. A frame that is not
// the next one sealed with the other device's key fails with ErrDecrypt.
func (c *LinkCipher) Open(dst, frame []byte) ([]byte, error) {
	out, err := c.recv.Open(dst, linkNonce(c.opened), frame, nil)
	if err != nil {
		return dst, ErrDecrypt
	}
	c.opened++
	return out, nil
}

// LinkRequest is the new device's first frame: its name and keys.
type LinkRequest struct {
	Name    []byte
	BoxKey  []byte // 32
	SignKey []byte // 32
	Sig     []byte // 64
}

func (m *LinkRequest) appendUnsigned(b []byte) []byte {
	return append(append(appendStr8(append(b, LinkKindRequest), m.Name), m.BoxKey...), m.SignKey...)
}

func (m *LinkRequest) signed(channel [LinkChannelLen]byte) []byte {
	return m.appendUnsigned(append([]byte(LinkRequestContext), channel[:]...))
}

// Sign signs the request with the new device's sign key, for channel.
func (m *LinkRequest) Sign(key ed25519.PrivateKey, channel [LinkChannelLen]byte) {
	m.Sig = ed25519.Sign(key, m.signed(channel))
}

// Verify checks the keys and that the request's sign key signed it for
// channel.
func (m *LinkRequest) Verify(channel [LinkChannelLen]byte) error {
	if _, err := ParsePublicKey(m.BoxKey); err != nil {
		return err
	}
	if len(m.SignKey) != ed25519.PublicKeySize || !ed25519.Verify(m.SignKey, m.signed(channel), m.Sig) {
		return ErrBadSignature
	}
	return nil
}

// DeviceID is the id the device will have in the account's list.
func (m *LinkRequest) DeviceID() uint64 {
	return KeyRecordID(&Keys{BoxKey: m.BoxKey, SignKey: m.SignKey})
}

// Append appends the frame's plaintext.
func (m *LinkRequest) Append(b []byte) []byte { return append(m.appendUnsigned(b), m.Sig...) }

// Parse decodes a request's plaintext.
func (m *LinkRequest) Parse(b []byte) error {
	d := dec{b: b}
	if k := d.u8(); d.err == nil && k != LinkKindRequest {
		return fmt.Errorf("%w: link frame kind %d, want a request", ErrMalformed, k)
	}
	m.Name = d.str8()
	m.BoxKey, m.SignKey, m.Sig = d.fixed(KeyLen), d.fixed(ed25519.PublicKeySize), d.fixed(ed25519.SignatureSize)
	if err := d.done(); err != nil {
		return err
	}
	if len(m.Name) == 0 || len(m.Name) > MaxDeviceName {
		return fmt.Errorf("%w: a device name is 1 to %d bytes", ErrMalformed, MaxDeviceName)
	}
	return nil
}

// LinkAnswer is the existing device's answer: the statement that added the
// new device, or why it refused.
type LinkAnswer struct {
	Statement []byte // accept
	Refusal   []byte // refuse
}

// Append appends the frame's plaintext.
func (m *LinkAnswer) Append(b []byte) []byte {
	if m.Statement != nil {
		return appendStr16(append(b, LinkKindAccept), m.Statement)
	}
	return appendStr16(append(b, LinkKindRefuse), m.Refusal)
}

// Parse decodes an answer's plaintext.
func (m *LinkAnswer) Parse(b []byte) error {
	d := dec{b: b}
	*m = LinkAnswer{}
	switch k := d.u8(); {
	case d.err != nil:
	case k == LinkKindAccept:
		m.Statement = d.str16()
		if d.err == nil && m.Statement == nil {
			m.Statement = []byte{}
		}
	case k == LinkKindRefuse:
		m.Refusal = d.str16()
	default:
		return fmt.Errorf("%w: link frame kind %d, want an answer", ErrMalformed, k)
	}
	return d.done()
}

// LinkContact is one contact in a sync frame: the keys pinned for them
// and whether the user verified those keys.
type LinkContact struct {
	User     []byte
	BoxKey   []byte // 32
	SignKey  []byte // 32
	Verified bool
	Held     []byte // the fingerprint before a change not accepted; empty if none
}

// LinkSync is a sync frame: contacts, and whether more frames follow.
type LinkSync struct {
	More     bool
	Contacts []LinkContact
}

// linkContactMax is the most a contact takes in a sync frame.
const linkContactMax = 1 + MaxUsernameLen + KeyLen + ed25519.PublicKeySize + 1 + 1 + 255

// LinkSyncPerFrame is how many contacts a sync frame carries at most, so
// that it fits a link frame.
const LinkSyncPerFrame = (MaxLinkData - 64) / linkContactMax

// Append appends the frame's plaintext.
func (m *LinkSync) Append(b []byte) []byte {
	b = append(b, LinkKindSync, boolByte(m.More))
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Contacts)))
	for _, c := range m.Contacts {
		b = append(append(appendStr8(b, c.User), c.BoxKey...), c.SignKey...)
		b = appendStr8(append(b, boolByte(c.Verified)), c.Held)
	}
	return b
}

// Parse decodes a sync frame's plaintext.
func (m *LinkSync) Parse(b []byte) error {
	d := dec{b: b}
	if k := d.u8(); d.err == nil && k != LinkKindSync {
		return fmt.Errorf("%w: link frame kind %d, want a sync", ErrMalformed, k)
	}
	m.More = d.bool()
	n := int(d.u16())
	if d.err == nil && n > LinkSyncPerFrame {
		return fmt.Errorf("%w: %d contacts in a sync frame", ErrMalformed, n)
	}
	m.Contacts = nil
	for i := 0; i < n && d.err == nil; i++ {
		c := LinkContact{User: d.str8(), BoxKey: d.fixed(KeyLen), SignKey: d.fixed(ed25519.PublicKeySize), Verified: d.bool(), Held: d.str8()}
		if d.err == nil && !ValidUsername(c.User) {
			return fmt.Errorf("%w: a contact's name", ErrMalformed)
		}
		m.Contacts = append(m.Contacts, c)
	}
	return d.done()
}

// MaxHoldApproved bounds the devices approved of one contact that a hold
// frame carries (the most recent).
const MaxHoldApproved = 4 * MaxDevices

// LinkHoldContact is the devices approved of one contact.
type LinkHoldContact struct {
	User     []byte
	Approved []uint64
}

// LinkHold is a hold frame: whether contacts' new devices are held, the
// devices approved, and whether more frames follow.
type LinkHold struct {
	More     bool
	On       bool
	Contacts []LinkHoldContact
}

// linkHoldMax is the most a contact takes in a hold frame.
const linkHoldMax = 1 + MaxUsernameLen + 1 + 8*MaxHoldApproved

// LinkHoldPerFrame is how many contacts a hold frame carries at most.
const LinkHoldPerFrame = (MaxLinkData - 64) / linkHoldMax

// Append appends the frame's plaintext.
func (m *LinkHold) Append(b []byte) []byte {
	b = append(b, LinkKindHold, boolByte(m.More), boolByte(m.On))
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Contacts)))
	for _, c := range m.Contacts {
		b = appendIDs(appendStr8(b, c.User), c.Approved)
	}
	return b
}

// Parse decodes a hold frame's plaintext.
func (m *LinkHold) Parse(b []byte) error {
	d := dec{b: b}
	if k := d.u8(); d.err == nil && k != LinkKindHold {
		return fmt.Errorf("%w: link frame kind %d, want a hold", ErrMalformed, k)
	}
	m.More, m.On = d.bool(), d.bool()
	n := int(d.u16())
	if d.err == nil && n > LinkHoldPerFrame {
		return fmt.Errorf("%w: %d contacts in a hold frame", ErrMalformed, n)
	}
	m.Contacts = nil
	for i := 0; i < n && d.err == nil; i++ {
		c := LinkHoldContact{User: d.str8(), Approved: d.ids(MaxHoldApproved)}
		if d.err == nil && !ValidUsername(c.User) {
			return fmt.Errorf("%w: a contact's name", ErrMalformed)
		}
		m.Contacts = append(m.Contacts, c)
	}
	return d.done()
}

// LinkManage is the frame that gives the new device the account's
// master key (code version 4).
type LinkManage struct {
	Seed []byte // ed25519.SeedSize
}

// Append appends the frame to b.
func (m *LinkManage) Append(b []byte) []byte { return append(append(b, LinkKindManage), m.Seed...) }

// Parse decodes a manage frame.
func (m *LinkManage) Parse(b []byte) error {
	d := dec{b: b}
	if k := d.u8(); d.err == nil && k != LinkKindManage {
		return fmt.Errorf("%w: link frame kind %d, want the master key", ErrMalformed, k)
	}
	m.Seed = d.fixed(ed25519.SeedSize)
	return d.done()
}

// Key returns the master key the frame carries, once its public half is
// master.
func (m *LinkManage) Key(master ed25519.PublicKey) (ed25519.PrivateKey, error) {
	k := ed25519.NewKeyFromSeed(m.Seed)
	if !bytes.Equal(k.Public().(ed25519.PublicKey), master) {
		return nil, fmt.Errorf("%w: the key in the manage frame is not the account's master key", ErrBadSignature)
	}
	return k, nil
}

// LinkDone is the new device's last frame: it has the sync.
var LinkDone = []byte{LinkKindDone}

// ParseLinkDone checks a done frame's plaintext.
func ParseLinkDone(b []byte) error {
	if !bytes.Equal(b, LinkDone) {
		return fmt.Errorf("%w: want the new device's done", ErrMalformed)
	}
	return nil
}

// Messages to and from the server.
const (
	TLinkOpen   MsgType = 0x1A // channel 16 | role u8 (version 3)
	TLinkData   MsgType = 0x1B // data str16 (<= MaxLinkData) (version 3)
	TLinkJoined MsgType = 0x98 // (empty): the new device joined the link offered (version 3)
	TLinkRelay  MsgType = 0x99 // data str16: a frame from the other device (version 3)
	TLinkClosed MsgType = 0x9A // (empty): the other device left, or the link expired (version 3)
)

// LinkOpen offers a link channel or joins one.
type LinkOpen struct {
	Channel [LinkChannelLen]byte
	Role    uint8
}

// Append appends the message to b.
func (m *LinkOpen) Append(b []byte, id uint32) []byte {
	return append(append(AppendHeader(b, TLinkOpen, id), m.Channel[:]...), m.Role)
}

// Parse decodes a body.
func (m *LinkOpen) Parse(body []byte) error {
	d := dec{b: body}
	copy(m.Channel[:], d.fixed(LinkChannelLen))
	m.Role = d.u8()
	if err := d.done(); err != nil {
		return err
	}
	if m.Role != LinkOffer && m.Role != LinkJoin {
		return fmt.Errorf("%w: link role %d", ErrMalformed, m.Role)
	}
	return nil
}

// LinkData is a sealed frame for the other device: TLinkData from a
// device, TLinkRelay to the other.
type LinkData struct{ Data []byte }

// Append appends the message with type t to b.
func (m *LinkData) Append(b []byte, t MsgType, id uint32) []byte {
	return appendStr16(AppendHeader(b, t, id), m.Data)
}

// Parse decodes a body.
func (m *LinkData) Parse(body []byte) error {
	d := dec{b: body}
	m.Data = d.str16()
	if err := d.done(); err != nil {
		return err
	}
	if len(m.Data) > MaxLinkData {
		return fmt.Errorf("%w: link frame of %d bytes, limit %d", ErrTooLarge, len(m.Data), MaxLinkData)
	}
	return nil
}
