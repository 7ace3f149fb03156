// Package storetest is the conformance suite of the store's contract
// (docs/STORE.md). Run drives an implementation through the operations
// the server needs (accounts and sessions, a receiver's stream and its
// cursor, relations and blocks, a group's compare-and-set chain, a user's
// deletion) and, after every step, crashes it: it opens what a kill of the
// process at that moment would leave, checks that everything acknowledged
// is there and nothing half-done shows, and goes on from that copy. So
// each step must be durable when it returns, and the next step must be
// able to go on from any state a crash between two steps leaves.
//
// Package store (bbolt) runs it in store/conformance_test.go; a second
// backend runs the same Run with its own Backend.
package storetest

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"securefastchat/store"
)

// Store is the part of the contract the suite drives; *store.Store has it.
type Store interface {
	CreateUser(u *store.User) error
	GetUser(name string) (*store.User, error)
	DeleteUser(name string) error
	RecoverAccount(name string, boxKey, signKey, keySig, first []byte, ss *store.Session) error
	PutSession(ss *store.Session) error
	GetSession(h [32]byte) (*store.Session, error)
	AppendDevice(user string, seq uint32, statement []byte) error
	DeviceChain(user string, from uint32, maxBytes int) ([][]byte, bool, error)

	Enqueue(msgs []*store.Queued, lim store.QueueLimits) ([]error, error)
	Dequeue(in store.Inbox, ids []uint64) error
	Peek(in store.Inbox, after uint64, n int) ([]*store.Queued, error)
	QueueLen(user string) (count, bytes int64, err error)
	InboxLen(in store.Inbox) (count, bytes int64, err error)
	DeleteInbox(in store.Inbox) (int64, error)
	Inboxes(user string) ([]store.Inbox, error)
	DevicesSeen(user string) (map[uint64]time.Time, error)
	MaxServerID() (uint64, error)

	AddContact(a, b string) error
	Wrote(writer, peer string) (bool, error)
	Block(blocker, user string, max int) (dropped int, err error)
	Blocks(blocker, user string) (bool, error)

	CreateGroup(g *store.GroupState, statement []byte, first *store.Epoch) error
	ChangeGroup(next *store.GroupState, expectSeq, expectEpoch uint32, statement []byte, epoch *store.Epoch, invite, by string) error
	Group(name string) (*store.GroupState, error)
	GroupChain(name string, from uint32, maxBytes int) ([][]byte, bool, error)
	MemberKeys(name, member string, device uint64, first bool, fromEpoch uint32, max int) ([]store.EpochKey, error)
	MarkEpochBad(name string, epoch uint32, reporter string, device uint64, sig []byte) error

	Close() error
}

// Backend makes and crashes an implementation.
type Backend interface {
	// Open opens the store kept in dir, making it if there is none.
	Open(t testing.TB, dir string) Store
	// Crash returns a new directory holding what a kill of the process
	// at this moment would leave of the store s kept in dir. s stays open;
	// the suite closes it.
	Crash(t testing.TB, s Store, dir string) string
}

// Run runs the suite against b.
func Run(t *testing.T, b Backend) {
	r := &run{t: t, b: b, dir: t.TempDir(), now: time.Unix(1_800_000_000, 0)}
	r.s = b.Open(t, r.dir)
	defer func() { r.s.Close() }()
	for _, st := range steps {
		st.do(r)
		if t.Failed() {
			t.Fatalf("step %q failed", st.name)
		}
		// Kill: open what the crash left and go on from it.
		dir := b.Crash(t, r.s, r.dir)
		r.s.Close()
		r.dir = dir
		r.s = b.Open(t, dir)
		st.check(r)
		if t.Failed() {
			t.Fatalf("after a crash following step %q", st.name)
		}
	}
}

type run struct {
	t   *testing.T
	b   Backend
	s   Store
	dir string
	now time.Time
}

func (r *run) fatal(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf(format, args...)
}

// step is one operation, then what must hold after a crash that follows it.
type step struct {
	name  string
	do    func(*run)
	check func(*run)
}

// bob's two devices: each has its own stream.
var phone, laptop = store.Inbox{User: "bob", Device: 1}, store.Inbox{User: "bob", Device: 2}

