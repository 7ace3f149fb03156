package proto

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
)

type signer struct {
	keys map[string]ed25519.PrivateKey
}

func newSigners(names ...string) *signer {
	s := &signer{keys: map[string]ed25519.PrivateKey{}}
	for _, n := range names {
		_, k, _ := ed25519.GenerateKey(&detRand{seed: "sign " + n})
		s.keys[n] = k
	}
	return s
}

func (s *signer) pub(user string) ed25519.PublicKey {
	k, ok := s.keys[user]
	if !ok {
		return nil
	}
	return k.Public().(ed25519.PublicKey)
}

// stmt makes the next statement of a chain, signed by by.
func (s *signer) stmt(r *Roster, op uint8, target, by string) *Statement {
	st := &Statement{Group: []byte("team"), Op: op, Target: []byte(target), Signer: []byte(by)}
	if r != nil {
		st.Seq, st.Prev = r.Seq+1, r.Last
	}
	st.Sign(s.keys[by])
	return st
}

func TestRosterRules(t *testing.T) {
	s := newSigners("ann", "bob", "cat", "dan", "eve")
	r, err := (*Roster)(nil).Apply(s.stmt(nil, OpCreate, "ann", "ann"), s.pub)
	if err != nil || !r.IsAdmin("ann") {
		t.Fatalf("create: %v", err)
	}
	step := func(op uint8, target, by string, wantErr error) {
		t.Helper()
		next, err := r.Apply(s.stmt(r, op, target, by), s.pub)
		if wantErr != nil {
			if !errors.Is(err, wantErr) {
				t.Fatalf("op %d %s by %s: got %v, want %v", op, target, by, err, wantErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("op %d %s by %s: %v", op, target, by, err)
		}
		r = next
	}
	step(OpAdd, "bob", "ann", nil)
	step(OpAdd, "cat", "ann", nil)
	step(OpAdd, "dan", "bob", ErrNotAllowed)    // T40: a non-admin cannot add
	step(OpRemove, "cat", "bob", ErrNotAllowed) // nor remove
	step(OpAdd, "bob", "ann", ErrNotAllowed)    // already a member
	step(OpRemove, "ann", "ann", ErrNotAllowed) // the last admin cannot be removed (T42), nor remove itself
	step(OpLeave, "cat", "bob", ErrNotAllowed)  // leave is signed by the one leaving
	step(OpPromote, "bob", "ann", nil)
	step(OpRemove, "cat", "bob", nil)
	step(OpAdd, "dan", "bob", nil)
	step(OpLeave, "ann", "ann", nil)
	step(OpLeave, "bob", "bob", nil) // the last admin leaves: dan (the oldest left) takes over
	if got := r.Names(); len(got) != 1 || got[0] != "dan" || !r.IsAdmin("dan") {
		t.Fatalf("roster %+v", r.Members)
	}
	// Forged signature: eve signs as dan.
	st := s.stmt(r, OpAdd, "eve", "dan")
	st.Sign(s.keys["eve"])
	if _, err := r.Apply(st, s.pub); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("forged statement: %v", err)
	}
	// Chain: a replayed or out-of-order statement is refused.
	old := s.stmt(r, OpAdd, "eve", "dan")
	r2, err := r.Apply(old, s.pub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Apply(old, s.pub); !errors.Is(err, ErrBadChain) {
		t.Fatalf("replayed statement: %v", err)
	}
	bad := s.stmt(r2, OpAdd, "ann", "dan")
	bad.Prev[0] ^= 1
	bad.Sign(s.keys["dan"])
	if _, err := r2.Apply(bad, s.pub); !errors.Is(err, ErrBadChain) {
		t.Fatalf("wrong prev: %v", err)
	}
}

// A server that edits the chain (drops, reorders or forges a statement)
// cannot make a client accept a member.
func TestReplayRosterRejectsServerEdits(t *testing.T) {
	s := newSigners("ann", "bob", "mallory")
	var chain []*Statement
	var r *Roster
	add := func(st *Statement) {
		var err error
		r, err = r.Apply(st, s.pub)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, st)
	}
	add(s.stmt(nil, OpCreate, "ann", "ann"))
	add(s.stmt(r, OpAdd, "bob", "ann"))
	if got, err := ReplayRoster(chain, s.pub); err != nil || len(got.Members) != 2 {
		t.Fatalf("replay: %v", err)
	}
	// The server appends an unsigned-by-an-admin add of mallory.
	forged := &Statement{Group: []byte("team"), Seq: r.Seq + 1, Prev: r.Last, Op: OpAdd, Target: []byte("mallory"), Signer: []byte("mallory")}
	forged.Sign(s.keys["mallory"])
	if _, err := ReplayRoster(append(chain, forged), s.pub); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("server-forged add: %v", err)
	}
	// It drops bob's add and claims mallory was added by ann with a copied signature.
	copied := *chain[1]
	copied.Target = []byte("mallory")
	if _, err := ReplayRoster([]*Statement{chain[0], &copied}, s.pub); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("edited statement: %v", err)
	}
}

