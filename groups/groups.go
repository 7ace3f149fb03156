// Package groups holds the group rules the server enforces: who may change
// a roster and how (checked against the signed statement chain), the key
// epoch rules (a new epoch for every membership change, made by a signed
// epoch statement for exactly the roster it names), the limits on changes
// and creations, bad-epoch reports, and invitations (a member added by
// someone they have not accepted is only invited). It keeps its state in
// the store; the shards reach it through shard.GroupRules, and a change's
// transport (its parts, the replies, telling the members) stays there.
//
// From protocol version 5 an epoch's key is wrapped for every device of
// every member (as each member's device list stands when the epoch is
// planned), by a device, whose key signs the epoch statement; a change to
// a member's devices makes the current epoch stale until a new one is
// made (the store counts the changes). The form before, one key per
// member for its account keys, is taken only while every member has its
// first device alone.
package groups

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"securefastchat/proto"
	"securefastchat/ratelimit"
	"securefastchat/store"
)

// Default limits, per user (creation, changes) and per group (changes): a
// roster change or a rekey is a store write every member's client then
// fetches and checks.
const (
	CreateBurst = 10
	CreateEvery = time.Minute
	ChangeBurst = 60
	ChangeEvery = 5 * time.Second
	// MaxOwned caps the groups one user is an admin of.
	MaxOwned = 200
)

// Options configure Rules. Zero fields take the defaults above.
type Options struct {
	Store *store.Store // required
	Now   func() time.Time
	// CreateBurst and CreateEvery limit group creation per user;
	// ChangeBurst and ChangeEvery limit roster changes, rekeys and bad
	// epoch reports per user and per group. A negative ChangeEvery turns
	// the change limits off (benchmarks).
	CreateBurst int
	CreateEvery time.Duration
	ChangeBurst int
	ChangeEvery time.Duration
	MaxOwned    int          // groups one user may be an admin of
	Logger      *slog.Logger // nil: slog.Default()
	// DeviceIDs returns a user's devices as its device list proves them,
	// and its first device's id; none for no such user
	// (account.Service.DeviceIDs). Required.
	DeviceIDs func(user string) (first uint64, all []uint64, err error)
	// DeviceSignKey returns the sign key of one of a user's devices, nil
	// if it is not on the user's list (account.Service.DeviceSignKey).
	// Required.
	DeviceSignKey func(user string, device uint64) (ed25519.PublicKey, error)
}

// Rules enforces the group rules. It is safe for concurrent use.
type Rules struct {
	o                       Options
	creates, changes, churn *ratelimit.Limiter
}

// New returns the rules over o.Store.
func New(o Options) *Rules {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.CreateBurst == 0 {
		o.CreateBurst = CreateBurst
	}
	if o.CreateEvery == 0 {
		o.CreateEvery = CreateEvery
	}
	if o.ChangeBurst == 0 {
		o.ChangeBurst = ChangeBurst
	}
	if o.ChangeEvery == 0 {
		o.ChangeEvery = ChangeEvery
	}
	if o.MaxOwned == 0 {
		o.MaxOwned = MaxOwned
	}
	return &Rules{o: o,
		creates: ratelimit.New(o.CreateBurst, o.CreateEvery, o.Now),
		changes: ratelimit.New(o.ChangeBurst, o.ChangeEvery, o.Now),
		churn:   ratelimit.New(o.ChangeBurst, o.ChangeEvery, o.Now)}
}

func refuse(code proto.ErrorCode, text string) *proto.RemoteError {
	return &proto.RemoteError{Code: code, Message: text}
}

// charge spends the limits of a change by user to group (create: the
// user's creations). Its error names the limit and when a retry passes.
func (r *Rules) charge(user, group string, create bool) *proto.RemoteError {
	var err error
	switch {
	case create:
		if wait := r.creates.Take(user); wait > 0 {
			err = ratelimit.Refuse(wait, fmt.Sprintf("too many groups created (%d at once, then one every %s)", r.o.CreateBurst, r.o.CreateEvery))
		}
	default:
		if wait := r.changes.Take(user); wait > 0 {
			err = ratelimit.Refuse(wait, fmt.Sprintf("too many group changes and rekeys by you (%d at once, then one every %s)", r.o.ChangeBurst, r.o.ChangeEvery))
		} else if wait := r.churn.Take(group); wait > 0 {
			err = ratelimit.Refuse(wait, fmt.Sprintf("too many changes and rekeys of %s (%d at once, then one every %s)", group, r.o.ChangeBurst, r.o.ChangeEvery))
		}
	}
	if err != nil {
		return refuse(proto.CodeRateLimited, err.Error())
	}
	return nil
}

