package client

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"securefastchat/proto"
)

// ErrGroupChain: the server's statements for a group do not verify (a
// forged, edited or reordered chain). Nothing in it is trusted.
var ErrGroupChain = errors.New("client: the group's membership does not verify")

// wrapsPerPart keeps one GroupChange part under a frame.
const wrapsPerPart = 300

// groupView is what this client has verified of a group.
type groupView struct {
	chain    []*proto.Statement
	rosters  []*proto.Roster // rosters[seq] is the roster after statement seq
	keys     map[uint32]*[proto.GroupKeyLen]byte
	epochSeq map[uint32]uint32    // epoch -> the roster statement it was made for
	created  map[uint32]time.Time // epoch -> when it was made (server's clock)
	current  uint32               // the server's current epoch, as last fetched
	sent     map[uint32]int       // messages this client sent under each epoch
}

// Key rotation (besides every membership change): a sender makes a new
// epoch when the current one is older than RotateAfter or it has sent
// RotateAfterMessages under it.
const (
	RotateAfter         = 7 * 24 * time.Hour
	RotateAfterMessages = 100
)

func (g *groupView) roster() *proto.Roster { return g.rosters[len(g.rosters)-1] }

// signKey returns a user's pinned, verified Ed25519 key for statement
// checks; the client's own comes from its identity.
func (c *Client) signKeyFunc(ctx context.Context) proto.SignKeyFunc {
	return func(user string) ed25519.PublicKey {
		if user == c.user {
			return c.id.Sign.Public().(ed25519.PublicKey)
		}
		pk, err := c.PeerKeys(ctx, user)
		if err != nil {
			return nil
		}
		return ed25519.PublicKey(pk.Sign)
	}
}

// group fetches what is new of a group (statements and this member's
// keys), verifies it and returns the view.
func (c *Client) group(ctx context.Context, name string) (*groupView, error) {
	c.groupsMu.Lock()
	defer c.groupsMu.Unlock()
	g := c.groupsM[name]
	if g == nil {
		g = &groupView{keys: map[uint32]*[proto.GroupKeyLen]byte{}, epochSeq: map[uint32]uint32{},
			created: map[uint32]time.Time{}, sent: map[uint32]int{}}
	}
	keys := c.signKeyFunc(ctx)
	for {
		req := proto.GroupReq{Group: []byte(name), From: uint32(len(g.chain))}
		t, body, err := c.request(ctx, func(b []byte, id uint32) []byte { return req.Append(b, proto.TGroupChain, id) })
		if err := expect(t, proto.TGroupChainReply, err); err != nil {
			return nil, err
		}
		var r proto.GroupChainReply
		if err := r.Parse(body); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		for _, raw := range r.Statements {
			s := new(proto.Statement)
			if err := s.Parse(raw); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrGroupChain, err)
			}
			var prev *proto.Roster
			if len(g.rosters) > 0 {
				prev = g.roster()
			}
			next, err := prev.Apply(s, keys)
			if err != nil || next.Group != name {
				return nil, fmt.Errorf("%w: %s: %v", ErrGroupChain, name, err)
			}
			g.chain = append(g.chain, s)
			g.rosters = append(g.rosters, next)
		}
		if !r.More {
			break
		}
	}
	if len(g.rosters) == 0 {
		return nil, fmt.Errorf("%w: %s has no statements", ErrGroupChain, name)
	}
	for {
		from := uint32(1)
		for e := range g.keys {
			from = max(from, e+1)
		}
		req := proto.GroupReq{Group: []byte(name), From: from}
		t, body, err := c.request(ctx, func(b []byte, id uint32) []byte { return req.Append(b, proto.TGroupKeys, id) })
		if err := expect(t, proto.TGroupKeysReply, err); err != nil {
			return nil, err
		}
		var r proto.GroupKeysReply
		if err := r.Parse(body); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		g.current = r.Current
		for _, k := range r.Keys {
			key, err := c.unwrap(ctx, g, name, &k)
			if err != nil {
				return nil, err
			}
			g.keys[k.Epoch] = key
			g.epochSeq[k.Epoch] = k.RosterSeq
			g.created[k.Epoch] = time.UnixMilli(k.Created)
		}
		if len(r.Keys) == 0 || r.Keys[len(r.Keys)-1].Epoch >= r.Current {
			break
		}
	}
	if c.groupsM == nil {
		c.groupsM = map[string]*groupView{}
	}
	c.groupsM[name] = g
	return g, nil
}