func TestGroupKeyWrap(t *testing.T) {
	ann, _ := NewKeyPair(&detRand{seed: "ann box"})
	bob, _ := NewKeyPair(&detRand{seed: "bob box"})
	key, _ := NewGroupKey(nil)
	shared := SharedKey(&ann.Private, bob.Public)
	back := SharedKey(&bob.Private, ann.Public)
	// For bob's account keys (device 0, the form before devices) and for
	// his device 7.
	for _, dev := range []uint64{0, 7} {
		w, err := WrapGroupKey(key, []byte("team"), 3, []byte("bob"), dev, shared, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnwrapGroupKey(w, []byte("team"), 3, []byte("bob"), dev, back)
		if err != nil || *got != *key {
			t.Fatalf("unwrap: %v", err)
		}
		// Replayed into another epoch, group, member or device, it does
		// not open.
		for _, c := range []struct {
			g string
			e uint32
			m string
			d uint64
		}{{"team", 4, "bob", dev}, {"other", 3, "bob", dev}, {"team", 3, "eve", dev}, {"team", 3, "bob", dev ^ 9}} {
			if _, err := UnwrapGroupKey(w, []byte(c.g), c.e, []byte(c.m), c.d, back); err == nil {
				t.Fatalf("wrap for device %d opened as %+v", dev, c)
			}
		}
	}
	sealed, _ := SealGroup([]byte("hello group"), key, nil)
	if p, err := OpenGroup(sealed, key); err != nil || string(p) != "hello group" {
		t.Fatalf("open: %q %v", p, err)
	}
	other, _ := NewGroupKey(nil)
	if _, err := OpenGroup(sealed, other); err == nil {
		t.Fatal("opened with another epoch's key")
	}
}

func FuzzStatement(f *testing.F) {
	s := newSigners("ann", "bob")
	st := s.stmt(nil, OpCreate, "ann", "ann")
	r, _ := (*Roster)(nil).Apply(st, s.pub)
	kc := s.stmt(r, OpKeyChanged, "ann", "ann")
	kc.OldKey = s.pub("bob")
	kc.Sign(s.keys["ann"])
	f.Add(st.Append(nil))
	f.Add(kc.Append(nil))
	writeCorpus(f, "FuzzStatement", [][]byte{st.Append(nil), kc.Append(nil)})
	f.Fuzz(func(t *testing.T, in []byte) {
		var st Statement
		if st.Parse(in) != nil {
			return
		}
		if !bytes.Equal(st.Append(nil), in) {
			t.Fatal("round trip changed the statement")
		}
		checkPrefixes(t, in, func(b []byte) error { var s Statement; return s.Parse(b) })
		// Applying it never panics, whatever it says.
		(*Roster)(nil).Apply(&st, s.pub)
	})
}

// TestKeyChangedChain: ann makes team and adds bob; she loses her devices
// and starts again with a new key, and says so in team. The whole chain
// checks against her new key: what she signed before with the key her
// key change names. Nothing signed by the old key after her key change
// checks, nor a key change by somebody else for her; a key change naming
// a key that signed nothing leaves the statements before checked against
// the signer's key.
func TestKeyChangedChain(t *testing.T) {
	s := newSigners("ann", "bob", "cat", "newann")
	var chain []*Statement
	var r *Roster
	add := func(st *Statement) {
		t.Helper()
		next, err := r.Apply(st, func(u string) ed25519.PublicKey {
			if u == "ann" && len(chain) >= 2 {
				return s.pub("newann")
			}
			return s.pub(u)
		})
		if err != nil {
			t.Fatal(err)
		}
		chain, r = append(chain, st), next
	}
	add(s.stmt(nil, OpCreate, "ann", "ann"))
	add(s.stmt(r, OpAdd, "bob", "ann"))
	kc := s.stmt(r, OpKeyChanged, "ann", "ann")
	kc.OldKey = s.pub("ann")
	kc.Sign(s.keys["newann"])
	var back Statement
	if err := back.Parse(kc.Append(nil)); err != nil || !bytes.Equal(back.OldKey, kc.OldKey) || back.Op != OpKeyChanged {
		t.Fatalf("the key change back: %+v %v", back, err)
	}
	add(kc)
	after := &Statement{Group: []byte("team"), Seq: r.Seq + 1, Prev: r.Last, Op: OpAdd, Target: []byte("cat"), Signer: []byte("ann")}
	after.Sign(s.keys["newann"])
	add(after)

	annNow := func(u string) ed25519.PublicKey {
		if u == "ann" {
			return s.pub("newann")
		}
		return s.pub(u)
	}
	got, err := ReplayRoster(chain, annNow)
	if err != nil || len(got.Members) != 3 {
		t.Fatalf("the chain with ann's new key: %+v %v", got, err)
	}
	// Without the key change, her statements before do not check.
	if _, err := ReplayRoster(chain[:2], annNow); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("before the key change, with her new key: %v", err)
	}
	// The old key signing after the key change: refused.
	forged := &Statement{Group: []byte("team"), Seq: r.Seq + 1, Prev: r.Last, Op: OpAdd, Target: []byte("dan"), Signer: []byte("ann")}
	forged.Sign(s.keys["ann"])
	if _, err := r.ApplyChain([]*Statement{forged}, annNow); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("the old key after the change: %v", err)
	}
	// bob cannot say ann's key changed.
	other := &Statement{Group: []byte("team"), Seq: r.Seq + 1, Prev: r.Last, Op: OpKeyChanged, Target: []byte("ann"), Signer: []byte("bob"), OldKey: s.pub("cat")}
	other.Sign(s.keys["bob"])
	if _, err := r.ApplyChain([]*Statement{other}, annNow); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("bob's key change for ann: %v", err)
	}
	// bob, whose key never changed, says it did, naming cat's: his
	// statements before (none here but the chain's) still check.
	bogus := &Statement{Group: []byte("team"), Seq: r.Seq + 1, Prev: r.Last, Op: OpKeyChanged, Target: []byte("bob"), Signer: []byte("bob"), OldKey: s.pub("cat")}
	bogus.Sign(s.keys["bob"])
	if _, err := ReplayRoster(append(append([]*Statement(nil), chain...), bogus), annNow); err != nil {
		t.Fatalf("a key change naming a key that signed nothing: %v", err)
	}
	// A version 2 statement is a key change, and a key change version 2.
	b := after.Append(nil)
	b[0] = StatementVersionKeyChange
	if err := back.Parse(b); !errors.Is(err, ErrBadStatement) {
		t.Fatalf("a version 2 add: %v", err)
	}
}

