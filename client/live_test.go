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
	"securefastchat/shard"
)

// events collects a client's events.
type events chan client.Event

func (e events) on(ev client.Event) {
	select {
	case e <- ev:
	default:
		panic("test event buffer full")
	}
}

// wait returns the first event that matches, failing after 10 s.
func (e events) wait(t *testing.T, what string, match func(client.Event) bool) client.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-e:
			if match(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s within 10s", what)
		}
	}
}

// none fails if an event that matches arrives within d.
func (e events) none(t *testing.T, what string, d time.Duration, match func(client.Event) bool) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev := <-e:
			if match(ev) {
				t.Fatalf("unexpected %s: %+v", what, ev)
			}
		case <-deadline:
			return
		}
	}
}

func presence(user string, online bool) func(client.Event) bool {
	return func(ev client.Event) bool {
		return ev.Kind == client.EventPresence && ev.User == user && ev.Online == online
	}
}

// liveUser signs up a user whose events go to the returned channel, then
// logs them in again so the test can log them out and in.
func liveUser(t *testing.T, s *server.Server, name string, receipts bool) (*client.Client, events, client.Config) {
	t.Helper()
	ev := make(events, 1000)
	cfg := testserver.ClientConfig(t, s)
	cfg.DeliveryReceipts = receipts
	c, err := client.Signup(ctxT(t), cfg, name, pw)
	if err != nil {
		t.Fatal(err)
	}
	testserver.OnEvent(c, ev.on)
	t.Cleanup(func() { c.Close() })
	return c, ev, cfg
}