// signKey returns a user's signing key, nil for no such (or a disabled)
// user.
func (r *Rules) signKey(user string) ed25519.PublicKey {
	u, err := r.o.Store.GetUser(user)
	if err != nil || u.Disabled {
		return nil
	}
	return ed25519.PublicKey(u.SignKey)
}

// toRoster turns the store's state into a roster to apply statements to.
func toRoster(g *store.GroupState) *proto.Roster {
	if g == nil {
		return nil
	}
	r := &proto.Roster{Group: g.Name, Seq: g.Seq, Last: g.Last}
	for _, m := range g.Members {
		r.Members = append(r.Members, proto.RosterMember{Name: m.Name, Admin: m.Admin})
	}
	return r
}

// deviceKey returns the sign key of one of user's devices, nil if it is
// not on the user's list.
func (r *Rules) deviceKey(user string, device uint64) ed25519.PublicKey {
	k, err := r.o.DeviceSignKey(user, device)
	if err != nil {
		return nil
	}
	return k
}

// Plan is a checked change waiting for its keys: the state it was
// checked against (the commit fails if that changed meanwhile), the state
// after it, and the member devices its epoch must be wrapped for (device
// 0: the member's account keys, the form before devices).
type Plan struct {
	group     string
	cur       *store.GroupState // nil for a create
	next      *store.GroupState
	statement []byte
	stmt      *proto.Statement // nil for a rekey only
	epoch     *store.Epoch     // nil for a change with no new epoch
	rosterSeq uint32
	members   map[string]bool
	wrapsFor  map[store.WrapFor]bool
}

// Group is the group the change is to.
func (p *Plan) Group() string { return p.group }

// Epoch is the new key epoch, 0 for none.
func (p *Plan) Epoch() uint32 {
	if p.epoch == nil {
		return 0
	}
	return p.epoch.N
}

// RosterSeq is the roster statement the change's epoch is for.
func (p *Plan) RosterSeq() uint32 { return p.rosterSeq }

// Member reports whether the new epoch's key is to be wrapped for
// member's devices.
func (p *Plan) Member(member string) bool { return p.members[member] }

// Mismatch returns, for the members whose devices keys does not match
// (a key missing for a device on the list, or one for a device that is
// not), what is missing and extra; nil if they match. At most 255
// members, and MaxDevices ids of each kind for each, are named: the
// client reads their lists again and retries.
func (p *Plan) Mismatch(keys map[store.WrapFor][]byte) []proto.DevicesDiff {
	diffs := map[string]*proto.DevicesDiff{}
	var order []string
	diff := func(m string) *proto.DevicesDiff {
		d := diffs[m]
		if d == nil {
			d = &proto.DevicesDiff{User: []byte(m)}
			diffs[m] = d
			order = append(order, m)
		}
		return d
	}
	for f := range p.wrapsFor {
		if _, ok := keys[f]; !ok {
			d := diff(f.Member)
			d.Missing = append(d.Missing, f.Device)
		}
	}
	for f := range keys {
		if !p.wrapsFor[f] {
			d := diff(f.Member)
			d.Extra = append(d.Extra, f.Device)
		}
	}
	slices.Sort(order)
	var out []proto.DevicesDiff
	for _, m := range order[:min(len(order), 255)] {
		d := diffs[m]
		// A member has at most MaxDevices devices, so as many missing;
		// extra ones beyond that are named up to the same bound, which
		// keeps the reply within a frame (255 members of 20 ids each).
		slices.Sort(d.Missing)
		slices.Sort(d.Extra)
		d.Missing, d.Extra = d.Missing[:min(len(d.Missing), proto.MaxDevices)], d.Extra[:min(len(d.Extra), proto.MaxDevices)]
		out = append(out, *d)
	}
	return out
}