// An epoch wrapped for every device of a full group fits its parts: the
// parts cover MaxGroupDevices keys, and a part of MaxWrapsPerPart keys of
// the longest names and wraps (with the longest statements) fits one
// frame. Device 0 keys are refused in the per-device form.
func TestGroupChangePerDeviceLimits(t *testing.T) {
	if MaxEpochPartsV3*MaxWrapsPerPart < MaxGroupDevices {
		t.Fatalf("%d parts of %d keys do not cover %d member devices", MaxEpochPartsV3, MaxWrapsPerPart, MaxGroupDevices)
	}
	name := bytes.Repeat([]byte{'a'}, MaxUsernameLen)
	key, _ := NewGroupKey(nil)
	var shared [32]byte
	w, err := WrapGroupKey(key, name, 1<<31, name, 1<<63, &shared, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := GroupChange{PerDevice: true, Group: name, Statement: make([]byte, 250), EpochStmt: make([]byte, 260), Epoch: 1 << 31, Part: MaxEpochPartsV3, Parts: MaxEpochPartsV3}
	for i := 0; i < MaxWrapsPerPart; i++ {
		m.Keys = append(m.Keys, WrappedFor{Member: name, Device: uint64(i + 1), Wrapped: w})
	}
	b := m.Append(nil, 1)
	if len(b) > MaxPlaintextLen {
		t.Fatalf("a full part is %d bytes, more than a frame's %d", len(b), MaxPlaintextLen)
	}
	var back GroupChange
	if err := back.ParseAs(TGroupChangeV3, b[MsgHeaderLen:]); err != nil || len(back.Keys) != MaxWrapsPerPart {
		t.Fatalf("a full part does not parse: %v", err)
	}
	m.Keys = append(m.Keys, m.Keys[0])
	if err := back.ParseAs(TGroupChangeV3, m.Append(nil, 1)[MsgHeaderLen:]); err == nil {
		t.Fatal("a part with one key too many parsed")
	}
	m.Keys = m.Keys[:1]
	m.Keys[0].Device = 0
	if err := back.ParseAs(TGroupChangeV3, m.Append(nil, 1)[MsgHeaderLen:]); err == nil {
		t.Fatal("a key for device 0 parsed in the per-device form")
	}
}
