package proto

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"slices"
)

// Group message types.
const (
	TGroupChange MsgType = 0x40 // group str8 | statement str16 | epoch u32 | roster_seq u32 | part u16 | parts u16 | count u16 | (member str8 | wrapped str8) x count
	TGroupList   MsgType = 0x41 // (empty)
	TGroupChain  MsgType = 0x42 // group str8 | from u32
	TGroupKeys   MsgType = 0x43 // group str8 | from_epoch u32 (0: the current epoch only)
	TSendGroup   MsgType = 0x44 // group str8 | epoch u32 | msg_id 16 | body str16 | sig 64
	// TSendGroupFile is TSendGroup for a file chunk: the server charges it
	// to the sender's byte budget rather than the message count.
	TSendGroupFile MsgType = 0x45 // as TSendGroup

	TGroups          MsgType = 0x88 // count u16 | name str8 x count
	TGroupChainReply MsgType = 0x89 // group str8 | more u8 | count u16 | statement str16 x count
	TGroupKeysReply  MsgType = 0x8A // group str8 | epoch u32 (current) | count u16 | (epoch u32 | roster_seq u32 | created i64 (unix ms) | wrapper str8 | wrapped str8) x count
	TDeliverGroup    MsgType = 0x8B // server_id u64 | time i64 (unix ms) | group str8 | from str8 | epoch u32 | msg_id 16 | body str16 | sig 64
	// TGroupChanged is a push (id 0, version 2) to a group's members
	// online, and to a member just removed, when its roster or its keys
	// change (chain_len 0: the keys only): the client fetches the group and
	// checks what changed.
	TGroupChanged MsgType = 0x91 // group str8 | chain_len u32 (as GroupReq)

	// Version 2: every epoch travels with its signed epoch statement
	// (EpochStatement), and a member whose copy does not open or match
	// the statement's key commitment reports the epoch bad.
	TGroupChangeV2    MsgType = 0x46 // group str8 | statement str16 | epoch_stmt str16 | epoch u32 | roster_seq u32 | part u16 | parts u16 | count u16 | (member str8 | wrapped str8) x count
	TGroupBadEpoch    MsgType = 0x47 // group str8 | epoch u32 | sig 64 (BadEpochSigned, by the reporter)
	TGroupKeysReplyV2 MsgType = 0x92 // group str8 | epoch u32 (current) | count u16 | (epoch u32 | roster_seq u32 | created i64 | wrapper str8 | wrapped str8 | epoch_stmt str16 | bad_by str8 | bad_sig str8) x count

	// Version 5: an epoch's key is wrapped for every device of every
	// member, by a device (its epoch statement is version 2, signed by
	// that device); a member device gets its own copy; reports of a bad
	// epoch and group messages are signed by devices, and a group message
	// names the device that sent it. Device 0 in a key, report or message
	// stands for the account's keys: the forms before devices.
	TGroupChangeV3    MsgType = 0x4A // as TGroupChangeV2, with (member str8 | device u64 | wrapped str8) x count
	TGroupBadEpochV2  MsgType = 0x4B // group str8 | epoch u32 | device u64 | sig 64 (BadEpochSigned with the device)
	TGroupKeysReplyV3 MsgType = 0x9E // group str8 | epoch u32 (current) | count u16 | (epoch u32 | roster_seq u32 | created i64 | wrapper str8 | wrapper_device u64 | wrapped str8 | epoch_stmt str16 | bad_by str8 | bad_device u64 | bad_sig str8) x count
	TDeliverGroupV2   MsgType = 0x9F // server_id u64 | time i64 | group str8 | from str8 | from_device u64 | epoch u32 | msg_id 16 | body str16 | sig 64
)

