package client_test

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
	"securefastchat/store"

	bolt "go.etcd.io/bbolt"
)

// eventLog collects a client's events.
type eventLog struct {
	mu  sync.Mutex
	evs []client.Event
}

func (e *eventLog) add(ev client.Event) { e.mu.Lock(); e.evs = append(e.evs, ev); e.mu.Unlock() }

// badKeyBy waits for an EventGroupBadKey naming maker.
func (e *eventLog) badKeyBy(t *testing.T, maker string, epoch uint32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		e.mu.Lock()
		for _, ev := range e.evs {
			if ev.Kind == client.EventGroupBadKey && ev.User == maker && ev.Epoch == epoch {
				e.mu.Unlock()
				return
			}
		}
		e.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no member was told that %s made a bad key (epoch %d)", maker, epoch)
}

// evilRekey is a plain member making a new epoch as it likes: a signed
// epoch statement committing to commitTo, and for each member the key
// wrapFor returns (nil: junk that does not open).
func evilRekey(t *testing.T, m *client.Client, group string, commitTo *[proto.GroupKeyLen]byte,
	wrapFor func(member string) *[proto.GroupKeyLen]byte) uint32 {
	t.Helper()
	ctx := ctxT(t)
	chain, err := m.GroupChain(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	members, err := m.GroupMembers(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	_, current, err := m.GroupEpochs(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	last := chain[len(chain)-1]
	epoch := current + 1
	// Made by m's device (its first), wrapped for every member's devices.
	self := m.Identity().PublicKeys(m.User())
	es := proto.EpochStatement{Group: []byte(group), Epoch: epoch, RosterSeq: last.Seq, Head: last.Hash(),
		Commit: proto.KeyCommitment(commitTo, []byte(group), epoch), Maker: []byte(m.User()), Device: proto.KeyRecordID(&self)}
	es.Sign(m.Identity().Sign)
	var wraps []proto.WrappedFor
	for _, mb := range members {
		list, err := m.Devices(ctx, mb.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range list.Devices {
			var w []byte
			if k := wrapFor(mb.Name); k != nil {
				shared := proto.SharedKey(&m.Identity().Box.Private, d.BoxKey)
				if w, err = proto.WrapGroupKey(k, []byte(group), epoch, []byte(mb.Name), d.ID, shared, nil); err != nil {
					t.Fatal(err)
				}
			} else {
				w = make([]byte, 120) // junk the server cannot tell from a wrapped key
			}
			wraps = append(wraps, proto.WrappedFor{Member: []byte(mb.Name), Device: d.ID, Wrapped: w})
		}
	}
	msg := proto.GroupChange{PerDevice: true, Group: []byte(group), EpochStmt: es.Append(nil), Epoch: epoch, RosterSeq: last.Seq, Part: 1, Parts: 1, Keys: wraps}
	typ, _, err := m.Conn().Request(ctx, func(b []byte, id uint32) []byte { return msg.Append(b, id) })
	if err != nil || typ != proto.TOK {
		t.Fatalf("the bad rekey was refused by the server (%#x, %v): it cannot tell, so it must take it", typ, err)
	}
	return epoch
}

func newKey(t *testing.T) *[proto.GroupKeyLen]byte {
	k, err := proto.NewGroupKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A plain member makes bad epochs: copies that do not open for the others,
// a key split between members (each copy valid, but different), and a
// commitment nobody's copy matches. Each time, the members find it bad,
// report it and name its maker; the first honest send after it is
// readable by every honest member; and an admin can still remove the
// offender.
func TestBadEpochs(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Limits.SignupBurst = 100 })
	evs := map[string]*eventLog{}
	users := map[string]*client.Client{}
	for _, name := range []string{"ann", "bob", "carol", "mallory"} {
		e := &eventLog{}
		cfg := testserver.ClientConfig(t, s)
		c, err := client.Signup(ctxT(t), cfg, name, pw)
		if err != nil {
			t.Fatal(err)
		}
		testserver.OnEvent(c, func(ev client.Event) {
			if ev.Kind == client.EventRejected {
				t.Logf("%s rejected a message from %s: %v", name, ev.User, ev.Err)
			}
			e.add(ev)
		})
		t.Cleanup(func() { c.Close() })
		evs[name], users[name] = e, c
	}
	ann, bob, carol, mallory := users["ann"], users["bob"], users["carol"], users["mallory"]
	if err := ann.CreateGroup(ctxT(t), "team"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob", "carol", "mallory"} {
		if err := ann.AddMember(ctxT(t), "team", u); err != nil {
			t.Fatal(err)
		}
		testserver.Join(t, users[u], "team")
	}
	honest := func(text string) {
		t.Helper()
		if _, err := ann.SendGroupText(ctxT(t), "team", text); err != nil {
			t.Fatalf("honest send %q: %v", text, err)
		}
		for _, c := range []*client.Client{bob, carol} {
			for {
				m := recvOne(t, c)
				if m.Group == "team" && m.Text == text {
					break
				}
			}
		}
	}
	honest("before anything")

	cases := []struct {
		name     string
		commitTo func(k1, k2 *[proto.GroupKeyLen]byte) *[proto.GroupKeyLen]byte
		wrapFor  func(k1, k2 *[proto.GroupKeyLen]byte) func(string) *[proto.GroupKeyLen]byte
	}{
		{"junk copies", func(k1, _ *[32]byte) *[32]byte { return k1 }, func(k1, _ *[32]byte) func(string) *[32]byte {
			return func(m string) *[32]byte {
				if m == "mallory" {
					return k1
				}
				return nil
			}
		}},
		{"split key", func(k1, _ *[32]byte) *[32]byte { return k1 }, func(k1, k2 *[32]byte) func(string) *[32]byte {
			return func(m string) *[32]byte {
				if m == "carol" {
					return k2
				}
				return k1
			}
		}},
		{"commitment to no copy", func(_, k2 *[32]byte) *[32]byte { return k2 }, func(k1, _ *[32]byte) func(string) *[32]byte {
			return func(string) *[32]byte { return k1 }
		}},
	}
	for i, tc := range cases {
		k1, k2 := newKey(t), newKey(t)
		epoch := evilRekey(t, mallory, "team", tc.commitTo(k1, k2), tc.wrapFor(k1, k2))
		for _, who := range []string{"ann", "bob", "carol"} {
			evs[who].badKeyBy(t, "mallory", epoch) // named to every honest member
		}
		// (A member reports without waiting for the answer: the report
		// may reach the server just after the member has said so.)
		g, err := s.Store.Group("team")
		for end := time.Now().Add(5 * time.Second); err == nil && !g.EpochBad && time.Now().Before(end); g, err = s.Store.Group("team") {
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil || g.Epoch != epoch || !g.EpochBad {
			t.Fatalf("%s: the server does not refuse sends under the bad epoch: %+v %v", tc.name, g, err)
		}
		honest("after bad rekey " + tc.name + " " + string(rune('0'+i)))
	}
	bad, err := bob.BadEpochs(ctxT(t), "team")
	if err != nil || len(bad) != 3 {
		t.Fatalf("bob knows %d bad epochs (%v)", len(bad), err)
	}
	for _, b := range bad {
		if b.Maker != "mallory" {
			t.Fatalf("bad epoch %d blamed on %s", b.Epoch, b.Maker)
		}
	}
	if err := ann.RemoveMember(ctxT(t), "team", "mallory"); err != nil {
		t.Fatalf("removing the offender: %v", err)
	}
	honest("without mallory")
	if ms, _ := ann.GroupMembers(ctxT(t), "team"); len(ms) != 3 {
		t.Fatalf("members after the removal: %v", ms)
	}
}

// A group message carries the roster position it was signed under: a
// message from a member in flight while she is removed still arrives
// (marked as sent before the change); once the grace period has passed,
// a message from her signed under the old roster and slipped in by the
// server is rejected.
func TestGroupMessageFreshness(t *testing.T) {
	s := testserver.Start(t, nil)
	ann := testserver.Signup(t, s, "ann")
	eve := testserver.Signup(t, s, "eve")
	rejected := make(chan error, 8)
	bcfg := testserver.ClientConfig(t, s)
	bcfg.ChangeGrace = 300 * time.Millisecond
	bob, err := client.Signup(ctxT(t), bcfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	testserver.OnEvent(bob, func(ev client.Event) {
		if ev.Kind == client.EventRejected {
			rejected <- ev.Err
		}
	})
	if err := ann.CreateGroup(ctxT(t), "team"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob", "eve"} {
		if err := ann.AddMember(ctxT(t), "team", u); err != nil {
			t.Fatal(err)
		}
	}
	testserver.Join(t, bob, "team")
	testserver.Join(t, eve, "team")
	// In flight: eve's message waits in bob's queue while ann removes her.
	bob.Close()
	if _, err := eve.SendGroupText(ctxT(t), "team", "sent while a member"); err != nil {
		t.Fatal(err)
	}
	// What eve could forge later: a message under the same epoch and roster.
	forged := eveMessage(t, s, eve, "team", "forged after removal")
	if err := ann.RemoveMember(ctxT(t), "team", "eve"); err != nil {
		t.Fatal(err)
	}
	bob, err = client.Open(ctxT(t), bcfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	testserver.OnEvent(bob, func(ev client.Event) {
		if ev.Kind == client.EventRejected {
			rejected <- ev.Err
		}
	})
	defer bob.Close()
	m := recvOne(t, bob)
	if m.Text != "sent while a member" || !m.BeforeChange {
		t.Fatalf("the message in flight: %q, before the change %v", m.Text, m.BeforeChange)
	}
	// After the grace period, the server slips in eve's forged message.
	time.Sleep(400 * time.Millisecond)
	forged.ServerID = uint64(time.Now().UnixNano()) + 1e9 // after everything the server numbered
	if errs, err := s.Store.Enqueue([]*store.Queued{forged}, store.QueueLimits{}); err != nil || errs[0] != nil {
		t.Fatalf("injecting: %v %v", err, errs)
	}
	if err := bob.Reconnect(ctxT(t)); err != nil { // keeps bob's verified view, and fetches the queue
		t.Fatal(err)
	}
	for done := false; !done; {
		select {
		case err := <-rejected:
			if !errors.Is(err, client.ErrRejected) {
				continue // not about a message (the reconnect cut a fetch short)
			}
			if !strings.Contains(err.Error(), "no longer a member") {
				t.Fatalf("rejection: %v", err)
			}
			done = true
		case m := <-testserver.Messages(bob):
			t.Fatalf("bob accepted a message from a removed member: %q", m.Text)
		case <-time.After(10 * time.Second):
			t.Fatal("the injected message was neither accepted nor rejected")
		}
	}
}

// eveMessage seals and signs a group message as eve's client would, under
// the group's current epoch and roster, and returns it as the server
// would queue it for bob.
func eveMessage(t *testing.T, s *server.Server, eve *client.Client, group, text string) *store.Queued {
	t.Helper()
	ctx := context.Background()
	chain, err := eve.GroupChain(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	_, epoch, err := eve.GroupEpochs(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	key, err := eve.GroupKey(ctx, group, epoch)
	if err != nil {
		t.Fatal(err)
	}
	last := chain[len(chain)-1]
	id := client.NewMsgID()
	in := proto.Inner{Kind: proto.KindText, From: []byte("eve"), To: []byte(group), MsgID: id[:], SentAt: time.Now().UnixNano(), Body: []byte(text),
		Roster: &proto.RosterPos{Seq: last.Seq, Head: last.Hash()}}
	plain, err := in.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := proto.SealGroup(plain, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	sig := ed25519.Sign(eve.Identity().Sign, proto.GroupMsgSigned([]byte(group), epoch, id[:], sealed))
	bob, err := s.Store.GetUser("bob")
	if err != nil {
		t.Fatal(err)
	}
	return &store.Queued{To: "bob", Device: store.FirstDevice(bob), From: "eve", MsgID: id, Time: time.Now().UnixMilli(), Stored: time.Now(), Body: sealed, Group: group, Epoch: epoch, Sig: sig}
}

// An epoch made before epoch statements (no commitment) still opens the
// messages sent under it, but nothing new is sent under it: the first
// send after the upgrade makes a fresh, committed epoch.
func TestUncommittedEpochReplaced(t *testing.T) {
	dir, addr := t.TempDir(), freeLoopback(t)
	start := func() *server.Server {
		cfg := testserver.Config(t, dir)
		cfg.Listen = addr
		s, err := server.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := start()
	acfg, bcfg := testserver.ClientConfig(t, s), testserver.ClientConfig(t, s)
	ann, err := client.Signup(ctxT(t), acfg, "ann", pw)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := client.Signup(ctxT(t), bcfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	if err := ann.CreateGroup(ctxT(t), "team"); err != nil {
		t.Fatal(err)
	}
	if err := ann.AddMember(ctxT(t), "team", "bob"); err != nil {
		t.Fatal(err)
	}
	testserver.Join(t, bob, "team")
	ann.Close()
	bob.Close()
	testserver.Stop(t, s)

	// As a store from before statements holds it: the epoch header ends
	// after its wrapper's name.
	db, err := bolt.Open(filepath.Join(dir, server.DBFileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		kb := tx.Bucket([]byte("gkeys")).Bucket([]byte("team"))
		hk := append(binary.BigEndian.AppendUint32(nil, 2), 0)
		v := kb.Get(hk)
		return kb.Put(hk, append([]byte(nil), v[:13+int(v[12])]...))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s = start()
	defer testserver.Stop(t, s)
	ann, err = client.Open(ctxT(t), acfg, "ann", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer ann.Close()
	bob, err = client.Open(ctxT(t), bcfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if _, err := ann.SendGroupText(ctxT(t), "team", "after the upgrade"); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, bob); m.Text != "after the upgrade" || m.Epoch != 3 {
		t.Fatalf("bob got %q under epoch %d, want a fresh epoch 3", m.Text, m.Epoch)
	}
}

// What one account can spend on groups is bounded: creation (a burst, and
// a cap on the groups one is an admin of), roster changes and rekeys per
// user and per group, and a multi-part change, which must end in time and
// whose every part is checked as it comes. Each refusal names its limit.
func TestGroupLimits(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) {
		c.Groups.CreateBurst = 3
		c.Groups.CreateEvery = 200 * time.Millisecond
		c.Groups.MaxOwned = 4
		c.Groups.ChangeBurst = 5
		c.Shard.GroupUploadTimeout = 300 * time.Millisecond
	})
	mal := testserver.Signup(t, s, "mal")
	testserver.Signup(t, s, "bob")
	for i := 0; i < 3; i++ {
		if err := mal.CreateGroup(ctxT(t), "g"+string(rune('a'+i))); err != nil {
			t.Fatal(err)
		}
	}
	err := mal.CreateGroup(ctxT(t), "gd")
	var re *proto.RemoteError
	if !errors.As(err, &re) || re.Code != proto.CodeRateLimited || !strings.Contains(re.Message, "too many groups created") || !strings.Contains(re.Message, "retry in") {
		t.Fatalf("a fourth create at once: %v", err)
	}
	// Rekeys of one group: 5 at once (the creation above spent the
	// creation limit, not this one).
	var rekeys int
	for rekeys = 0; rekeys < 10; rekeys++ {
		if err = mal.Rekey(ctxT(t), "ga"); err != nil {
			break
		}
	}
	if rekeys != 5 || !errors.As(err, &re) || re.Code != proto.CodeRateLimited || !strings.Contains(re.Message, "too many group changes") {
		t.Fatalf("%d rekeys, then %v", rekeys, err)
	}

	// A multi-part change: a part with a key for someone outside the roster
	// is refused as it comes; one that stalls is dropped.
	owner := testserver.Signup(t, s, "owner")
	if err := owner.CreateGroup(ctxT(t), "big"); err != nil {
		t.Fatal(err)
	}
	if err := owner.AddMember(ctxT(t), "big", "bob"); err != nil {
		t.Fatal(err)
	}
	k := newKey(t)
	chain, _ := owner.GroupChain(ctxT(t), "big")
	last := chain[len(chain)-1]
	_, cur, _ := owner.GroupEpochs(ctxT(t), "big")
	es := proto.EpochStatement{Group: []byte("big"), Epoch: cur + 1, RosterSeq: last.Seq, Head: last.Hash(), Commit: proto.KeyCommitment(k, []byte("big"), cur+1), Maker: []byte("owner")}
	es.Sign(owner.Identity().Sign)
	part := func(n uint16, member string) error {
		m := proto.GroupChange{Group: []byte("big"), EpochStmt: es.Append(nil), Epoch: cur + 1, RosterSeq: last.Seq, Part: n, Parts: 3,
			Keys: []proto.WrappedFor{{Member: []byte(member), Wrapped: make([]byte, 100)}}}
		typ, _, err := owner.Conn().Request(ctxT(t), func(b []byte, id uint32) []byte { return m.Append(b, id) })
		if err == nil && typ != proto.TOK {
			return errors.New("not OK")
		}
		return err
	}
	if err := part(1, "owner"); err != nil {
		t.Fatal(err)
	}
	if err := part(2, "mal"); !errors.Is(err, proto.CodeBadRequest) || !strings.Contains(err.Error(), "not in the roster") {
		t.Fatalf("a key for a non-member: %v", err)
	}
	if err := part(1, "owner"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	if err := part(2, "bob"); !errors.Is(err, proto.CodeBadRequest) || !strings.Contains(err.Error(), "took longer than") {
		t.Fatalf("a change that stalled: %v", err)
	}

	// The cap on groups one is an admin of, past the creation rate.
	capped := testserver.Signup(t, s, "capped")
	for i := 0; i < 4; i++ {
		time.Sleep(250 * time.Millisecond) // a creation token back
		if err := capped.CreateGroup(ctxT(t), "c"+string(rune('a'+i))); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(250 * time.Millisecond)
	err = capped.CreateGroup(ctxT(t), "ce")
	if !errors.As(err, &re) || re.Code != proto.CodeGroupLimit || !strings.Contains(re.Message, "admin of 4 groups") {
		t.Fatalf("a fifth group owned: %v", err)
	}
}

// A member that starts fresh fetches the current epoch's key only, not the
// group's whole history of epochs; an older epoch is fetched when a
// message under it arrives, one reply's worth (at most 150 epochs).
func TestKeyFetchBounded(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Groups.ChangeBurst = 1000 })
	ann := testserver.Signup(t, s, "ann")
	bcfg := testserver.ClientConfig(t, s)
	bob, err := client.Signup(ctxT(t), bcfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	if err := ann.CreateGroup(ctxT(t), "team"); err != nil {
		t.Fatal(err)
	}
	if err := ann.AddMember(ctxT(t), "team", "bob"); err != nil {
		t.Fatal(err)
	}
	testserver.Join(t, bob, "team")
	bob.Close()
	if _, err := ann.SendGroupText(ctxT(t), "team", "under an old epoch"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		if err := ann.Rekey(ctxT(t), "team"); err != nil {
			t.Fatal(err)
		}
	}
	bob, err = client.Open(ctxT(t), bcfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if m := recvOne(t, bob); m.Text != "under an old epoch" {
		t.Fatalf("bob got %q", m.Text)
	}
	held, current, err := bob.GroupEpochs(ctxT(t), "team")
	if err != nil || current != 302 || len(held) > 151 {
		t.Fatalf("bob holds %d epochs' keys (current %d, %v): want the current one and one reply's worth from the one his message needed", len(held), current, err)
	}
}
