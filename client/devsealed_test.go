package client_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

// sealedSend builds a message sealed for devices, as a client speaking the
// protocol does: text from user on the device whose box key pair is box,
// to a user, wrapped for the devices given (a box key each).
func sealedSend(t *testing.T, box *proto.KeyPair, from, to, text string, copies, own map[uint64]proto.PublicKey) *proto.SendDMDevices {
	t.Helper()
	id := make([]byte, proto.MsgIDLen)
	rand.Read(id)
	in := proto.Inner{Kind: proto.KindText, From: []byte(from), To: []byte(to), MsgID: id, SentAt: time.Now().UnixNano(), Body: []byte(text)}
	plain, err := in.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	payload, k, err := proto.SealPayload(plain, nil)
	if err != nil {
		t.Fatal(err)
	}
	hash := proto.PayloadHash(payload)
	wrap := func(devs map[uint64]proto.PublicKey) []proto.DeviceCopy {
		var cs []proto.DeviceCopy
		for dev, pub := range devs {
			w, err := proto.WrapKey(nil, k, &hash, proto.SharedKey(&box.Private, pub), nil)
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, proto.DeviceCopy{Device: dev, Wrap: w})
		}
		return cs
	}
	return &proto.SendDMDevices{To: []byte(to), MsgID: id, Kind: proto.KindText, Copies: wrap(copies), Own: wrap(own), Payload: payload}
}

// nextCopy returns the next message a device's connection gets, opened
// with its box key pair, from sender's first device; it acknowledges
// everything and passes over receipts (which the account's other devices
// also send).
func nextCopy(t *testing.T, conn *client.Conn, box *proto.KeyPair, sender *client.Client) (*proto.DeliverDevices, *proto.Inner) {
	t.Helper()
	for {
		d := delivery(t, conn)
		conn.Ack(d.ServerID)
		if d.Devices == nil || string(d.Devices.From) != sender.User() || d.Devices.FromDevice != sender.Identity().KeyID(sender.User()) {
			t.Fatalf("not a copy sealed for the device by %s's first device: %+v", sender.User(), d)
		}
		in, err := testserver.OpenCopy(d.Devices, box, sender.Identity().Box.Public)
		if err != nil {
			t.Fatalf("the copy does not open with the device's key: %v", err)
		}
		if in.Kind != proto.KindReceipt {
			return d.Devices, in
		}
	}
}

// request sends a message on a connection and returns the answer.
func request(t *testing.T, conn *client.Conn, build func(b []byte, id uint32) []byte) (proto.MsgType, []byte, error) {
	t.Helper()
	return conn.Request(ctxT(t), build)
}

// TestSealedForDevices: with a second device on alice's account, every
// direct message is sealed for each device. bob's message reaches alice's
// client and her laptop, which opens its copy with its own key; what alice
// sends from her client shows on the laptop, sealed for the laptop, with
// its receiver; and what the laptop sends (speaking the protocol) reaches
// bob, who opens it with the laptop's key from alice's list, and shows on
// alice's client as sent by her to bob.
func TestSealedForDevices(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, bob := contacts(t, s)
	box := newBox(t)
	laptop, key := testserver.AddDevice(t, alice, "laptop", &box)
	lc, err := deviceConn(t, s, "alice", laptop, key)
	if err != nil {
		t.Fatal(err)
	}

	sent := send(t, bob, "alice", "to every device")
	if m := recvOne(t, alice); m.Text != "to every device" || m.From != "bob" {
		t.Fatalf("alice's client got %+v", m)
	}
	if _, in := nextCopy(t, lc, &box, bob); string(in.Body) != "to every device" {
		t.Fatalf("the laptop got %q", in.Body)
	}
	if r := <-sent; r.Status != proto.StatusDelivered {
		t.Fatalf("bob's receipt: %+v", r)
	}

	// alice writes from her client: bob gets it, and so does her laptop.
	if _, err := alice.SendText(ctxT(t), "bob", "from alice's client"); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, bob); m.Text != "from alice's client" {
		t.Fatalf("bob got %q", m.Text)
	}
	d, in := nextCopy(t, lc, &box, alice)
	if string(d.To) != "bob" || string(in.Body) != "from alice's client" || string(in.To) != "bob" {
		t.Fatalf("the laptop's copy of what alice sent: to %s, %+v", d.To, in)
	}
	go func() { // what else comes to the laptop (receipts) is acknowledged
		for d := range lc.Deliveries() {
			lc.Ack(d.ServerID)
		}
	}()

	// The laptop writes to bob, with a copy for alice's client.
	m := sealedSend(t, &box, "alice", "bob", "from the laptop",
		map[uint64]proto.PublicKey{bob.Identity().KeyID("bob"): bob.Identity().Box.Public},
		map[uint64]proto.PublicKey{alice.Identity().KeyID("alice"): alice.Identity().Box.Public})
	answer := make(chan error, 1)
	go func() { // answered once bob's client and alice's have it
		typ, _, err := request(t, lc, func(b []byte, id uint32) []byte { return m.Append(b, id) })
		if err == nil && typ != proto.TSent {
			err = fmt.Errorf("answered %#x", uint8(typ))
		}
		answer <- err
	}()
	if got := recvOne(t, bob); got.Text != "from the laptop" || got.From != "alice" {
		t.Fatalf("bob got %+v", got)
	}
	if got := recvOne(t, alice); got.Text != "from the laptop" || got.From != "alice" || got.To != "bob" || !got.Mine {
		t.Fatalf("alice's client shows %+v, want what she sent to bob", got)
	}
	if err := <-answer; err != nil {
		t.Fatalf("the laptop's send: %v", err)
	}
}

