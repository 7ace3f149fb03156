package client

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"time"

	"securefastchat/proto"
)

// ErrGroupChain: the server's statements for a group do not verify (a
// forged, edited or reordered chain). Nothing in it is trusted.
var ErrGroupChain = errors.New("client: the group's membership does not verify")

// wrapsPerPart keeps one GroupChange part under a frame.
const wrapsPerPart = 300

// groupBook is what this client knows of its groups and the changes it
// makes to them: each group's view (the roster chain and the epoch keys,
// fetched and checked against the signed chain), the statements already
// told to the application, and roster changes with their rekeying.
// Owner: the Client. The fields above mu are set once; mu guards views
// (and the views in it) and shown; changeMu lets one change run at a time.
type groupBook struct {
	user   string // canonical
	id     *Identity
	self   ed25519.PublicKey  // the account's sign key: what the user's statements are signed with
	master ed25519.PrivateKey // its private half, on the device that holds it (the first); else nil
	device uint64             // this device's id: what its copies of keys are wrapped for
	s      *session
	// devices returns a user's devices as its checked list proves them
	// (fresh: read again), or its account keys as its one device if it
	// has no list; shared the box key this device shares with a device.
	devices func(ctx context.Context, user string, fresh bool) ([]proto.Device, error)
	shared  func(dev proto.PublicKey) *[32]byte
	// held refuses a member's devices while one is held (hold.go), and
	// holdOn says whether the hold is on.
	held   func(user string, devs []proto.Device) error
	holdOn func() bool
	peers  func(ctx context.Context, user string) (*PeerKeys, error)
	// former says whether key may be what user's key was before a key
	// change (contacts.formerKey).
	former func(user string, key []byte) bool
	send   func(ctx context.Context, build func(b []byte, id uint32) []byte) (*Receipt, error)
	post   func(Event)
	grace  time.Duration // Config.ChangeGrace

	mu       sync.Mutex
	views    map[string]*groupView
	shown    map[string]int // statements of each group reported as events
	changeMu sync.Mutex
}

// groupView is what this client has verified of a group.
type groupView struct {
	chain    []*proto.Statement
	rosters  []*proto.Roster // rosters[seq] is the roster after statement seq
	learned  []time.Time     // learned[seq]: when this client first applied statement seq (its clock)
	keys     map[uint32]*[proto.GroupKeyLen]byte
	epochSeq map[uint32]uint32    // epoch -> the roster statement it was made for
	created  map[uint32]time.Time // epoch -> when it was made (server's clock)
	// committed: the epoch's key matched its signed statement's commitment
	// (epochs made before statements have none: the first send after the
	// upgrade makes a new one).
	committed map[uint32]bool
	bad       map[uint32]BadEpoch // epochs known bad: no sends under them
	refused   map[uint32]bool     // epochs the server refused a send under (rekey_needed): a member's devices changed
	unchecked map[uint32]string   // epochs that cannot be checked (their maker's device is gone), and why
	fetched   uint32              // the highest epoch fetched
	current   uint32              // the server's current epoch, as last fetched
	sent      map[uint32]int      // messages this client sent under each epoch
}

// BadEpoch is a group key epoch whose key did not open or did not match
// its statement's commitment for some member: Maker made it, Reporter
// found it bad (this client, or a member whose signed report it checked).
type BadEpoch struct {
	Epoch    uint32
	Maker    string
	Reporter string
	Why      string
}

// Key rotation (besides every membership change): a sender makes a new
// epoch when the current one is older than RotateAfter or it has sent
// RotateAfterMessages under it.
const (
	RotateAfter         = 7 * 24 * time.Hour
	RotateAfterMessages = 100
)

func (g *groupView) roster() *proto.Roster { return g.rosters[len(g.rosters)-1] }

// usable reports whether a message may be sent under epoch: this member
// holds its key, it is made for the current roster, its key matched its
// statement's commitment, and nobody found it bad.
func (g *groupView) usable(epoch uint32) bool {
	_, have := g.keys[epoch]
	_, bad := g.bad[epoch]
	return have && !bad && !g.refused[epoch] && g.committed[epoch] && g.epochSeq[epoch] == g.roster().Seq
}

// BadEpochs returns the epochs of a group this client knows to be bad.
func (c *Client) BadEpochs(ctx context.Context, group string) ([]BadEpoch, error) {
	if err := c.groupsHere(c.s.Conn()); err != nil {
		return nil, err
	}

	g, err := c.groups.group(ctx, group)
	if err != nil {
		return nil, err
	}
	c.groups.mu.Lock()
	defer c.groups.mu.Unlock()
	var out []BadEpoch
	for _, b := range g.bad {
		out = append(out, b)
	}
	return out, nil
}

// CreateGroup creates a group with this user as its admin and a first key
// wrapped for itself.
func (c *Client) CreateGroup(ctx context.Context, name string) error {
	if err := c.membershipHere(); err != nil {
		return err
	}

	canon, err := proto.CanonicalUsername(name)
	if err != nil {
		return &proto.RemoteError{Code: proto.CodeBadRequest, Message: "group names are 1 to 32 of a-z A-Z 0-9 _"}
	}
	return c.groups.change(ctx, canon, proto.OpCreate, c.user, true)
}

