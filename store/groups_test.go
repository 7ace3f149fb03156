package store

import (
	"errors"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

func TestGroups(t *testing.T) {
	s := openTemp(t)
	g := &GroupState{Name: "team", Seq: 0, Last: [32]byte{1}, Epoch: 1, EpochSeq: 0, Created: time.Unix(1_700_000_000, 0),
		Members: []GroupMember{{Name: "ann", Admin: true}}}
	e1 := &Epoch{N: 1, RosterSeq: 0, Wrapper: "ann", Keys: map[WrapFor][]byte{{Member: "ann"}: []byte("wrapped-ann-1")}}
	if err := s.CreateGroup(g, []byte("statement 0"), e1); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateGroup(g, []byte("again"), nil); !errors.Is(err, ErrGroupExists) {
		t.Fatalf("duplicate: %v", err)
	}
	// ann adds bob, with epoch 2 for both.
	next := *g
	next.Seq, next.Last, next.Epoch, next.EpochSeq = 1, [32]byte{2}, 2, 1
	next.Members = []GroupMember{{Name: "ann", Admin: true}, {Name: "bob"}}
	e2 := &Epoch{N: 2, RosterSeq: 1, Wrapper: "ann", Keys: map[WrapFor][]byte{{Member: "ann"}: []byte("a2"), {Member: "bob"}: []byte("b2")}}
	if err := s.ChangeGroup(&next, 0, 1, []byte("statement 1"), e2, "", ""); err != nil {
		t.Fatal(err)
	}
	// A concurrent change based on the old state loses.
	if err := s.ChangeGroup(&next, 0, 1, []byte("statement 1b"), nil, "", ""); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale change: %v", err)
	}
	got, err := s.Group("team")
	if err != nil || got.Seq != 1 || got.Epoch != 2 || len(got.Members) != 2 || got.Members[1].Name != "bob" {
		t.Fatalf("state %+v %v", got, err)
	}
	if m, a := got.Member("bob"); !m || a {
		t.Fatal("bob's membership")
	}
	chain, more, err := s.GroupChain("team", 0, 1<<20)
	if err != nil || more || len(chain) != 2 || string(chain[1]) != "statement 1" {
		t.Fatalf("chain %q %v %v", chain, more, err)
	}
	if chain, more, _ := s.GroupChain("team", 0, 5); len(chain) != 1 || !more {
		t.Fatalf("paged chain %q %v", chain, more)
	}
	// bob has only the epoch he was in; ann has both.
	if k, _ := s.MemberKeys("team", "bob", 0, true, 0, 0); len(k) != 1 || k[0].Epoch != 2 || string(k[0].Wrapped) != "b2" || k[0].Wrapper != "ann" {
		t.Fatalf("bob's keys %+v", k)
	}
	if k, _ := s.MemberKeys("team", "ann", 0, true, 0, 0); len(k) != 2 {
		t.Fatalf("ann's keys %+v", k)
	}
	if k, _ := s.MemberKeys("team", "ann", 0, true, 2, 0); len(k) != 1 {
		t.Fatalf("ann's keys from epoch 2: %+v", k)
	}
	// bob leaves: the index follows.
	left := next
	left.Seq, left.Members = 2, []GroupMember{{Name: "ann", Admin: true}}
	if err := s.ChangeGroup(&left, 1, 2, []byte("statement 2"), nil, "", ""); err != nil {
		t.Fatal(err)
	}
	if gs, _ := s.UserGroups("bob"); len(gs) != 0 {
		t.Fatalf("bob still in %v", gs)
	}
	s.CreateGroup(&GroupState{Name: "other", Members: []GroupMember{{Name: "ann", Admin: true}}}, []byte("s"), nil)
	gs, _ := s.UserGroups("ann")
	sort.Strings(gs)
	if len(gs) != 2 || gs[0] != "other" || gs[1] != "team" {
		t.Fatalf("ann's groups %v", gs)
	}
	if _, err := s.Group("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
}

// An epoch reported bad stops sends under it (the current one) and keeps
// the first report; epochs whose successor is older than the retention
// are pruned (never the current one); and a key fetch visits one header
// per epoch, however many members each has.
func TestEpochBadAndPruned(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "s.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	g := &GroupState{Name: "team", Seq: 0, Epoch: 1, Created: t0, Members: []GroupMember{{Name: "ann", Admin: true}, {Name: "bob"}}}
	keys := func() map[WrapFor][]byte {
		return map[WrapFor][]byte{{Member: "ann"}: []byte("a"), {Member: "bob"}: []byte("b")}
	}
	if err := s.CreateGroup(g, []byte("s0"), &Epoch{N: 1, Created: t0, Wrapper: "ann", Stmt: []byte("stmt1"), Keys: keys()}); err != nil {
		t.Fatal(err)
	}
	for n := uint32(2); n <= 5; n++ {
		next := *g
		next.Epoch = n
		if err := s.ChangeGroup(&next, 0, n-1, nil, &Epoch{N: n, Created: t0.Add(time.Duration(n) * 24 * time.Hour), Wrapper: "bob", Stmt: []byte("stmt"), Keys: keys()}, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.MarkEpochBad("team", 5, "ann", 0, []byte("sig")); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkEpochBad("team", 5, "bob", 0, []byte("later")); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.Group("team"); !st.EpochBad {
		t.Fatal("the current epoch reported bad is not marked")
	}
	ks, err := s.MemberKeys("team", "bob", 0, true, 0, 0)
	if err != nil || len(ks) != 5 || ks[4].BadBy != "ann" || string(ks[4].Stmt) != "stmt" || ks[0].BadBy != "" {
		t.Fatalf("keys: %+v %v", ks, err)
	}
	if ks, _ := s.MemberKeys("team", "bob", 0, true, 2, 2); len(ks) != 2 || ks[0].Epoch != 2 || ks[1].Epoch != 3 {
		t.Fatalf("keys from 2, at most 2: %+v", ks)
	}
	// Epochs 2, 3, 4 were made on days 2, 3, 4: with the cutoff on day 4,
	// epochs 1 and 2 (succeeded by day 3) go.
	n, err := s.PruneEpochs(t0.Add(3*24*time.Hour + time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("pruned %d (%v), want 2", n, err)
	}
	if ks, _ := s.MemberKeys("team", "ann", 0, true, 0, 0); len(ks) != 3 || ks[0].Epoch != 3 {
		t.Fatalf("after pruning: %+v", ks)
	}
	if n, _ := s.PruneEpochs(t0.Add(365 * 24 * time.Hour)); n != 2 {
		t.Fatalf("pruning everything old pruned %d, want 2 (the current stays)", n)
	}
}

// An epoch's keys are kept per member device: each device gets its own
// copy, the account's first device also the copies from before devices,
// and the header keeps the devices that made it and reported it bad.
func TestGroupKeysPerDevice(t *testing.T) {
	s := openTemp(t)
	g := &GroupState{Name: "team", Epoch: 1, Created: time.Unix(1_700_000_000, 0), Members: []GroupMember{{Name: "ann", Admin: true}, {Name: "bob"}}}
	e1 := &Epoch{N: 1, Wrapper: "ann", Keys: map[WrapFor][]byte{{Member: "ann"}: []byte("ann's account"), {Member: "bob"}: []byte("bob's account")}}
	if err := s.CreateGroup(g, []byte("statement 0"), e1); err != nil {
		t.Fatal(err)
	}
	next := *g
	next.Epoch = 2
	e2 := &Epoch{N: 2, Wrapper: "ann", WrapperDevice: 7, Keys: map[WrapFor][]byte{
		{Member: "ann", Device: 7}: []byte("ann's phone"), {Member: "ann", Device: 8}: []byte("ann's laptop"), {Member: "bob", Device: 5}: []byte("bob's phone")}}
	if err := s.ChangeGroup(&next, 0, 1, nil, e2, "", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkEpochBad("team", 2, "bob", 5, []byte("bob's report")); err != nil {
		t.Fatal(err)
	}
	wrapped := func(ks []EpochKey) (out []string) {
		for _, k := range ks {
			out = append(out, string(k.Wrapped))
		}
		return out
	}
	// ann's phone (her first device) has both epochs; her laptop only
	// its own copy; a device with no copy nothing.
	if ks, err := s.MemberKeys("team", "ann", 7, true, 0, 0); err != nil || len(ks) != 2 || ks[0].Device != 0 || ks[1].Device != 7 ||
		ks[1].WrapperDevice != 7 || ks[1].BadBy != "bob" || ks[1].BadDevice != 5 || string(ks[1].BadSig) != "bob's report" || ks[0].WrapperDevice != 0 {
		t.Fatalf("ann's phone: %q %+v %v", wrapped(ks), ks, err)
	}
	if ks, _ := s.MemberKeys("team", "ann", 8, false, 0, 0); len(ks) != 1 || string(ks[0].Wrapped) != "ann's laptop" {
		t.Fatalf("ann's laptop: %q", wrapped(ks))
	}
	if ks, _ := s.MemberKeys("team", "bob", 9, false, 0, 0); len(ks) != 0 {
		t.Fatalf("a device without copies: %q", wrapped(ks))
	}
	// Pruning an epoch drops its per-device copies too.
	next.Epoch = 3
	if err := s.ChangeGroup(&next, 0, 2, nil, &Epoch{N: 3, Wrapper: "ann", WrapperDevice: 7, Created: time.Now(), Keys: map[WrapFor][]byte{{Member: "ann", Device: 7}: []byte("3")}}, "", ""); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneEpochs(time.Now().Add(time.Hour)); err != nil || n != 2 {
		t.Fatalf("pruned %d %v", n, err)
	}
	if ks, _ := s.MemberKeys("team", "ann", 8, false, 0, 0); len(ks) != 0 {
		t.Fatalf("the laptop's copy of a pruned epoch: %q", wrapped(ks))
	}
}

// A change to a member's devices makes the group's current epoch stale,
// and an epoch planned before the change cannot be stored after it.
func TestGroupDevicesStale(t *testing.T) {
	s := openTemp(t)
	for _, u := range []string{"ann", "bob"} {
		if err := s.CreateUser(&User{Name: u, Display: u, BoxKey: make([]byte, 32), SignKey: make([]byte, 32), KeySig: make([]byte, 64)}); err != nil {
			t.Fatal(err)
		}
	}
	g := &GroupState{Name: "team", Epoch: 1, Created: time.Unix(1_700_000_000, 0), Members: []GroupMember{{Name: "ann", Admin: true}, {Name: "bob"}}}
	if err := s.CreateGroup(g, []byte("statement 0"), &Epoch{N: 1, Wrapper: "ann", Keys: map[WrapFor][]byte{{Member: "ann"}: []byte("a")}}); err != nil {
		t.Fatal(err)
	}
	stale := func() bool {
		got, err := s.Group("team")
		if err != nil {
			t.Fatal(err)
		}
		return got.DevicesStale()
	}
	// bob's first statement names the device he had: nothing changes.
	if err := s.AppendDevice("bob", 0, []byte("bob's first device")); err != nil || stale() {
		t.Fatalf("after bob's first statement: stale %v, %v", stale(), err)
	}
	planned, _ := s.Group("team")
	if err := s.AppendDevice("bob", 1, []byte("bob's laptop")); err != nil || !stale() {
		t.Fatalf("after bob added a device: stale %v, %v", stale(), err)
	}
	// An epoch planned before the change loses; one planned after it
	// makes the group current again.
	next := *planned
	next.Epoch, next.EpochDevGen = 2, planned.DevGen
	e := &Epoch{N: 2, Wrapper: "ann", WrapperDevice: 7, Keys: map[WrapFor][]byte{{Member: "ann", Device: 7}: []byte("a")}}
	if err := s.ChangeGroup(&next, 0, 1, nil, e, "", ""); !errors.Is(err, ErrConflict) {
		t.Fatalf("an epoch planned before bob's laptop: %v", err)
	}
	now, _ := s.Group("team")
	next = *now
	next.Epoch, next.EpochDevGen = 2, now.DevGen
	if err := s.ChangeGroup(&next, 0, 1, nil, e, "", ""); err != nil || stale() {
		t.Fatalf("an epoch for bob's laptop: stale %v, %v", stale(), err)
	}
	// A change with no epoch (a leave) keeps the counts.
	left := next
	left.Seq, left.Members = 1, left.Members[:1]
	left.EpochDevGen = 0
	if err := s.ChangeGroup(&left, 0, 2, []byte("statement 1"), nil, "", ""); err != nil || stale() {
		t.Fatalf("after a leave: stale %v, %v", stale(), err)
	}
	// Recovering an account changes its devices too.
	if err := s.RecoverAccount("ann", make([]byte, 32), make([]byte, 32), make([]byte, 64), []byte("ann's new first device"), &Session{User: "ann", LastSeen: time.Now()}); err != nil || !stale() {
		t.Fatalf("after ann recovered: stale %v, %v", stale(), err)
	}
}