// Change is what a committed change did, for telling the members.
type Change struct {
	Group    string
	ChainLen uint32 // the roster's new length; 0: only the keys changed
	Members  []store.GroupMember
	Added    string // a member this change added (joined or invited)
	Gone     string // a member this change removed, or who left
}

// Plan checks user's change to group, sent from device, against its
// roster, the epoch rules and the user's limits, at its first part.
func (r *Rules) Plan(user string, device uint64, group string, m *proto.GroupChange) (*Plan, *proto.RemoteError) {
	st := r.o.Store
	cur, err := st.Group(group)
	if errors.Is(err, store.ErrNotFound) {
		cur = nil
	} else if err != nil {
		return nil, refuse(proto.CodeInternal, "reading the group failed")
	}
	p := &Plan{group: group, cur: cur, next: cur, statement: append([]byte(nil), m.Statement...), rosterSeq: m.RosterSeq}
	if len(m.Statement) > 0 {
		stmt := new(proto.Statement)
		if err := stmt.Parse(m.Statement); err != nil || string(stmt.Group) != group {
			return nil, refuse(proto.CodeBadRequest, "malformed statement")
		}
		if string(stmt.Signer) != user {
			return nil, refuse(proto.CodeForbidden, "statements are signed by the user who sends them")
		}
		switch {
		case cur == nil && stmt.Op != proto.OpCreate:
			return nil, refuse(proto.CodeNoSuchGroup, "no such group")
		case cur != nil && stmt.Op == proto.OpCreate:
			return nil, refuse(proto.CodeGroupTaken, "a group by that name exists")
		case cur != nil:
			if m, _ := cur.Member(user); !m {
				return nil, refuse(proto.CodeNoSuchGroup, "no such group")
			}
		}
		if stmt.Op == proto.OpAdd && r.signKey(string(stmt.Target)) == nil {
			return nil, refuse(proto.CodeNoSuchUser, "no such user")
		}
		if stmt.Op == proto.OpKeyChanged && bytes.Equal(stmt.OldKey, r.signKey(user)) {
			return nil, refuse(proto.CodeBadRequest, "a key change names the key that signs it: your key has not changed")
		}
		ro, err := toRoster(cur).Apply(stmt, r.signKey)
		switch {
		case errors.Is(err, proto.ErrNotAllowed):
			return nil, refuse(proto.CodeForbidden, err.Error())
		case errors.Is(err, proto.ErrBadChain):
			return nil, refuse(proto.CodeStaleGroup, "the group has changed; fetch it and retry")
		case err != nil:
			return nil, refuse(proto.CodeInvalidKey, err.Error())
		}
		if len(ro.Members) > proto.MaxGroupMembers {
			return nil, refuse(proto.CodeGroupFull, "the group is full")
		}
		next := &store.GroupState{Name: group, Seq: ro.Seq, Last: ro.Last}
		if cur != nil {
			next.Epoch, next.EpochSeq, next.EpochBad, next.Created = cur.Epoch, cur.EpochSeq, cur.EpochBad, cur.Created
		} else {
			next.Created = r.o.Now()
		}
		for _, m := range ro.Members {
			next.Members = append(next.Members, store.GroupMember{Name: m.Name, Admin: m.Admin})
		}
		p.stmt, p.next = stmt, next
	} else {
		if cur == nil {
			return nil, refuse(proto.CodeNoSuchGroup, "no such group")
		}
		if m, _ := cur.Member(user); !m {
			return nil, refuse(proto.CodeNoSuchGroup, "no such group")
		}
		if m.Epoch == 0 {
			return nil, refuse(proto.CodeBadRequest, "a change needs a statement or an epoch")
		}
		cp := *cur
		p.next = &cp
	}
	// Epochs: a new one whenever membership changes (none for a leave,
	// which the next sender rekeys; none needed for a promote), made by a
	// signed epoch statement for exactly the roster it names.
	op := uint8(0)
	if p.stmt != nil {
		op = p.stmt.Op
	}
	if op == proto.OpLeave && m.Epoch != 0 {
		return nil, refuse(proto.CodeBadRequest, "whoever leaves cannot make the next key")
	}
	if (op == proto.OpCreate || op == proto.OpAdd || op == proto.OpRemove) && m.Epoch == 0 {
		return nil, refuse(proto.CodeBadRequest, "a membership change needs a new key epoch")
	}
	if err := r.charge(user, group, op == proto.OpCreate); err != nil {
		return nil, err
	}
	if op == proto.OpCreate {
		if n, err := r.adminOf(user); err != nil {
			return nil, refuse(proto.CodeInternal, "reading your groups failed")
		} else if n >= r.o.MaxOwned {
			return nil, refuse(proto.CodeGroupLimit, fmt.Sprintf("you are an admin of %d groups, the most one user may have; leave one (another member takes it over) before you create more", n))
		}
	}
	if m.Epoch != 0 {
		want := uint32(1)
		if cur != nil {
			want = cur.Epoch + 1
		}
		if m.Epoch != want || m.RosterSeq != p.next.Seq {
			return nil, refuse(proto.CodeStaleGroup, "the key epoch is not the next one for this roster")
		}
		var es proto.EpochStatement
		if err := es.Parse(m.EpochStmt); err != nil {
			return nil, refuse(proto.CodeBadRequest, "a new key epoch needs its signed epoch statement: "+err.Error())
		}
		if string(es.Group) != group || es.Epoch != m.Epoch || es.RosterSeq != m.RosterSeq || es.Head != p.next.Last || string(es.Maker) != user {
			return nil, refuse(proto.CodeBadRequest, "the epoch statement does not name this group, epoch, roster and maker")
		}
		if refusal := r.planWraps(p, device, m.PerDevice, &es); refusal != nil {
			return nil, refusal
		}
		p.epoch = &store.Epoch{N: m.Epoch, RosterSeq: m.RosterSeq, Created: r.o.Now(), Wrapper: user, WrapperDevice: es.Device, Stmt: append([]byte(nil), m.EpochStmt...)}
		p.next.Epoch, p.next.EpochSeq, p.next.EpochBad = m.Epoch, m.RosterSeq, false
		if cur != nil {
			p.next.EpochDevGen = cur.DevGen // the commit fails if a device changes meanwhile
		}
	}
	return p, nil
}