// AddMember adds user to the group (admins only) under a new key, so the
// new member cannot read what came before.
func (c *Client) AddMember(ctx context.Context, group, user string) error {
	if err := c.membershipHere(); err != nil {
		return err
	}

	return c.groups.rosterOp(ctx, group, user, proto.OpAdd, true)
}

// RemoveMember removes user (admins only) under a new key wrapped for the
// remaining members only.
func (c *Client) RemoveMember(ctx context.Context, group, user string) error {
	if err := c.membershipHere(); err != nil {
		return err
	}

	return c.groups.rosterOp(ctx, group, user, proto.OpRemove, true)
}

// Promote makes user an admin.
func (c *Client) Promote(ctx context.Context, group, user string) error {
	if err := c.membershipHere(); err != nil {
		return err
	}

	return c.groups.rosterOp(ctx, group, user, proto.OpPromote, false)
}

// LeaveGroup leaves the group. The next member to send makes the new key:
// whoever leaves must not know it.
func (c *Client) LeaveGroup(ctx context.Context, group string) error {
	if err := c.membershipHere(); err != nil {
		return err
	}

	return c.groups.rosterOp(ctx, group, c.user, proto.OpLeave, false)
}

// Rekey makes a new key epoch for the group's current, verified roster.
func (c *Client) Rekey(ctx context.Context, group string) error {
	if err := c.groupsHere(c.s.Conn()); err != nil {
		return err
	}

	return c.groups.change(ctx, group, 0, "", true)
}

// Groups lists the groups this user is in.
func (c *Client) Groups(ctx context.Context) ([]string, error) {
	t, body, err := c.s.request(ctx, func(b []byte, id uint32) []byte { return proto.AppendEmpty(b, proto.TGroupList, id) })
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
	g, err := c.groups.group(ctx, group)
	if err != nil {
		return nil, err
	}
	c.groups.mu.Lock()
	defer c.groups.mu.Unlock()
	return append([]proto.RosterMember(nil), g.roster().Members...), nil
}

// GroupKey returns this member's key of an epoch, if it has it.
func (c *Client) GroupKey(ctx context.Context, group string, epoch uint32) (*[proto.GroupKeyLen]byte, error) {
	if err := c.groupsHere(c.s.Conn()); err != nil {
		return nil, err
	}

	g, err := c.groups.group(ctx, group)
	if err != nil {
		return nil, err
	}
	c.groups.mu.Lock()
	k := g.keys[epoch]
	c.groups.mu.Unlock()
	if k == nil {
		return nil, fmt.Errorf("client: no key for epoch %d of %s", epoch, group)
	}
	return k, nil
}

// GroupEpochs returns the epochs whose keys this member holds and the
// group's current epoch.
func (c *Client) GroupEpochs(ctx context.Context, group string) ([]uint32, uint32, error) {
	g, err := c.groups.group(ctx, group)
	if err != nil {
		return nil, 0, err
	}
	c.groups.mu.Lock()
	defer c.groups.mu.Unlock()
	var out []uint32
	for e := range g.keys {
		out = append(out, e)
	}
	return out, g.current, nil
}

// GroupChain returns a group's verified statements: its membership
// history, each change signed.
func (c *Client) GroupChain(ctx context.Context, group string) ([]*proto.Statement, error) {
	g, err := c.groups.group(ctx, group)
	if err != nil {
		return nil, err
	}
	c.groups.mu.Lock()
	defer c.groups.mu.Unlock()
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
	if err := c.groupsHere(c.s.Conn()); err != nil {
		return nil, err
	}

	return c.groups.sendGroup(ctx, group, proto.KindText, []byte(text), id)
}

// DefaultChangeGrace is how long after this client learns of a roster
// change it still accepts a message signed under the roster before it
// from a member the change removed (Config.ChangeGrace): messages
// genuinely in flight during the change. A removed member working with the
// server can back-date a message within it (docs/PROTOCOL.md says so).
const DefaultChangeGrace = 2 * time.Minute

// signKey returns a user's pinned, verified Ed25519 key for statement
// checks; the client's own comes from its identity.
func (gb *groupBook) signKeyFunc(ctx context.Context) proto.SignKeyFunc {
	return func(user string) ed25519.PublicKey {
		if user == gb.user {
			return gb.self
		}
		pk, err := gb.peers(ctx, user)
		if err != nil {
			return nil
		}
		return ed25519.PublicKey(pk.Sign)
	}
}

// group fetches what is new of a group (statements and this member's
// keys), verifies it and returns the view.
func (gb *groupBook) group(ctx context.Context, name string) (*groupView, error) {
	var events []Event // told once the lock is released
	defer func() {
		for _, ev := range events {
			gb.post(ev)
		}
	}()
	gb.mu.Lock()
	defer gb.mu.Unlock()
	g := gb.views[name]
	if g == nil {
		g = &groupView{keys: map[uint32]*[proto.GroupKeyLen]byte{}, epochSeq: map[uint32]uint32{},
			created: map[uint32]time.Time{}, sent: map[uint32]int{}, committed: map[uint32]bool{}, bad: map[uint32]BadEpoch{}, refused: map[uint32]bool{}, unchecked: map[uint32]string{}}
	}
	if err := gb.fetchChain(ctx, g, name); err != nil {
		return nil, err
	}
	// A fresh view asks for the current epoch only (from 0): older ones are
	// fetched when a message under one arrives, so the cost of a fetch does
	// not grow with the group's history.
	from := g.fetched + 1
	if g.fetched == 0 {
		from = 0
	}
	evs, err := gb.fetchKeys(ctx, g, name, from, true)
	events = append(events, evs...)
	if err != nil {
		return nil, err
	}
	if gb.views == nil {
		gb.views = map[string]*groupView{}
	}
	gb.views[name] = g
	return g, nil
}