func TestPresenceContacts(t *testing.T) {
	s := testserver.Start(t, nil)
	ctx := ctxT(t)
	ann, annEv, _ := liveUser(t, s, "ann", false)
	bob, bobEv, bobCfg := liveUser(t, s, "bob", false)
	eve, eveEv, _ := liveUser(t, s, "eve", false)

	// Strangers see nothing of each other.
	annEv.none(t, "presence of a stranger", 300*time.Millisecond, func(ev client.Event) bool { return ev.Kind == client.EventPresence && ev.User != "" })

	// A first direct message is a request: it makes no contact, and
	// neither learns the other's presence.
	if _, err := ann.SendText(ctx, "bob", "hi"); err != nil {
		t.Fatal(err)
	}
	annEv.none(t, "presence of someone who has not written back", 300*time.Millisecond, func(ev client.Event) bool { return ev.Kind == client.EventPresence && ev.User != "" })
	// Bob writes back: they are contacts, and each learns the other is
	// online at once.
	if _, err := bob.SendText(ctx, "ann", "hi ann"); err != nil {
		t.Fatal(err)
	}
	annEv.wait(t, "bob online", presence("bob", true))
	bobEv.wait(t, "ann online", presence("ann", true))
	if !ann.IsOnline("bob") {
		t.Fatal("IsOnline(bob) is false after his presence arrived")
	}

	// Bob goes: ann is told; eve, a stranger, is not.
	bob.Close()
	annEv.wait(t, "bob offline", presence("bob", false))
	// Bob comes back: the login list names ann; ann is told bob is back.
	bob2, err := client.Login(ctx, bobCfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	testserver.OnEvent(bob2, bobEv.on)
	defer bob2.Close()
	bobEv.wait(t, "a fresh presence list", func(ev client.Event) bool { return ev.Kind == client.EventPresence && ev.Reset })
	bobEv.wait(t, "ann in the login list", presence("ann", true))
	annEv.wait(t, "bob back", presence("bob", true))
	if on, known := bob2.Online(); !known || len(on) != 1 || on[0] != "ann" {
		t.Fatalf("bob's online list %v (known %v), want [ann]", on, known)
	}
	eveEv.none(t, "presence of a stranger", 200*time.Millisecond, func(ev client.Event) bool { return ev.Kind == client.EventPresence && ev.User != "" })

	// Joining a group makes eve a contact of its members.
	if err := ann.CreateGroup(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	if err := ann.AddMember(ctx, "team", "eve"); err != nil {
		t.Fatal(err)
	}
	testserver.Join(t, eve, "team")
	eveEv.wait(t, "ann online", presence("ann", true))
	annEv.wait(t, "eve online", presence("eve", true))
}

func TestPresenceModes(t *testing.T) {
	for _, mode := range []shard.PresenceMode{shard.PresenceAll, shard.PresenceOff} {
		t.Run(string(mode), func(t *testing.T) {
			s := testserver.Start(t, func(c *server.Config) { c.Shard.Presence = mode })
			_, annEv, _ := liveUser(t, s, "ann", false)
			bob, _, _ := liveUser(t, s, "bob", false)
			if mode == shard.PresenceAll {
				annEv.wait(t, "a stranger's presence", presence("bob", true))
				bob.Close()
				annEv.wait(t, "bob offline", presence("bob", false))
				return
			}
			annEv.none(t, "any presence", 500*time.Millisecond, func(ev client.Event) bool { return ev.Kind == client.EventPresence })
			if _, known := bob.Online(); known {
				t.Fatal("presence is off, but the client says it knows who is online")
			}
		})
	}
}

func TestBroadcast(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Shard.BroadcastBurst = 2; c.Shard.Admins = []string{"ann"} })
	ctx := ctxT(t)
	ann, annEv, _ := liveUser(t, s, "ann", false)
	_, bobEv, _ := liveUser(t, s, "bob", false)
	_, eveEv, _ := liveUser(t, s, "eve", false)
	n, err := ann.Broadcast(ctx, "fire drill at 3 — é ✓")
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("reached %d, want 2", n)
	}
	for _, e := range []events{bobEv, eveEv} {
		ev := e.wait(t, "the broadcast", func(ev client.Event) bool { return ev.Kind == client.EventBroadcast })
		if ev.User != "ann" || ev.Text != "fire drill at 3 — é ✓" || time.Since(ev.Time) > time.Minute {
			t.Fatalf("got %+v", ev)
		}
	}
	annEv.none(t, "own broadcast", 200*time.Millisecond, func(ev client.Event) bool { return ev.Kind == client.EventBroadcast })
	// Rate limited per user (a burst of 2 here).
	if _, err := ann.Broadcast(ctx, "again"); err != nil {
		t.Fatal(err)
	}
	if _, err := ann.Broadcast(ctx, "and again"); !errors.Is(err, proto.CodeRateLimited) {
		t.Fatalf("third broadcast: %v, want rate_limited", err)
	}
	// Bad text is refused by the client before it goes.
	if _, err := ann.Broadcast(ctx, ""); err == nil {
		t.Fatal("empty broadcast accepted")
	}
	if _, err := ann.Broadcast(ctx, string(make([]byte, proto.MaxBroadcastLen+1))); err == nil {
		t.Fatal("oversized broadcast accepted")
	}
	// And by the server, with the connection still usable.
	raw := (&proto.Broadcast{Text: []byte("\xff\xfe")}).Append(nil, 0)
	_, _, err = ann.Conn().Request(ctx, func(b []byte, id uint32) []byte { return append(b, proto.AppendHeader(nil, proto.TBroadcast, id)...) })
	if !errors.Is(err, proto.CodeBadRequest) {
		t.Fatalf("empty broadcast frame: %v", err)
	}
	_, _, err = ann.Conn().Request(ctx, func(b []byte, id uint32) []byte {
		return append(proto.AppendHeader(b, proto.TBroadcast, id), raw[proto.MsgHeaderLen:]...)
	})
	if !errors.Is(err, proto.CodeBadRequest) {
		t.Fatalf("broadcast of invalid UTF-8: %v", err)
	}
	if _, err := ann.SendText(ctx, "bob", "still here"); err != nil {
		t.Fatalf("connection after refused broadcasts: %v", err)
	}
}

