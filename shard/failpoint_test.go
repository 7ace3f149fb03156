//go:build failpoints

package shard_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"securefastchat/internal/testserver"
	"securefastchat/proto"
	"securefastchat/shard"
)

// F8: a panic in one connection's handler, or in a shard loop while routing,
// is contained: counted and logged, other connections and shards go on,
// and nothing acknowledged is lost.
func TestInjectedPanics(t *testing.T) {
	s := testserver.Start(t, nil)
	alice := testserver.Signup(t, s, "alice")
	bob := testserver.Signup(t, s, "bob")
	victim := testserver.Signup(t, s, "victim")
	// (The victim has written to alice, so what she sends it goes live,
	// through the shard loop, rather than first to the store.)
	testserver.Acquaint(t, alice, victim)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	shard.SetFailpoint(func(where, user string) {
		if user == "victim" {
			panic("injected at " + where)
		}
	})
	defer shard.SetFailpoint(nil)
	// The victim's next request panics its reader: its connection ends.
	// The client resends it after each reconnect (it may be read again),
	// so it fails only when its own deadline passes.
	vctx, vcancel := context.WithTimeout(ctx, 2*time.Second)
	if _, err := victim.SendText(vctx, "bob", "x"); err == nil {
		t.Fatal("the victim's send went through")
	}
	vcancel()
	// From here only routing to the victim panics, so the connection its
	// client makes again (which asks things of the server as it starts)
	// stays up to be routed to.
	shard.SetFailpoint(func(where, user string) {
		if user == "victim" && where == "route" {
			panic("injected at " + where)
		}
	})
	// The victim's client reconnects by itself.
	deadline := time.Now().Add(10 * time.Second)
	for s.Set.Online() < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// Routing to the victim panics the shard loop for that event: the
	// sender gets a retryable error, not an ack. (Until the victim's new
	// connection is in the directory, a send is stored for it instead,
	// and answered queued: the count above may still see its old one.)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		if _, err = alice.SendText(ctx, "victim", "to the victim"); err == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if !errors.Is(err, proto.CodeInternal) {
		t.Fatalf("send to the victim: %v", err)
	}
	// Everyone else is unaffected, on both shards.
	for i := 0; i < 5; i++ {
		if _, err := alice.SendText(ctx, "bob", "fine"); err != nil {
			t.Fatalf("other traffic: %v", err)
		}
		if m := <-testserver.Messages(bob); m.Text != "fine" {
			t.Fatal("wrong message")
		}
		if _, err := bob.SendText(ctx, "alice", "fine too"); err != nil {
			t.Fatal(err)
		}
		<-testserver.Messages(alice)
	}
	if n := s.Set.Stats.Panics.Load(); n < 2 {
		t.Fatalf("panics counted: %d", n)
	}
	// Without the fault, the victim gets what was sent to it and acked.
	shard.SetFailpoint(nil)
	if r, err := alice.SendText(ctx, "victim", "after the fault"); err != nil || r == nil {
		t.Fatalf("after the fault: %v", err)
	}
	for {
		m := <-testserver.Messages(victim)
		if m.Text == "after the fault" {
			break
		}
	}
	t.Logf("faults: F8 injected panics: %d contained; other connections and shards unaffected", s.Set.Stats.Panics.Load())
}
