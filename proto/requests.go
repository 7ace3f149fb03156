package proto

import (
	"encoding/binary"
	"fmt"
)

// Message requests and blocking (version 2). A direct message from
// someone the receiver has not accepted (not written to, no shared group)
// is a request: the server stores it first and answers "queued" whatever
// the receiver's state, and pushes it as TDeliverRequest, so the
// receiver's client shows it as a request and sends no receipts. Writing
// to the sender, or TRelation accept, accepts; block makes the server drop
// what the sender sends from then on (answered "queued", as any request).
const (
	TRelation       MsgType = 0x16 // user str8 | action u8 (version 2)
	TBlockedList    MsgType = 0x17 // (empty) (version 2)
	TDeliverRequest MsgType = 0x93 // as TDeliver: from someone the receiver has not accepted (version 2)
	TBlocked        MsgType = 0x94 // count u16 | user str8 x count (version 2)
)

// Relation actions.
const (
	RelationAccept  uint8 = 1 // accept a request: as if the user had written to them
	RelationBlock   uint8 = 2 // drop what they send from now on, and what of theirs is queued
	RelationUnblock uint8 = 3 // undo a block (it does not accept them)
)

// MaxBlocked is the most users one account may block.
const MaxBlocked = 1000

// Relation changes how the sender stands with another user.
type Relation struct {
	User   []byte
	Action uint8
}

// Append appends the message to b.
func (m *Relation) Append(b []byte, id uint32) []byte {
	return append(appendStr8(AppendHeader(b, TRelation, id), m.User), m.Action)
}

// Parse decodes a body.
func (m *Relation) Parse(body []byte) error {
	d := dec{b: body}
	m.User, m.Action = d.str8(), d.u8()
	if d.err == nil && (m.Action < RelationAccept || m.Action > RelationUnblock) {
		d.err = fmt.Errorf("%w: unknown relation action %d", ErrMalformed, m.Action)
	}
	return d.done()
}

// Blocked answers TBlockedList: the users the account blocks, sorted.
type Blocked struct{ Users [][]byte }

// Append appends the message to b.
func (m *Blocked) Append(b []byte, id uint32) []byte {
	return appendNames(AppendHeader(b, TBlocked, id), m.Users)
}

// Parse decodes a body.
func (m *Blocked) Parse(body []byte) error {
	var err error
	m.Users, err = parseNames(body, MaxBlocked)
	return err
}

// Group invitations (version 2). A user added to a group by someone they
// have not accepted is invited: on the roster, but nothing of the group's
// messages reaches them until they send GroupJoin (leaving declines).
const (
	TGroupJoin         MsgType = 0x48 // group str8 (version 2)
	TGroupInvites      MsgType = 0x49 // (empty) (version 2)
	TGroupInvitesReply MsgType = 0x95 // count u16 | (group str8 | by str8) x count (version 2)
)

// GroupJoin accepts an invitation to a group.
type GroupJoin struct{ Group []byte }

// Append appends the message to b.
func (m *GroupJoin) Append(b []byte, id uint32) []byte {
	return appendStr8(AppendHeader(b, TGroupJoin, id), m.Group)
}

// Parse decodes a body.
func (m *GroupJoin) Parse(body []byte) error {
	d := dec{b: body}
	m.Group = d.str8()
	if d.err == nil && len(m.Group) == 0 {
		d.err = fmt.Errorf("%w: empty group name", ErrMalformed)
	}
	return d.done()
}

// GroupInvite is one pending invitation: the group, and who added the
// user.
type GroupInvite struct{ Group, By []byte }

// GroupInvitesReply lists the user's pending invitations.
type GroupInvitesReply struct{ Invites []GroupInvite }

// Append appends the message to b.
func (m *GroupInvitesReply) Append(b []byte, id uint32) []byte {
	b = binary.BigEndian.AppendUint16(AppendHeader(b, TGroupInvitesReply, id), uint16(len(m.Invites)))
	for _, inv := range m.Invites {
		b = appendStr8(appendStr8(b, inv.Group), inv.By)
	}
	return b
}

// Parse decodes a body.
func (m *GroupInvitesReply) Parse(body []byte) error {
	d := dec{b: body}
	n := int(d.u16())
	m.Invites = nil
	for i := 0; i < n && d.err == nil; i++ {
		m.Invites = append(m.Invites, GroupInvite{Group: d.str8(), By: d.str8()})
	}
	return d.done()
}