// fetchChain fetches and verifies the statements of a group past those
// the view has. b.mu is held.
func (gb *groupBook) fetchChain(ctx context.Context, g *groupView, name string) error {
	stmts, err := gb.readChain(ctx, name, uint32(len(g.chain)))
	if err != nil {
		return err
	}
	var prev *proto.Roster
	if len(g.rosters) > 0 {
		prev = g.roster()
	}
	rosters, err := prev.ApplyChain(stmts, gb.signKeyFunc(ctx))
	if errors.Is(err, proto.ErrBadSignature) {
		// The likeliest honest cause: the signer started their account
		// again since, with a new key, and did not say so in the group.
		return fmt.Errorf("%w: %s: %v (if %s recovered their account since, this was signed with their old key, which cannot be checked any more: the group has to be made again)",
			ErrGroupChain, name, err, stmts[len(rosters)].Signer)
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrGroupChain, name, err)
	}
	for i, s := range stmts {
		if rosters[i].Group != name {
			return fmt.Errorf("%w: %s: a statement of group %s", ErrGroupChain, name, rosters[i].Group)
		}
		if s.Op == proto.OpKeyChanged && !gb.former(string(s.Signer), s.OldKey) {
			return fmt.Errorf("%w: %s: %s's key change names a key before it that is not the one you knew for %s (the server may be tampering with the group)",
				ErrGroupChain, name, s.Signer, s.Signer)
		}
	}
	g.chain = append(g.chain, stmts...)
	g.rosters = append(g.rosters, rosters...)
	for range stmts {
		g.learned = append(g.learned, time.Now())
	}
	if len(g.rosters) == 0 {
		return fmt.Errorf("%w: %s has no statements", ErrGroupChain, name)
	}
	return nil
}

// readChain reads a group's statements from seq from on, unchecked.
func (gb *groupBook) readChain(ctx context.Context, name string, from uint32) ([]*proto.Statement, error) {
	var out []*proto.Statement
	for {
		req := proto.GroupReq{Group: []byte(name), From: from + uint32(len(out))}
		t, body, err := gb.s.request(ctx, func(b []byte, id uint32) []byte { return req.Append(b, proto.TGroupChain, id) })
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
			out = append(out, s)
		}
		if !r.More || len(r.Statements) == 0 {
			return out, nil
		}
	}
}

// announceKeyChange says in group name that this user's key changed
// (proto.OpKeyChanged), old being the key that signed their statements
// before: from the device that holds the new master key, once the account
// was recovered. The chain is checked with old standing for the user's
// key, as it stood before; then every member who checks the chain from
// its start finds the user's earlier statements by the key the change
// names. The next message in the group makes a new key epoch, as after any
// roster statement.
func (gb *groupBook) announceKeyChange(ctx context.Context, name string, old ed25519.PublicKey) error {
	gb.changeMu.Lock()
	defer gb.changeMu.Unlock()
	if gb.master == nil {
		return ErrGroupsOnFirstDevice
	}
	stmts, err := gb.readChain(ctx, name, 0)
	if err != nil {
		return err
	}
	keys := gb.signKeyFunc(ctx)
	rosters, err := (*proto.Roster)(nil).ApplyChain(stmts, func(u string) ed25519.PublicKey {
		if u == gb.user {
			return old
		}
		return keys(u)
	})
	if err == nil && len(rosters) == 0 {
		err = proto.ErrBadChain
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrGroupChain, name, err)
	}
	head := rosters[len(rosters)-1]
	s := &proto.Statement{Group: []byte(name), Seq: head.Seq + 1, Prev: head.Last, Op: proto.OpKeyChanged,
		Target: []byte(gb.user), Signer: []byte(gb.user), OldKey: old}
	s.Sign(gb.master)
	conn, err := gb.s.liveConn(ctx)
	if err != nil {
		return err
	}
	if conn.Version() < 6 {
		return fmt.Errorf("client: the server speaks protocol version %d; saying in a group that your key changed needs 6: upgrade it", conn.Version())
	}
	m := proto.GroupChange{PerDevice: true, Group: []byte(name), Statement: s.Append(nil), RosterSeq: s.Seq, Part: 1, Parts: 1}
	t, _, err := conn.Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
	if err := expect(t, proto.TOK, err); err != nil {
		return err
	}
	gb.mu.Lock()
	delete(gb.views, name)
	gb.mu.Unlock()
	return nil
}

