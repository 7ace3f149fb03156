package shard_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
	"securefastchat/shard"
)

// events collects a client's events.
type events struct {
	mu  sync.Mutex
	evs []client.Event
}

func (e *events) add(ev client.Event) { e.mu.Lock(); e.evs = append(e.evs, ev); e.mu.Unlock() }

func (e *events) count(kind client.EventKind, user string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.evs {
		if ev.Kind == kind && ev.User == user {
			n++
		}
	}
	return n
}

// signupEvents signs up user with delivery receipts on and its events kept.
func signupEvents(t *testing.T, s *server.Server, user string) (*client.Client, *events) {
	t.Helper()
	ev := &events{}
	cfg := testserver.ClientConfig(t, s)
	cfg.DeliveryReceipts = true
	c, err := client.Signup(ctxT(t), cfg, user, pw)
	if err != nil {
		t.Fatal(err)
	}
	testserver.OnEvent(c, ev.add)
	t.Cleanup(func() { c.Close() })
	return c, ev
}

// TestMessageRequests: a stranger's message arrives as a request; nothing
// flows back before the receiver accepts: no delivery or read receipt, no
// typing either way. Accepting (without writing) makes it a contact:
// receipts and typing flow and messages go live.
func TestMessageRequests(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Limits.SignupBurst = 100 })
	bob, bobEv := signupEvents(t, s, "bob")
	mallory, malEv := signupEvents(t, s, "mallory")
	if _, err := mallory.SendText(ctxT(t), "bob", "hi, I am new here"); err != nil {
		t.Fatal(err)
	}
	m := recvOne(t, bob)
	if !m.Request || m.From != "mallory" || !bob.IsRequest("mallory") {
		t.Fatalf("a stranger's message: %+v (request %v)", m, bob.IsRequest("mallory"))
	}
	bob.MarkRead("mallory", "", m.MsgID)
	bob.SendTyping(ctxT(t), "mallory", "", true)
	mallory.SendTyping(ctxT(t), "bob", "", true)
	time.Sleep(500 * time.Millisecond) // receipts gather for 150 ms
	if n := malEv.count(client.EventReceipt, "bob"); n != 0 {
		t.Fatalf("mallory got %d receipts for a request", n)
	}
	if malEv.count(client.EventTyping, "bob") != 0 || bobEv.count(client.EventTyping, "mallory") != 0 {
		t.Fatal("typing passed before the request was accepted")
	}

	// Accepting makes a contact: mallory's next message is live and not a
	// request, and receipts and typing flow.
	if err := bob.Accept(ctxT(t), "mallory"); err != nil {
		t.Fatal(err)
	}
	if bob.IsRequest("mallory") {
		t.Fatal("still a request after Accept")
	}
	r, err := mallory.SendText(ctxT(t), "bob", "thanks")
	if err != nil || r.Status != proto.StatusDelivered {
		t.Fatalf("after the accept: %+v %v", r, err)
	}
	if m := recvOne(t, bob); m.Request {
		t.Fatal("a message from someone accepted came as a request")
	}
	bob.SendTyping(ctxT(t), "mallory", "", true)
	waitUntil(t, "a delivery receipt and typing reach mallory", func() bool {
		return malEv.count(client.EventReceipt, "bob") > 0 && malEv.count(client.EventTyping, "bob") > 0
	})
}

