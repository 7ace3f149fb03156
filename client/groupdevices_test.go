package client_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

// epochCopies returns, for the current epoch of group, the devices of
// user the server holds a copy of its key for (0: a copy for the account
// keys, from before devices), and the epoch.
func epochCopies(t *testing.T, s *server.Server, group, user string, devices ...uint64) (map[uint64]bool, uint32) {
	t.Helper()
	g, err := s.Store.Group(group)
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint64]bool{}
	for _, d := range devices {
		ks, err := s.Store.MemberKeys(group, user, d, false, g.Epoch, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(ks) == 1 && ks[0].Epoch == g.Epoch {
			got[d] = true
		}
	}
	return got, g.Epoch
}

// aliceTeam signs alice and member up, each in a home of its own, and
// makes alice's group team with member in it (joined). It returns alice's
// client, member's, and member's configuration.
func aliceTeam(t *testing.T, s *server.Server, member string) (alice, m *client.Client, mCfg client.Config) {
	t.Helper()
	alice = signup(t, testserver.ClientConfig(t, s), "alice")
	mCfg = testserver.ClientConfig(t, s)
	m = signup(t, mCfg, member)
	testserver.Acquaint(t, alice, m)
	if err := alice.CreateGroup(ctxT(t), "team"); err != nil {
		t.Fatal(err)
	}
	if err := alice.AddMember(ctxT(t), "team", member); err != nil {
		t.Fatal(err)
	}
	testserver.Join(t, m, "team")
	return alice, m, mCfg
}