// fetchKeys fetches this member's keys of a group from epoch from (0: the
// current one only), up to the current epoch if all, else one reply's
// worth, and checks each (checkEpoch, checkReport). It returns the events
// for the epochs newly found bad (and reports those this member found).
// b.mu is held.
func (gb *groupBook) fetchKeys(ctx context.Context, g *groupView, name string, from uint32, all bool) ([]Event, error) {
	var newlyBad []BadEpoch
	for {
		req := proto.GroupReq{Group: []byte(name), From: from}
		t, body, err := gb.s.request(ctx, func(b []byte, id uint32) []byte { return req.Append(b, proto.TGroupKeys, id) })
		if err == nil && t != proto.TGroupKeysReplyV3 {
			err = expect(t, proto.TGroupKeysReplyV2, nil)
		}
		if err != nil {
			return nil, err
		}
		var r proto.GroupKeysReply
		if err := r.ParseAs(t, body); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		g.current = r.Current
		for _, k := range r.Keys {
			if int(k.RosterSeq) >= len(g.rosters) {
				// Made for a roster change after the chain this view
				// fetched (it happened meanwhile): catch up first.
				if err := gb.fetchChain(ctx, g, name); err != nil {
					return nil, err
				}
				if int(k.RosterSeq) >= len(g.rosters) {
					return nil, fmt.Errorf("%w: epoch %d of %s names roster statement %d, which the chain does not have", ErrGroupChain, k.Epoch, name, k.RosterSeq)
				}
			}
			g.fetched = max(g.fetched, k.Epoch)
			g.epochSeq[k.Epoch] = k.RosterSeq
			g.created[k.Epoch] = time.UnixMilli(k.Created)
			if _, known := g.bad[k.Epoch]; known {
				continue // found bad already, and said so
			}
			key, committed, why, err := gb.checkEpoch(ctx, g, name, &k)
			if errors.Is(err, errNotOnList) {
				// Made by a device its user has removed since: it cannot
				// be checked any more, and nothing new is sent under it
				// (the server took a new epoch at the removal). Its
				// messages are rejected, saying so.
				g.unchecked[k.Epoch] = fmt.Sprintf("its key was made by a device %s has removed since", k.Wrapper)
				continue
			}
			if err != nil {
				g.fetched = min(g.fetched, k.Epoch-1) // fetched again next time
				return nil, err
			}
			if key != nil {
				g.keys[k.Epoch] = key
				g.committed[k.Epoch] = committed
			}
			if why != "" {
				b := BadEpoch{Epoch: k.Epoch, Maker: string(k.Wrapper), Reporter: gb.user, Why: why}
				g.bad[k.Epoch] = b
				newlyBad = append(newlyBad, b)
			} else if rep := gb.checkReport(ctx, g, name, &k); rep != "" {
				b := BadEpoch{Epoch: k.Epoch, Maker: string(k.Wrapper), Reporter: rep, Why: "its key did not open or match for " + rep}
				g.bad[k.Epoch] = b
				newlyBad = append(newlyBad, b)
			}
		}
		if !all || len(r.Keys) == 0 || r.Keys[len(r.Keys)-1].Epoch >= r.Current {
			break
		}
		from = r.Keys[len(r.Keys)-1].Epoch + 1
	}
	var events []Event
	for _, b := range newlyBad {
		if b.Reporter == gb.user {
			gb.reportBadEpoch(ctx, name, b.Epoch)
		}
		events = append(events, Event{Kind: EventGroupBadKey, Group: name, User: b.Maker, Target: b.Reporter, Text: b.Why, Epoch: b.Epoch, Time: time.Now()})
	}
	return events, nil
}

// epochKey returns this member's key of an older epoch of a group and the
// roster it was made for, fetching it if this client has not yet. Without
// the key it returns why, if this client knows.
func (gb *groupBook) epochKey(ctx context.Context, name string, epoch uint32) (*[proto.GroupKeyLen]byte, uint32, bool, string, error) {
	var events []Event
	defer func() {
		for _, ev := range events {
			gb.post(ev)
		}
	}()
	gb.mu.Lock()
	defer gb.mu.Unlock()
	g := gb.views[name]
	if g == nil {
		return nil, 0, false, "", fmt.Errorf("client: no view of %s", name)
	}
	if _, ok := g.epochSeq[epoch]; !ok && epoch < g.fetched {
		evs, err := gb.fetchKeys(ctx, g, name, epoch, false)
		events = evs
		if err != nil {
			return nil, 0, false, "", err
		}
	}
	seq, ok := g.epochSeq[epoch]
	return g.keys[epoch], seq, ok, g.unchecked[epoch], nil
}

