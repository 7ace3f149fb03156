package client_test

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

// rawLogin logs user in with secret on a connection of its own, as a
// program speaking the protocol would, and reports the server's answer.
func rawLogin(t *testing.T, s *server.Server, user, secret string) error {
	t.Helper()
	conn, err := client.Dial(ctxT(t), s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = conn.LoginWith(ctxT(t), user, secret, proto.LoginNoDeliveries)
	return err
}

// identityVersion returns the magic user's identity file starts with.
func identityVersion(t *testing.T, cfg client.Config, user string) string {
	t.Helper()
	b, err := os.ReadFile(client.IdentityPath(cfg.Home, user))
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:6])
}

// TestLoginKey: what goes to the server for the password is its login
// key. The server takes the login key and not the password, and the
// identity file (which seals everything else the home keeps) does not
// open with the login key: the home's key comes from nothing the server
// has seen.
func TestLoginKey(t *testing.T) {
	s := testserver.Start(t, nil)
	cfg := testserver.ClientConfig(t, s)
	signup(t, cfg, "alice").Close()
	key, err := client.LoginKey("Alice", pw, cfg.KDF)
	if err != nil {
		t.Fatal(err)
	}
	if err := rawLogin(t, s, "alice", pw); !errors.Is(err, proto.CodeInvalidCredentials) {
		t.Fatalf("the password itself logging in: %v", err)
	}
	if err := rawLogin(t, s, "alice", key); err != nil {
		t.Fatalf("the login key logging in: %v", err)
	}
	if v := identityVersion(t, cfg, "alice"); v != "SFCID2" {
		t.Fatalf("identity file version %q", v)
	}
	if _, err := client.LoadIdentity(client.IdentityPath(cfg.Home, "alice"), []byte(key)); !errors.Is(err, client.ErrBadIdentity) {
		t.Fatalf("the identity file opening with the login key: %v", err)
	}
	// A password login from the home, and a session kept for the next.
	c, err := client.Login(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatalf("a password login: %v", err)
	}
	c.Close()
	if _, err := client.Login(ctxT(t), cfg, "alice", "not the password"); !errors.Is(err, proto.CodeInvalidCredentials) {
		t.Fatalf("a wrong password: %v", err)
	}
}

