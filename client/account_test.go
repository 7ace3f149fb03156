package client_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

// addLaptop links a second home to alice's account as her laptop, with
// the passphrase "laptop passphrase", and returns its client and config.
func addLaptop(t *testing.T, alice *client.Client, cfg client.Config) *client.Client {
	t.Helper()
	return linkDevice(t, alice, cfg, "laptop", false)
}

// linkDevice links a new device named name, in cfg's home, from the
// managing device from, which makes it manage too if manage.
func linkDevice(t *testing.T, from *client.Client, cfg client.Config, name string, manage bool) *client.Client {
	t.Helper()
	c, _ := linkDeviceWith(t, from, cfg, name, client.LinkOptions{Manage: manage})
	return c
}

// linkDeviceWith is linkDevice with options; it returns the offer too,
// ended.
func linkDeviceWith(t *testing.T, from *client.Client, cfg client.Config, name string, opts client.LinkOptions) (*client.Client, *client.LinkOffer) {
	t.Helper()
	offer, err := from.OfferLinkWith(ctxT(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer offer.Close()
	type added struct {
		c     *client.Client
		shown uint64
		err   error
	}
	res := make(chan added, 1)
	go func() {
		var a added
		a.c, a.err = client.AddDevice(ctxT(t), cfg, offer.Code(), name, name+" passphrase", func(id uint64) { a.shown = id })
		res <- a
	}()
	req, err := offer.Request(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := offer.Accept(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	a := <-res
	if a.err != nil {
		t.Fatalf("adding the %s: %v", name, a.err)
	}
	if a.shown != req.DeviceID {
		t.Fatalf("the %s showed %016x, the offering device %016x", name, a.shown, req.DeviceID)
	}
	t.Cleanup(func() { a.c.Close() })
	return a.c, offer
}

// TestAddDevice: a second home becomes alice's laptop through a link. It
// is a client of her account like her first device: bob's messages reach
// both; what either sends shows on the other as sent; both show bob the
// same safety number. It keeps its own keys under a passphrase of its
// own, logs in with its key (never the password), cannot change her list,
// and says groups are for the first device for now.
func TestAddDevice(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, bob := contacts(t, s)
	// alice verified bob's keys; dave's changed (he made his account
	// again) and she has not accepted the change.
	bobKeys, err := alice.PeerKeys(ctxT(t), "bob")
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.MarkVerified("bob", bobKeys.Fingerprint()); err != nil {
		t.Fatal(err)
	}
	dave := testserver.Signup(t, s, "dave")
	if _, err := alice.SendText(ctxT(t), "dave", "hi dave"); err != nil {
		t.Fatal(err)
	}
	dave.Close()
	if err := s.Store.DeleteUser("dave"); err != nil {
		t.Fatal(err)
	}
	s.Set.Kick("dave")
	testserver.Signup(t, s, "dave")
	waitFor(t, func() bool { _, held := alice.KeyChangeHeld("dave"); return held })
	oldDave, _ := alice.KeyChangeHeld("dave")

	cfg := testserver.ClientConfig(t, s)
	cfg.Addr = "" // from the code
	cfg.HoldOnKeyChange = true
	laptop := addLaptop(t, alice, cfg)
	if !laptop.Linked() || alice.Linked() || laptop.User() != "alice" {
		t.Fatalf("linked: laptop %v, first device %v, user %q", laptop.Linked(), alice.Linked(), laptop.User())
	}
	// It starts where the first device stands: bob's keys verified, the
	// change of dave's held.
	if fp := laptop.VerifiedFingerprint("bob"); fp != bobKeys.Fingerprint() {
		t.Fatalf("the laptop has bob's keys verified as %q, want %q", fp, bobKeys.Fingerprint())
	}
	if old, held := laptop.KeyChangeHeld("dave"); !held || old != oldDave {
		t.Fatalf("on the laptop, dave's change is held %v (from %q), want held from %q", held, old, oldDave)
	}
	if _, err := laptop.SendText(ctxT(t), "dave", "hi"); !errors.As(err, new(*client.KeyChangeHeldError)) {
		t.Fatalf("the laptop writing to dave: %v, want held", err)
	}
	if laptop.Fingerprint() != alice.Fingerprint() {
		t.Fatalf("the account's fingerprint: laptop %s, first device %s", laptop.Fingerprint(), alice.Fingerprint())
	}

	sent := send(t, bob, "alice", "to both of alice's devices")
	for _, c := range []*client.Client{alice, laptop} {
		if m := recvOne(t, c); m.Text != "to both of alice's devices" || m.From != "bob" || m.Mine {
			t.Fatalf("one of alice's devices got %+v", m)
		}
	}
	if r := <-sent; r.Status != proto.StatusDelivered {
		t.Fatalf("bob's receipt: %+v", r)
	}
	sent = send(t, laptop, "bob", "from the laptop")
	if m := recvOne(t, bob); m.Text != "from the laptop" || m.From != "alice" {
		t.Fatalf("bob got %+v", m)
	}
	if m := recvOne(t, alice); m.Text != "from the laptop" || !m.Mine || m.To != "bob" {
		t.Fatalf("alice's first device shows %+v", m)
	}
	<-sent
	sent = send(t, alice, "bob", "from the first device")
	recvOne(t, bob)
	if m := recvOne(t, laptop); m.Text != "from the first device" || !m.Mine || m.To != "bob" {
		t.Fatalf("the laptop shows %+v", m)
	}
	<-sent

	bk, err := laptop.PeerKeys(ctxT(t), "bob")
	if err != nil {
		t.Fatal(err)
	}
	if a, l := alice.SafetyNumber(bobKeys), laptop.SafetyNumber(bk); a != l || bk.Changed {
		t.Fatalf("safety numbers with bob: first device %s, laptop %s", a, l)
	}
	if _, err := laptop.RemoveDevice(ctxT(t), "first device"); !errors.Is(err, client.ErrNotManaging) {
		t.Fatalf("the laptop removing a device: %v", err)
	}
	if _, err := laptop.OfferLink(ctxT(t)); !errors.Is(err, client.ErrNotManaging) {
		t.Fatalf("the laptop offering a link: %v", err)
	}
	// Membership changes are signed by the account's key, which only the
	// first device holds.
	if err := laptop.CreateGroup(ctxT(t), "team"); !errors.Is(err, client.ErrGroupsOnFirstDevice) {
		t.Fatalf("the laptop making a group: %v", err)
	}
	// It reads the groups alice is in: her statements check against the
	// account's key, not the laptop's.
	if err := alice.CreateGroup(ctxT(t), "crew"); err != nil {
		t.Fatal(err)
	}
	if ms, err := laptop.GroupMembers(ctxT(t), "crew"); err != nil || len(ms) != 1 || ms[0].Name != "alice" {
		t.Fatalf("the laptop reading alice's group: %+v %v", ms, err)
	}
	if err := laptop.LeaveGroup(ctxT(t), "crew"); !errors.Is(err, client.ErrGroupsOnFirstDevice) {
		t.Fatalf("the laptop leaving the group: %v", err)
	}
	// The group's key reaches both of alice's devices: what bob writes in
	// it shows on both, and what the laptop writes reaches bob and shows
	// on the first device as alice's own.
	if err := alice.AddMember(ctxT(t), "crew", "bob"); err != nil {
		t.Fatal(err)
	}
	testserver.Join(t, bob, "crew")
	rejected := make(chan client.Event, 8)
	testserver.OnEvent(laptop, func(ev client.Event) {
		if ev.Kind == client.EventRejected {
			rejected <- ev
		}
	})
	for _, text := range []string{"one", "two", "three"} {
		if _, err := bob.SendGroupText(ctxT(t), "crew", text); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*client.Client{alice, laptop} {
			if m := recvGroup(t, c); m.Text != text || m.From != "bob" || m.Group != "crew" || m.Mine {
				t.Fatalf("one of alice's devices got %+v", m)
			}
		}
	}
	if _, err := laptop.SendGroupText(ctxT(t), "crew", "from the laptop, in crew"); err != nil {
		t.Fatal(err)
	}
	if m := recvGroup(t, bob); m.Text != "from the laptop, in crew" || m.From != "alice" || m.Mine {
		t.Fatalf("bob got %+v", m)
	}
	if m := recvGroup(t, alice); m.Text != "from the laptop, in crew" || m.From != "alice" || !m.Mine {
		t.Fatalf("alice's first device shows %+v", m)
	}
	select {
	case ev := <-rejected:
		t.Fatalf("the laptop rejected a group message: %v", ev.Err)
	default:
	}

	// Its home opens with its passphrase, not the account's password, and
	// it logs in with its key when its session is gone.
	laptop.Close()
	if _, err := client.Load(withAddr(cfg, s.Addr()), "alice", pw); !errors.Is(err, client.ErrBadIdentity) {
		t.Fatalf("the laptop's home with the account's password: %v", err)
	}
	if _, err := client.Login(ctxT(t), withAddr(cfg, s.Addr()), "alice", pw); !errors.Is(err, client.ErrLinkedLogin) {
		t.Fatalf("a password login on the laptop's home: %v", err)
	}
	if err := os.Remove(filepath.Join(cfg.Home, "users", "alice", "session")); err != nil {
		t.Fatal(err)
	}
	again, err := client.Open(ctxT(t), withAddr(cfg, s.Addr()), "alice", "laptop passphrase")
	if err != nil {
		t.Fatalf("opening the laptop again: %v", err)
	}
	defer again.Close()
	if _, err := bob.SendText(ctxT(t), "alice", "again"); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, again); m.Text != "again" {
		t.Fatalf("the laptop, again, got %q", m.Text)
	}
}

func withAddr(cfg client.Config, addr string) client.Config {
	cfg.Addr = addr
	return cfg
}

// TestRecover: alice loses every device. From a new home, her password
// starts the account again: new keys, a list of one device, her old
// sessions ended and her old device key refused. bob's client sees her key
// change and holds what he writes until he accepts it; then they talk. A
// wrong password changes nothing.
func TestRecover(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, bob := contacts(t, s)
	old := alice.Identity()
	oldFP := alice.Fingerprint()
	changed := make(chan client.Event, 4)
	testserver.OnEvent(bob, func(ev client.Event) {
		if ev.Kind == client.EventKeyChange {
			changed <- ev
		}
	})

	cfg := testserver.ClientConfig(t, s)
	cfg.DeviceName = "new phone"
	if _, err := client.Recover(ctxT(t), cfg, "alice", "not her password"); !errors.Is(err, proto.CodeInvalidCredentials) {
		t.Fatalf("recovering with a wrong password: %v", err)
	}
	if fp := alice.Fingerprint(); fp != oldFP {
		t.Fatal("a refused recovery changed something")
	}
	again, err := client.Recover(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatalf("recovering: %v", err)
	}
	defer again.Close()
	if again.Fingerprint() == oldFP {
		t.Fatal("the recovered account has its old keys")
	}
	list, err := again.Devices(ctxT(t), "alice")
	if err != nil || len(list.Devices) != 1 || list.Devices[0].Name != "new phone" {
		t.Fatalf("alice's devices after the recovery: %+v %v", list, err)
	}
	// The old device's session is over, and its key does not log in.
	select {
	case <-alice.Conn().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the old device's session did not end")
	}
	conn, err := client.Dial(ctxT(t), s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.LoginDevice(ctxT(t), "alice", old.KeyID("alice"), old.Sign, 0); !errors.Is(err, proto.CodeInvalidCredentials) {
		t.Fatalf("the old device's key logging in: %v", err)
	}

	// bob is told, and what he writes is held until he accepts.
	select {
	case ev := <-changed:
		if ev.User != "alice" || ev.OldFingerprint != oldFP || ev.Fingerprint != again.Fingerprint() {
			t.Fatalf("bob was told %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bob was not told of alice's new keys")
	}
	if old, held := bob.KeyChangeHeld("alice"); !held || old != oldFP {
		t.Fatalf("bob holds alice's change: %v (from %q)", held, old)
	}
	if err := bob.AcceptKeyChange("alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendText(ctxT(t), "alice", "welcome back"); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, again); m.Text != "welcome back" || m.From != "bob" {
		t.Fatalf("alice, recovered, got %+v", m)
	}
}

// TestRecoveredOldHome: after alice's account is recovered on a new device,
// her old home still has the password. Logging in with it, the old home
// finds the account's keys are not its own and stops, without ever taking
// the new device's place as the receiver.
func TestRecoveredOldHome(t *testing.T) {
	s := testserver.Start(t, nil)
	oldCfg := testserver.ClientConfig(t, s)
	old := signup(t, oldCfg, "alice")
	old.Close()
	again, err := client.Recover(ctxT(t), testserver.ClientConfig(t, s), "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	conn := again.Conn()
	if _, err := client.Open(ctxT(t), oldCfg, "alice", pw); !errors.Is(err, client.ErrAccountRecovered) {
		t.Fatalf("the old home opening: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if again.Conn() != conn || conn.Err() != nil {
		t.Fatalf("the new device's receiving session was taken: %v", conn.Err())
	}
}