// checkEpoch checks one epoch as this member device got it: its signed
// statement (made by a member of the roster it names, for that roster's
// head, signed by the device that made it), this device's wrapped copy,
// and the copy against the statement's commitment. It returns the key
// (nil if it does not open), whether it is committed, and why the epoch is
// bad ("" if it is not). An epoch from before statements has none: its
// key is kept for the messages sent under it, uncommitted. An epoch from
// before devices (WrapperDevice 0) was made with the maker's account keys
// and wrapped for this user's.
func (gb *groupBook) checkEpoch(ctx context.Context, g *groupView, name string, k *proto.EpochKeyMsg) (*[proto.GroupKeyLen]byte, bool, string, error) {
	wrapper := string(k.Wrapper)
	if g.rosters[k.RosterSeq].Index(wrapper) < 0 || g.rosters[k.RosterSeq].Index(gb.user) < 0 {
		return nil, false, fmt.Sprintf("it was made by %s for a roster that did not have both of you", wrapper), nil
	}
	// The maker's keys: a failure to fetch them says nothing of the epoch.
	var shared *[32]byte
	var signKey ed25519.PublicKey
	switch {
	case k.WrapperDevice != 0:
		dev, err := gb.deviceOf(ctx, wrapper, k.WrapperDevice)
		if err != nil {
			return nil, false, "", fmt.Errorf("client: the device of %s that made epoch %d of %s: %w", wrapper, k.Epoch, name, err)
		}
		shared, signKey = gb.shared(dev.BoxKey), dev.SignKey
	case wrapper == gb.user:
		shared, signKey = proto.SharedKey(&gb.id.Box.Private, gb.id.Box.Public), gb.self
	default:
		pk, err := gb.peers(ctx, wrapper)
		if err != nil {
			return nil, false, "", fmt.Errorf("client: keys of %s, who made epoch %d of %s: %w", wrapper, k.Epoch, name, err)
		}
		shared, signKey = pk.shared, ed25519.PublicKey(pk.Sign)
	}
	var stmt *proto.EpochStatement
	if len(k.Stmt) > 0 {
		stmt = new(proto.EpochStatement)
		roster := g.rosters[k.RosterSeq]
		switch {
		case stmt.Parse(k.Stmt) != nil:
			return nil, false, "its epoch statement does not parse", nil
		case string(stmt.Group) != name || stmt.Epoch != k.Epoch || stmt.RosterSeq != k.RosterSeq || stmt.Head != roster.Last || string(stmt.Maker) != wrapper || stmt.Device != k.WrapperDevice:
			return nil, false, "its epoch statement names another group, epoch, roster or maker", nil
		case !stmt.Verify(signKey):
			return nil, false, "its epoch statement is not signed by " + wrapper, nil
		}
	}
	var dev uint64
	if k.WrapperDevice != 0 {
		dev = gb.device
	}
	key, err := proto.UnwrapGroupKey(k.Wrapped, []byte(name), k.Epoch, []byte(gb.user), dev, shared)
	if err != nil {
		return nil, false, "the copy wrapped for you does not open", nil
	}
	if stmt == nil {
		return key, false, "", nil
	}
	if proto.KeyCommitment(key, []byte(name), k.Epoch) != stmt.Commit {
		return nil, false, "the copy wrapped for you is not the key its statement commits to", nil
	}
	return key, true, "", nil
}

// errNotOnList: a device named by a group key or message is not on its
// user's list (removed since, or never there).
var errNotOnList = errors.New("client: the device is not on its user's device list")

// deviceOf returns one of user's devices, reading the list again once if
// the one held does not have it (added since).
func (gb *groupBook) deviceOf(ctx context.Context, user string, id uint64) (*proto.Device, error) {
	for _, fresh := range []bool{false, true} {
		devs, err := gb.devices(ctx, user, fresh)
		if err != nil {
			return nil, err
		}
		for i := range devs {
			if devs[i].ID == id {
				return &devs[i], nil
			}
		}
	}
	return nil, fmt.Errorf("%w (%s, %016x)", errNotOnList, user, id)
}

// checkReport checks a member's report that an epoch is bad: signed by a
// member of the roster the epoch was made for. It returns the reporter,
// or "" if there is no report it can believe.
func (gb *groupBook) checkReport(ctx context.Context, g *groupView, name string, k *proto.EpochKeyMsg) string {
	rep := string(k.BadBy)
	if rep == "" || int(k.RosterSeq) >= len(g.rosters) || g.rosters[k.RosterSeq].Index(rep) < 0 {
		return ""
	}
	key := gb.signKeyFunc(ctx)(rep)
	if k.BadDevice != 0 {
		key = nil
		if dev, err := gb.deviceOf(ctx, rep, k.BadDevice); err == nil {
			key = dev.SignKey
		}
	}
	if len(key) != ed25519.PublicKeySize || !ed25519.Verify(key, proto.BadEpochSigned([]byte(name), k.Epoch, []byte(rep), k.BadDevice), k.BadSig) {
		return ""
	}
	return rep
}

// reportBadEpoch tells the server (and through it every member) that this
// member's copy of an epoch is bad, signed. The server then refuses sends
// under it, and the next sender makes a new one.
func (gb *groupBook) reportBadEpoch(ctx context.Context, name string, epoch uint32) {
	conn := gb.s.Conn()
	if conn == nil {
		return
	}
	// Signed by this device (version 5), or by the account key before.
	m := proto.BadEpoch{Group: []byte(name), Epoch: epoch}
	if conn.Version() >= 5 {
		m.Device = gb.device
	}
	m.Sig = ed25519.Sign(gb.id.Sign, proto.BadEpochSigned([]byte(name), epoch, []byte(gb.user), m.Device))
	_ = conn.Go(func(b []byte, id uint32) []byte { return m.Append(b, id) }, func(proto.MsgType, []byte, error) {})
}

// change signs a statement (if op != 0) and sends it with a new epoch
// wrapped for the roster after it (if withEpoch). Changes from one client
// go one at a time: the parts of one epoch must not interleave with
// another's on the connection.
func (gb *groupBook) change(ctx context.Context, name string, op uint8, target string, withEpoch bool) error {
	gb.changeMu.Lock()
	defer gb.changeMu.Unlock()
	return gb.changeLocked(ctx, name, op, target, withEpoch)
}