func msg(to store.Inbox, from string, id uint64, body string, at time.Time) *store.Queued {
	q := &store.Queued{ServerID: id, SentID: id, To: to.User, Device: to.Device, From: from, Kind: 1, Time: at.UnixMilli(), Stored: at, Body: []byte(body)}
	q.MsgID[0], q.MsgID[1] = byte(id>>8), byte(id)
	return q
}

func user(name string, at time.Time) *store.User {
	return &store.User{Name: name, Display: name, PasswordHash: "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA",
		BoxKey: make([]byte, 32), SignKey: make([]byte, 32), KeySig: make([]byte, 64), Created: at}
}

var token = store.HashToken([]byte("bob's session"))

// peek returns the bodies in a device's stream, and checks that their
// numbers rise.
func (r *run) peek(in store.Inbox) []string {
	r.t.Helper()
	q, err := r.s.Peek(in, 0, 1000)
	if err != nil {
		r.fatal("peek %s: %v", in, err)
	}
	var out []string
	for i, m := range q {
		if i > 0 && m.ServerID <= q[i-1].ServerID {
			r.fatal("%s's stream is not in order: %d after %d", in, m.ServerID, q[i-1].ServerID)
		}
		if m.To != in.User || m.Device != in.Device {
			r.fatal("%s's stream holds a message for %s device %d", in, m.To, m.Device)
		}
		out = append(out, string(m.Body))
	}
	return out
}

func (r *run) wantStream(in store.Inbox, want ...string) {
	r.t.Helper()
	got := r.peek(in)
	if !slices.Equal(got, want) {
		r.fatal("%s's stream holds %q, want %q", in, got, want)
	}
	n, b, err := r.s.InboxLen(in)
	if err != nil || n != int64(len(want)) || (n > 0) != (b > 0) {
		r.fatal("%s's counts: %d messages, %d bytes, %v; want %d messages", in, n, b, err, len(want))
	}
}

// wantTotal checks an account's count over its devices.
func (r *run) wantTotal(user string, want int64) {
	r.t.Helper()
	if n, _, err := r.s.QueueLen(user); err != nil || n != want {
		r.fatal("%s's messages over its devices: %d %v, want %d", user, n, err, want)
	}
}

func (r *run) enqueue(msgs ...*store.Queued) []error {
	r.t.Helper()
	errs, err := r.s.Enqueue(msgs, store.QueueLimits{})
	if err != nil {
		r.fatal("enqueue: %v", err)
	}
	return errs
}

func team(seq uint32, epoch uint32, members ...store.GroupMember) *store.GroupState {
	return &store.GroupState{Name: "team", Seq: seq, Last: [32]byte{byte(seq + 1)}, Epoch: epoch, EpochSeq: seq,
		Created: time.Unix(1_800_000_000, 0), Members: members}
}

var (
	ann = store.GroupMember{Name: "alice", Admin: true}
	bob = store.GroupMember{Name: "bob"}
)