// TestGroupsPerDevice: a group's key reaches every device of every
// member. alice's team was made before her laptop; once the laptop is
// linked, bob's messages in it reach both her devices and what the laptop
// writes reaches bob. bob adds a device by himself (his client makes no
// new key): the server takes no message under the old key, so alice's
// next message goes under a new one wrapped for bob's new device too.
// Removing the laptop rekeys alice's groups without it at once: the
// laptop's copy of the key and its inbox are gone, and its session ends.
func TestGroupsPerDevice(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, bob, bobCfg := aliceTeam(t, s, "bob")
	ctx := ctxT(t)
	if _, err := alice.SendGroupText(ctx, "team", "before the laptop"); err != nil {
		t.Fatal(err)
	}
	recvGroup(t, bob)
	_, before := epochCopies(t, s, "team", "alice")

	laptopCfg := testserver.ClientConfig(t, s)
	laptop := addLaptop(t, alice, laptopCfg)
	aliceFirst := alice.Identity().KeyID("alice")
	laptopID := laptop.Identity().KeyID("alice")
	copies, epoch := epochCopies(t, s, "team", "alice", aliceFirst, laptopID)
	if epoch <= before || !copies[aliceFirst] || !copies[laptopID] {
		t.Fatalf("after the link: epoch %d (before %d), alice's copies %v", epoch, before, copies)
	}
	if _, err := bob.SendGroupText(ctx, "team", "to both of alice's devices"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{alice, laptop} {
		if m := recvGroup(t, c); m.Text != "to both of alice's devices" || m.From != "bob" {
			t.Fatalf("one of alice's devices got %+v", m)
		}
	}
	if _, err := laptop.SendGroupText(ctx, "team", "from alice's laptop"); err != nil {
		t.Fatal(err)
	}
	if m := recvGroup(t, bob); m.Text != "from alice's laptop" || m.From != "alice" {
		t.Fatalf("bob got %+v", m)
	}
	if m := recvGroup(t, alice); m.Text != "from alice's laptop" || !m.Mine {
		t.Fatalf("alice's first device shows %+v", m)
	}

	// bob's phone, added by a statement alone: no client of bob's made a
	// new key for it.
	phone, _ := testserver.AddDevice(t, bob, "phone", nil)
	waitFor(t, func() bool { g, _ := s.Store.Group("team"); return g.DevicesStale() })
	if _, err := alice.SendGroupText(ctx, "team", "after bob's phone"); err != nil {
		t.Fatal(err)
	}
	bobFirst := bob.Identity().KeyID("bob")
	copies, after := epochCopies(t, s, "team", "bob", bobFirst, phone.DeviceID)
	if after <= epoch || !copies[bobFirst] || !copies[phone.DeviceID] {
		t.Fatalf("alice's message after bob's phone: epoch %d (before %d), bob's copies %v", after, epoch, copies)
	}
	if m := recvGroup(t, bob); m.Text != "after bob's phone" || m.Epoch != after {
		t.Fatalf("bob got %+v, want it under epoch %d", m, after)
	}
	recvGroup(t, laptop)
	if n := inboxLen(t, s, "bob", phone.DeviceID); n == 0 {
		t.Fatal("nothing waits for bob's phone")
	}

	// While bob is away, the laptop makes a key and writes under it; then
	// alice removes the laptop.
	bob.Close()
	if err := laptop.Rekey(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	if _, err := laptop.SendGroupText(ctx, "team", "while bob is away"); err != nil {
		t.Fatal(err)
	}
	recvGroup(t, alice)
	if _, err := alice.RemoveDevice(ctx, "laptop"); err != nil {
		t.Fatal(err)
	}
	copies, removed := epochCopies(t, s, "team", "alice", aliceFirst, laptopID)
	if removed <= after || !copies[aliceFirst] || copies[laptopID] {
		t.Fatalf("after the laptop was removed: epoch %d (before %d), alice's copies %v", removed, after, copies)
	}
	select {
	case <-laptop.Conn().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the removed laptop's session goes on")
	}
	// What the laptop wrote can no longer be checked (its key is gone from
	// alice's list): bob's client rejects it, saying why, and goes on.
	bob = login(t, bobCfg, "bob")
	rejected := make(chan client.Event, 4)
	testserver.OnEvent(bob, func(ev client.Event) {
		if ev.Kind == client.EventRejected {
			rejected <- ev
		}
	})
	select {
	case ev := <-rejected:
		if ev.Err == nil || !strings.Contains(ev.Err.Error(), "removed") {
			t.Fatalf("bob was told %v", ev.Err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bob's client did not reject what the removed laptop wrote")
	}
	if _, err := bob.SendGroupText(ctx, "team", "after the laptop"); err != nil {
		t.Fatal(err)
	}
	if m := recvGroup(t, alice); m.Text != "after the laptop" || m.Epoch != removed {
		t.Fatalf("alice got %+v", m)
	}
	if n := inboxLen(t, s, "alice", laptopID); n != 0 {
		t.Fatalf("the removed laptop's inbox holds %d", n)
	}
}

// TestGroupEpochAttacks: a member cannot make an epoch that leaves out a
// device of another member, one wrapped for a device that is not on a
// list (one, or hundreds, which the refusal names a bounded few of), or
// one in the form before devices once a member has several; nor sign an
// epoch or a report as a device other than its own. Each time the server
// refuses it and keeps the epoch it had.
func TestGroupEpochAttacks(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, bob, _ := aliceTeam(t, s, "bob")
	ctx := ctxT(t)
	phone, _ := testserver.AddDevice(t, bob, "phone", nil)
	if err := alice.Rekey(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	g, _ := s.Store.Group("team")
	kept := g.Epoch

	// alice, as an attacker, speaking the protocol herself.
	chain, err := alice.GroupChain(ctx, "team")
	if err != nil {
		t.Fatal(err)
	}
	last := chain[len(chain)-1]
	self := alice.Identity().PublicKeys("alice")
	aliceDev := proto.KeyRecordID(&self)
	key, _ := proto.NewGroupKey(nil)
	statement := func(device uint64) []byte {
		es := proto.EpochStatement{Group: []byte("team"), Epoch: kept + 1, RosterSeq: last.Seq, Head: last.Hash(),
			Commit: proto.KeyCommitment(key, []byte("team"), kept+1), Maker: []byte("alice"), Device: device}
		es.Sign(alice.Identity().Sign)
		return es.Append(nil)
	}
	wrap := func(member string, dev uint64) proto.WrappedFor {
		return proto.WrappedFor{Member: []byte(member), Device: dev, Wrapped: make([]byte, 120)}
	}
	bobFirst := bob.Identity().KeyID("bob")
	upload := func(m proto.GroupChange) (proto.MsgType, []byte, error) {
		m.Group, m.Epoch, m.RosterSeq, m.Part, m.Parts = []byte("team"), kept+1, last.Seq, 1, 1
		return alice.Conn().Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
	}
	mismatch := func(what string, m proto.GroupChange, missing, extra []uint64) {
		t.Helper()
		typ, body, err := upload(m)
		if err != nil || typ != proto.TDevicesMismatch {
			t.Fatalf("%s: %#x %v, want a devices mismatch", what, typ, err)
		}
		var mm proto.DevicesMismatch
		if err := mm.Parse(body); err != nil || len(mm.Users) != 1 || string(mm.Users[0].User) != "bob" ||
			!equalIDs(mm.Users[0].Missing, missing) || !equalIDs(mm.Users[0].Extra, extra) {
			t.Fatalf("%s: the mismatch %+v %v", what, mm, err)
		}
	}
	mismatch("leaving out bob's phone", proto.GroupChange{PerDevice: true, EpochStmt: statement(aliceDev),
		Keys: []proto.WrappedFor{wrap("alice", aliceDev), wrap("bob", bobFirst)}}, []uint64{phone.DeviceID}, nil)
	mismatch("a device that is not bob's", proto.GroupChange{PerDevice: true, EpochStmt: statement(aliceDev),
		Keys: []proto.WrappedFor{wrap("alice", aliceDev), wrap("bob", bobFirst), wrap("bob", phone.DeviceID), wrap("bob", 12345)}}, nil, []uint64{12345})
	all := []proto.WrappedFor{wrap("alice", aliceDev), wrap("bob", bobFirst), wrap("bob", phone.DeviceID)}
	// Many made-up devices: the answer names a bounded few and parses.
	many := append([]proto.WrappedFor(nil), all...)
	var fake []uint64
	for i := uint64(1); i <= 200; i++ {
		many = append(many, wrap("bob", 1000+i))
		if i <= proto.MaxDevices {
			fake = append(fake, 1000+i)
		}
	}
	mismatch("200 devices that are not bob's", proto.GroupChange{PerDevice: true, EpochStmt: statement(aliceDev), Keys: many}, nil, fake)
	if _, _, err := upload(proto.GroupChange{EpochStmt: statement(0), Keys: []proto.WrappedFor{wrap("alice", 0), wrap("bob", 0)}}); !errors.Is(err, proto.CodeUnsupportedFeature) {
		t.Fatalf("the form before devices, with bob on two: %v", err)
	}
	if _, _, err := upload(proto.GroupChange{PerDevice: true, EpochStmt: statement(phone.DeviceID), Keys: all}); !errors.Is(err, proto.CodeBadRequest) {
		t.Fatalf("an epoch statement naming bob's phone as its maker's device: %v", err)
	}
	bad := proto.BadEpoch{Group: []byte("team"), Epoch: kept, Device: phone.DeviceID}
	bad.Sig = make([]byte, 64)
	if _, _, err := alice.Conn().Request(ctx, func(b []byte, id uint32) []byte { return bad.Append(b, id) }); !errors.Is(err, proto.CodeBadRequest) {
		t.Fatalf("a report as bob's phone: %v", err)
	}
	if g, _ := s.Store.Group("team"); g.Epoch != kept || g.EpochBad {
		t.Fatalf("after the refused changes the group is %+v, want epoch %d", g, kept)
	}
	// The honest form goes through.
	typ, _, err := upload(proto.GroupChange{PerDevice: true, EpochStmt: statement(aliceDev), Keys: all})
	if err != nil || typ != proto.TOK {
		t.Fatalf("the honest epoch: %#x %v", typ, err)
	}
}

func equalIDs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestGroupOlderClient: a version 4 session of a member (carol's) keeps
// working in a group while every member has one device (the forms before
// devices); once a group message from another device of a member waits
// for it, it is closed with CloseUpgrade and the message waits in its
// inbox for a client that can check it; and asking for the group's key,
// now wrapped per device, it is told to upgrade.
func TestGroupOlderClient(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, carol, carolCfg := aliceTeam(t, s, "carol")
	ctx := ctxT(t)
	carolFirst := carol.Identity().KeyID("carol")
	carol.Close()
	old, err := client.Dial(ctx, s.Addr(), client.DialOptions{MaxVersion: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	carolKey, err := client.LoginKey("carol", pw, carolCfg.KDF)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Login(ctx, "carol", carolKey); err != nil {
		t.Fatal(err)
	}
	// The key for carol's account keys, in the version 4 form.
	req := proto.GroupReq{Group: []byte("team")}
	typ, body, err := old.Request(ctx, func(b []byte, id uint32) []byte { return req.Append(b, proto.TGroupKeys, id) })
	var keys proto.GroupKeysReply
	if err != nil || typ != proto.TGroupKeysReplyV2 || keys.ParseAs(typ, body) != nil || len(keys.Keys) != 1 {
		t.Fatalf("carol's keys on a version 4 session: %#x %+v %v", typ, keys, err)
	}
	// (Sent in the background: the server answers alice once carol's
	// session acknowledges it.)
	sent := make(chan error, 1)
	go func() { _, err := alice.SendGroupText(ctx, "team", "from alice's first device"); sent <- err }()
	if d := delivery(t, old); d.Group == nil || d.Group.FromDevice != 0 {
		t.Fatalf("the version 4 session got %+v", d)
	} else if err := old.Ack(d.ServerID); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	laptop := addLaptop(t, alice, testserver.ClientConfig(t, s))
	if _, err := laptop.SendGroupText(ctx, "team", "from alice's laptop"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-old.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the version 4 session was not closed")
	}
	// Its group's key now reaches each device: a version 4 session asking
	// for it is told to upgrade, not handed nothing.
	again, err := client.Dial(ctx, s.Addr(), client.DialOptions{MaxVersion: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if _, err := again.LoginWith(ctx, "carol", carolKey, proto.LoginNoDeliveries); err != nil {
		t.Fatal(err)
	}
	if _, _, err := again.Request(ctx, func(b []byte, id uint32) []byte { return req.Append(b, proto.TGroupKeys, id) }); !errors.Is(err, proto.CodeUnsupportedFeature) || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("a version 4 session asking for the key wrapped per device: %v", err)
	}
	var ce *client.ClosedError
	if !errors.As(old.Err(), &ce) || ce.Reason != proto.CloseUpgrade {
		t.Fatalf("the version 4 session ended with %v, want Close upgrade", old.Err())
	}
	if n := inboxLen(t, s, "carol", carolFirst); n != 1 {
		t.Fatalf("carol's inbox holds %d, want the laptop's message", n)
	}
	carol = login(t, carolCfg, "carol")
	if m := recvGroup(t, carol); m.Text != "from alice's laptop" || m.From != "alice" {
		t.Fatalf("carol's upgraded client got %+v", m)
	}
}

// TestHoldNewDevices: with the hold on, alice trusts bob's devices as she
// first sees them; a device he adds after that gets nothing of hers (no
// direct message, no group message or key) until she approves it, across
// a restart of her client; approved, it gets what she sends. A laptop she
// links gets the hold and the approvals. With the hold off, a new device
// gets her messages at once.
func TestHoldNewDevices(t *testing.T) {
	s := testserver.Start(t, nil)
	aliceCfg := testserver.ClientConfig(t, s)
	alice := signup(t, aliceCfg, "alice")
	bob := testserver.Signup(t, s, "bob")
	testserver.Acquaint(t, alice, bob)
	ctx := ctxT(t)
	if err := alice.CreateGroup(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	if err := alice.AddMember(ctx, "team", "bob"); err != nil {
		t.Fatal(err)
	}
	testserver.Join(t, bob, "team")
	if err := alice.SetHoldNewDevices(true); err != nil || !alice.HoldNewDevices() {
		t.Fatalf("turning the hold on: %v", err)
	}
	if _, err := alice.SendText(ctx, "bob", "bob's devices as they are"); err != nil {
		t.Fatal(err)
	}
	recvOne(t, bob)

	phone, phoneKey := testserver.AddDevice(t, bob, "phone", nil)
	held := func(c *client.Client) {
		t.Helper()
		_, err := c.SendText(ctx, "bob", "held")
		var he *client.DevicesHeldError
		if !errors.As(err, &he) || !errors.Is(err, client.ErrDevicesHeld) || he.User != "bob" || len(he.Devices) != 1 || he.Devices[0].ID != phone.DeviceID {
			t.Fatalf("a message to bob with his phone held: %v", err)
		}
		if _, err := c.SendGroupText(ctx, "team", "held"); !errors.Is(err, client.ErrDevicesHeld) {
			t.Fatalf("a group message with bob's phone held: %v", err)
		}
		if ds, err := c.HeldDevices(ctx, "bob"); err != nil || len(ds) != 1 || ds[0].ID != phone.DeviceID {
			t.Fatalf("bob's held devices: %+v %v", ds, err)
		}
		if n := inboxLen(t, s, "bob", phone.DeviceID); n != 0 {
			t.Fatalf("bob's phone's inbox holds %d", n)
		}
	}
	held(alice)
	// Her typing reaches bob's first device, and nothing of it his held
	// phone, online.
	pc, err := deviceConn(t, s, "bob", phone, phoneKey)
	if err != nil {
		t.Fatal(err)
	}
	pushed := make(chan proto.MsgType, 16)
	pc.OnPush(func(t proto.MsgType, _ []byte) { pushed <- t })
	bobEv := make(events, 64)
	testserver.OnEvent(bob, bobEv.on)
	if err := alice.SendTyping(ctx, "bob", "", true); err != nil {
		t.Fatal(err)
	}
	bobEv.wait(t, "alice typing, on bob's first device", func(ev client.Event) bool {
		return ev.Kind == client.EventTyping && ev.User == "alice" && ev.Typing
	})
	time.Sleep(200 * time.Millisecond) // the phone's copy would have come with the other
	for len(pushed) > 0 {
		if typ := <-pushed; typ == proto.TSignalDevicesMsg || typ == proto.TSignalMsg {
			t.Fatalf("bob's held phone got alice's typing (%#x)", typ)
		}
	}
	pc.Close()
	alice.Close()
	alice = login(t, aliceCfg, "alice")
	held(alice)

	if _, err := alice.ApproveDevices(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendText(ctx, "bob", "approved"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendGroupText(ctx, "team", "approved, in team"); err != nil {
		t.Fatal(err)
	}
	if n := inboxLen(t, s, "bob", phone.DeviceID); n != 2 {
		t.Fatalf("bob's phone's inbox holds %d, want both messages", n)
	}

	// A new device of alice's gets the hold and the approvals through
	// the link: her laptop writes to bob's phone, and holds what comes
	// after, on its own.
	laptop := addLaptop(t, alice, testserver.ClientConfig(t, s))
	if !laptop.HoldNewDevices() {
		t.Fatal("the laptop does not hold new devices")
	}
	if _, err := laptop.SendText(ctx, "bob", "from the laptop, to bob's approved devices"); err != nil {
		t.Fatal(err)
	}

	if err := alice.SetHoldNewDevices(false); err != nil {
		t.Fatal(err)
	}
	tablet, _ := testserver.AddDevice(t, bob, "tablet", nil)
	if _, err := alice.SendText(ctx, "bob", "no hold"); err != nil {
		t.Fatal(err)
	}
	if n := inboxLen(t, s, "bob", tablet.DeviceID); n != 1 {
		t.Fatalf("bob's tablet's inbox holds %d", n)
	}
	var he *client.DevicesHeldError
	if _, err := laptop.SendText(ctx, "bob", "held on the laptop"); !errors.As(err, &he) || len(he.Devices) != 1 || he.Devices[0].ID != tablet.DeviceID {
		t.Fatalf("the laptop writing to bob after his tablet: %v", err)
	}
}

// TestTypingOnEveryDevice: typing reaches each device of its receiver,
// and a linked device's typing reaches its contact: bob's typing shows on
// alice's first device and on her laptop, and neither rejects it; the
// laptop's typing shows on bob's client, in a direct conversation and in
// a group.
func TestTypingOnEveryDevice(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, bob, _ := aliceTeam(t, s, "bob")
	laptop := addLaptop(t, alice, testserver.ClientConfig(t, s))
	ctx := ctxT(t)
	aliceEv, laptopEv, bobEv := make(events, 64), make(events, 64), make(events, 64)
	testserver.OnEvent(alice, aliceEv.on)
	testserver.OnEvent(laptop, laptopEv.on)
	testserver.OnEvent(bob, bobEv.on)
	if err := bob.SendTyping(ctx, "alice", "", true); err != nil {
		t.Fatal(err)
	}
	bobTyping := func(ev client.Event) bool {
		if ev.Kind == client.EventRejected {
			t.Fatalf("rejected: %v", ev.Err)
		}
		return ev.Kind == client.EventTyping && ev.User == "bob" && ev.Typing && ev.Group == ""
	}
	aliceEv.wait(t, "bob typing, on alice's first device", bobTyping)
	laptopEv.wait(t, "bob typing, on alice's laptop", bobTyping)
	if err := laptop.SendTyping(ctx, "bob", "", true); err != nil {
		t.Fatal(err)
	}
	bobEv.wait(t, "alice typing on her laptop", func(ev client.Event) bool {
		if ev.Kind == client.EventRejected {
			t.Fatalf("rejected: %v", ev.Err)
		}
		return ev.Kind == client.EventTyping && ev.User == "alice" && ev.Typing && ev.Group == ""
	})
	if err := laptop.SendTyping(ctx, "", "team", false); err != nil {
		t.Fatal(err)
	}
	bobEv.wait(t, "alice stopped typing in team", func(ev client.Event) bool {
		return ev.Kind == client.EventTyping && ev.User == "alice" && !ev.Typing && ev.Group == "team"
	})
}