// rekeyIfNeeded makes a new epoch unless, once it holds the change lock,
// the current one is fine (another send may just have made it).
// The view is the one held (a sender that waited for another's rekey finds
// it current); after a rekey it is fetched again, once.
func (gb *groupBook) rekeyIfNeeded(ctx context.Context, name string, rotate bool) error {
	gb.changeMu.Lock()
	defer gb.changeMu.Unlock()
	gb.mu.Lock()
	g := gb.views[name]
	gb.mu.Unlock()
	if g == nil {
		var err error
		if g, err = gb.group(ctx, name); err != nil {
			return err
		}
	}
	gb.mu.Lock()
	usable := g.usable(g.current)
	stale := rotate && (time.Since(g.created[g.current]) > RotateAfter || g.sent[g.current] >= RotateAfterMessages)
	gb.mu.Unlock()
	if usable && !stale {
		return nil
	}
	if err := gb.changeLocked(ctx, name, 0, "", true); err != nil {
		return err
	}
	_, err := gb.group(ctx, name)
	return err
}

func (gb *groupBook) changeLocked(ctx context.Context, name string, op uint8, target string, withEpoch bool) error {
	for attempt := 0; ; attempt++ {
		err := gb.changeOnce(ctx, name, op, target, withEpoch, attempt > 0)
		var mm *devicesMismatchError
		if errors.Is(err, proto.CodeUnsupportedFeature) && attempt < 2 {
			// Made in the form before devices, which the server takes
			// only while every member has one: a member has more than
			// this client knew. Read the lists again.
			continue
		}
		if !errors.As(err, &mm) || attempt == 2 {
			return err
		}
		// A member's devices changed since this client read its list:
		// read the lists named again and make the epoch again.
		for _, u := range mm.users {
			if _, err := gb.devices(ctx, u, true); err != nil && !errors.Is(err, proto.CodeNoSuchUser) {
				return fmt.Errorf("client: %s's devices: %w", u, err)
			}
		}
	}
}

// changeOnce makes one change (changeLocked); fresh reads the members'
// device lists again.
func (gb *groupBook) changeOnce(ctx context.Context, name string, op uint8, target string, withEpoch, fresh bool) error {
	var g *groupView
	var roster *proto.Roster
	var epoch uint32 = 1
	if op != proto.OpCreate {
		var err error
		if g, err = gb.group(ctx, name); err != nil {
			return err
		}
		gb.mu.Lock()
		roster = g.roster().Clone()
		epoch = g.current + 1
		gb.mu.Unlock()
	}
	conn, err := gb.s.liveConn(ctx) // every part goes on one connection
	if err != nil {
		return err
	}
	perDevice := conn.Version() >= 5
	var raw []byte
	rosterSeq := uint32(0)
	if op != 0 {
		// Roster statements are signed by the account's key, which only
		// the device that holds it has.
		if gb.master == nil {
			return ErrGroupsOnFirstDevice
		}
		s := &proto.Statement{Group: []byte(name), Op: op, Target: []byte(target), Signer: []byte(gb.user)}
		if roster != nil {
			s.Seq, s.Prev = roster.Seq+1, roster.Last
		}
		s.Sign(gb.master)
		next, err := roster.Apply(s, gb.signKeyFunc(ctx))
		if err != nil {
			return err // refused locally: the server would refuse it too
		}
		raw, roster, rosterSeq = s.Append(nil), next, s.Seq
	} else {
		rosterSeq = roster.Seq
	}
	var wraps []proto.WrappedFor
	var epochStmt []byte
	if withEpoch {
		key, err := proto.NewGroupKey(nil)
		if err != nil {
			return err
		}
		var devs map[string][]proto.Device
		if perDevice {
			if devs, err = gb.memberDevices(ctx, roster, fresh); err != nil {
				return err // nothing sealed for a device the user has not approved
			}
			// While every member has its first device alone, the form
			// before devices serves, and older clients keep reading.
			perDevice = !gb.firstDevicesOnly(ctx, devs)
		}
		es := proto.EpochStatement{Group: []byte(name), Epoch: epoch, RosterSeq: rosterSeq, Head: roster.Last,
			Commit: proto.KeyCommitment(key, []byte(name), epoch), Maker: []byte(gb.user)}
		if perDevice {
			es.Device = gb.device
		} else if gb.master == nil {
			return ErrGroupsOnFirstDevice // the server keeps keys for each member's first device only
		}
		es.Sign(gb.id.Sign)
		epochStmt = es.Append(nil)
		if wraps, err = gb.wrapFor(ctx, roster, devs, key, name, epoch, perDevice); err != nil {
			return err
		}
	} else {
		epoch = 0
	}
	per := wrapsPerPart
	if perDevice {
		per = proto.MaxWrapsPerPart
	}
	parts := max(1, (len(wraps)+per-1)/per)
	for p := 0; p < parts; p++ {
		m := proto.GroupChange{PerDevice: perDevice, Group: []byte(name), Statement: raw, EpochStmt: epochStmt, Epoch: epoch, RosterSeq: rosterSeq, Part: uint16(p + 1), Parts: uint16(parts)}
		m.Keys = wraps[p*per : min(len(wraps), (p+1)*per)]
		t, body, err := conn.Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
		if err == nil && t == proto.TDevicesMismatch {
			return parseMismatch(body)
		}
		if err := expect(t, proto.TOK, err); err != nil {
			return err
		}
	}
	return nil
}