// Group limits.
const (
	// MaxGroupMembers caps a group's roster.
	MaxGroupMembers = 1024
	// MaxEpochParts caps the parts of one epoch upload (TGroupChangeV2).
	MaxEpochParts = 16
	// MaxGroupDevices is how many member devices one epoch's key is
	// wrapped for at most: every member with every device. An upload
	// per device (TGroupChangeV3) carries at most MaxWrapsPerPart keys a
	// part, in at most MaxEpochPartsV3 parts.
	MaxGroupDevices = MaxGroupMembers * MaxDevices
	MaxWrapsPerPart = 250
	MaxEpochPartsV3 = (MaxGroupDevices + MaxWrapsPerPart - 1) / MaxWrapsPerPart
	// MaxWrappedLen bounds one wrapped key.
	MaxWrappedLen = 255
)

// WrappedFor is one member device's wrapped key in an upload (Device 0:
// the member's account keys, in a TGroupChangeV2).
type WrappedFor struct {
	Member  []byte
	Device  uint64
	Wrapped []byte
}

// GroupChange carries a roster statement, a new key epoch, or both. An
// epoch's wrapped keys may span several parts (1-based Part of Parts); the
// server checks each part as it comes and applies the change when the last
// one arrives, answering the others with OK. A create is a change whose
// statement is the create statement, with epoch 1. It is sent as
// TGroupChangeV3 if PerDevice (its keys wrapped for member devices), else
// as TGroupChangeV2 (for members' account keys), whose epoch travels with
// its signed EpochStmt; TGroupChange is the version 1 form, without it,
// which servers now refuse.
type GroupChange struct {
	PerDevice bool
	Group     []byte
	Statement []byte // empty: a rekey only
	EpochStmt []byte // the epoch's signed EpochStatement; empty with epoch 0
	Epoch     uint32 // 0: no new epoch (a leave)
	RosterSeq uint32 // the statement the epoch is wrapped for
	Part      uint16
	Parts     uint16
	Keys      []WrappedFor
}

// Append appends the message to b as TGroupChangeV3 (PerDevice) or
// TGroupChangeV2.
func (m *GroupChange) Append(b []byte, id uint32) []byte {
	t := TGroupChangeV2
	if m.PerDevice {
		t = TGroupChangeV3
	}
	b = appendStr16(appendStr8(AppendHeader(b, t, id), m.Group), m.Statement)
	return m.appendRest(appendStr16(b, m.EpochStmt))
}

// AppendV1 appends the version 1 form (TGroupChange: no epoch statement).
func (m *GroupChange) AppendV1(b []byte, id uint32) []byte {
	return m.appendRest(appendStr16(appendStr8(AppendHeader(b, TGroupChange, id), m.Group), m.Statement))
}

func (m *GroupChange) appendRest(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, m.Epoch)
	b = binary.BigEndian.AppendUint32(b, m.RosterSeq)
	b = binary.BigEndian.AppendUint16(b, m.Part)
	b = binary.BigEndian.AppendUint16(b, m.Parts)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Keys)))
	for _, k := range m.Keys {
		b = appendStr8(b, k.Member)
		if m.PerDevice {
			b = binary.BigEndian.AppendUint64(b, k.Device)
		}
		b = appendStr8(b, k.Wrapped)
	}
	return b
}

// ParseAs decodes a body of type t: TGroupChangeV3, TGroupChangeV2 or
// TGroupChange.
func (m *GroupChange) ParseAs(t MsgType, body []byte) error {
	d := dec{b: body}
	m.PerDevice = t == TGroupChangeV3
	m.Group, m.Statement, m.EpochStmt = d.str8(), d.str16(), nil
	if t == TGroupChangeV2 || m.PerDevice {
		m.EpochStmt = d.str16()
	}
	m.Epoch, m.RosterSeq = d.u32(), d.u32()
	m.Part, m.Parts = d.u16(), d.u16()
	n := int(d.u16())
	maxParts, maxKeys := MaxEpochParts, MaxGroupMembers
	if m.PerDevice {
		maxParts, maxKeys = MaxEpochPartsV3, MaxWrapsPerPart
	}
	if d.err == nil && (m.Parts == 0 || m.Part == 0 || m.Part > m.Parts || int(m.Parts) > maxParts || n > maxKeys) {
		d.err = fmt.Errorf("%w: part %d of %d, %d keys", ErrMalformed, m.Part, m.Parts, n)
	}
	m.Keys = m.Keys[:0]
	for i := 0; i < n && d.err == nil; i++ {
		k := WrappedFor{Member: d.str8()}
		if m.PerDevice {
			k.Device = d.u64()
		}
		k.Wrapped = d.str8()
		m.Keys = append(m.Keys, k)
	}
	if d.err == nil && m.PerDevice && slices.ContainsFunc(m.Keys, func(k WrappedFor) bool { return k.Device == 0 }) {
		d.err = fmt.Errorf("%w: a key wrapped for device 0", ErrMalformed)
	}
	return d.done()
}

