package client_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"strings"
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

// TestLinkHistory: a link asked to copy history (a code of version 5)
// brings the new device the existing device's entries, oldest first and
// whole, in as many frames as they take, all of them when they fit and
// the newest that fit LinkHistoryBudget when not; both devices say how
// much came. A link not asked to copy brings none and says so.
func TestLinkHistory(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, _ := contacts(t, s)
	entry := func(i, size int) proto.LinkHistoryEntry {
		e := proto.LinkHistoryEntry{Conv: []byte("@bob"), From: []byte("bob"), Time: 1_790_000_000_000 + int64(i), Text: bytes.Repeat([]byte{'a' + byte(i%26)}, size)}
		binary.BigEndian.PutUint64(e.ID[:], uint64(i))
		if i%3 == 0 {
			e.From, e.Flags, e.Status, e.ReadBy = []byte("alice"), proto.HistoryMine, 5, [][]byte{[]byte("bob")}
		}
		return e
	}
	check := func(got, want []proto.LinkHistoryEntry) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%d entries came, want %d", len(got), len(want))
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.ID != w.ID || !bytes.Equal(g.Text, w.Text) || g.Time != w.Time || g.Flags != w.Flags || g.Status != w.Status || len(g.ReadBy) != len(w.ReadBy) {
				t.Fatalf("entry %d came as %+v, want %+v", i, g, w)
			}
		}
	}

	// A small history comes whole.
	var small []proto.LinkHistoryEntry
	for i := range 500 {
		small = append(small, entry(i, 20+i%300))
	}
	laptop, offer := linkDeviceWith(t, alice, testserver.ClientConfig(t, s), "laptop", client.LinkOptions{History: func() ([]proto.LinkHistoryEntry, error) { return small, nil }})
	got, copied := laptop.LinkedHistory()
	check(got, small)
	if want := (client.HistoryCopied{Asked: true, Copied: 500, Total: 500}); copied != want || offer.HistoryCopied() != want {
		t.Fatalf("the laptop says %+v, alice %+v", copied, offer.HistoryCopied())
	}
	if !strings.Contains(client.HistoryCopiedText(copied), "all 500") {
		t.Fatal(client.HistoryCopiedText(copied))
	}

	// A history larger than a link carries: the newest that fit, and a
	// managing link with it still gives the master key.
	var big []proto.LinkHistoryEntry
	for i := range 1500 {
		big = append(big, entry(i, 3000))
	}
	tablet, offer := linkDeviceWith(t, alice, testserver.ClientConfig(t, s), "tablet", client.LinkOptions{Manage: true, History: func() ([]proto.LinkHistoryEntry, error) { return big, nil }})
	got, copied = tablet.LinkedHistory()
	if copied.Total != 1500 || copied.Copied < 900 || copied.Copied >= 1500 || offer.HistoryCopied() != copied {
		t.Fatalf("the tablet says %+v, alice %+v", copied, offer.HistoryCopied())
	}
	check(got, big[1500-copied.Copied:])
	if !tablet.Manages() {
		t.Fatal("the tablet does not manage the account's devices")
	}
	if !strings.Contains(client.HistoryCopiedText(copied), "newest") {
		t.Fatal(client.HistoryCopiedText(copied))
	}

	// A history that cannot be read: the device is still set up, with
	// none, and the existing device's user is told why.
	offer, err := alice.OfferLinkWith(ctxT(t), client.LinkOptions{History: func() ([]proto.LinkHistoryEntry, error) { return nil, errors.New("disk on fire") }})
	if err != nil {
		t.Fatal(err)
	}
	defer offer.Close()
	res := make(chan error, 1)
	var phone *client.Client
	go func() {
		var err error
		phone, err = client.AddDevice(ctxT(t), testserver.ClientConfig(t, s), offer.Code(), "phone", "phone passphrase", nil)
		res <- err
	}()
	if _, err := offer.Request(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := offer.Accept(ctxT(t)); err == nil || !strings.Contains(err.Error(), "the device is set up, but no history was copied") || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("accepting with an unreadable history: %v", err)
	}
	if err := <-res; err != nil {
		t.Fatalf("the phone, with an unreadable history: %v", err)
	}
	defer phone.Close()
	if got, copied := phone.LinkedHistory(); len(got) != 0 || copied != (client.HistoryCopied{Asked: true}) || !strings.Contains(client.HistoryCopiedText(copied), "no history to copy") {
		t.Fatalf("the phone: %d entries, %+v", len(got), copied)
	}

	// Not asked: nothing comes, and the new device says it starts empty.
	desk := linkDevice(t, alice, testserver.ClientConfig(t, s), "desk", false)
	if got, copied := desk.LinkedHistory(); got != nil || copied.Asked || !strings.Contains(client.HistoryCopiedText(copied), "starts empty") {
		t.Fatalf("a link without history: %d entries, %+v", len(got), copied)
	}
}