// memberDevices returns the devices of each member of roster (fresh: read
// again). A member whose account is gone has none. A member with a device
// the user holds (hold.go) is an error: nothing is sealed for it.
func (gb *groupBook) memberDevices(ctx context.Context, roster *proto.Roster, fresh bool) (map[string][]proto.Device, error) {
	out := map[string][]proto.Device{}
	for _, m := range roster.Names() {
		devs, err := gb.devices(ctx, m, fresh)
		if errors.Is(err, proto.CodeNoSuchUser) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("client: %s's devices: %w", m, err)
		}
		if err := gb.held(m, devs); err != nil {
			return nil, err
		}
		out[m] = devs
	}
	return out, nil
}

// firstDevicesOnly reports whether every member has one device, the one
// its account keys name (its first).
func (gb *groupBook) firstDevicesOnly(ctx context.Context, devs map[string][]proto.Device) bool {
	for m, ds := range devs {
		if len(ds) != 1 {
			return false
		}
		if m == gb.user {
			if gb.master == nil {
				return false // a linked device: the account has two
			}
			continue
		}
		pk, err := gb.peers(ctx, m)
		if err != nil || pk.ID != ds[0].ID {
			return false
		}
	}
	return true
}

// wrapFor wraps an epoch's key for every device of every member of
// roster (perDevice: devs), or for each member's account keys (the form
// before devices).
func (gb *groupBook) wrapFor(ctx context.Context, roster *proto.Roster, devs map[string][]proto.Device, key *[proto.GroupKeyLen]byte, name string, epoch uint32, perDevice bool) ([]proto.WrappedFor, error) {
	var wraps []proto.WrappedFor
	for _, m := range roster.Names() {
		if !perDevice {
			shared := proto.SharedKey(&gb.id.Box.Private, gb.id.Box.Public)
			if m != gb.user {
				pk, err := gb.peers(ctx, m)
				if err != nil {
					return nil, err
				}
				shared = pk.shared
			}
			w, err := proto.WrapGroupKey(key, []byte(name), epoch, []byte(m), 0, shared, nil)
			if err != nil {
				return nil, err
			}
			wraps = append(wraps, proto.WrappedFor{Member: []byte(m), Wrapped: w})
			continue
		}
		for _, d := range devs[m] {
			w, err := proto.WrapGroupKey(key, []byte(name), epoch, []byte(m), d.ID, gb.shared(d.BoxKey), nil)
			if err != nil {
				return nil, err
			}
			wraps = append(wraps, proto.WrappedFor{Member: []byte(m), Device: d.ID, Wrapped: w})
		}
	}
	return wraps, nil
}

func (gb *groupBook) rosterOp(ctx context.Context, group, user string, op uint8, epoch bool) error {
	g, err := proto.CanonicalUsername(group)
	if err != nil {
		return &proto.RemoteError{Code: proto.CodeNoSuchGroup, Message: "no such group"}
	}
	u, err := proto.CanonicalUsername(user)
	if err != nil {
		return &proto.RemoteError{Code: proto.CodeNoSuchUser, Message: "no such user"}
	}
	err = gb.change(ctx, g, op, u, epoch)
	if errors.Is(err, proto.CodeStaleGroup) {
		err = gb.change(ctx, g, op, u, epoch) // someone else changed it first: once more on the new state
	}
	return err
}

// sendGroup seals an inner of kind (text or a file chunk) for the group,
// signs it and sends it.
func (gb *groupBook) sendGroup(ctx context.Context, group string, kind uint8, body []byte, id [proto.MsgIDLen]byte) (*Receipt, error) {
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
			gb.mu.Lock()
			g = gb.views[name]
			gb.mu.Unlock()
		}
		if g == nil {
			var err error
			if g, err = gb.group(ctx, name); err != nil {
				return nil, err
			}
		}
		gb.mu.Lock()
		key, usable := g.keys[g.current], g.usable(g.current)
		current, pos := g.current, proto.RosterPos{Seq: g.roster().Seq, Head: g.roster().Last}
		stale := time.Since(g.created[g.current]) > RotateAfter || g.sent[g.current] >= RotateAfterMessages
		gb.mu.Unlock()
		if !usable || stale && attempt == 0 {
			if err := gb.rekeyIfNeeded(ctx, name, attempt == 0); err != nil && !errors.Is(err, proto.CodeStaleGroup) {
				return nil, err
			}
			continue
		}
		if gb.holdOn() {
			// The current key may have reached a member's new device
			// (whoever made it wrapped it for every device): nothing is
			// sent while one is held.
			gb.mu.Lock()
			roster := g.roster().Clone()
			gb.mu.Unlock()
			if _, err := gb.memberDevices(ctx, roster, false); err != nil {
				return nil, err
			}
		}
		in := proto.Inner{Kind: kind, From: []byte(gb.user), To: []byte(name), MsgID: msgID, SentAt: time.Now().UnixNano(), Body: body, Roster: &pos}
		plain, err := in.Append(nil)
		if err != nil {
			return nil, err
		}
		sealed, err := proto.SealGroup(plain, key, nil)
		if err != nil {
			return nil, err
		}
		m := proto.SendGroup{File: kind == proto.KindFile, Group: []byte(name), Epoch: current, MsgID: msgID, Body: sealed,
			Sig: ed25519.Sign(gb.id.Sign, proto.GroupMsgSigned([]byte(name), current, msgID, sealed))}
		r, err := gb.send(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
		if errors.Is(err, proto.CodeRekeyNeeded) && attempt < 3 {
			// The roster moved under us, or a member's devices changed
			// since the epoch was made: refresh, make a new epoch if it
			// is still this one, and send again (same id).
			gb.mu.Lock()
			g.refused[current] = true
			gb.mu.Unlock()
			continue
		}
		if err == nil {
			gb.mu.Lock()
			g.sent[m.Epoch]++
			gb.mu.Unlock()
		}
		return r, err
	}
}