// unwrap opens this member's key of one epoch after checking that the
// wrapper was a member of the roster the epoch names.
func (c *Client) unwrap(ctx context.Context, g *groupView, name string, k *proto.EpochKeyMsg) (*[proto.GroupKeyLen]byte, error) {
	if int(k.RosterSeq) >= len(g.rosters) || g.rosters[k.RosterSeq].Index(string(k.Wrapper)) < 0 || g.rosters[k.RosterSeq].Index(c.user) < 0 {
		return nil, fmt.Errorf("%w: epoch %d was wrapped by %s, not a member then", ErrGroupChain, k.Epoch, k.Wrapper)
	}
	var shared *[32]byte
	if string(k.Wrapper) == c.user {
		shared = proto.SharedKey(&c.id.Box.Private, c.id.Box.Public)
	} else {
		pk, err := c.PeerKeys(ctx, string(k.Wrapper))
		if err != nil {
			return nil, err
		}
		shared = pk.shared
	}
	key, err := proto.UnwrapGroupKey(k.Wrapped, []byte(name), k.Epoch, []byte(c.user), shared)
	if err != nil {
		return nil, fmt.Errorf("%w: epoch %d: %v", ErrGroupChain, k.Epoch, err)
	}
	return key, nil
}

// change signs a statement (if op != 0) and sends it with a new epoch
// wrapped for the roster after it (if withEpoch). Changes from one client
// go one at a time: the parts of one epoch must not interleave with
// another's on the connection.
func (c *Client) change(ctx context.Context, name string, op uint8, target string, withEpoch bool) error {
	c.changeMu.Lock()
	defer c.changeMu.Unlock()
	return c.changeLocked(ctx, name, op, target, withEpoch)
}

// rekeyIfNeeded makes a new epoch unless, once it holds the change lock,
// the current one is fine (another send may just have made it).
// The view is the one held (a sender that waited for another's rekey finds
// it current); after a rekey it is fetched again, once.
func (c *Client) rekeyIfNeeded(ctx context.Context, name string, rotate bool) error {
	c.changeMu.Lock()
	defer c.changeMu.Unlock()
	c.groupsMu.Lock()
	g := c.groupsM[name]
	c.groupsMu.Unlock()
	if g == nil {
		var err error
		if g, err = c.group(ctx, name); err != nil {
			return err
		}
	}
	c.groupsMu.Lock()
	_, have := g.keys[g.current]
	behind := g.epochSeq[g.current] != g.roster().Seq
	stale := rotate && (time.Since(g.created[g.current]) > RotateAfter || g.sent[g.current] >= RotateAfterMessages)
	c.groupsMu.Unlock()
	if have && !behind && !stale {
		return nil
	}
	if err := c.changeLocked(ctx, name, 0, "", true); err != nil {
		return err
	}
	_, err := c.group(ctx, name)
	return err
}

func (c *Client) changeLocked(ctx context.Context, name string, op uint8, target string, withEpoch bool) error {
	var g *groupView
	var roster *proto.Roster
	var epoch uint32 = 1
	if op != proto.OpCreate {
		var err error
		if g, err = c.group(ctx, name); err != nil {
			return err
		}
		c.groupsMu.Lock()
		roster = g.roster().Clone()
		epoch = g.current + 1
		c.groupsMu.Unlock()
	}
	var raw []byte
	rosterSeq := uint32(0)
	if op != 0 {
		s := &proto.Statement{Group: []byte(name), Op: op, Target: []byte(target), Signer: []byte(c.user)}
		if roster != nil {
			s.Seq, s.Prev = roster.Seq+1, roster.Last
		}
		s.Sign(c.id.Sign)
		next, err := roster.Apply(s, c.signKeyFunc(ctx))
		if err != nil {
			return err // refused locally: the server would refuse it too
		}
		raw, roster, rosterSeq = s.Append(nil), next, s.Seq
	} else {
		rosterSeq = roster.Seq
	}
	var wraps []proto.WrappedFor
	if withEpoch {
		key, err := proto.NewGroupKey(nil)
		if err != nil {
			return err
		}
		for _, m := range roster.Names() {
			shared := proto.SharedKey(&c.id.Box.Private, c.id.Box.Public)
			if m != c.user {
				pk, err := c.PeerKeys(ctx, m)
				if err != nil {
					return err
				}
				shared = pk.shared
			}
			w, err := proto.WrapGroupKey(key, []byte(name), epoch, []byte(m), shared, nil)
			if err != nil {
				return err
			}
			wraps = append(wraps, proto.WrappedFor{Member: []byte(m), Wrapped: w})
		}
	} else {
		epoch = 0
	}
	parts := max(1, (len(wraps)+wrapsPerPart-1)/wrapsPerPart)
	conn, err := c.liveConn(ctx) // every part goes on one connection
	if err != nil {
		return err
	}
	for p := 0; p < parts; p++ {
		m := proto.GroupChange{Group: []byte(name), Statement: raw, Epoch: epoch, RosterSeq: rosterSeq, Part: uint16(p + 1), Parts: uint16(parts)}
		m.Keys = wraps[p*wrapsPerPart : min(len(wraps), (p+1)*wrapsPerPart)]
		t, _, err := conn.Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
		if err := expect(t, proto.TOK, err); err != nil {
			return err
		}
	}
	return nil
}