// planWraps checks an epoch's statement and says whom its key is to be
// wrapped for. Per device (perDevice), the statement is signed by the
// uploading device, and the key goes to every device on each member's
// list. In the form before devices, the maker's account key signs it and
// the key goes to each member's account keys, which only serves while
// every member has its first device alone.
func (r *Rules) planWraps(p *Plan, device uint64, perDevice bool, es *proto.EpochStatement) *proto.RemoteError {
	user := string(es.Maker)
	p.members, p.wrapsFor = map[string]bool{}, map[store.WrapFor]bool{}
	for _, mb := range p.next.Members {
		p.members[mb.Name] = true
		first, devs, err := r.o.DeviceIDs(mb.Name)
		if err != nil {
			return refuse(proto.CodeInternal, "reading a member's devices failed")
		}
		if !perDevice {
			if len(devs) > 1 || len(devs) == 1 && devs[0] != first {
				return refuse(proto.CodeUnsupportedFeature, mb.Name+" uses several devices, and group keys must reach each of them: upgrade securefastchat (protocol version 5)")
			}
			p.wrapsFor[store.WrapFor{Member: mb.Name}] = true
			continue
		}
		for _, d := range devs {
			p.wrapsFor[store.WrapFor{Member: mb.Name, Device: d}] = true
		}
	}
	key := r.signKey(user)
	switch {
	case perDevice && es.Device != device:
		return refuse(proto.CodeBadRequest, "an epoch statement is signed by the device that sends it")
	case perDevice:
		key = r.deviceKey(user, device)
	case es.Device != 0:
		return refuse(proto.CodeBadRequest, "an epoch statement signed by a device comes with keys wrapped for devices")
	}
	if !es.Verify(key) {
		return refuse(proto.CodeInvalidKey, "the epoch statement's signature does not verify")
	}
	return nil
}