// checkPosition checks the roster position a group message was signed
// under (pos; nil for a message from before positions, which stands at
// the roster its epoch was made for, epochSeq). The sender must be a
// member there, at a head this client's verified chain has. A sender no
// longer a member is accepted only within Config.ChangeGrace of when this client
// learned of the change that removed them, and only with a send time
// before it; before reports that case.
func (gb *groupBook) checkPosition(ctx context.Context, group, from string, epochSeq uint32, pos *proto.RosterPos, sentAt time.Time) (before bool, _ error) {
	seq := epochSeq
	if pos != nil {
		seq = pos.Seq
	}
	for attempt := 0; ; attempt++ {
		gb.mu.Lock()
		g := gb.views[group]
		known := g != nil && int(seq) < len(g.rosters)
		gb.mu.Unlock()
		if known || attempt > 0 {
			break
		}
		if _, err := gb.group(ctx, group); err != nil { // a position newer than this view: fetch once
			return false, fmt.Errorf("%w: group %s: %v", ErrRejected, group, err)
		}
	}
	gb.mu.Lock()
	defer gb.mu.Unlock()
	g := gb.views[group]
	switch {
	case g == nil || int(seq) >= len(g.rosters):
		return false, fmt.Errorf("%w: %s signed it under roster position %d of %s, which this client's verified chain does not have", ErrRejected, from, seq, group)
	case pos != nil && g.rosters[seq].Last != pos.Head:
		return false, fmt.Errorf("%w: %s signed it under a roster of %s that is not in this client's verified chain (a fork)", ErrRejected, from, group)
	case pos != nil && epochSeq > seq:
		return false, fmt.Errorf("%w: its key epoch is newer than the roster it was signed under", ErrRejected)
	case g.rosters[seq].Index(from) < 0:
		return false, fmt.Errorf("%w: %s was not a member of %s at the roster it was signed under", ErrRejected, from, group)
	}
	if g.roster().Index(from) >= 0 {
		return false, nil // a member now: nothing to check
	}
	// The first change after seq without the sender is the one they left by.
	gone := seq + 1
	for int(gone) < len(g.rosters) && g.rosters[gone].Index(from) >= 0 {
		gone++
	}
	learned := g.learned[min(int(gone), len(g.learned)-1)]
	grace := gb.grace
	if time.Since(learned) > grace || sentAt.After(learned.Add(grace)) {
		return false, fmt.Errorf("%w: %s is no longer a member of %s, and this was signed under the roster before that change, after its grace period (injected or replayed)", ErrRejected, from, group)
	}
	return true, nil
}

// groupChanged fetches and checks a group whose roster changed and tells
// the application what each statement it has not reported yet did (on the
// first change seen of a group, the last one only: the one pushed).
func (gb *groupBook) groupChanged(name string, chainLen uint32) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if chainLen == 0 {
		// The keys changed: a new epoch, or a report that one is bad. Fetch
		// the current epoch again too, for its report.
		gb.mu.Lock()
		if g := gb.views[name]; g != nil && g.current > 0 {
			g.fetched = min(g.fetched, g.current-1)
		}
		gb.mu.Unlock()
	}
	g, err := gb.group(ctx, name)
	if errors.Is(err, proto.CodeNoSuchGroup) {
		gb.mu.Lock()
		delete(gb.views, name)
		delete(gb.shown, name)
		gb.mu.Unlock()
		gb.post(Event{Kind: EventGroup, Group: name, Target: gb.user, Time: time.Now()})
		return nil
	}
	if err != nil {
		return err
	}
	gb.mu.Lock()
	from, ok := gb.shown[name]
	switch {
	case chainLen == 0 && !ok:
		from = len(g.chain) // the keys changed, not the roster: nothing new to show
	case !ok:
		from = len(g.chain) - 1
	}
	var evs []Event
	for _, s := range g.chain[min(from, len(g.chain)):] {
		evs = append(evs, Event{Kind: EventGroup, Group: name, User: string(s.Signer), Op: s.Op, Target: string(s.Target), Time: time.Now()})
	}
	if gb.shown == nil {
		gb.shown = map[string]int{}
	}
	gb.shown[name] = len(g.chain)
	gb.mu.Unlock()
	for _, ev := range evs {
		gb.post(ev)
	}
	return nil
}
