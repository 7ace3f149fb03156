package proto

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
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
)

// Group limits.
const (
	// MaxGroupMembers caps a group's roster.
	MaxGroupMembers = 1024
	// MaxEpochParts caps the parts of one epoch upload.
	MaxEpochParts = 16
	// MaxWrappedLen bounds one wrapped key.
	MaxWrappedLen = 255
)

// WrappedFor is one member's wrapped key in an upload.
type WrappedFor struct {
	Member  []byte
	Wrapped []byte
}

// GroupChange carries a roster statement, a new key epoch, or both. An
// epoch's wrapped keys may span several parts (1-based Part of Parts); the
// server checks each part as it comes and applies the change when the last
// one arrives, answering the others with OK. A create is a change whose
// statement is the create statement, with epoch 1. It is sent as
// TGroupChangeV2, whose epoch travels with its signed EpochStmt; TGroupChange
// is the version 1 form, without it, which servers now refuse.
type GroupChange struct {
	Group     []byte
	Statement []byte // empty: a rekey only
	EpochStmt []byte // the epoch's signed EpochStatement; empty with epoch 0
	Epoch     uint32 // 0: no new epoch (a leave)
	RosterSeq uint32 // the statement the epoch is wrapped for
	Part      uint16
	Parts     uint16
	Keys      []WrappedFor
}

// Append appends the message to b as TGroupChangeV2.
func (m *GroupChange) Append(b []byte, id uint32) []byte {
	b = appendStr16(appendStr8(AppendHeader(b, TGroupChangeV2, id), m.Group), m.Statement)
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
		b = appendStr8(appendStr8(b, k.Member), k.Wrapped)
	}
	return b
}

// ParseAs decodes a body of type t: TGroupChangeV2 or TGroupChange.
func (m *GroupChange) ParseAs(t MsgType, body []byte) error {
	d := dec{b: body}
	m.Group, m.Statement, m.EpochStmt = d.str8(), d.str16(), nil
	if t == TGroupChangeV2 {
		m.EpochStmt = d.str16()
	}
	m.Epoch, m.RosterSeq = d.u32(), d.u32()
	m.Part, m.Parts = d.u16(), d.u16()
	n := int(d.u16())
	if d.err == nil && (m.Parts == 0 || m.Part == 0 || m.Part > m.Parts || m.Parts > MaxEpochParts || n > MaxGroupMembers) {
		d.err = fmt.Errorf("%w: part %d of %d, %d keys", ErrMalformed, m.Part, m.Parts, n)
	}
	m.Keys = m.Keys[:0]
	for i := 0; i < n && d.err == nil; i++ {
		m.Keys = append(m.Keys, WrappedFor{Member: d.str8(), Wrapped: d.str8()})
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
	Wrapped   []byte
	// Version 2: the epoch's signed statement (empty for an epoch made
	// before statements), and a member's report that it is bad.
	Stmt   []byte
	BadBy  []byte
	BadSig []byte
}

// GroupKeysReply returns the requester's wrapped keys and the current epoch.
type GroupKeysReply struct {
	Group   []byte
	Current uint32
	Keys    []EpochKeyMsg
}

// Append appends the message to b as type t: TGroupKeysReplyV2, or the
// version 1 form TGroupKeysReply (without statements and reports).
func (m *GroupKeysReply) Append(b []byte, t MsgType, id uint32) []byte {
	b = binary.BigEndian.AppendUint32(appendStr8(AppendHeader(b, t, id), m.Group), m.Current)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Keys)))
	for _, k := range m.Keys {
		b = binary.BigEndian.AppendUint32(b, k.Epoch)
		b = binary.BigEndian.AppendUint32(b, k.RosterSeq)
		b = binary.BigEndian.AppendUint64(b, uint64(k.Created))
		b = appendStr8(appendStr8(b, k.Wrapper), k.Wrapped)
		if t == TGroupKeysReplyV2 {
			b = appendStr8(appendStr8(appendStr16(b, k.Stmt), k.BadBy), k.BadSig)
		}
	}
	return b
}

// ParseAs decodes a body of type t (TGroupKeysReplyV2 or TGroupKeysReply).
func (m *GroupKeysReply) ParseAs(t MsgType, body []byte) error {
	d := dec{b: body}
	m.Group, m.Current = d.str8(), d.u32()
	n := int(d.u16())
	m.Keys = nil
	for i := 0; i < n && d.err == nil; i++ {
		k := EpochKeyMsg{Epoch: d.u32(), RosterSeq: d.u32(), Created: int64(d.u64()), Wrapper: d.str8(), Wrapped: d.str8()}
		if t == TGroupKeysReplyV2 {
			k.Stmt, k.BadBy, k.BadSig = d.str16(), d.str8(), d.str8()
		}
		m.Keys = append(m.Keys, k)
	}
	return d.done()
}

// BadEpoch reports that the reporter's copy of an epoch's key does not
// open, or does not match the epoch statement's key commitment.
type BadEpoch struct {
	Group []byte
	Epoch uint32
	Sig   []byte // 64: the reporter's Ed25519 signature over BadEpochSigned
}

// Append appends the message to b.
func (m *BadEpoch) Append(b []byte, id uint32) []byte {
	b = binary.BigEndian.AppendUint32(appendStr8(AppendHeader(b, TGroupBadEpoch, id), m.Group), m.Epoch)
	return append(b, m.Sig...)
}

// Parse decodes a body.
func (m *BadEpoch) Parse(body []byte) error {
	d := dec{b: body}
	m.Group, m.Epoch, m.Sig = d.str8(), d.u32(), d.fixed(ed25519.SignatureSize)
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

// DeliverGroup pushes a group message to a member.
type DeliverGroup struct {
	ServerID uint64
	Time     int64
	Group    []byte
	From     []byte
	Epoch    uint32
	MsgID    []byte
	Body     []byte
	Sig      []byte
}

// Append appends the message to b.
func (m *DeliverGroup) Append(b []byte, id uint32) []byte {
	b = binary.BigEndian.AppendUint64(AppendHeader(b, TDeliverGroup, id), m.ServerID)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Time))
	b = binary.BigEndian.AppendUint32(appendStr8(appendStr8(b, m.Group), m.From), m.Epoch)
	return append(appendStr16(append(b, m.MsgID...), m.Body), m.Sig...)
}

// Parse decodes a body.
func (m *DeliverGroup) Parse(body []byte) error {
	d := dec{b: body}
	m.ServerID, m.Time = d.u64(), int64(d.u64())
	m.Group, m.From, m.Epoch, m.MsgID = d.str8(), d.str8(), d.u32(), d.fixed(MsgIDLen)
	m.Body, m.Sig = d.bytes16(MaxBodyLen), d.fixed(64)
	return d.done()
}