// CreateGroup creates a group with this user as its admin and a first key
// wrapped for itself.
func (c *Client) CreateGroup(ctx context.Context, name string) error {
	canon, err := proto.CanonicalUsername(name)
	if err != nil {
		return &proto.RemoteError{Code: proto.CodeBadRequest, Message: "group names are 1 to 32 of a-z A-Z 0-9 _"}
	}
	return c.change(ctx, canon, proto.OpCreate, c.user, true)
}

// AddMember adds user to the group (admins only) under a new key, so the
// new member cannot read what came before.
func (c *Client) AddMember(ctx context.Context, group, user string) error {
	return c.rosterOp(ctx, group, user, proto.OpAdd, true)
}

// RemoveMember removes user (admins only) under a new key wrapped for the
// remaining members only.
func (c *Client) RemoveMember(ctx context.Context, group, user string) error {
	return c.rosterOp(ctx, group, user, proto.OpRemove, true)
}

// Promote makes user an admin.
func (c *Client) Promote(ctx context.Context, group, user string) error {
	return c.rosterOp(ctx, group, user, proto.OpPromote, false)
}

// LeaveGroup leaves the group. The next member to send makes the new key:
// whoever leaves must not know it.
func (c *Client) LeaveGroup(ctx context.Context, group string) error {
	return c.rosterOp(ctx, group, c.user, proto.OpLeave, false)
}

func (c *Client) rosterOp(ctx context.Context, group, user string, op uint8, epoch bool) error {
	g, err := proto.CanonicalUsername(group)
	if err != nil {
		return &proto.RemoteError{Code: proto.CodeNoSuchGroup, Message: "no such group"}
	}
	u, err := proto.CanonicalUsername(user)
	if err != nil {
		return &proto.RemoteError{Code: proto.CodeNoSuchUser, Message: "no such user"}
	}
	err = c.change(ctx, g, op, u, epoch)
	if errors.Is(err, proto.CodeStaleGroup) {
		err = c.change(ctx, g, op, u, epoch) // someone else changed it first: once more on the new state
	}
	return err
}

// Rekey makes a new key epoch for the group's current, verified roster.
func (c *Client) Rekey(ctx context.Context, group string) error {
	return c.change(ctx, group, 0, "", true)
}

// Groups lists the groups this user is in.
func (c *Client) Groups(ctx context.Context) ([]string, error) {
	t, body, err := c.request(ctx, func(b []byte, id uint32) []byte { return proto.AppendEmpty(b, proto.TGroupList, id) })
	if err := expect(t, proto.TGroups, err); err != nil {
		return nil, err
	}
	var r proto.Groups
	if err := r.Parse(body); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	var out []string
	for _, n := range r.Names {
		out = append(out, string(n))
	}
	return out, nil
}

// GroupMembers returns a group's roster, as its verified statement chain
// proves it (never the server's word).
func (c *Client) GroupMembers(ctx context.Context, group string) ([]proto.RosterMember, error) {
	g, err := c.group(ctx, group)
	if err != nil {
		return nil, err
	}
	c.groupsMu.Lock()
	defer c.groupsMu.Unlock()
	return append([]proto.RosterMember(nil), g.roster().Members...), nil
}