// TestChangePassword: the first device changes the account's password.
// The old one no longer logs in nor opens the home; the new one does both.
// A wrong current password, a too short new one and a linked device are
// refused with what to do.
func TestChangePassword(t *testing.T) {
	s := testserver.Start(t, nil)
	cfg := testserver.ClientConfig(t, s)
	alice := signup(t, cfg, "alice")
	defer alice.Close()
	const next = "a new and better password"
	ctx := ctxT(t)
	if err := alice.ChangePassword(ctx, "not the password", next); !errors.Is(err, client.ErrWrongPassword) {
		t.Fatalf("a wrong current password: %v", err)
	}
	if err := alice.ChangePassword(ctx, pw, "short"); !errors.Is(err, proto.CodeInvalidPassword) {
		t.Fatalf("a short new password: %v", err)
	}
	laptopCfg := withAddr(testserver.ClientConfig(t, s), s.Addr())
	laptop := addLaptop(t, alice, laptopCfg)
	if err := laptop.ChangePassword(ctx, pw, next); !errors.Is(err, client.ErrNotFirstDevice) {
		t.Fatalf("the laptop changing the password: %v", err)
	}
	laptopToken, laptopEvents := laptop.Token(), testserver.Events(laptop)
	oldKey, _ := client.LoginKey("alice", pw, cfg.KDF)
	newKey, _ := client.LoginKey("alice", next, cfg.KDF)
	// Another session of the account, made with the old password.
	other, err := client.Dial(ctx, s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ok, err := other.LoginWith(ctx, "alice", oldKey, proto.LoginNoDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := alice.ChangePassword(ctx, pw, next); err != nil {
		t.Fatal(err)
	}
	// This session goes on; the others' tokens are revoked and their
	// connections closed, saying to log in again: one that had only a
	// token is out, and the laptop logs in again with its key.
	if _, err := alice.Devices(ctx, "alice"); err != nil {
		t.Fatalf("after the change: %v", err)
	}
	select {
	case <-other.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the other session's connection is still open after the change")
	}
	var ce *client.ClosedError
	if !errors.As(other.Err(), &ce) || ce.Reason != proto.CloseLoginAgain {
		t.Fatalf("the other session was closed with %v", other.Err())
	}
	for closed := false; ; {
		var ev client.Event
		select {
		case ev = <-laptopEvents:
		case <-time.After(10 * time.Second):
			t.Fatal("the laptop did not log in again after the change")
		}
		if ev.Kind != client.EventConnection {
			continue
		}
		if errors.As(ev.Err, &ce) && ce.Reason == proto.CloseLoginAgain {
			closed = true
		}
		if closed && ev.State == client.StateConnected {
			break
		}
	}
	if string(laptop.Token()) == string(laptopToken) {
		t.Fatal("the laptop goes on with its revoked token")
	}
	laptop.Close()
	alice.Close()
	resume, err := client.Dial(ctx, s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resume.ResumeWith(ctx, "alice", ok.Token, proto.LoginNoDeliveries); !errors.Is(err, proto.CodeInvalidToken) {
		t.Fatalf("another session's token after the change: %v", err)
	}
	resume.Close()
	if l, err := client.Open(ctx, laptopCfg, "alice", "laptop passphrase"); err != nil {
		t.Fatalf("the laptop after the change: %v", err)
	} else {
		l.Close()
	}

	if err := rawLogin(t, s, "alice", oldKey); !errors.Is(err, proto.CodeInvalidCredentials) {
		t.Fatalf("the old login key: %v", err)
	}
	if err := rawLogin(t, s, "alice", newKey); err != nil {
		t.Fatalf("the new login key: %v", err)
	}
	if _, err := client.Load(cfg, "alice", pw); !errors.Is(err, client.ErrBadIdentity) {
		t.Fatalf("the home opening with the old password: %v", err)
	}
	c, err := client.Login(ctx, cfg, "alice", next)
	if err != nil {
		t.Fatalf("a password login with the new password: %v", err)
	}
	c.Close()
}

// TestChangePasswordAttacks: mallory, an ordinary account speaking the
// protocol, can change no password but her own (the request names no
// account), not before logging in, nor on a version 5 session; and her
// guesses at the current password spend the address's password-login
// budget, as logins would.
func TestChangePasswordAttacks(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Limits.LoginBurst, c.Limits.LoginEvery = 4, time.Hour })
	testserver.Signup(t, s, "alice").Close()
	testserver.Signup(t, s, "mallory").Close()
	ask := func(conn *client.Conn, old, next string) error {
		m := proto.ChangePassword{Old: []byte(old), New: []byte(next)}
		_, _, err := conn.Request(ctxT(t), func(b []byte, id uint32) []byte { return m.Append(b, id) })
		return err
	}
	dial := func(max uint8) *client.Conn {
		conn, err := client.Dial(ctxT(t), s.Addr(), client.DialOptions{MaxVersion: max})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	aliceKey, malloryKey := testserver.LoginKey(t, "alice"), testserver.LoginKey(t, "mallory")

	if err := ask(dial(0), aliceKey, "mallory's choice"); !errors.Is(err, proto.CodeUnauthenticated) {
		t.Fatalf("before a login: %v", err)
	}
	old := dial(5)
	if _, err := old.LoginWith(ctxT(t), "mallory", malloryKey, proto.LoginNoDeliveries); err != nil {
		t.Fatal(err)
	}
	if err := ask(old, malloryKey, "mallory's choice"); !errors.Is(err, proto.CodeUnsupported) {
		t.Fatalf("on a version 5 session: %v", err)
	}
	conn := dial(0)
	if _, err := conn.LoginWith(ctxT(t), "mallory", malloryKey, proto.LoginNoDeliveries); err != nil {
		t.Fatal(err)
	}
	// alice's login key is not mallory's password: refused, and alice's
	// account is untouched.
	if err := ask(conn, aliceKey, "mallory's choice"); !errors.Is(err, proto.CodeInvalidCredentials) {
		t.Fatalf("alice's password as mallory's: %v", err)
	}
	var err error
	for i := 0; i < 10 && !errors.Is(err, proto.CodeRateLimited); i++ {
		err = ask(conn, "guess number "+string(rune('0'+i)), "mallory's choice")
		if err != nil && !errors.Is(err, proto.CodeInvalidCredentials) && !errors.Is(err, proto.CodeRateLimited) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	if !errors.Is(err, proto.CodeRateLimited) {
		t.Fatalf("guesses were not limited: %v", err)
	}
	if err := rawLogin(t, s, "alice", aliceKey); !errors.Is(err, proto.CodeRateLimited) {
		t.Fatalf("a login from the same address after the guesses: %v", err)
	}
	if err := ask(conn, "", ""); !errors.Is(err, proto.CodeInvalidPassword) {
		t.Fatalf("an empty new password: %v", err)
	}
	if conn.Err() != nil {
		t.Fatalf("the connection did not survive: %v", conn.Err())
	}
}

// TestPasswordMoved: homes and a store from before login keys
// (testdata/upgrade-v3), where the server knows alice's password itself.
// Her client, opening, moves the account to its login key and says so;
// the identity file is version 2 from then on and the password itself no
// longer logs in. A move the server made and the home did not record (a
// crash in between) is finished at the next connection. bob, whose home
// is lost, recovers with the password as it is, which moves him too.
func TestPasswordMoved(t *testing.T) {
	s, cfg := upgradeFrom(t, "testdata/upgrade-v3")
	if v := identityVersion(t, cfg, "alice"); v != "SFCID1" {
		t.Fatalf("the old home's identity file is %q", v)
	}
	v1, err := os.ReadFile(client.IdentityPath(cfg.Home, "alice"))
	if err != nil {
		t.Fatal(err)
	}
	if err := rawLogin(t, s, "alice", pw); err != nil {
		t.Fatalf("before the move, the password itself: %v", err)
	}
	open := func() {
		t.Helper()
		ev := make(events, 64)
		alice, err := client.Open(ctxT(t), cfg, "alice", pw)
		if err != nil {
			t.Fatal(err)
		}
		testserver.OnEvent(alice, ev.on)
		e := ev.wait(t, "the password moved", func(e client.Event) bool { return e.Kind == client.EventPasswordMoved })
		alice.Close()
		if !bytes.Contains([]byte(e.Text), []byte("change it")) {
			t.Errorf("the event says %q", e.Text)
		}
		if v := identityVersion(t, cfg, "alice"); v != "SFCID2" {
			t.Fatalf("after the move the identity file is %q", v)
		}
		if err := rawLogin(t, s, "alice", pw); !errors.Is(err, proto.CodeInvalidCredentials) {
			t.Fatalf("after the move, the password itself: %v", err)
		}
	}
	open()
	// Opened again: nothing more to move.
	ev := make(events, 64)
	alice, err := client.Open(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	testserver.OnEvent(alice, ev.on)
	ev.none(t, "a second move", 500*time.Millisecond, func(e client.Event) bool { return e.Kind == client.EventPasswordMoved })
	alice.Close()
	// The server moved, the home not.
	if err := os.WriteFile(client.IdentityPath(cfg.Home, "alice"), v1, 0o600); err != nil {
		t.Fatal(err)
	}
	open()
	// A password login from the moved home.
	a, err := client.Login(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatalf("a password login after the move: %v", err)
	}
	a.Close()

	fresh := testserver.ClientConfig(t, s)
	if _, err := client.Recover(ctxT(t), fresh, "bob", pw); !errors.Is(err, client.ErrPasswordRefused) || !errors.Is(err, proto.CodeInvalidCredentials) {
		t.Fatalf("recovering bob with his login key: %v", err)
	}
	bob, err := client.RecoverPasswordAsIs(ctxT(t), fresh, "bob", pw)
	if err != nil {
		t.Fatalf("recovering bob with the password as it is: %v", err)
	}
	bob.Close()
	if v := identityVersion(t, fresh, "bob"); v != "SFCID2" {
		t.Fatalf("bob's recovered identity file is %q", v)
	}
	if err := rawLogin(t, s, "bob", pw); !errors.Is(err, proto.CodeInvalidCredentials) {
		t.Fatalf("after bob's recovery, the password itself: %v", err)
	}
}
