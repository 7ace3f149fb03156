package client_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

// TestManagingDevice: alice's first device links her laptop as a device
// that manages her account's devices. The laptop, through a link of its
// own, adds a tablet, which does not manage; then alice's first device is
// lost, and the laptop removes it. bob's messages reach the laptop and the
// tablet, bob is told of each change, and the laptop makes a group with
// bob, signed by the master key it got through the link.
func TestManagingDevice(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, bob := contacts(t, s)
	ctx := ctxT(t)
	bobEv := make(events, 64)
	testserver.OnEvent(bob, bobEv.on)
	laptop := linkDevice(t, alice, withAddr(testserver.ClientConfig(t, s), s.Addr()), "laptop", true)
	if !laptop.Linked() || !laptop.Manages() {
		t.Fatalf("the laptop: linked %v, manages %v", laptop.Linked(), laptop.Manages())
	}
	tablet := linkDevice(t, laptop, withAddr(testserver.ClientConfig(t, s), s.Addr()), "tablet", false)
	if tablet.Manages() {
		t.Fatal("the tablet, linked plainly, manages")
	}
	if _, err := tablet.OfferLink(ctx); !errors.Is(err, client.ErrNotManaging) {
		t.Fatalf("the tablet offering a link: %v", err)
	}
	if _, err := tablet.RemoveDevice(ctx, "laptop"); !errors.Is(err, client.ErrNotManaging) {
		t.Fatalf("the tablet removing the laptop: %v", err)
	}
	bobEv.wait(t, "the tablet added", func(e client.Event) bool {
		return e.Kind == client.EventDevice && e.Op == proto.DeviceAdd && e.Text == "tablet"
	})

	first := alice.Identity().KeyID("alice")
	alice.Close()
	if _, err := laptop.RemoveDevice(ctx, fmt.Sprintf("%016x", first)); err != nil {
		t.Fatalf("the laptop removing the first device: %v", err)
	}
	bobEv.wait(t, "the first device removed", func(e client.Event) bool {
		return e.Kind == client.EventDevice && e.Op == proto.DeviceRemove
	})
	list, err := bob.Devices(ctx, "alice")
	if err != nil || len(list.Devices) != 2 || list.Index(first) >= 0 {
		t.Fatalf("alice's devices as bob sees them: %+v %v", list, err)
	}
	if r, err := bob.SendText(ctx, "alice", "after the phone"); err != nil || r.Status != proto.StatusDelivered {
		t.Fatalf("bob's message: %+v %v", r, err)
	}
	for _, c := range []*client.Client{laptop, tablet} {
		if m := recvOne(t, c); m.From != "bob" || m.Text != "after the phone" {
			t.Fatalf("got %+v", m)
		}
	}

	// A group made on the laptop: the roster is signed by the master key.
	if err := laptop.CreateGroup(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	if err := laptop.AddMember(ctx, "team", "bob"); err != nil {
		t.Fatal(err)
	}
	testserver.Join(t, bob, "team")
	if _, err := laptop.SendGroupText(ctx, "team", "from the laptop"); err != nil {
		t.Fatal(err)
	}
	if m := recvGroup(t, bob); m.From != "alice" || m.Text != "from the laptop" {
		t.Fatalf("bob got %+v", m)
	}
	if m := recvGroup(t, tablet); !m.Mine || m.Text != "from the laptop" {
		t.Fatalf("the tablet got %+v", m)
	}
}

// TestFirstDeviceRemoved: a first device that a managing device removed
// (lost, then found) is told so when it opens, even with the password,
// and takes nothing of the account's.
func TestFirstDeviceRemoved(t *testing.T) {
	s := testserver.Start(t, nil)
	cfg := testserver.ClientConfig(t, s)
	alice := signup(t, cfg, "alice")
	laptop := linkDevice(t, alice, withAddr(testserver.ClientConfig(t, s), s.Addr()), "laptop", true)
	first := alice.Identity().KeyID("alice")
	alice.Close()
	if _, err := laptop.RemoveDevice(ctxT(t), fmt.Sprintf("%016x", first)); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Open(ctxT(t), cfg, "alice", pw); !errors.Is(err, client.ErrFirstDeviceRemoved) {
		t.Fatalf("the removed first device opening: %v", err)
	}
	if _, err := client.Login(ctxT(t), cfg, "alice", pw); !errors.Is(err, client.ErrFirstDeviceRemoved) {
		t.Fatalf("the removed first device logging in with the password: %v", err)
	}
	// Nor on a raw connection: the password is right, the device is gone.
	if err := rawLogin(t, s, "alice", testserver.LoginKey(t, "alice")); !errors.Is(err, proto.CodeForbidden) {
		t.Fatalf("a raw password login: %v", err)
	}
	// The laptop goes on.
	if _, err := laptop.Devices(ctxT(t), "alice"); err != nil {
		t.Fatal(err)
	}
}

// perDeviceSender signs user up as a contact of c, asking for each
// message's outcome on every device (Config.PerDevice).
func perDeviceSender(t *testing.T, s *server.Server, user string, c *client.Client) *client.Client {
	t.Helper()
	cfg := testserver.ClientConfig(t, s)
	cfg.PerDevice = true
	u := signup(t, cfg, user)
	t.Cleanup(func() { u.Close() })
	testserver.Acquaint(t, u, c)
	return u
}

// TestDeliveryPerDevice: "delivered" means one of the receiver's devices
// has the message; a sender who asks is told, device by device, which
// acknowledged it and for which it is stored. One who does not ask is
// told as before.
func TestDeliveryPerDevice(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, bob := contacts(t, s)
	carol := perDeviceSender(t, s, "carol", alice)
	laptop := addLaptop(t, alice, withAddr(testserver.ClientConfig(t, s), s.Addr()))
	laptopID := laptop.Identity().KeyID("alice")
	laptop.Close()
	if r, err := bob.SendText(ctxT(t), "alice", "bob does not ask"); err != nil || r.Status != proto.StatusDelivered || r.Devices != nil {
		t.Fatalf("bob's receipt: %+v %v", r, err)
	}
	recvOne(t, alice)
	r, err := carol.SendText(ctxT(t), "alice", "to the phone now, the laptop later")
	if err != nil {
		t.Fatal(err)
	}
	want := []proto.DeviceStatus{{Device: alice.Identity().KeyID("alice"), Status: proto.StatusDelivered}, {Device: laptopID, Status: proto.StatusQueued}}
	if r.Status != proto.StatusDelivered || !slices.Equal(r.Devices, want) {
		t.Fatalf("carol's receipt: %d %+v, want delivered, %+v", r.Status, r.Devices, want)
	}
	recvOne(t, alice)
}

// TestGroupAfterRecovery: alice makes team with bob, then loses her
// devices and recovers her account. Her recovery says in team that her key
// changed, naming the one before, so bob (a fresh client, once he accepts
// her new key) checks the group from its start and writes in it, alice
// writes in it again, and dave, added afterwards, who never knew her old
// key, reads it too. mallory, a member speaking the protocol, saying that
// her own key changed when it did not, locks nobody out; and a key change
// naming a key bob never knew for alice is caught.
func TestGroupAfterRecovery(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, bob, bobCfg := aliceTeam(t, s, "bob")
	mallory := signup(t, testserver.ClientConfig(t, s), "mallory")
	defer mallory.Close()
	testserver.Acquaint(t, alice, mallory)
	if err := alice.AddMember(ctxT(t), "team", "mallory"); err != nil {
		t.Fatal(err)
	}
	testserver.Join(t, mallory, "team")
	if _, err := bob.SendGroupText(ctxT(t), "team", "before"); err != nil {
		t.Fatal(err)
	}
	if m := recvGroup(t, mallory); m.Text != "before" {
		t.Fatalf("mallory got %+v", m)
	}
	alice.Close()
	again, err := client.Recover(ctxT(t), testserver.ClientConfig(t, s), "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if told, failed := again.GroupsToldOfRecovery(); !slices.Equal(told, []string{"team"}) || len(failed) != 0 {
		t.Fatalf("told %v, failed %v", told, failed)
	}

	bob.Close()
	bob = login(t, bobCfg, "bob")
	defer bob.Close()
	if _, err := bob.PeerKeys(ctxT(t), "alice"); err != nil {
		t.Fatal(err)
	}
	if err := bob.AcceptKeyChange("alice"); err != nil {
		t.Fatal(err)
	}
	if ms, err := bob.GroupMembers(ctxT(t), "team"); err != nil || len(ms) != 3 {
		t.Fatalf("bob reading team: %+v %v", ms, err)
	}
	if _, err := again.SendGroupText(ctxT(t), "team", "alice again"); err != nil {
		t.Fatal(err)
	}
	if m := recvGroup(t, bob); m.From != "alice" || m.Text != "alice again" {
		t.Fatalf("bob got %+v", m)
	}
	if _, err := bob.SendGroupText(ctxT(t), "team", "welcome back"); err != nil {
		t.Fatal(err)
	}
	if m := recvGroup(t, again); m.From != "bob" || m.Text != "welcome back" {
		t.Fatalf("alice got %+v", m)
	}
	dave := signup(t, testserver.ClientConfig(t, s), "dave")
	defer dave.Close()
	testserver.Acquaint(t, again, dave)
	if err := again.AddMember(ctxT(t), "team", "dave"); err != nil {
		t.Fatal(err)
	}
	testserver.Join(t, dave, "team")
	if _, err := again.SendGroupText(ctxT(t), "team", "hello dave"); err != nil {
		t.Fatal(err)
	}
	if m := recvGroup(t, dave); m.Text != "hello dave" {
		t.Fatalf("dave got %+v", m)
	}

	// mallory says her key changed, naming the one it still is: refused.
	if err := sayKeyChanged(t, mallory, "team", mallory.Identity().Sign.Public().(ed25519.PublicKey)); !errors.Is(err, proto.CodeBadRequest) {
		t.Fatalf("mallory's key change naming her key: %v", err)
	}
	// Then naming one that signed nothing: taken, and harmless.
	keyChange(t, mallory, "team", bytes.Repeat([]byte{7}, 32))
	fresh := login(t, bobCfg, "bob")
	if _, err := fresh.GroupMembers(ctxT(t), "team"); err != nil {
		t.Fatalf("after mallory's key change: %v", err)
	}
	fresh.Close()
	// A key change for alice naming a key bob never knew for her.
	keyChange(t, again, "team", bytes.Repeat([]byte{9}, 32))
	fresh = login(t, bobCfg, "bob")
	defer fresh.Close()
	if _, err := fresh.GroupMembers(ctxT(t), "team"); !errors.Is(err, client.ErrGroupChain) || !strings.Contains(err.Error(), "not the one you knew") {
		t.Fatalf("a key change naming a key bob never knew: %v", err)
	}
}

// keyChange has c, speaking the protocol, append to group a statement
// that its user's key changed from old.
func keyChange(t *testing.T, c *client.Client, group string, old []byte) {
	t.Helper()
	if err := sayKeyChanged(t, c, group, old); err != nil {
		t.Fatalf("%s's key change: %v", c.User(), err)
	}
}

// sayKeyChanged is keyChange, returning the server's answer.
func sayKeyChanged(t *testing.T, c *client.Client, group string, old []byte) error {
	t.Helper()
	ctx := ctxT(t)
	var raw []*proto.Statement
	for from := uint32(0); ; {
		req := proto.GroupReq{Group: []byte(group), From: from}
		typ, body, err := c.Conn().Request(ctx, func(b []byte, id uint32) []byte { return req.Append(b, proto.TGroupChain, id) })
		var r proto.GroupChainReply
		if err != nil || typ != proto.TGroupChainReply || r.Parse(body) != nil {
			t.Fatalf("the chain: %#x %v", uint8(typ), err)
		}
		for _, b := range r.Statements {
			st := new(proto.Statement)
			if err := st.Parse(b); err != nil {
				t.Fatal(err)
			}
			raw = append(raw, st)
		}
		from += uint32(len(r.Statements))
		if !r.More {
			break
		}
	}
	last := raw[len(raw)-1]
	st := &proto.Statement{Group: []byte(group), Seq: last.Seq + 1, Prev: last.Hash(), Op: proto.OpKeyChanged, Target: []byte(c.User()), Signer: []byte(c.User()), OldKey: old}
	st.Sign(c.Identity().Sign)
	m := proto.GroupChange{PerDevice: true, Group: []byte(group), Statement: st.Append(nil), RosterSeq: st.Seq, Part: 1, Parts: 1}
	typ, _, err := c.Conn().Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
	if err == nil && typ != proto.TOK {
		err = fmt.Errorf("answered %#x", uint8(typ))
	}
	return err
}