// TestSendDevicesRefused: the server refuses a message whose devices are
// not the lists as they stand, naming what is missing and what is extra,
// and stores it for no one. The sender is an ordinary account (mallory)
// speaking the protocol.
func TestSendDevicesRefused(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, _ := contacts(t, s)
	mallory := testserver.Signup(t, s, "mallory")
	testserver.Acquaint(t, mallory, alice)
	box := newBox(t)
	laptop, _ := testserver.AddDevice(t, alice, "laptop", &box)
	first := alice.Identity().KeyID("alice")
	mbox := mallory.Identity().Box
	mismatch := func(name string, m *proto.SendDMDevices) *proto.DevicesMismatch {
		t.Helper()
		typ, body, err := request(t, mallory.Conn(), func(b []byte, id uint32) []byte { return m.Append(b, id) })
		if err != nil || typ != proto.TDevicesMismatch {
			t.Fatalf("%s: answered %#x %v, want DevicesMismatch", name, uint8(typ), err)
		}
		var mm proto.DevicesMismatch
		if err := mm.Parse(body); err != nil {
			t.Fatal(err)
		}
		return &mm
	}
	firstOnly := map[uint64]proto.PublicKey{first: alice.Identity().Box.Public}
	mm := mismatch("without the laptop", sealedSend(t, &mbox, "mallory", "alice", "x", firstOnly, nil))
	if len(mm.Users) != 1 || string(mm.Users[0].User) != "alice" || len(mm.Users[0].Missing) != 1 || mm.Users[0].Missing[0] != laptop.DeviceID || len(mm.Users[0].Extra) != 0 {
		t.Fatalf("without the laptop: %+v", mm.Users)
	}
	all := map[uint64]proto.PublicKey{first: alice.Identity().Box.Public, laptop.DeviceID: box.Public, 0xbad: box.Public}
	mm = mismatch("with a device not on the list", sealedSend(t, &mbox, "mallory", "alice", "x", all, nil))
	if len(mm.Users) != 1 || len(mm.Users[0].Missing) != 0 || len(mm.Users[0].Extra) != 1 || mm.Users[0].Extra[0] != 0xbad {
		t.Fatalf("with a device not on the list: %+v", mm.Users)
	}
	delete(all, 0xbad)
	mm = mismatch("with a copy for a device of its own it does not have", sealedSend(t, &mbox, "mallory", "alice", "x", all, map[uint64]proto.PublicKey{first: box.Public}))
	if len(mm.Users) != 1 || string(mm.Users[0].User) != "mallory" || len(mm.Users[0].Extra) != 1 {
		t.Fatalf("with an extra copy of its own: %+v", mm.Users)
	}
	// The form for one device, to an account with two.
	sealed, _ := proto.SealBody(nil, make([]byte, proto.PadBucket), proto.SharedKey(&mbox.Private, alice.Identity().Box.Public), nil)
	dm := proto.SendDM{To: []byte("alice"), KeyID: first, MsgID: bytes.Repeat([]byte{7}, proto.MsgIDLen), Kind: proto.KindText, Body: sealed}
	typ, _, err := request(t, mallory.Conn(), func(b []byte, id uint32) []byte { return dm.Append(b, id) })
	if err != nil || typ != proto.TDevicesMismatch {
		t.Fatalf("the form for one device: %#x %v", uint8(typ), err)
	}
	if n := inboxLen(t, s, "alice", first) + inboxLen(t, s, "alice", laptop.DeviceID); n != 0 {
		t.Fatalf("refused sends left %d messages in alice's inboxes", n)
	}

	// A copy whose wrap is not mallory's device's is rejected by alice's
	// client, not shown.
	rejected := make(chan client.Event, 4)
	testserver.OnEvent(alice, func(ev client.Event) {
		if ev.Kind == client.EventRejected {
			rejected <- ev
		}
	})
	other := newBox(t)
	m := sealedSend(t, &other, "mallory", "alice", "forged", all, nil)
	typ, _, err = request(t, mallory.Conn(), func(b []byte, id uint32) []byte { return m.Append(b, id) })
	if err != nil || typ != proto.TSent {
		t.Fatalf("a well-formed send: %#x %v", uint8(typ), err)
	}
	select {
	case ev := <-rejected:
		if ev.User != "mallory" || !errors.Is(ev.Err, client.ErrRejected) {
			t.Fatalf("rejected: %+v", ev)
		}
	case m := <-testserver.Messages(alice):
		t.Fatalf("alice's client showed %+v", m)
	case <-time.After(10 * time.Second):
		t.Fatal("alice's client did not reject the forged copy")
	}
}