var steps = []step{
	{
		name: "create users (compare: absent)",
		do: func(r *run) {
			for _, u := range []string{"alice", "bob", "carol"} {
				if err := r.s.CreateUser(user(u, r.now)); err != nil {
					r.fatal("create %s: %v", u, err)
				}
			}
		},
		check: func(r *run) {
			for _, u := range []string{"alice", "bob", "carol"} {
				if got, err := r.s.GetUser(u); err != nil || got.Name != u {
					r.fatal("user %s after the crash: %+v %v", u, got, err)
				}
			}
			if err := r.s.CreateUser(user("alice", r.now)); !errors.Is(err, store.ErrUserExists) {
				r.fatal("a second alice: %v, want ErrUserExists", err)
			}
		},
	},
	{
		name: "put a session",
		do: func(r *run) {
			if err := r.s.PutSession(&store.Session{TokenHash: token, User: "bob", Created: r.now, LastSeen: r.now, Device: phone.Device}); err != nil {
				r.fatal("session: %v", err)
			}
		},
		check: func(r *run) {
			if ss, err := r.s.GetSession(token); err != nil || ss.User != "bob" || ss.Device != phone.Device {
				r.fatal("bob's session after the crash: %+v %v", ss, err)
			}
			if seen, err := r.s.DevicesSeen("bob"); err != nil || !seen[phone.Device].Equal(r.now) || len(seen) != 1 {
				r.fatal("when bob's devices logged in (his session says), after the crash: %v %v", seen, err)
			}
		},
	},
	{
		name: "append to a device chain (compare: its length)",
		do: func(r *run) {
			if err := r.s.AppendDevice("bob", 0, []byte("bob's first device")); err != nil {
				r.fatal("append: %v", err)
			}
		},
		check: func(r *run) {
			if c, _, err := r.s.DeviceChain("bob", 0, 1<<20); err != nil || len(c) != 1 || string(c[0]) != "bob's first device" {
				r.fatal("bob's device chain after the crash: %q %v", c, err)
			}
			if err := r.s.AppendDevice("bob", 0, []byte("another first device")); !errors.Is(err, store.ErrConflict) {
				r.fatal("a second statement 0: %v, want ErrConflict", err)
			}
		},
	},
	{
		name: "append to a receiver's stream",
		do: func(r *run) {
			if errs := r.enqueue(msg(phone, "alice", 10, "one", r.now), msg(phone, "alice", 11, "two", r.now), msg(phone, "alice", 12, "three", r.now),
				msg(laptop, "alice", 10, "one", r.now)); errors.Join(errs...) != nil {
				r.fatal("enqueue: %v", errs)
			}
		},
		check: func(r *run) {
			r.wantStream(phone, "one", "two", "three")
			r.wantStream(laptop, "one")
			r.wantTotal("bob", 4)
			if id, err := r.s.MaxServerID(); err != nil || id < 12 {
				r.fatal("the highest number after the crash: %d %v; a restart would number anew from below it", id, err)
			}
			// A repeat of (sender, msg_id) is not stored twice.
			dup := msg(phone, "alice", 99, "two again", r.now)
			dup.MsgID = msg(phone, "alice", 11, "", r.now).MsgID
			r.enqueue(dup)
			r.wantStream(phone, "one", "two", "three")
		},
	},
	{
		name: "advance the cursor",
		do: func(r *run) {
			if err := r.s.Dequeue(phone, []uint64{10}); err != nil {
				r.fatal("dequeue: %v", err)
			}
		},
		check: func(r *run) {
			r.wantStream(phone, "two", "three")
			// Acknowledged again (the ack's reply was lost): idempotent.
			if err := r.s.Dequeue(phone, []uint64{10, 11}); err != nil {
				r.fatal("dequeue again: %v", err)
			}
			r.wantStream(phone, "three")
			r.wantStream(laptop, "one") // the phone's acknowledgements are its own
			if id, err := r.s.MaxServerID(); err != nil || id < 12 {
				r.fatal("the highest number after acknowledgements: %d %v", id, err)
			}
		},
	},
	{
		name: "drop a device's inbox",
		do: func(r *run) {
			if n, err := r.s.DeleteInbox(laptop); err != nil || n != 1 {
				r.fatal("delete the laptop's inbox: %d %v, want 1", n, err)
			}
		},
		check: func(r *run) {
			r.wantStream(laptop)
			r.wantStream(phone, "three")
			r.wantTotal("bob", 1)
		},
	},
	{
		name: "record who wrote to whom",
		do: func(r *run) {
			if err := r.s.AddContact("bob", "alice"); err != nil {
				r.fatal("contact: %v", err)
			}
		},
		check: func(r *run) {
			if w, err := r.s.Wrote("bob", "alice"); err != nil || !w {
				r.fatal("bob wrote to alice, after the crash: %v %v", w, err)
			}
		},
	},
	{
		name: "block (drops what the blocked user queued)",
		do: func(r *run) {
			if errs := r.enqueue(msg(phone, "carol", 20, "spam 1", r.now), msg(phone, "carol", 21, "spam 2", r.now)); errors.Join(errs...) != nil {
				r.fatal("enqueue: %v", errs)
			}
			if n, err := r.s.Block("bob", "carol", 1000); err != nil || n != 2 {
				r.fatal("block: dropped %d, %v; want 2", n, err)
			}
		},
		check: func(r *run) {
			r.wantStream(phone, "three")
			if b, err := r.s.Blocks("bob", "carol"); err != nil || !b {
				r.fatal("the block after the crash: %v %v", b, err)
			}
			if errs := r.enqueue(msg(phone, "carol", 22, "spam 3", r.now)); !errors.Is(errs[0], store.ErrBlocked) {
				r.fatal("a blocked sender's message: %v, want ErrBlocked", errs[0])
			}
			r.wantStream(phone, "three")
		},
	},
	{
		name: "create a group (compare: absent)",
		do: func(r *run) {
			e := &store.Epoch{N: 1, RosterSeq: 0, Wrapper: "alice", Created: r.now, Keys: map[store.WrapFor][]byte{{Member: "alice"}: []byte("a1")}}
			if err := r.s.CreateGroup(team(0, 1, ann), []byte("statement 0"), e); err != nil {
				r.fatal("create group: %v", err)
			}
		},
		check: func(r *run) {
			g, err := r.s.Group("team")
			if err != nil || g.Seq != 0 || g.Epoch != 1 || len(g.Members) != 1 {
				r.fatal("the group after the crash: %+v %v", g, err)
			}
			if err := r.s.CreateGroup(team(0, 1, ann), []byte("again"), nil); !errors.Is(err, store.ErrGroupExists) {
				r.fatal("a second team: %v, want ErrGroupExists", err)
			}
		},
	},
	{
		name: "change a group (compare-and-set on its state)",
		do: func(r *run) {
			e := &store.Epoch{N: 2, RosterSeq: 1, Wrapper: "alice", Created: r.now, Keys: map[store.WrapFor][]byte{{Member: "alice"}: []byte("a2"), {Member: "bob"}: []byte("b2")}}
			if err := r.s.ChangeGroup(team(1, 2, ann, bob), 0, 1, []byte("statement 1"), e, "", ""); err != nil {
				r.fatal("change: %v", err)
			}
		},
		check: func(r *run) {
			g, err := r.s.Group("team")
			if err != nil || g.Seq != 1 || g.Epoch != 2 || len(g.Members) != 2 {
				r.fatal("the group after the crash: %+v %v", g, err)
			}
			chain, _, err := r.s.GroupChain("team", 0, 1<<20)
			if err != nil || len(chain) != 2 || string(chain[1]) != "statement 1" {
				r.fatal("the chain after the crash: %q %v", chain, err)
			}
			if k, err := r.s.MemberKeys("team", "bob", 0, true, 0, 0); err != nil || len(k) != 1 || string(k[0].Wrapped) != "b2" {
				r.fatal("bob's keys after the crash: %+v %v", k, err)
			}
			// A change planned on the state before loses.
			if err := r.s.ChangeGroup(team(1, 2, ann), 0, 1, []byte("statement 1b"), nil, "", ""); !errors.Is(err, store.ErrConflict) {
				r.fatal("a stale change: %v, want ErrConflict", err)
			}
		},
	},
	{
		name: "mark an epoch bad",
		do: func(r *run) {
			if err := r.s.MarkEpochBad("team", 2, "bob", 0, []byte("bob's signature")); err != nil {
				r.fatal("mark bad: %v", err)
			}
		},
		check: func(r *run) {
			g, err := r.s.Group("team")
			if err != nil || !g.EpochBad {
				r.fatal("the bad flag after the crash: %+v %v", g, err)
			}
			k, err := r.s.MemberKeys("team", "alice", 0, true, 2, 0)
			if err != nil || len(k) != 1 || k[0].BadBy != "bob" {
				r.fatal("the report after the crash: %+v %v", k, err)
			}
		},
	},
	{
		name: "delete a user",
		do: func(r *run) {
			if err := r.s.DeleteUser("bob"); err != nil {
				r.fatal("delete: %v", err)
			}
		},
		check: func(r *run) {
			if _, err := r.s.GetUser("bob"); !errors.Is(err, store.ErrNotFound) {
				r.fatal("bob after the crash: %v, want ErrNotFound", err)
			}
			if _, err := r.s.GetSession(token); !errors.Is(err, store.ErrNotFound) {
				r.fatal("bob's session after the crash: %v, want ErrNotFound", err)
			}
			r.wantStream(phone)
			r.wantTotal("bob", 0)
			if seen, err := r.s.DevicesSeen("bob"); err != nil || len(seen) != 0 {
				r.fatal("when bob's devices logged in, after his deletion: %v %v", seen, err)
			}
			if w, err := r.s.Wrote("bob", "alice"); err != nil || w {
				r.fatal("bob's who-wrote record after the crash: %v %v", w, err)
			}
			if b, err := r.s.Blocks("bob", "carol"); err != nil || b {
				r.fatal("bob's block after the crash: %v %v", b, err)
			}
			if c, _, err := r.s.DeviceChain("bob", 0, 1<<20); err != nil || len(c) != 0 {
				r.fatal("bob's device chain after the crash: %q %v", c, err)
			}
			// The name can be signed up again, fresh.
			if err := r.s.CreateUser(user("bob", r.now)); err != nil {
				r.fatal("bob again: %v", err)
			}
			if errs := r.enqueue(msg(phone, "carol", 30, "to the new bob", r.now)); errs[0] != nil {
				r.fatal("carol to the new bob: %v", errs[0])
			}
			r.wantStream(phone, "to the new bob")
		},
	},
	{
		name: "queue messages sealed for devices (with the sending device, peer and wrap)",
		do: func(r *run) {
			carols := store.Inbox{User: "carol", Device: 3}
			toCarol := msg(carols, "alice", 40, "payload for carol", r.now)
			toCarol.FromDevice, toCarol.Wrap = 7, []byte("wrap for carol's device")
			sync := msg(store.Inbox{User: "alice", Device: 8}, "alice", 41, "payload for alice's laptop", r.now)
			sync.FromDevice, sync.Peer, sync.Wrap = 7, "carol", []byte("wrap for alice's laptop")
			if errs := r.enqueue(toCarol, sync); errs[0] != nil || errs[1] != nil {
				r.fatal("enqueue: %v", errs)
			}
		},
		check: func(r *run) {
			for _, want := range []struct {
				in         store.Inbox
				peer, wrap string
			}{
				{store.Inbox{User: "carol", Device: 3}, "", "wrap for carol's device"},
				{store.Inbox{User: "alice", Device: 8}, "carol", "wrap for alice's laptop"},
			} {
				q, err := r.s.Peek(want.in, 0, 10)
				if err != nil || len(q) != 1 || q[0].From != "alice" || q[0].FromDevice != 7 || q[0].Peer != want.peer || string(q[0].Wrap) != want.wrap || q[0].Group != "" {
					r.fatal("%s after the crash: %+v %v", want.in, q, err)
				}
			}
		},
	},
	{
		name: "recover an account (new keys, a new first device, nothing of the old devices)",
		do: func(r *run) {
			in := store.Inbox{User: "carol", Device: 3}
			if err := r.s.PutSession(&store.Session{TokenHash: store.HashToken([]byte("carol's old session")), User: "carol", Created: r.now, LastSeen: r.now, Device: 3}); err != nil {
				r.fatal("carol's old session: %v", err)
			}
			if n, _, err := r.s.InboxLen(in); err != nil || n == 0 {
				r.fatal("carol's old device's inbox before: %d %v", n, err)
			}
			ss := &store.Session{TokenHash: store.HashToken([]byte("carol's new session")), User: "carol", Created: r.now, LastSeen: r.now, Device: 9}
			box, sign, sig := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{3}, 64)
			if err := r.s.RecoverAccount("carol", box, sign, sig, []byte("carol's new first device"), ss); err != nil {
				r.fatal("recover carol: %v", err)
			}
			if err := r.s.RecoverAccount("nobody", box, sign, sig, []byte("x"), ss); !errors.Is(err, store.ErrNotFound) {
				r.fatal("recover an account that does not exist: %v", err)
			}
		},
		check: func(r *run) {
			u, err := r.s.GetUser("carol")
			if err != nil || !bytes.Equal(u.BoxKey, bytes.Repeat([]byte{1}, 32)) || !bytes.Equal(u.SignKey, bytes.Repeat([]byte{2}, 32)) {
				r.fatal("carol's keys after the recovery: %+v %v", u, err)
			}
			if _, err := r.s.GetSession(store.HashToken([]byte("carol's old session"))); !errors.Is(err, store.ErrNotFound) {
				r.fatal("carol's old session after the recovery: %v", err)
			}
			if ss, err := r.s.GetSession(store.HashToken([]byte("carol's new session"))); err != nil || ss.Device != 9 {
				r.fatal("carol's new session: %+v %v", ss, err)
			}
			if c, _, err := r.s.DeviceChain("carol", 0, 1<<20); err != nil || len(c) != 1 || string(c[0]) != "carol's new first device" {
				r.fatal("carol's chain after the recovery: %q %v", c, err)
			}
			if in, err := r.s.Inboxes("carol"); err != nil || len(in) != 0 {
				r.fatal("carol's inboxes after the recovery: %v %v", in, err)
			}
			r.wantTotal("carol", 0)
		},
	},
}