// TestBroadcastCaps: a user who is not an admin is not told how many are
// online; broadcasts are capped per address (many accounts on one
// machine) and on the whole server, each refusal saying when to retry.
func TestBroadcastCaps(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Shard.Admins = []string{"root"}; c.Limits.SignupBurst = 100 })
	ctx := ctxT(t)
	var users []*client.Client
	for _, u := range []string{"u1", "u2", "u3"} {
		c, _, _ := liveUser(t, s, u, false)
		users = append(users, c)
	}
	if n, err := users[0].Broadcast(ctx, "hello"); err != nil || n != -1 {
		t.Fatalf("a user's broadcast: reached %d (%v), want the count hidden", n, err)
	}
	// Per user 3, per address 6: the seventh from this address is refused.
	sent, refused := 1, error(nil)
	for _, c := range users {
		for i := 0; i < 3 && refused == nil; i++ {
			if c == users[0] && i == 0 {
				continue
			}
			if _, err := c.Broadcast(ctx, "hello"); err != nil {
				refused = err
				break
			}
			sent++
		}
	}
	if sent != 6 || !errors.Is(refused, proto.CodeRateLimited) || !strings.Contains(refused.Error(), "from this address") || !strings.Contains(refused.Error(), "retry in") {
		t.Fatalf("%d broadcasts went from one address, then %v", sent, refused)
	}
	root, _, _ := liveUser(t, s, "root", false)
	if _, err := root.Broadcast(ctx, "x"); !errors.Is(err, proto.CodeRateLimited) {
		t.Fatalf("an admin's broadcast from the capped address: %v", err)
	}
}

// TestBroadcastCapAll: broadcasts are capped on the whole server (4 here,
// from an address with room); an admin is told how many it reached.
func TestBroadcastCapAll(t *testing.T) {
	ctx := ctxT(t)
	s2 := testserver.Start(t, func(c *server.Config) {
		c.Shard.Admins = []string{"root"}
		c.Shard.BroadcastAddrBurst = 1000
		c.Shard.BroadcastAllBurst = 4
		c.Shard.BroadcastAllEvery = time.Hour
		c.Limits.SignupBurst = 100
	})
	root2, _, _ := liveUser(t, s2, "root", false)
	other, _, _ := liveUser(t, s2, "other", false)
	if n, err := root2.Broadcast(ctx, "count"); err != nil || n != 1 {
		t.Fatalf("an admin's broadcast: reached %d (%v), want 1", n, err)
	}
	for i, c := range []*client.Client{root2, other, other} {
		if _, err := c.Broadcast(ctx, "x"); err != nil {
			t.Fatalf("broadcast %d: %v", i+2, err)
		}
	}
	if _, err := other.Broadcast(ctx, "x"); !errors.Is(err, proto.CodeRateLimited) || !strings.Contains(err.Error(), "on this server") {
		t.Fatalf("the fifth broadcast on the server: %v", err)
	}
}

func TestBroadcastPolicy(t *testing.T) {
	for _, tc := range []struct {
		policy shard.BroadcastPolicy
		annOK  bool
	}{{shard.BroadcastAdmins, true}, {shard.BroadcastOff, false}} {
		t.Run(string(tc.policy), func(t *testing.T) {
			s := testserver.Start(t, func(c *server.Config) {
				c.Shard.Broadcast = tc.policy
				c.Shard.Admins = []string{"ann"}
			})
			ctx := ctxT(t)
			ann, _, _ := liveUser(t, s, "ann", false)
			bob, _, _ := liveUser(t, s, "bob", false)
			_, err := ann.Broadcast(ctx, "from an admin")
			if tc.annOK != (err == nil) {
				t.Fatalf("admin broadcast: %v", err)
			}
			if _, err := bob.Broadcast(ctx, "from a user"); !errors.Is(err, proto.CodeForbidden) {
				t.Fatalf("user broadcast: %v, want forbidden", err)
			}
		})
	}
}