// GroupReq asks for a group's chain (from a seq) or keys (from an epoch).
type GroupReq struct {
	Group []byte
	From  uint32
}

// Append appends the message with type t (TGroupChain, TGroupKeys or
// TGroupChanged).
func (m *GroupReq) Append(b []byte, t MsgType, id uint32) []byte {
	return binary.BigEndian.AppendUint32(appendStr8(AppendHeader(b, t, id), m.Group), m.From)
}

// Parse decodes a body.
func (m *GroupReq) Parse(body []byte) error {
	d := dec{b: body}
	m.Group, m.From = d.str8(), d.u32()
	return d.done()
}

// Groups lists group names.
type Groups struct{ Names [][]byte }

// Append appends the message to b.
func (m *Groups) Append(b []byte, id uint32) []byte {
	return appendNames(AppendHeader(b, TGroups, id), m.Names)
}

// Parse decodes a body.
func (m *Groups) Parse(body []byte) error {
	var err error
	m.Names, err = parseNames(body, 0)
	return err
}

// appendNames appends a list of names: count u16 | name str8 x count.
func appendNames(b []byte, names [][]byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(names)))
	for _, n := range names {
		b = appendStr8(b, n)
	}
	return b
}

// parseNames decodes a whole body that is a list of names (appendNames),
// of at most max names if max > 0.
func parseNames(body []byte, max int) ([][]byte, error) {
	d := dec{b: body}
	n := int(d.u16())
	if d.err == nil && max > 0 && n > max {
		d.err = fmt.Errorf("%w: %d names, at most %d", ErrMalformed, n, max)
	}
	var names [][]byte
	for i := 0; i < n && d.err == nil; i++ {
		names = append(names, d.str8())
	}
	return names, d.done()
}

// GroupChainReply returns statements in order; More says more follow.
type GroupChainReply struct {
	Group      []byte
	More       bool
	Statements [][]byte
}

// Append appends the message to b.
func (m *GroupChainReply) Append(b []byte, id uint32) []byte {
	return appendChainPage(AppendHeader(b, TGroupChainReply, id), m.Group, m.More, m.Statements)
}

// Parse decodes a body.
func (m *GroupChainReply) Parse(body []byte) error {
	var err error
	m.Group, m.More, m.Statements, err = parseChainPage(&dec{b: body})
	return err
}

// A page of a signed chain (a group's roster, an account's devices):
//
//	name str8 | more u8 | count u16 | statement str16 x count
func appendChainPage(b, name []byte, more bool, stmts [][]byte) []byte {
	b = appendStr8(b, name)
	b = binary.BigEndian.AppendUint16(append(b, boolByte(more)), uint16(len(stmts)))
	for _, s := range stmts {
		b = appendStr16(b, s)
	}
	return b
}

func parseChainPage(d *dec) (name []byte, more bool, stmts [][]byte, err error) {
	name, more = d.str8(), d.bool()
	n := int(d.u16())
	for i := 0; i < n && d.err == nil; i++ {
		stmts = append(stmts, d.str16())
	}
	return name, more, stmts, d.done()
}

