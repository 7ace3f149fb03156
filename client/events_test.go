package client_test

import (
	"fmt"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/testserver"
)

// TestEventsOneChannel: everything reaches the application on Events, in
// order, and a message is acknowledged only once it is on the channel. An
// application that stops reading holds back what is queued for it on the
// server, and nothing is lost or shown twice when it comes back.
func TestEventsOneChannel(t *testing.T) {
	s := testserver.Start(t, nil)
	cfg := testserver.ClientConfig(t, s)
	cfg.Events = 8
	bob, err := client.Signup(ctxT(t), cfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	alice := testserver.Signup(t, s, "alice")

	// The client says it is connected (after the presence list that came
	// with the login).
	for connected := false; !connected; {
		select {
		case ev := <-bob.Events():
			switch ev.Kind {
			case client.EventPresence:
			case client.EventConnection:
				if ev.State != client.StateConnected {
					t.Fatalf("connection event: %+v", ev)
				}
				connected = true
			default:
				t.Fatalf("before the connection event: %+v", ev)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no connection event")
		}
	}

	// Bob reads nothing: the channel (8) fills, the receiver waits, and
	// the rest stays queued on the server, not acknowledged.
	const n = 40
	for i := range n {
		if _, err := alice.SendText(ctxT(t), "bob", fmt.Sprintf("m%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second) // time enough to take all 40, were it not waiting
	queued, _, err := s.Store.QueueLen("bob")
	if err != nil {
		t.Fatal(err)
	}
	if queued < n-8-1 { // the channel's 8 and the one the receiver waits on
		t.Fatalf("%d of %d left queued while bob read nothing: more were acknowledged than handed over", queued, n)
	}

	// Bob reads the channel until it is closed: what was handed over is
	// his; the rest comes with his next session.
	got := map[string]int{}
	bob.Close()
	for ev := range bob.Events() {
		if ev.Kind == client.EventMessage {
			got[ev.Message.Text]++
		}
	}
	bob, err = client.Open(ctxT(t), cfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	for len(got) < n {
		select {
		case ev := <-bob.Events():
			if ev.Kind == client.EventMessage {
				got[ev.Message.Text]++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("bob has %d of %d messages", len(got), n)
		}
	}
	for text, k := range got {
		if k != 1 {
			t.Errorf("%s shown %d times", text, k)
		}
	}
}

// TestEventsOrdered: an event posted without waiting (the connection's
// state) and the messages the receiver hands over share one order: what
// happened first is read first.
func TestEventsOrdered(t *testing.T) {
	s := testserver.Start(t, nil)
	ann := testserver.Signup(t, s, "ann")
	cfg := testserver.ClientConfig(t, s)
	bob, err := client.Signup(ctxT(t), cfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	for i := range 3 {
		if _, err := ann.SendText(ctxT(t), "bob", fmt.Sprint("first ", i)); err != nil {
			t.Fatal(err)
		}
	}
	var seq []string
	deadline := time.After(10 * time.Second)
	for len(seq) < 4 {
		select {
		case ev := <-bob.Events():
			switch ev.Kind {
			case client.EventConnection:
				seq = append(seq, "conn "+ev.State.String())
			case client.EventMessage:
				seq = append(seq, ev.Message.Text)
			}
		case <-deadline:
			t.Fatalf("events so far: %q", seq)
		}
	}
	want := []string{"conn connected", "first 0", "first 1", "first 2"}
	if fmt.Sprint(seq) != fmt.Sprint(want) {
		t.Fatalf("events %q, want %q", seq, want)
	}
}