// GroupKey returns this member's key of an epoch, if it has it.
func (c *Client) GroupKey(ctx context.Context, group string, epoch uint32) (*[proto.GroupKeyLen]byte, error) {
	g, err := c.group(ctx, group)
	if err != nil {
		return nil, err
	}
	c.groupsMu.Lock()
	k := g.keys[epoch]
	c.groupsMu.Unlock()
	if k == nil {
		return nil, fmt.Errorf("client: no key for epoch %d of %s", epoch, group)
	}
	return k, nil
}

// GroupEpochs returns the epochs whose keys this member holds and the
// group's current epoch.
func (c *Client) GroupEpochs(ctx context.Context, group string) ([]uint32, uint32, error) {
	g, err := c.group(ctx, group)
	if err != nil {
		return nil, 0, err
	}
	c.groupsMu.Lock()
	defer c.groupsMu.Unlock()
	var out []uint32
	for e := range g.keys {
		out = append(out, e)
	}
	return out, g.current, nil
}

// GroupChain returns a group's verified statements: its membership
// history, each change signed.
func (c *Client) GroupChain(ctx context.Context, group string) ([]*proto.Statement, error) {
	g, err := c.group(ctx, group)
	if err != nil {
		return nil, err
	}
	c.groupsMu.Lock()
	defer c.groupsMu.Unlock()
	return append([]*proto.Statement(nil), g.chain...), nil
}

// SendGroupText seals text with the group's current key, signs it and
// sends it to every member. If the key is behind the roster (someone left
// since), it makes a new epoch first. It returns once every member's client
// has it or it is stored for them.
func (c *Client) SendGroupText(ctx context.Context, group, text string) (*Receipt, error) {
	return c.SendGroupTextAs(ctx, group, text, NewMsgID())
}

// SendGroupTextAs is SendGroupText with the message id chosen by the
// caller (see PrepareAs).
func (c *Client) SendGroupTextAs(ctx context.Context, group, text string, id [proto.MsgIDLen]byte) (*Receipt, error) {
	return c.sendGroup(ctx, group, proto.KindText, []byte(text), id)
}

// sendGroup seals an inner of kind (text or a file chunk) for the group,
// signs it and sends it.
func (c *Client) sendGroup(ctx context.Context, group string, kind uint8, body []byte, id [proto.MsgIDLen]byte) (*Receipt, error) {
	name, err := proto.CanonicalUsername(group)
	if err != nil {
		return nil, &proto.RemoteError{Code: proto.CodeNoSuchGroup, Message: "no such group"}
	}
	msgID := id[:]
	for attempt := 0; ; attempt++ {
		// The view this client holds is used as it is: the server refuses
		// (rekey_needed) a message under an epoch that is not current for
		// the roster, and the retry fetches what changed.
		var g *groupView
		if attempt == 0 {
			c.groupsMu.Lock()
			g = c.groupsM[name]
			c.groupsMu.Unlock()
		}
		if g == nil {
			var err error
			if g, err = c.group(ctx, name); err != nil {
				return nil, err
			}
		}
		c.groupsMu.Lock()
		key, have := g.keys[g.current]
		current, behind := g.current, g.epochSeq[g.current] != g.roster().Seq
		stale := time.Since(g.created[g.current]) > RotateAfter || g.sent[g.current] >= RotateAfterMessages
		c.groupsMu.Unlock()
		if !have || behind || stale && attempt == 0 {
			if err := c.rekeyIfNeeded(ctx, name, attempt == 0); err != nil && !errors.Is(err, proto.CodeStaleGroup) {
				return nil, err
			}
			continue
		}
		in := proto.Inner{Kind: kind, From: []byte(c.user), To: []byte(name), MsgID: msgID, SentAt: time.Now().UnixNano(), Body: body}
		plain, err := in.Append(nil)
		if err != nil {
			return nil, err
		}
		sealed, err := proto.SealGroup(plain, key, nil)
		if err != nil {
			return nil, err
		}
		m := proto.SendGroup{File: kind == proto.KindFile, Group: []byte(name), Epoch: current, MsgID: msgID, Body: sealed,
			Sig: ed25519.Sign(c.id.Sign, proto.GroupMsgSigned([]byte(name), current, msgID, sealed))}
		r, err := c.sendRequest(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
		if errors.Is(err, proto.CodeRekeyNeeded) && attempt < 3 {
			continue // the roster moved under us: refresh and send again (same id)
		}
		if err == nil {
			c.groupsMu.Lock()
			g.sent[m.Epoch]++
			c.groupsMu.Unlock()
		}
		return r, err
	}
}
