package client_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
	"securefastchat/shard"
)

type joined struct {
	dev   *client.LinkedDevice
	shown uint64
	err   error
}

// join joins a link from a new device in the background.
func join(t *testing.T, code, name string) <-chan joined {
	t.Helper()
	ch := make(chan joined, 1)
	go func() {
		var j joined
		j.dev, j.err = client.JoinLink(ctxT(t), code, name, client.DialOptions{}, func(id uint64) { j.shown = id })
		if j.dev != nil {
			t.Cleanup(func() { j.dev.Conn.Close() })
		}
		ch <- j
	}()
	return ch
}

// TestLinkDevice: alice's first device offers a link; a new device joins
// with its code, and both show the same device id; alice accepts, and the
// new device is on her list, checked against her master key, logs in with
// its own key, and gets what bob sends her in its own inbox. bob, her
// contact, is told that she added it.
func TestLinkDevice(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, bob := contacts(t, s)
	news := make(chan client.Event, 4)
	testserver.OnEvent(bob, func(ev client.Event) {
		if ev.Kind == client.EventDevice {
			news <- ev
		}
	})

	offer, err := alice.OfferLink(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer offer.Close()
	res := join(t, offer.Code(), "laptop")
	req, err := offer.Request(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if req.Name != "laptop" {
		t.Fatalf("the request names %q", req.Name)
	}
	if err := offer.Accept(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	j := <-res
	if j.err != nil {
		t.Fatal(j.err)
	}
	if j.shown != req.DeviceID || j.dev.DeviceID() != req.DeviceID {
		t.Fatalf("the new device shows %016x, the existing one %016x", j.shown, req.DeviceID)
	}
	if j.dev.User != "alice" || !j.dev.Master.Equal(alice.Identity().Sign.Public()) {
		t.Fatalf("linked as %q under %x", j.dev.User, j.dev.Master)
	}
	list, err := alice.Devices(ctxT(t), "alice")
	if err != nil || len(list.Devices) != 2 || list.Devices[1].ID != req.DeviceID || list.Devices[1].Name != "laptop" {
		t.Fatalf("alice's list: %+v %v", list, err)
	}
	select {
	case ev := <-news:
		if ev.User != "alice" || ev.Op != proto.DeviceAdd || ev.Text != "laptop" {
			t.Fatalf("bob was told %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("bob was not told that alice added a device")
	}
	sent := send(t, bob, "alice", "to every device")
	// bob's client sees alice's new device and seals for it: the new
	// device opens its copy with its own key.
	d := delivery(t, j.dev.Conn)
	if text := openText(t, d, &j.dev.Box, bob); text != "to every device" {
		t.Fatalf("the new device got %q", text)
	}
	if err := j.dev.Conn.Ack(d.ServerID); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, alice); m.Text != "to every device" {
		t.Fatalf("alice's first device got %q", m.Text)
	}
	if r := <-sent; r.Status != proto.StatusDelivered {
		t.Fatalf("bob's receipt: %+v", r)
	}
}

// TestLinkRefused: the existing device's user refuses; the new device is
// told why, and nothing is added.
func TestLinkRefused(t *testing.T) {
	s := testserver.Start(t, nil)
	alice := testserver.Signup(t, s, "alice")
	offer, err := alice.OfferLink(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer offer.Close()
	res := join(t, offer.Code(), "unknown tablet")
	if _, err := offer.Request(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := offer.Refuse("not my tablet"); err != nil {
		t.Fatal(err)
	}
	if j := <-res; !errors.Is(j.err, client.ErrLinkRefused) {
		t.Fatalf("the refused device: %v", j.err)
	}
	if list, err := alice.Devices(ctxT(t), "alice"); err != nil || len(list.Devices) != 1 {
		t.Fatalf("alice's list after a refusal: %+v %v", list, err)
	}
}

// TestLinkTampered: a link whose code was altered does not add a device
// behind its user's back. A code with another secret finds no link
// (link_unknown), and the offer still waits for the right code; a second
// device cannot join a link another has joined; a code naming another
// master key makes the new device refuse what the account's key signed;
// and a code naming another server key is refused at the handshake.
func TestLinkTampered(t *testing.T) {
	s := testserver.Start(t, nil)
	alice := testserver.Signup(t, s, "alice")
	offer, err := alice.OfferLink(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer offer.Close()
	code, err := proto.ParseLinkCode(offer.Code())
	if err != nil {
		t.Fatal(err)
	}
	guess := *code
	guess.Secret[0] ^= 1
	if j := <-join(t, guess.String(), "guess"); !errors.Is(j.err, proto.CodeLinkUnknown) {
		t.Fatalf("a code with another secret: %v", j.err)
	}
	otherServer, _ := proto.NewKeyPair(rand.Reader)
	wrongServer := *code
	wrongServer.ServerKey = otherServer.Public
	if j := <-join(t, wrongServer.String(), "elsewhere"); !errors.Is(j.err, client.ErrServerKeyChanged) && !errors.Is(j.err, client.ErrUnknownServer) {
		t.Fatalf("a code naming another server key: %v", j.err)
	}

	// The code's master key replaced (mallory's, say): the new device
	// joins, alice accepts, and the new device refuses the statement,
	// which her real master key signed.
	malKey, _, _ := ed25519.GenerateKey(rand.Reader)
	forged := *code
	forged.Master = malKey
	res := join(t, forged.String(), "tablet")
	if _, err := offer.Request(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// A second device with the right code finds the link taken.
	if j := <-join(t, code.String(), "second"); !errors.Is(j.err, proto.CodeLinkUnknown) {
		t.Fatalf("a second device on a joined link: %v", j.err)
	}
	// alice's device is told the new one did not confirm.
	if err := offer.Accept(ctxT(t)); !errors.Is(err, client.ErrLinkBroken) {
		t.Fatalf("accepting the device that refuses the statement: %v", err)
	}
	if j := <-res; !errors.Is(j.err, client.ErrLinkBroken) {
		t.Fatalf("the new device with a forged master key in its code: %v", j.err)
	}
}

// TestLinkLimits: mallory, an ordinary account, may hold two links open
// at once; a connection that has not logged in cannot offer one, nor
// relay a frame without having joined one; a link relays a bounded number
// of frames; and a new device that joined a link is not cut off by the
// login deadline while it waits for the existing device's user.
func TestLinkLimits(t *testing.T) {
	s := testserver.Start(t, func(cfg *server.Config) { cfg.Shard.LoginTimeout = 300 * time.Millisecond })
	mallory := testserver.Signup(t, s, "mallory")
	var offers []*client.LinkOffer
	for range 2 {
		o, err := mallory.OfferLink(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		defer o.Close()
		offers = append(offers, o)
	}
	if _, err := mallory.OfferLink(ctxT(t)); !errors.Is(err, proto.CodeRateLimited) {
		t.Fatalf("a third link at once: %v", err)
	}

	conn, err := client.Dial(ctxT(t), s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	open := proto.LinkOpen{Channel: [proto.LinkChannelLen]byte{1}, Role: proto.LinkOffer}
	if _, _, err := conn.Request(ctxT(t), func(b []byte, id uint32) []byte { return open.Append(b, id) }); !errors.Is(err, proto.CodeUnauthenticated) {
		t.Fatalf("an offer before login: %v", err)
	}
	data := proto.LinkData{Data: []byte("x")}
	if _, _, err := conn.Request(ctxT(t), func(b []byte, id uint32) []byte { return data.Append(b, proto.TLinkData, id) }); !errors.Is(err, proto.CodeLinkUnknown) {
		t.Fatalf("a frame with no link: %v", err)
	}

	// A link relays at most LinkMaxFrames frames: past them, the sender is
	// told and the link ends.
	code, err := proto.ParseLinkCode(offers[1].Code())
	if err != nil {
		t.Fatal(err)
	}
	jc, err := client.Dial(ctxT(t), s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer jc.Close()
	openJoin := proto.LinkOpen{Channel: code.Channel(), Role: proto.LinkJoin}
	if _, _, err := jc.Request(ctxT(t), func(b []byte, id uint32) []byte { return openJoin.Append(b, id) }); err != nil {
		t.Fatal(err)
	}
	for range shard.LinkMaxFrames {
		if err := jc.SendRaw(data.Append(nil, proto.TLinkData, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := jc.Request(ctxT(t), func(b []byte, id uint32) []byte { return data.Append(b, proto.TLinkData, id) }); !errors.Is(err, proto.CodeTooLarge) {
		t.Fatalf("a frame past the link's bound: %v", err)
	}
	offers[1].Close()
	if _, err := mallory.OfferLink(ctxT(t)); err != nil {
		t.Fatalf("a link once the ended one is closed: %v", err)
	}

	// The new device joins and waits longer than the login deadline
	// before mallory's device answers.
	res := join(t, offers[0].Code(), "slow")
	if _, err := offers[0].Request(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond)
	if err := offers[0].Accept(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if j := <-res; j.err != nil {
		t.Fatalf("a new device that waited past the login deadline: %v", j.err)
	}
}