// Commit stores a planned change by user with its wrapped keys, unless the
// group changed since it was planned (its roster, its epoch or its
// members' devices). A member added by someone they have not accepted is
// only invited.
func (r *Rules) Commit(user string, p *Plan, keys map[store.WrapFor][]byte) (*Change, *proto.RemoteError) {
	st := r.o.Store
	if p.epoch != nil {
		if len(keys) != len(p.wrapsFor) || p.Mismatch(keys) != nil {
			return nil, refuse(proto.CodeBadRequest, "the new key must be wrapped for exactly the members' devices")
		}
		p.epoch.Keys = keys
	}
	var err error
	if p.cur == nil {
		err = st.CreateGroup(p.next, p.statement, p.epoch)
	} else {
		var statement []byte
		if p.stmt != nil {
			statement = p.statement
		}
		invite := ""
		if p.stmt != nil && p.stmt.Op == proto.OpAdd && !r.acceptedBy(string(p.stmt.Target), user) {
			invite = string(p.stmt.Target)
		}
		err = st.ChangeGroup(p.next, p.cur.Seq, p.cur.Epoch, statement, p.epoch, invite, user)
	}
	switch {
	case errors.Is(err, store.ErrGroupExists):
		return nil, refuse(proto.CodeGroupTaken, "a group by that name exists")
	case errors.Is(err, store.ErrConflict):
		return nil, refuse(proto.CodeStaleGroup, "the group has changed; fetch it and retry")
	case errors.Is(err, store.ErrUnavailable):
		return nil, refuse(proto.CodeStorageUnavailable, "storage is unavailable; retry")
	case err != nil:
		r.o.Logger.Error("group change failed", "group", p.group, "err", err)
		return nil, refuse(proto.CodeInternal, "internal error")
	}
	ch := &Change{Group: p.group, Members: p.next.Members}
	if p.stmt != nil {
		ch.ChainLen = p.next.Seq + 1
		switch p.stmt.Op {
		case proto.OpAdd:
			ch.Added = string(p.stmt.Target)
		case proto.OpRemove, proto.OpLeave:
			ch.Gone = string(p.stmt.Target)
		}
	}
	return ch, nil
}

// ReportBad takes member user's signed report that its copy of an epoch's
// key of group g does not open or does not match the epoch statement: one
// signed by the device that sends it (m.Device), or, in the form before
// devices, by the user's account key.
func (r *Rules) ReportBad(user string, device uint64, g *store.GroupState, m *proto.BadEpoch) *proto.RemoteError {
	key := r.signKey(user)
	if m.Device != 0 {
		if m.Device != device {
			return refuse(proto.CodeBadRequest, "a report is signed by the device that sends it")
		}
		key = r.deviceKey(user, device)
	}
	if len(key) != ed25519.PublicKeySize || !ed25519.Verify(key, proto.BadEpochSigned(m.Group, m.Epoch, []byte(user), m.Device), m.Sig) {
		return refuse(proto.CodeInvalidKey, "the report's signature does not verify")
	}
	if err := r.charge(user, g.Name, false); err != nil {
		return err
	}
	if err := r.o.Store.MarkEpochBad(g.Name, m.Epoch, user, m.Device, m.Sig); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return refuse(proto.CodeBadRequest, "no such epoch")
		}
		if errors.Is(err, store.ErrUnavailable) {
			return refuse(proto.CodeStorageUnavailable, "storage is unavailable; retry")
		}
		r.o.Logger.Error("marking an epoch bad failed", "group", g.Name, "err", err)
		return refuse(proto.CodeInternal, "internal error")
	}
	return nil
}

// acceptedBy reports whether invitee has accepted adder: written to them,
// or shares a joined group with them.
func (r *Rules) acceptedBy(invitee, adder string) bool {
	if w, _ := r.o.Store.Wrote(invitee, adder); w {
		return true
	}
	ok, _ := r.o.Store.ShareGroup(invitee, adder, true)
	return ok
}

// adminOf counts the groups user is an admin of.
func (r *Rules) adminOf(user string) (int, error) {
	st := r.o.Store
	names, err := st.UserGroups(user)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, name := range names {
		if g, err := st.Group(name); err == nil {
			if _, admin := g.Member(user); admin {
				n++
			}
		}
	}
	return n, nil
}