// EpochKeyMsg is one of the requester's wrapped keys.
type EpochKeyMsg struct {
	Epoch     uint32
	RosterSeq uint32
	Created   int64 // unix ms, the server's clock
	Wrapper   []byte
	// WrapperDevice is the device that made the epoch and wrapped it
	// (version 5); 0: the wrapper's account keys.
	WrapperDevice uint64
	Wrapped       []byte
	// Version 2: the epoch's signed statement (empty for an epoch made
	// before statements), and a member's report that it is bad.
	Stmt   []byte
	BadBy  []byte
	BadSig []byte
	// BadDevice is the reporter's device that signed the report (version
	// 5); 0: the reporter's account key.
	BadDevice uint64
}

// GroupKeysReply returns the requester's wrapped keys and the current epoch.
type GroupKeysReply struct {
	Group   []byte
	Current uint32
	Keys    []EpochKeyMsg
}

// Append appends the message to b as type t: TGroupKeysReplyV3,
// TGroupKeysReplyV2 (without devices), or the version 1 form
// TGroupKeysReply (without statements and reports either).
func (m *GroupKeysReply) Append(b []byte, t MsgType, id uint32) []byte {
	b = binary.BigEndian.AppendUint32(appendStr8(AppendHeader(b, t, id), m.Group), m.Current)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Keys)))
	for _, k := range m.Keys {
		b = binary.BigEndian.AppendUint32(b, k.Epoch)
		b = binary.BigEndian.AppendUint32(b, k.RosterSeq)
		b = binary.BigEndian.AppendUint64(b, uint64(k.Created))
		b = appendStr8(b, k.Wrapper)
		if t == TGroupKeysReplyV3 {
			b = binary.BigEndian.AppendUint64(b, k.WrapperDevice)
		}
		b = appendStr8(b, k.Wrapped)
		switch t {
		case TGroupKeysReplyV2:
			b = appendStr8(appendStr8(appendStr16(b, k.Stmt), k.BadBy), k.BadSig)
		case TGroupKeysReplyV3:
			b = binary.BigEndian.AppendUint64(appendStr8(appendStr16(b, k.Stmt), k.BadBy), k.BadDevice)
			b = appendStr8(b, k.BadSig)
		}
	}
	return b
}

// ParseAs decodes a body of type t (TGroupKeysReplyV3, TGroupKeysReplyV2
// or TGroupKeysReply).
func (m *GroupKeysReply) ParseAs(t MsgType, body []byte) error {
	d := dec{b: body}
	m.Group, m.Current = d.str8(), d.u32()
	n := int(d.u16())
	m.Keys = nil
	for i := 0; i < n && d.err == nil; i++ {
		k := EpochKeyMsg{Epoch: d.u32(), RosterSeq: d.u32(), Created: int64(d.u64()), Wrapper: d.str8()}
		if t == TGroupKeysReplyV3 {
			k.WrapperDevice = d.u64()
		}
		k.Wrapped = d.str8()
		switch t {
		case TGroupKeysReplyV2:
			k.Stmt, k.BadBy, k.BadSig = d.str16(), d.str8(), d.str8()
		case TGroupKeysReplyV3:
			k.Stmt, k.BadBy, k.BadDevice, k.BadSig = d.str16(), d.str8(), d.u64(), d.str8()
		}
		m.Keys = append(m.Keys, k)
	}
	return d.done()
}

// BadEpoch reports that the reporter's copy of an epoch's key does not
// open, or does not match the epoch statement's key commitment. With
// Device set (TGroupBadEpochV2) the reporter's device signs it.
type BadEpoch struct {
	Group  []byte
	Epoch  uint32
	Device uint64
	Sig    []byte // 64: the reporter's Ed25519 signature over BadEpochSigned
}

// Append appends the message to b: TGroupBadEpochV2 if Device is set,
// else TGroupBadEpoch.
func (m *BadEpoch) Append(b []byte, id uint32) []byte {
	t := TGroupBadEpoch
	if m.Device != 0 {
		t = TGroupBadEpochV2
	}
	b = binary.BigEndian.AppendUint32(appendStr8(AppendHeader(b, t, id), m.Group), m.Epoch)
	if m.Device != 0 {
		b = binary.BigEndian.AppendUint64(b, m.Device)
	}
	return append(b, m.Sig...)
}