func TestReceiptsAndTyping(t *testing.T) {
	s := testserver.Start(t, nil)
	ctx := ctxT(t)
	ann, annEv, _ := liveUser(t, s, "ann", true)
	bob, bobEv, bobCfg := liveUser(t, s, "bob", true)
	testserver.Acquaint(t, ann, bob) // (to a request, nothing goes back: TestMessageRequests)

	// Delivered: bob's client sends a sealed receipt once it has the
	// message; read: once bob's application marks it read.
	out, err := ann.Prepare(ctx, "bob", proto.KindText, []byte("did you get this?"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ann.Send(ctx, out); err != nil {
		t.Fatal(err)
	}
	m := recvOne(t, bob)
	want := [proto.MsgIDLen]byte(out.MsgID)
	if m.MsgID != want {
		t.Fatal("message id differs")
	}
	isReceipt := func(typ uint8) func(client.Event) bool {
		return func(ev client.Event) bool {
			return ev.Kind == client.EventReceipt && ev.Receipt == typ && ev.User == "bob" && len(ev.MsgIDs) == 1 && ev.MsgIDs[0] == want
		}
	}
	annEv.wait(t, "the delivery receipt", isReceipt(proto.ReceiptDelivered))
	bob.MarkRead(m.From, "", m.MsgID)
	annEv.wait(t, "the read receipt", isReceipt(proto.ReceiptRead))
	// Receipts are messages to the application of neither side.
	select {
	case m := <-testserver.Messages(ann):
		t.Fatalf("a receipt reached ann's messages: %+v", m)
	default:
	}

	// A receipt for a user who is away is queued like a message.
	bob.Close()
	if _, err := ann.SendText(ctx, "bob", "while you were away"); err != nil {
		t.Fatal(err)
	}
	ann.MarkRead("bob", "", [proto.MsgIDLen]byte{7})
	time.Sleep(500 * time.Millisecond) // the receipt leaves ann's queue
	bob2, err := client.Login(ctx, bobCfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	testserver.OnEvent(bob2, bobEv.on)
	defer bob2.Close()
	bobEv.wait(t, "the queued read receipt", func(ev client.Event) bool {
		return ev.Kind == client.EventReceipt && ev.User == "ann" && ev.Receipt == proto.ReceiptRead && ev.MsgIDs[0] == [proto.MsgIDLen]byte{7}
	})
	if m := recvOne(t, bob2); m.Text != "while you were away" {
		t.Fatalf("got %+v", m)
	}

	// Typing, in a direct conversation and in a group.
	if err := bob2.SendTyping(ctx, "ann", "", true); err != nil {
		t.Fatal(err)
	}
	annEv.wait(t, "bob typing", func(ev client.Event) bool {
		return ev.Kind == client.EventTyping && ev.User == "bob" && ev.Typing && ev.Group == ""
	})
	if err := ann.CreateGroup(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	if err := ann.AddMember(ctx, "team", "bob"); err != nil {
		t.Fatal(err)
	}
	if err := ann.SendTyping(ctx, "", "team", false); err != nil {
		t.Fatal(err)
	}
	bobEv.wait(t, "ann stopped typing in team", func(ev client.Event) bool {
		return ev.Kind == client.EventTyping && ev.User == "ann" && !ev.Typing && ev.Group == "team"
	})
	// A group message's delivery receipt names the group.
	if _, err := ann.SendGroupText(ctx, "team", "group hello"); err != nil {
		t.Fatal(err)
	}
	gm := recvOne(t, bob2)
	annEv.wait(t, "the group delivery receipt", func(ev client.Event) bool {
		return ev.Kind == client.EventReceipt && ev.Group == "team" && ev.User == "bob" && ev.MsgIDs[0] == gm.MsgID
	})
}

// TestStrangerLearnsNothingLive: a stranger's message makes no contact:
// the stranger is not told the receiver's presence, and its typing
// signals never reach the receiver (no "mallory typing..." from someone
// who was never answered), before or after its message.
func TestStrangerLearnsNothingLive(t *testing.T) {
	s := testserver.Start(t, nil)
	ctx := ctxT(t)
	mallory, malEv, _ := liveUser(t, s, "mallory", false)
	victim, vicEv, vicCfg := liveUser(t, s, "victim", false)
	if err := mallory.SendTyping(ctx, "victim", "", true); err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.SendText(ctx, "victim", "junk or hello"); err != nil {
		t.Fatal(err)
	}
	recvOne(t, victim)
	for i := 0; i < 5; i++ {
		if err := mallory.SendTyping(ctx, "victim", "", i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := mallory.Conn().Ping(ctx); err != nil {
		t.Fatal(err)
	}
	vicEv.none(t, "a stranger's typing", 500*time.Millisecond, func(ev client.Event) bool { return ev.Kind == client.EventTyping })
	// The victim goes and comes back: the stranger is told nothing.
	victim.Close()
	v2, err := client.Login(ctx, vicCfg, "victim", pw)
	if err != nil {
		t.Fatal(err)
	}
	testserver.OnEvent(v2, vicEv.on)
	defer v2.Close()
	malEv.none(t, "the victim's presence", 500*time.Millisecond, func(ev client.Event) bool { return ev.Kind == client.EventPresence && ev.User == "victim" })
	if mallory.IsOnline("victim") {
		t.Fatal("the stranger's client believes it knows the victim is online")
	}
}

// TestSignalsNeverQueued: typing to a user who is away is dropped, and a
// flood of signals is limited without harming the connection.
func TestSignalsNeverQueued(t *testing.T) {
	s := testserver.Start(t, nil)
	ctx := ctxT(t)
	ann, _, _ := liveUser(t, s, "ann", false)
	bob, bobEv, bobCfg := liveUser(t, s, "bob", false)
	if _, err := ann.SendText(ctx, "bob", "hello"); err != nil {
		t.Fatal(err)
	}
	recvOne(t, bob)
	if _, err := bob.SendText(ctx, "ann", "hello back"); err != nil { // (bob accepts ann: her typing may reach him)
		t.Fatal(err)
	}
	recvOne(t, ann)
	bob.Close()
	if err := ann.SendTyping(ctx, "bob", "", true); err != nil {
		t.Fatal(err)
	}
	// A round trip makes sure the server has handled the signal.
	if err := ann.Conn().Ping(ctx); err != nil {
		t.Fatal(err)
	}
	bob2, err := client.Login(ctx, bobCfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	testserver.OnEvent(bob2, bobEv.on)
	defer bob2.Close()
	bobEv.none(t, "a typing signal sent while away", 500*time.Millisecond, func(ev client.Event) bool { return ev.Kind == client.EventTyping })
	n, _, _ := s.Store.QueueLen("bob")
	if n != 0 {
		t.Fatalf("%d messages queued for bob", n)
	}
	// Flood: the server drops what is over the limit; the connection
	// lives on.
	for i := 0; i < 200; i++ {
		if err := ann.SendTyping(ctx, "bob", "", i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ann.SendText(ctx, "bob", "after the flood"); err != nil {
		t.Fatal(err)
	}
	got := 0
	deadline := time.After(2 * time.Second)
loop:
	for {
		select {
		case ev := <-bobEv:
			if ev.Kind == client.EventTyping {
				got++
			}
		case <-deadline:
			break loop
		}
	}
	if got == 0 || got >= 200 {
		t.Fatalf("bob got %d of 200 typing signals; want some, limited", got)
	}
	if m := recvOne(t, bob2); m.Text != "after the flood" {
		t.Fatalf("got %+v", m)
	}
}