// TestSendAfterDeviceAdded: a sender whose client read the receiver's
// list before a device was added (it was not told: a send-only session
// gets no news) is refused by the server, reads the list again, and
// seals for the new device too.
func TestSendAfterDeviceAdded(t *testing.T) {
	s := testserver.Start(t, nil)
	alice := testserver.Signup(t, s, "alice")
	cfg := testserver.ClientConfig(t, s)
	bob := signup(t, cfg, "bob")
	testserver.Acquaint(t, alice, bob)
	testserver.Acquaint(t, bob, alice)
	bob.Close()
	cfg.SendOnly = true
	sender, err := client.Open(ctxT(t), cfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	if _, err := sender.SendText(ctxT(t), "alice", "before"); err != nil {
		t.Fatal(err)
	}
	recvOne(t, alice)
	box := newBox(t)
	laptop, key := testserver.AddDevice(t, alice, "laptop", &box)
	lc, err := deviceConn(t, s, "alice", laptop, key)
	if err != nil {
		t.Fatal(err)
	}
	sent := send(t, sender, "alice", "after")
	if m := recvOne(t, alice); m.Text != "after" {
		t.Fatalf("alice's client got %q", m.Text)
	}
	if _, in := nextCopy(t, lc, &box, sender); string(in.Body) != "after" {
		t.Fatalf("the laptop got %q", in.Body)
	}
	<-sent // (a failed send fails the test)
}

// TestOlderClientTold: a device whose client speaks a version before 4
// cannot open a message sealed for devices: the server closes its
// connection, saying to upgrade, and the message waits in its inbox for a
// client that can.
func TestOlderClientTold(t *testing.T) {
	s := testserver.Start(t, nil)
	alice, bob := contacts(t, s)
	box := newBox(t)
	laptop, key := testserver.AddDevice(t, alice, "laptop", &box)
	old, err := client.Dial(ctxT(t), s.Addr(), client.DialOptions{MaxVersion: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if _, err := old.LoginDevice(ctxT(t), "alice", laptop.DeviceID, key, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendText(ctxT(t), "alice", "sealed for devices"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-old.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the version 3 connection was not closed")
	}
	var ce *client.ClosedError
	if !errors.As(old.Err(), &ce) || ce.Reason != proto.CloseUpgrade {
		t.Fatalf("the version 3 connection ended with %v, want Close upgrade", old.Err())
	}
	if n := inboxLen(t, s, "alice", laptop.DeviceID); n != 1 {
		t.Fatalf("the laptop's inbox holds %d, want the message", n)
	}
	lc, err := deviceConn(t, s, "alice", laptop, key)
	if err != nil {
		t.Fatal(err)
	}
	if text := openText(t, delivery(t, lc), &box, bob); text != "sealed for devices" {
		t.Fatalf("the laptop, upgraded, got %q", text)
	}
}