// ParseAs decodes a body of type t (TGroupBadEpochV2 or TGroupBadEpoch).
func (m *BadEpoch) ParseAs(t MsgType, body []byte) error {
	d := dec{b: body}
	m.Group, m.Epoch, m.Device = d.str8(), d.u32(), 0
	if t == TGroupBadEpochV2 {
		if m.Device = d.u64(); d.err == nil && m.Device == 0 {
			d.err = fmt.Errorf("%w: a report by device 0", ErrMalformed)
		}
	}
	m.Sig = d.fixed(ed25519.SignatureSize)
	return d.done()
}

// SendGroup sends a message to a group under its current epoch.
type SendGroup struct {
	File  bool // a file chunk: sent as TSendGroupFile
	Group []byte
	Epoch uint32
	MsgID []byte // 16
	Body  []byte // secretbox under the epoch key
	Sig   []byte // 64: Ed25519 over GroupMsgSigned
}

// Append appends the message to b.
func (m *SendGroup) Append(b []byte, id uint32) []byte {
	t := TSendGroup
	if m.File {
		t = TSendGroupFile
	}
	b = binary.BigEndian.AppendUint32(appendStr8(AppendHeader(b, t, id), m.Group), m.Epoch)
	return append(appendStr16(append(b, m.MsgID...), m.Body), m.Sig...)
}

// Parse decodes a body.
func (m *SendGroup) Parse(body []byte) error {
	d := dec{b: body}
	m.Group, m.Epoch, m.MsgID = d.str8(), d.u32(), d.fixed(MsgIDLen)
	m.Body, m.Sig = d.bytes16(MaxBodyLen), d.fixed(64)
	return d.done()
}

// SetDeliverID writes a receiver's server id into an encoded Deliver or
// DeliverGroup (both begin with it), so one encoded message can go to
// many receivers, each with its own number. It returns msg.
func SetDeliverID(msg []byte, id uint64) []byte {
	binary.BigEndian.PutUint64(msg[MsgHeaderLen:], id)
	return msg
}

// DeliverGroup pushes a group message to a member device. FromDevice is
// the sender's device that signed it (TDeliverGroupV2); 0 (TDeliverGroup)
// says the sender's account key signed it.
type DeliverGroup struct {
	ServerID   uint64
	Time       int64
	Group      []byte
	From       []byte
	FromDevice uint64
	Epoch      uint32
	MsgID      []byte
	Body       []byte
	Sig        []byte
}

// Append appends the message to b: TDeliverGroupV2 if FromDevice is set,
// else TDeliverGroup.
func (m *DeliverGroup) Append(b []byte, id uint32) []byte {
	t := TDeliverGroup
	if m.FromDevice != 0 {
		t = TDeliverGroupV2
	}
	b = binary.BigEndian.AppendUint64(AppendHeader(b, t, id), m.ServerID)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Time))
	b = appendStr8(appendStr8(b, m.Group), m.From)
	if m.FromDevice != 0 {
		b = binary.BigEndian.AppendUint64(b, m.FromDevice)
	}
	b = binary.BigEndian.AppendUint32(b, m.Epoch)
	return append(appendStr16(append(b, m.MsgID...), m.Body), m.Sig...)
}

// ParseAs decodes a body of type t (TDeliverGroupV2 or TDeliverGroup).
func (m *DeliverGroup) ParseAs(t MsgType, body []byte) error {
	d := dec{b: body}
	m.ServerID, m.Time = d.u64(), int64(d.u64())
	m.Group, m.From, m.FromDevice = d.str8(), d.str8(), 0
	if t == TDeliverGroupV2 {
		if m.FromDevice = d.u64(); d.err == nil && m.FromDevice == 0 {
			d.err = fmt.Errorf("%w: a message from device 0", ErrMalformed)
		}
	}
	m.Epoch, m.MsgID = d.u32(), d.fixed(MsgIDLen)
	m.Body, m.Sig = d.bytes16(MaxBodyLen), d.fixed(64)
	return d.done()
}
