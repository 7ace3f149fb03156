package client_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"slices"
	"sync"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
	"securefastchat/store"
)

// deviceConn logs a device in with its own key, as a receiving session,
// speaking the protocol.
func deviceConn(t *testing.T, s *server.Server, user string, dev *proto.DeviceStatement, key ed25519.PrivateKey) (*client.Conn, error) {
	t.Helper()
	conn, err := client.Dial(ctxT(t), s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.LoginDevice(ctxT(t), user, dev.DeviceID, key, 0); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// laptopOnline adds a laptop to alice's devices and logs it in.
func laptopOnline(t *testing.T, s *server.Server, alice *client.Client) (*proto.DeviceStatement, ed25519.PrivateKey, *client.Conn) {
	t.Helper()
	laptop, key := testserver.AddDevice(t, alice, "laptop", nil)
	lc, err := deviceConn(t, s, "alice", laptop, key)
	if err != nil {
		t.Fatal(err)
	}
	return laptop, key, lc
}

// newBox makes a device's box key pair.
func newBox(t *testing.T) proto.KeyPair {
	t.Helper()
	kp, err := proto.NewKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// openText opens a device's copy of a direct message from sender's first
// device with the device's box key pair, and returns its text.
func openText(t *testing.T, d *client.Delivery, box *proto.KeyPair, sender *client.Client) string {
	t.Helper()
	if d.Devices == nil || string(d.Devices.From) != sender.User() || d.Devices.FromDevice != sender.Identity().KeyID(sender.User()) {
		t.Fatalf("not a copy sealed for the device by %s's first device: %+v", sender.User(), d)
	}
	in, err := testserver.OpenCopy(d.Devices, box, sender.Identity().Box.Public)
	if err != nil {
		t.Fatalf("the copy does not open with the device's key: %v", err)
	}
	return string(in.Body)
}

// delivery waits for the next message pushed to a device's connection.
func delivery(t *testing.T, conn *client.Conn) *client.Delivery {
	t.Helper()
	select {
	case d, ok := <-conn.Deliveries():
		if !ok {
			t.Fatalf("the device's connection ended: %v", conn.Err())
		}
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("nothing was delivered to the device")
	}
	return nil
}

// contacts signs alice and bob up, each having written to the other.
func contacts(t *testing.T, s *server.Server) (alice, bob *client.Client) {
	t.Helper()
	alice, bob = testserver.Signup(t, s, "alice"), testserver.Signup(t, s, "bob")
	testserver.Acquaint(t, alice, bob)
	testserver.Acquaint(t, bob, alice)
	return alice, bob
}

func inboxLen(t *testing.T, s *server.Server, user string, dev uint64) int64 {
	t.Helper()
	n, _, err := s.Store.InboxLen(store.Inbox{User: user, Device: dev})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDeviceInboxes: each device of an account receives on its own, side
// by side: alice's first device (her client) and her laptop (a second
// device logged in with its own key) each get bob's messages, each with
// its own numbers and acknowledgements; what one device has not
// acknowledged waits in its own inbox and never in the other's; a
// message is "delivered" once one device has it; and a full queue on one
// device refuses nothing for the other.
func TestDeviceInboxes(t *testing.T) {
	s := testserver.Start(t, func(cfg *server.Config) {
		// bob, alice's contact, may hold half of a device's 6 messages.
		cfg.Shard.QueueLimits = store.QueueLimits{Count: 6, ContactShare: 0.5}
	})
	alice, bob := contacts(t, s)
	first := alice.Identity().KeyID("alice")
	box := newBox(t)
	laptop, laptopKey := testserver.AddDevice(t, alice, "laptop", &box)

	lc, err := deviceConn(t, s, "alice", laptop, laptopKey)
	if err != nil {
		t.Fatal(err)
	}
	// Both receive: the laptop's login replaced nothing. bob's receipt
	// comes once each device has it (acknowledged, or stored when the
	// laptop goes without acknowledging), and says delivered.
	sent := send(t, bob, "alice", "to both")
	if m := recvOne(t, alice); m.Text != "to both" {
		t.Fatalf("alice's first device got %q", m.Text)
	}
	// The laptop's copy is sealed for its own key.
	d := delivery(t, lc)
	if text := openText(t, d, &box, bob); text != "to both" {
		t.Fatalf("the laptop got %q", text)
	}
	lc.Close()
	if r := <-sent; r.Status != proto.StatusDelivered {
		t.Fatalf("bob's receipt: status %d, want delivered", r.Status)
	}
	// The laptop's copy waits in its inbox, and only there.
	waitFor(t, func() bool { return inboxLen(t, s, "alice", laptop.DeviceID) == 1 })
	if n := inboxLen(t, s, "alice", first); n != 0 {
		t.Fatalf("alice's first device's inbox holds %d; it acknowledged everything", n)
	}
	lc, err = deviceConn(t, s, "alice", laptop, laptopKey)
	if err != nil {
		t.Fatal(err)
	}
	again := delivery(t, lc)
	if again.Devices == nil || string(again.Devices.MsgID) != string(d.Devices.MsgID) {
		t.Fatalf("the laptop got, after its reconnect, %+v", again)
	}
	if err := lc.Ack(again.ServerID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return inboxLen(t, s, "alice", laptop.DeviceID) == 0 })

	// With her first device away, the laptop alone makes it delivered;
	// the first device's copy waits for it.
	alice.Close()
	sent = send(t, bob, "alice", "while the first device is away")
	d = delivery(t, lc)
	if err := lc.Ack(d.ServerID); err != nil {
		t.Fatal(err)
	}
	if r := <-sent; r.Status != proto.StatusDelivered {
		t.Fatalf("bob's receipt with the laptop alone: status %d, want delivered", r.Status)
	}
	waitFor(t, func() bool { return inboxLen(t, s, "alice", first) == 1 })

	// The laptop goes too; bob sends more than his share of one device's
	// queue. Each inbox refuses its copies past the share, and bob is
	// refused only because both are full.
	lc.Close()
	waitFor(t, func() bool { return !s.Set.IsOnline("alice") }) // neither device takes anything live
	var refused int
	for i := range 5 {
		_, err := bob.SendText(ctxT(t), "alice", "flood "+string(rune('a'+i)))
		if remoteCode(err) == proto.CodeShareFull {
			refused++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if got := inboxLen(t, s, "alice", first); got != 3 {
		t.Fatalf("alice's first device holds %d, want its share of 3", got)
	}
	if got := inboxLen(t, s, "alice", laptop.DeviceID); got != 3 {
		t.Fatalf("the laptop holds %d, want its share of 3", got)
	}
	// The first device's inbox held one before: the third of the flood
	// went to the laptop alone, the last two to nobody.
	if refused != 2 {
		t.Fatalf("bob was refused %d times, want 2", refused)
	}
}

// send sends text in the background: its receipt comes once the server
// answers.
func send(t *testing.T, from *client.Client, to, text string) <-chan *client.Receipt {
	t.Helper()
	ch := make(chan *client.Receipt, 1)
	go func() {
		r, err := from.SendText(ctxT(t), to, text)
		if err != nil {
			t.Errorf("sending %q: %v", text, err)
			r = &client.Receipt{}
		}
		ch <- r
	}()
	return ch
}

// TestDeviceInboxesOneFull: a full queue on one device never refuses the
// message for the others; the sender is told which device refused it.
func TestDeviceInboxesOneFull(t *testing.T) {
	s := testserver.Start(t, func(cfg *server.Config) {
		cfg.Shard.QueueLimits = store.QueueLimits{Count: 4, ContactShare: 1}
	})
	alice, _ := contacts(t, s)
	carol := perDeviceSender(t, s, "carol", alice)
	laptop, _ := testserver.AddDevice(t, alice, "laptop", nil)
	// The laptop never logs in: its queue fills; alice's client reads
	// everything.
	for i := range 8 {
		r, err := carol.SendText(ctxT(t), "alice", "message "+string(rune('a'+i)))
		if err != nil {
			t.Fatalf("message %d, with the laptop's queue full: %v", i, err)
		}
		if r.Status != proto.StatusDelivered {
			t.Fatalf("message %d: status %d, want delivered", i, r.Status)
		}
		laptopStatus := proto.StatusQueued
		if i >= 4 {
			laptopStatus = proto.StatusRefused
		}
		if want := []proto.DeviceStatus{{Device: alice.Identity().KeyID("alice"), Status: proto.StatusDelivered}, {Device: laptop.DeviceID, Status: laptopStatus}}; !slices.Equal(r.Devices, want) {
			t.Fatalf("message %d: carol's receipt says %+v, want %+v", i, r.Devices, want)
		}
		if m := recvOne(t, alice); m.Text != "message "+string(rune('a'+i)) {
			t.Fatalf("alice got %q", m.Text)
		}
	}
	if n := inboxLen(t, s, "alice", laptop.DeviceID); n != 4 {
		t.Fatalf("the laptop's inbox holds %d, want its cap of 4", n)
	}
}

// TestDeviceRemovedEndsAtOnce: removing a device ends its session at
// once, drops its inbox, and neither its key nor its session token logs
// in again; messages go to the devices left.
func TestDeviceRemovedEndsAtOnce(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, bob := contacts(t, s)
	laptop, laptopKey, lc := laptopOnline(t, s, alice)
	var err error
	lc.Close()
	if _, err := bob.SendText(ctxT(t), "alice", "waiting for the laptop"); err != nil {
		t.Fatal(err)
	}
	recvOne(t, alice)
	waitFor(t, func() bool { return inboxLen(t, s, "alice", laptop.DeviceID) == 1 })
	lc, err = client.Dial(ctxT(t), s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	ok, err := lc.LoginDevice(ctxT(t), "alice", laptop.DeviceID, laptopKey, 0)
	if err != nil {
		t.Fatal(err)
	}
	delivery(t, lc) // not acknowledged
	testserver.RemoveDevice(t, alice, laptop)
	select {
	case <-lc.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the removed device's session goes on")
	}
	if lc.CloseReason() != proto.CloseRevoked {
		t.Fatalf("the removed device was closed with reason %d", lc.CloseReason())
	}
	if _, err := bob.SendText(ctxT(t), "alice", "after the removal"); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, alice); m.Text != "after the removal" {
		t.Fatalf("alice got %q", m.Text)
	}
	waitFor(t, func() bool { return inboxLen(t, s, "alice", laptop.DeviceID) == 0 })
	if _, err := deviceConn(t, s, "alice", laptop, laptopKey); remoteCode(err) != proto.CodeInvalidCredentials {
		t.Fatalf("the removed device logging in again: %v", err)
	}
	// Nor does its session come back: whoever holds its token (the
	// device itself, or someone who took it from the device) is refused.
	rc, err := client.Dial(ctxT(t), s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := rc.Resume(ctxT(t), "alice", ok.Token); remoteCode(err) != proto.CodeInvalidToken {
		t.Fatalf("the removed device's session resuming: %v", err)
	}
}

// TestDeviceInboxesGroups: a group message reaches every device of each
// member: alice's laptop gets bob's group message beside her client, and
// gets it from its inbox when it was away.
func TestDeviceInboxesGroups(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, bob := contacts(t, s)
	if err := bob.CreateGroup(ctxT(t), "team"); err != nil {
		t.Fatal(err)
	}
	if err := bob.AddMember(ctxT(t), "team", "alice"); err != nil {
		t.Fatal(err)
	}
	testserver.Join(t, alice, "team")
	laptop, laptopKey, lc := laptopOnline(t, s, alice)
	var err error
	sendGroup := func(text string) {
		t.Helper()
		if _, err := bob.SendGroupText(ctxT(t), "team", text); err != nil {
			t.Fatal(err)
		}
		if m := recvGroup(t, alice); m.Text != text {
			t.Fatalf("alice's client got %q", m.Text)
		}
	}
	done := make(chan struct{})
	go func() { // bob's receipt waits for the laptop's copy too
		defer close(done)
		sendGroup("to the team")
	}()
	d := delivery(t, lc)
	if d.Group == nil || string(d.Group.Group) != "team" || string(d.Group.From) != "bob" {
		t.Fatalf("the laptop got %+v", d)
	}
	if err := lc.Ack(d.ServerID); err != nil {
		t.Fatal(err)
	}
	<-done
	lc.Close()
	sendGroup("while the laptop is away")
	waitFor(t, func() bool { return inboxLen(t, s, "alice", laptop.DeviceID) == 1 })
	lc, err = deviceConn(t, s, "alice", laptop, laptopKey)
	if err != nil {
		t.Fatal(err)
	}
	if d := delivery(t, lc); d.Group == nil || d.ServerID == 0 {
		t.Fatalf("the laptop got from its inbox %+v", d)
	}
}

// TestInboxesUpgrade: a store and homes of the build before per-device
// queues (testdata/upgrade-v3: alice and bob signed up with their device
// lists; bob queued two messages for alice while she was away). alice's
// client resumes its session, now her first device's, and gets both
// from that device's inbox; bob's resumes too, and his messages to her
// go on.
func TestInboxesUpgrade(t *testing.T) {
	s, cfg := upgradeFrom(t, "testdata/upgrade-v3")
	alice, err := client.Open(ctxT(t), cfg, "alice", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	for i := 1; i <= 2; i++ {
		if m := recvOne(t, alice); m.From != "bob" || m.Text != "queued before the upgrade "+string(rune('0'+i)) {
			t.Fatalf("alice got %+v", m)
		}
	}
	first := alice.Identity().KeyID("alice")
	waitFor(t, func() bool { return inboxLen(t, s, "alice", first) == 0 })
	bob, err := client.Open(ctxT(t), cfg, "bob", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if r, err := bob.SendText(ctxT(t), "alice", "after the upgrade"); err != nil || r.Status != proto.StatusDelivered {
		t.Fatalf("bob's message after the upgrade: %+v %v", r, err)
	}
	if m := recvOne(t, alice); m.Text != "after the upgrade" {
		t.Fatalf("alice got %q", m.Text)
	}
}

// TestSilentDevice: a device that has not logged in for a month, while
// another device of its account has, is sent nothing more (its inbox
// stays empty), and the device that manages the account's list is told;
// once it logs in again, it is sent to again.
func TestSilentDevice(t *testing.T) {
	var clockMu sync.Mutex
	now := time.Now()
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	advance := func(d time.Duration) { clockMu.Lock(); now = now.Add(d); clockMu.Unlock() }
	s := testserver.Start(t, func(c *server.Config) { c.Shard.Now = clock; c.Limits.LoginBurst = 100 })
	alice, bob := contacts(t, s)
	carol := perDeviceSender(t, s, "carol", alice)
	laptop, laptopKey, lc := laptopOnline(t, s, alice)
	var err error
	lc.Close()

	advance(proto.DeviceSilentAfter + time.Hour)
	silent := make(chan client.Event, 2)
	testserver.OnEvent(alice, func(ev client.Event) {
		if ev.Kind == client.EventDeviceSilent {
			silent <- ev
		}
	})
	for _, c := range []*client.Client{alice, bob, carol} {
		if err := c.Reconnect(ctxT(t)); err != nil { // each logs in again, a month on
			t.Fatal(err)
		}
	}
	if _, err := bob.SendText(ctxT(t), "alice", "a month on"); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, alice); m.Text != "a month on" {
		t.Fatalf("alice got %q", m.Text)
	}
	// carol, who asks, is told the laptop was sent nothing.
	r, err := carol.SendText(ctxT(t), "alice", "from carol")
	if err != nil {
		t.Fatal(err)
	}
	if want := []proto.DeviceStatus{{Device: alice.Identity().KeyID("alice"), Status: proto.StatusDelivered}, {Device: laptop.DeviceID, Status: proto.StatusNotSent}}; !slices.Equal(r.Devices, want) {
		t.Fatalf("carol's receipt says %+v, want %+v", r.Devices, want)
	}
	recvOne(t, alice)
	if n := inboxLen(t, s, "alice", laptop.DeviceID); n != 0 {
		t.Fatalf("the silent laptop's inbox holds %d", n)
	}
	// alice's first device, which manages her list, is told.
	select {
	case ev := <-silent:
		if ev.Text != "laptop" || ev.Idle < proto.DeviceSilentAfter {
			t.Fatalf("alice was told %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("alice was not told that her laptop went silent")
	}

	lc, err = deviceConn(t, s, "alice", laptop, laptopKey)
	if err != nil {
		t.Fatal(err)
	}
	sent := send(t, bob, "alice", "back again")
	d := delivery(t, lc)
	if err := lc.Ack(d.ServerID); err != nil {
		t.Fatal(err)
	}
	recvOne(t, alice)
	if r := <-sent; r.Status != proto.StatusDelivered {
		t.Fatalf("bob's receipt: %+v", r)
	}
}

// TestDeviceRemovedWhileReceiving: a device removed while a message sent
// to it live waits for its acknowledgement keeps nothing: the message is
// stored as its connection goes, and the sweep drops what is stored for
// devices off their lists.
func TestDeviceRemovedWhileReceiving(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, bob := contacts(t, s)
	laptop, _, lc := laptopOnline(t, s, alice)
	// A first message, which the laptop's login may still take from its
	// inbox, acknowledged; the second reaches it live.
	sent := send(t, bob, "alice", "first")
	d := delivery(t, lc)
	if err := lc.Ack(d.ServerID); err != nil {
		t.Fatal(err)
	}
	recvOne(t, alice)
	<-sent
	waitFor(t, func() bool { return inboxLen(t, s, "alice", laptop.DeviceID) == 0 })
	sent = send(t, bob, "alice", "in flight")
	delivery(t, lc) // not acknowledged
	recvOne(t, alice)
	testserver.RemoveDevice(t, alice, laptop)
	<-lc.Done()
	<-sent // the laptop's copy is stored when its connection goes
	waitFor(t, func() bool { return inboxLen(t, s, "alice", laptop.DeviceID) == 1 })
	s.Sweep()
	if n := inboxLen(t, s, "alice", laptop.DeviceID); n != 0 {
		t.Fatalf("the removed laptop's inbox holds %d after the sweep", n)
	}
	if n := inboxLen(t, s, "alice", alice.Identity().KeyID("alice")); n != 0 {
		t.Fatalf("alice's first device's inbox holds %d", n)
	}
}

// TestDeviceRemovedRekeys: removing a device gives every group its user
// is in a new key epoch, made for the members as they are, which the
// removed device does not get.
func TestDeviceRemovedRekeys(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, bob := contacts(t, s)
	for _, g := range []string{"team", "ops"} {
		if err := alice.CreateGroup(ctxT(t), g); err != nil {
			t.Fatal(err)
		}
		if err := alice.AddMember(ctxT(t), g, "bob"); err != nil {
			t.Fatal(err)
		}
		testserver.Join(t, bob, g)
	}
	before := map[string]uint32{}
	for _, g := range []string{"team", "ops"} {
		st, err := s.Store.Group(g)
		if err != nil {
			t.Fatal(err)
		}
		before[g] = st.Epoch
	}
	testserver.AddDevice(t, alice, "laptop", nil)
	if d, err := alice.RemoveDevice(ctxT(t), "laptop"); err != nil || d.Name != "laptop" {
		t.Fatalf("removing the laptop: %+v %v", d, err)
	}
	for _, g := range []string{"team", "ops"} {
		st, err := s.Store.Group(g)
		if err != nil || st.Epoch != before[g]+1 {
			t.Fatalf("%s's epoch after the removal: %d (before %d) %v", g, st.Epoch, before[g], err)
		}
	}
	if _, err := bob.SendGroupText(ctxT(t), "team", "under the new key"); err != nil {
		t.Fatal(err)
	}
	if m := recvGroup(t, alice); m.Text != "under the new key" {
		t.Fatalf("alice got %q", m.Text)
	}
}

// TestMessageFromRemovedDevice: what alice's laptop sent bob while he was
// away still reaches him after she removes the laptop (within the
// grace), marked as from a device removed since; the laptop, removed,
// sends nothing more.
func TestMessageFromRemovedDevice(t *testing.T) {
	s := testserver.Start(t, nil)
	alice := testserver.Signup(t, s, "alice")
	bobCfg := testserver.ClientConfig(t, s)
	bob, err := client.Signup(ctxT(t), bobCfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	testserver.Acquaint(t, alice, bob)
	testserver.Acquaint(t, bob, alice)
	laptop := addLaptop(t, alice, testserver.ClientConfig(t, s))
	if _, err := bob.SendText(ctxT(t), "alice", "to both of your devices"); err != nil {
		t.Fatal(err) // bob has read alice's list with the laptop on it
	}
	bob.Close()
	if r, err := laptop.SendText(ctxT(t), "bob", "sent from the laptop"); err != nil || r.Status != proto.StatusQueued {
		t.Fatalf("the laptop's message: %+v %v", r, err)
	}
	if _, err := alice.RemoveDevice(ctxT(t), "laptop"); err != nil {
		t.Fatal(err)
	}
	if _, err := laptop.SendText(ctxT(t), "bob", "after the removal"); err == nil {
		t.Fatal("a removed device sent a message")
	}
	bob, err = client.Open(ctxT(t), bobCfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	m := recvOne(t, bob)
	if m.From != "alice" || m.Text != "sent from the laptop" || m.FromRemovedDevice != "laptop" {
		t.Fatalf("bob got %+v", m)
	}
	select {
	case m := <-testserver.Messages(bob):
		t.Fatalf("bob got %q too", m.Text)
	case <-time.After(300 * time.Millisecond):
	}
}
