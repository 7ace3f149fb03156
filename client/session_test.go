package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

// Open resumes the session kept (sealed) in the home: many commands in a
// row cost the server no password hash (more than the per-address login
// limit allows) and leave one session, not one each. When the server
// refuses the kept session, Open logs in with the password and keeps the
// new one.
func TestSessionKeptInHome(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Limits.LoginBurst = 5 })
	cfg := testserver.ClientConfig(t, s)
	c, err := client.Signup(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	first := c.Token()
	c.Close()
	logins := s.Set.Stats.LoginsOK.Load()
	for i := 0; i < 12; i++ {
		c, err := client.Open(ctxT(t), cfg, "alice", pw)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if string(c.Token()) != string(first) {
			t.Fatalf("open %d made a new session", i)
		}
		c.Close()
	}
	if got := s.Set.Stats.LoginsOK.Load() - logins; got != 12 {
		t.Fatalf("%d logins, want 12", got)
	}
	n, err := s.Store.DeleteUserSessions("alice")
	if err != nil || n != 1 {
		t.Fatalf("alice has %d sessions (%v), want 1", n, err)
	}
	// The kept session is gone (revoked, expired, or newer than a restored
	// backup): the password logs in, and the new session is kept.
	c, err = client.Open(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatalf("open after the session was deleted: %v", err)
	}
	second := c.Token()
	c.Close()
	if string(second) == string(first) {
		t.Fatal("no new session")
	}
	c, err = client.Open(ctxT(t), cfg, "alice", pw)
	if err != nil || string(c.Token()) != string(second) {
		t.Fatalf("the new session was not kept: %v", err)
	}
	c.Close()
	// A wrong password fails on this machine, before the server.
	before := s.Set.Stats.LoginsFailed.Load()
	if _, err := client.Open(ctxT(t), cfg, "alice", "not the password"); !errors.Is(err, client.ErrBadIdentity) {
		t.Fatalf("wrong password: %v", err)
	}
	if s.Set.Stats.LoginsFailed.Load() != before {
		t.Fatal("a wrong password reached the server")
	}
}

// A running client goes on after the server restarts even when the
// server no longer knows its session (restored from a backup older than
// it): it logs in with the password. Revoked, it stops and says why; a
// receiving session opened elsewhere replaces it, it waits, and TakeOver
// takes the session back.
func TestClientStates(t *testing.T) {
	dir := t.TempDir()
	addr := freeLoopback(t)
	start := func() *server.Server {
		cfg := testserver.Config(t, dir)
		cfg.Listen = addr
		s, err := server.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := start()
	defer func() { testserver.Stop(t, s) }()
	cfg := testserver.ClientConfig(t, s)
	bob := testserver.Signup(t, s, "bob")
	c, err := client.Signup(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	events := connEvents(c)
	waitState(t, events, client.StateConnected)

	if _, err := s.Store.DeleteUserSessions("alice"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	s.Shutdown(ctx)
	cancel()
	waitState(t, events, client.StateConnecting)
	s = start()
	waitState(t, events, client.StateConnected)
	if _, err := c.SendText(ctxT(t), "bob", "after the restart"); err != nil {
		t.Fatal(err)
	}
	_ = bob

	// Another receiving session takes over: this one waits, then takes
	// the session back.
	o, err := client.Open(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	ev := waitState(t, events, client.StateReplaced)
	var ce *client.ClosedError
	if !errors.As(ev.Err, &ce) || ce.Reason != proto.CloseReplaced {
		t.Fatalf("replaced with %v", ev.Err)
	}
	if err := c.TakeOver(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitState(t, events, client.StateConnected)
	if st, _ := o.State(); st != client.StateReplaced {
		waitFor(t, func() bool { st, _ := o.State(); return st == client.StateReplaced })
	}

	// Revoked: stopped, not reconnecting, and requests fail at once.
	s.Set.Kick("alice")
	ev = waitState(t, events, client.StateStopped)
	if !errors.As(ev.Err, &ce) || ce.Reason != proto.CloseRevoked {
		t.Fatalf("stopped with %v", ev.Err)
	}
	if _, err := c.SendText(ctxT(t), "bob", "after the revoke"); !errors.As(err, &ce) {
		t.Fatalf("send after the revoke: %v", err)
	}
}

// A client started while the server is down opens at once, offline, and
// connects when the server comes; what was sent meanwhile goes then.
func TestStartOffline(t *testing.T) {
	dir := t.TempDir()
	addr := freeLoopback(t)
	cfg0 := testserver.Config(t, dir)
	cfg0.Listen = addr
	s, err := server.Start(cfg0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testserver.ClientConfig(t, s)
	c, err := client.Signup(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	testserver.Signup(t, s, "bob").Close()
	c.Close()
	testserver.Stop(t, s)

	c, err = client.Load(cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	events := connEvents(c)
	c.Start()
	waitState(t, events, client.StateConnecting)
	sent := make(chan error, 1)
	go func() {
		_, err := c.SendText(ctxT(t), "bob", "typed while the server was down")
		sent <- err
	}()
	s, err = server.Start(cfg0)
	if err != nil {
		t.Fatal(err)
	}
	defer testserver.Stop(t, s)
	waitState(t, events, client.StateConnected)
	if err := <-sent; err != nil {
		t.Fatalf("send waiting for the connection: %v", err)
	}
}

// connEvents returns c's connection events.
func connEvents(c *client.Client) <-chan client.Event {
	events := make(chan client.Event, 64)
	testserver.OnEvent(c, func(ev client.Event) {
		if ev.Kind == client.EventConnection {
			events <- ev
		}
	})
	return events
}

func waitState(t *testing.T, events <-chan client.Event, want client.ConnState) client.Event {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.State == want {
				return ev
			}
		case <-deadline:
			t.Fatalf("state %v never came", want)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func freeLoopback(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// A family behind one address: six accounts can be made from it (the
// per-address burst), each checking its name first; the seventh is told
// when to retry.
func TestSignupsFromOneAddress(t *testing.T) {
	s := testserver.Start(t, nil)
	for i := 0; i < 6; i++ {
		c, err := client.SignupChecked(ctxT(t), testserver.ClientConfig(t, s), fmt.Sprintf("member%d", i), func() (string, error) { return pw, nil })
		if err != nil {
			t.Fatalf("sign-up %d from one address: %v", i+1, err)
		}
		c.Close()
	}
	_, err := client.SignupChecked(ctxT(t), testserver.ClientConfig(t, s), "member6", func() (string, error) { return pw, nil })
	var re *proto.RemoteError
	if !errors.As(err, &re) || re.Code != proto.CodeRateLimited || !strings.Contains(re.Message, "retry in") {
		t.Fatalf("the seventh sign-up: %v", err)
	}
}