// TestBlock: the attacker is an ordinary account. Once bob blocks mallory,
// what mallory sends is answered exactly as before ("queued") and never
// reaches bob, online or not, directly or in a group they share; what she
// had queued for him is gone; bob cannot write to her by mistake; the
// block is listed and can be undone, after which she is a stranger again.
func TestBlock(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Limits.SignupBurst = 100 })
	cfg := testserver.ClientConfig(t, s)
	bob, err := client.Signup(ctxT(t), cfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	mallory := testserver.Signup(t, s, "mallory")
	alice := testserver.Signup(t, s, "alice")
	testserver.Acquaint(t, alice, bob)
	// Two of mallory's wait while bob is away; a session of bob's that
	// takes no deliveries blocks her.
	bob.Close()
	for _, text := range []string{"spam 1", "spam 2"} {
		if _, err := mallory.SendText(ctxT(t), "bob", text); err != nil {
			t.Fatal(err)
		}
	}
	if n, _, _ := s.Store.QueueLen("bob"); n != 2 {
		t.Fatalf("bob's queue holds %d", n)
	}
	cfg.SendOnly = true
	side, err := client.Open(ctxT(t), cfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer side.Close()
	if err := side.Block(ctxT(t), "Mallory"); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := s.Store.QueueLen("bob"); n != 0 {
		t.Fatalf("after the block bob's queue holds %d of mallory's", n)
	}
	if l, err := side.Blocked(ctxT(t)); err != nil || !slices.Equal(l, []string{"mallory"}) {
		t.Fatalf("blocked list %v %v", l, err)
	}
	// Bob online again; so are group messages from her in a group they
	// share (alice's).
	cfg.SendOnly = false
	bob2, err := client.Open(ctxT(t), cfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer bob2.Close()
	if err := alice.CreateGroup(ctxT(t), "team"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob", "mallory"} {
		if err := alice.AddMember(ctxT(t), "team", u); err != nil {
			t.Fatal(err)
		}
	}
	testserver.Join(t, mallory, "team") // (alice is a stranger to her)
	before := s.Set.Stats.BlockedDropped.Load()
	r, err := mallory.SendText(ctxT(t), "bob", "spam 3")
	if err != nil || r.Status != proto.StatusQueued {
		t.Fatalf("a blocked sender's message: %+v %v (want it answered queued, as any request)", r, err)
	}
	if _, err := mallory.SendGroupText(ctxT(t), "team", "group spam"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendGroupText(ctxT(t), "team", "real news"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendText(ctxT(t), "bob", "and a direct one"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 2 {
		m := recvOne(t, bob2)
		if m.From == "mallory" {
			t.Fatalf("bob got mallory's %q after blocking her", m.Text)
		}
		got = append(got, m.Text)
	}
	select {
	case m := <-testserver.Messages(bob2):
		t.Fatalf("bob got %+v", m)
	case <-time.After(300 * time.Millisecond):
	}
	if d := s.Set.Stats.BlockedDropped.Load() - before; d != 2 {
		t.Fatalf("%d dropped, want 2 (one direct, one group)", d)
	}
	if _, err := bob2.SendText(ctxT(t), "mallory", "oops"); !errors.Is(err, proto.CodeForbidden) {
		t.Fatalf("writing to someone blocked: %v", err)
	}
	// Unblocked (and out of the group), she is a stranger again: her
	// message comes as a request.
	if err := alice.RemoveMember(ctxT(t), "team", "mallory"); err != nil {
		t.Fatal(err)
	}
	if err := bob2.Unblock(ctxT(t), "mallory"); err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.SendText(ctxT(t), "bob", "again"); err != nil {
		t.Fatal(err)
	}
	for {
		m := recvOne(t, bob2)
		if m.From == "mallory" {
			if m.Text != "again" || !m.Request {
				t.Fatalf("after the unblock: %+v", m)
			}
			break
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("never: %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestGroupInvitation: the attacker is an ordinary account. Adding a
// stranger to a group only invites them: nothing of the group reaches or
// is queued for them, it makes no contact (their direct messages are
// still requests, no presence), and they cannot post, until they join.
// Someone they have written to adds them as a member outright.
func TestGroupInvitation(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Limits.SignupBurst = 100 })
	bob, bobEv := signupEvents(t, s, "bob")
	mallory := testserver.Signup(t, s, "mallory")
	alice := testserver.Signup(t, s, "alice")
	if err := mallory.CreateGroup(ctxT(t), "prize"); err != nil {
		t.Fatal(err)
	}
	if err := mallory.AddMember(ctxT(t), "prize", "bob"); err != nil {
		t.Fatal(err)
	}
	invs, err := bob.GroupInvites(ctxT(t))
	if err != nil || len(invs) != 1 || invs[0] != (client.GroupInvite{Group: "prize", By: "mallory"}) {
		t.Fatalf("bob's invitations %+v %v", invs, err)
	}
	before, _, _ := s.Store.QueueLen("bob")
	if _, err := mallory.SendGroupText(ctxT(t), "prize", "claim your prize"); err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.SendText(ctxT(t), "bob", "did you see the group?"); err != nil {
		t.Fatal(err)
	}
	m := recvOne(t, bob)
	if m.Group != "" || !m.Request {
		t.Fatalf("bob got %+v: want only mallory's direct message, as a request", m)
	}
	select {
	case m := <-testserver.Messages(bob):
		t.Fatalf("an invited member got %+v", m)
	case <-time.After(300 * time.Millisecond):
	}
	if n, _, _ := s.Store.QueueLen("bob"); n > before {
		t.Fatalf("something of the group waits for bob: %d queued", n)
	}
	if bobEv.count(client.EventPresence, "mallory") != 0 {
		t.Fatal("an invitation made bob see mallory's presence")
	}
	if _, err := bob.SendGroupText(ctxT(t), "prize", "hi"); !errors.Is(err, proto.CodeForbidden) {
		t.Fatalf("an invited member posting: %v", err)
	}
	// Bob joins: the group's messages reach him.
	if err := bob.JoinGroup(ctxT(t), "prize"); err != nil {
		t.Fatal(err)
	}
	if invs, _ := bob.GroupInvites(ctxT(t)); len(invs) != 0 {
		t.Fatalf("invitations after joining %+v", invs)
	}
	if _, err := mallory.SendGroupText(ctxT(t), "prize", "welcome"); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, bob); m.Group != "prize" || m.Text != "welcome" {
		t.Fatalf("after joining: %+v", m)
	}
	// Someone bob has written to adds him as a member outright.
	if _, err := bob.SendText(ctxT(t), "alice", "hi alice"); err != nil {
		t.Fatal(err)
	}
	if err := alice.CreateGroup(ctxT(t), "friends"); err != nil {
		t.Fatal(err)
	}
	if err := alice.AddMember(ctxT(t), "friends", "bob"); err != nil {
		t.Fatal(err)
	}
	if invs, _ := bob.GroupInvites(ctxT(t)); len(invs) != 0 {
		t.Fatalf("a contact's group is an invitation: %+v", invs)
	}
	if _, err := alice.SendGroupText(ctxT(t), "friends", "hello friends"); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, bob); m.Group != "friends" {
		t.Fatalf("bob got %+v", m)
	}
}

// TestCloseReasonsCounted: each closed connection is counted once, under
// the first reason it was closed for; drops are counted by reason.
func TestCloseReasonsCounted(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Limits.SignupBurst = 100 })
	st := &s.Set.Stats
	cfg := testserver.ClientConfig(t, s)
	alice, err := client.Signup(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	// A second receiving session of alice's replaces the first.
	alice2, err := client.Open(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer alice2.Close()
	waitUntil(t, "a close counted as replaced", func() bool { return st.Closes[shard.CloseReplaced].Load() == 1 })
	// A frame that does not open: a protocol close, counted once (not
	// again as the peer's end when the reader exits).
	r := dialRaw(t, s)
	r.signup("mallory")
	r.nc.Write([]byte{0, 40})
	r.nc.Write(make([]byte, 40))
	waitUntil(t, "a close counted as protocol", func() bool { return st.Closes[shard.CloseProtocol].Load() == 1 })
	time.Sleep(100 * time.Millisecond)
	if n := st.Closes[shard.ClosePeer].Load(); n != 0 {
		t.Fatalf("%d closes counted as the peer's as well", n)
	}
	// A typing signal to a stranger is dropped, and counted so.
	if err := alice2.SendTyping(ctxT(t), "mallory", "", true); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a drop counted as not accepted", func() bool { return st.Drops[shard.DropNotAccepted].Load() == 1 })
}
