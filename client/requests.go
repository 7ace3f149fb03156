package client

import (
	"context"
	"fmt"

	"securefastchat/proto"
)

// Message requests. A direct message from someone this user has not
// accepted (written to, or shares a group with) comes as a request
// (Message.Request): the client sends nothing back for it (no delivery or
// read receipt; the server passes no typing either way) until the user
// accepts, by writing to them or with Accept. Block makes the server drop
// what they send from then on; Unblock undoes it.

// noteRequest remembers the senders whose messages came as requests and
// whom this user has not accepted since (in this run).
func (c *Client) noteRequest(from string, request bool) {
	c.requestsMu.Lock()
	defer c.requestsMu.Unlock()
	if !request {
		delete(c.requests, from)
		return
	}
	if c.requests == nil {
		c.requests = map[string]bool{}
	}
	if len(c.requests) >= maxRefused {
		clear(c.requests)
	}
	c.requests[from] = true
}

// IsRequest reports whether the last direct message from user came as a
// request that this user has not accepted since.
func (c *Client) IsRequest(user string) bool {
	c.requestsMu.Lock()
	defer c.requestsMu.Unlock()
	return c.requests[user]
}

// Accept accepts user's message request: as if this user had written to
// them (they become contacts if they wrote first), without sending
// anything.
func (c *Client) Accept(ctx context.Context, user string) error {
	return c.relation(ctx, user, proto.RelationAccept)
}

// Block makes the server drop what user sends this user from now on (the
// sender is answered "queued", as for any request, and cannot tell), and
// what of theirs waits in the queue; it also ends the contact, so neither
// sees the other's presence. Group messages from them are dropped too.
func (c *Client) Block(ctx context.Context, user string) error {
	return c.relation(ctx, user, proto.RelationBlock)
}

// Unblock undoes Block. It does not accept user: what they send next
// comes as a request.
func (c *Client) Unblock(ctx context.Context, user string) error {
	return c.relation(ctx, user, proto.RelationUnblock)
}

func (c *Client) relation(ctx context.Context, user string, action uint8) error {
	canon, err := proto.CanonicalUsername(user)
	if err != nil {
		return fmt.Errorf("client: %q: %w", user, err)
	}
	m := proto.Relation{User: []byte(canon), Action: action}
	t, _, err := c.s.request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
	if err := expect(t, proto.TOK, err); err != nil {
		return err
	}
	if action == proto.RelationAccept {
		c.noteRequest(canon, false)
	}
	return nil
}

// Blocked returns the users this user blocks, sorted.
func (c *Client) Blocked(ctx context.Context) ([]string, error) {
	t, body, err := c.s.request(ctx, func(b []byte, id uint32) []byte { return proto.AppendEmpty(b, proto.TBlockedList, id) })
	if err := expect(t, proto.TBlocked, err); err != nil {
		return nil, err
	}
	var m proto.Blocked
	if err := m.Parse(body); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	out := make([]string, len(m.Users))
	for i, u := range m.Users {
		out[i] = string(u)
	}
	return out, nil
}

// GroupInvite is an invitation to a group: someone this user has not
// accepted added them. Until JoinGroup, nothing of the group's messages
// reaches this user; LeaveGroup declines.
type GroupInvite struct {
	Group string
	By    string // who added this user
}

// GroupInvites returns this user's pending group invitations.
func (c *Client) GroupInvites(ctx context.Context) ([]GroupInvite, error) {
	t, body, err := c.s.request(ctx, func(b []byte, id uint32) []byte { return proto.AppendEmpty(b, proto.TGroupInvites, id) })
	if err := expect(t, proto.TGroupInvitesReply, err); err != nil {
		return nil, err
	}
	var m proto.GroupInvitesReply
	if err := m.Parse(body); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	out := make([]GroupInvite, len(m.Invites))
	for i, inv := range m.Invites {
		out[i] = GroupInvite{Group: string(inv.Group), By: string(inv.By)}
	}
	return out, nil
}

// JoinGroup accepts an invitation to group: its messages reach this user
// from now on.
func (c *Client) JoinGroup(ctx context.Context, group string) error {
	canon, err := proto.CanonicalUsername(group)
	if err != nil {
		return &proto.RemoteError{Code: proto.CodeBadRequest, Message: "group names are 1 to 32 of a-z A-Z 0-9 _"}
	}
	m := proto.GroupJoin{Group: []byte(canon)}
	t, _, err := c.s.request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
	return expect(t, proto.TOK, err)
}
