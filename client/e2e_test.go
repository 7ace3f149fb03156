package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

const pw = "correct horse battery"

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func recvOne(t *testing.T, c *client.Client) *client.Message {
	t.Helper()
	select {
	case m := <-testserver.Messages(c):
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}

func TestDirectMessageAcrossShards(t *testing.T) {
	s := testserver.Start(t, nil)
	alice := testserver.Signup(t, s, "Alice")
	bob := testserver.Signup(t, s, "bob")
	if s.Set.Shard(0).Conns() != 1 || s.Set.Shard(1).Conns() != 1 {
		t.Fatalf("want one connection per shard, got %d and %d", s.Set.Shard(0).Conns(), s.Set.Shard(1).Conns())
	}
	ctx := ctxT(t)
	testserver.Acquaint(t, alice, bob) // (bob has written to alice: hers are not a stranger's requests)
	for i := 0; i < 5; i++ {
		text := fmt.Sprintf("hello bob %d ✓ ünïcödé", i)
		r, err := alice.SendText(ctx, "BOB", text)
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		if r.Status != proto.StatusDelivered {
			t.Fatalf("receipt status %d", r.Status)
		}
		m := recvOne(t, bob)
		if m.Text != text || m.From != "alice" || m.To != "bob" || m.ServerID != r.ServerID || m.Kind != proto.KindText {
			t.Fatalf("got %+v, receipt %+v", m, r)
		}
	}
	// And back, the other way across the shards.
	if _, err := bob.SendText(ctx, "alice", "hi"); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, alice); m.Text != "hi" || m.From != "bob" {
		t.Fatalf("got %+v", m)
	}
	if got := s.Set.Shard(0).Messages() + s.Set.Shard(1).Messages(); got != 6 {
		t.Fatalf("shards routed %d messages, want 6", got)
	}
}

func TestFiles(t *testing.T) {
	s := testserver.Start(t, nil)
	alice := testserver.Signup(t, s, "alice")
	cfg := testserver.ClientConfig(t, s)
	outDir := cfg.OutDir
	bobC, err := client.Signup(ctxT(t), cfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer bobC.Close()
	dir := t.TempDir()
	for _, size := range []int{0, 1, proto.FileChunkData, 3*proto.FileChunkData + 17} {
		data := make([]byte, size)
		rand.Read(data)
		path := filepath.Join(dir, fmt.Sprintf("f%d.bin", size))
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		var last int64
		r, err := alice.SendFile(ctxT(t), "bob", path, func(done, total int64) { last = done })
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if r.Size != int64(size) || last != int64(size) {
			t.Fatalf("receipt %+v, progress %d", r, last)
		}
		m := recvOne(t, bobC)
		if m.File == nil || m.File.Size != int64(size) || filepath.Dir(m.File.Path) != outDir {
			t.Fatalf("got %+v", m)
		}
		got, _ := os.ReadFile(m.File.Path)
		if !bytes.Equal(got, data) {
			t.Fatalf("size %d: file differs", size)
		}
	}
	// A file over the sender's limit is refused before anything is sent.
	small := testserver.ClientConfig(t, s)
	small.MaxFileSize = 10
	carol, err := client.Signup(ctxT(t), small, "carol", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer carol.Close()
	if _, err := carol.SendFile(ctxT(t), "bob", filepath.Join(dir, "f1.bin"), nil); err != nil {
		t.Fatalf("1-byte file: %v", err)
	}
	recvOne(t, bobC)
	if _, err := carol.SendFile(ctxT(t), "bob", filepath.Join(dir, fmt.Sprintf("f%d.bin", proto.FileChunkData)), nil); !errors.Is(err, client.ErrFileTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
}

// A big file travels in chunks, so text sent meanwhile is not held up
// behind it.
func TestFileDoesNotBlockText(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Shard.MsgEvery = -1 }) // interleaving is tested, not limits
	alice := testserver.Signup(t, s, "alice")
	bob := testserver.Signup(t, s, "bob")
	testserver.Acquaint(t, alice, bob) // (a stranger's messages are stored first, in order)
	path := filepath.Join(t.TempDir(), "big.bin")
	data := make([]byte, 4<<20)
	rand.Read(data)
	os.WriteFile(path, data, 0o600)
	fileDone := make(chan error, 1)
	go func() {
		_, err := alice.SendFile(ctxT(t), "bob", path, nil)
		fileDone <- err
	}()
	// Wait until the file is under way, then send text on the same connection.
	deadline := time.Now().Add(10 * time.Second)
	for s.Set.Stats.Routed.Load() < 5 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if _, err := alice.SendText(ctxT(t), "bob", "while the file travels"); err != nil {
		t.Fatal(err)
	}
	var sawText, sawFile bool
	for !sawFile {
		m := recvOne(t, bob)
		if m.Text == "while the file travels" {
			sawText = true
		}
		if m.File != nil {
			sawFile = true
			if !sawText {
				t.Fatal("the text arrived only after the whole file")
			}
		}
	}
	if err := <-fileDone; err != nil {
		t.Fatal(err)
	}
}

func TestAccountErrors(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Limits.SignupBurst = 100 })
	testserver.Signup(t, s, "Alice")
	ctx := ctxT(t)
	cfg := testserver.ClientConfig(t, s)

	// Taken, compared without case.
	for _, name := range []string{"alice", "ALICE", "aLiCe"} {
		if _, err := client.Signup(ctx, testserver.ClientConfig(t, s), name, pw); !errors.Is(err, proto.CodeUsernameTaken) {
			t.Errorf("signup %s: %v", name, err)
		}
	}
	// Wrong password and unknown user: the same code and the same text.
	cfgA := cfg
	_, errWrong := client.Login(ctx, cfgA, "alice", "wrong password!")
	_, errUnknown := client.Login(ctx, cfg, "nobody", "wrong password!")
	var r1, r2 *proto.RemoteError
	if !errors.As(errWrong, &r1) || !errors.As(errUnknown, &r2) || r1.Code != proto.CodeInvalidCredentials || *r1 != *r2 {
		t.Fatalf("wrong password: %v; unknown user: %v", errWrong, errUnknown)
	}
	// The client refuses bad input locally too, but the server must as well:
	// speak to it directly.
	conn, err := client.Dial(ctx, s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	keys := validKeys(t, "x")
	// T25: invalid names, including look-alikes and control characters.
	for _, name := range []string{"", "C3\xc3\x28", "al\xc0\xafice", "a\x00b", "\u202eevil", "zero\u200bwidth", strings.Repeat("a", 33), strings.Repeat("a", 10000)[:255], "ａｌｉｃｅ", "has space", "dash-ed"} {
		m := proto.Signup{User: []byte(name), Password: []byte(pw), Keys: keys}
		_, _, err := conn.Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
		if !errors.Is(err, proto.CodeInvalidUsername) {
			t.Errorf("signup %q: %v", name, err)
		}
	}
	// T27: bad password lengths are refused before any hashing.
	before := s.Accounts.Hasher().Count()
	for _, p := range []string{"", "1234567", strings.Repeat("p", 1025), strings.Repeat("p", 2048)} {
		m := proto.Signup{User: []byte("dave"), Password: []byte(p), Keys: validKeys(t, "dave")}
		_, _, err := conn.Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
		if !errors.Is(err, proto.CodeInvalidPassword) {
			t.Errorf("password of %d bytes: %v", len(p), err)
		}
	}
	if n := s.Accounts.Hasher().Count(); n != before {
		t.Fatalf("%d hashes ran for refused passwords", n-before)
	}
	// T43: malformed, low-order and someone else's keys.
	bad := []proto.Keys{
		{BoxKey: make([]byte, 32), SignKey: keys.SignKey, KeySig: keys.KeySig},
		{BoxKey: keys.BoxKey[:31], SignKey: keys.SignKey, KeySig: keys.KeySig},
		validKeys(t, "alice"), // signed for another name
	}
	for i, k := range bad {
		m := proto.Signup{User: []byte("erin"), Password: []byte(pw), Keys: k}
		_, _, err := conn.Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
		if !errors.Is(err, proto.CodeInvalidKey) && !errors.Is(err, proto.CodeBadRequest) {
			t.Errorf("keys %d: %v", i, err)
		}
	}
	// Availability.
	if ok, err := client.Available(ctx, cfg, "ALICE"); err != nil || ok {
		t.Fatalf("alice available: %v %v", ok, err)
	}
	if ok, err := client.Available(ctx, cfg, "frank"); err != nil || !ok {
		t.Fatalf("frank available: %v %v", ok, err)
	}
}

func validKeys(t *testing.T, user string) proto.Keys {
	id, err := client.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id.PublicKeys(user)
}

// T28: the same name signed up 50 times at once: exactly one succeeds.
func TestConcurrentSignup(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Limits.SignupBurst = 1000 })
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[string]int{}
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := client.Signup(context.Background(), testserver.ClientConfig(t, s), "grace", pw)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				codes["ok"]++
				c.Close()
				return
			}
			var re *proto.RemoteError
			if errors.As(err, &re) {
				codes[re.Code.String()]++
			} else {
				codes[err.Error()]++
			}
		}()
	}
	wg.Wait()
	if codes["ok"] != 1 || codes["username_taken"] != 49 {
		t.Fatalf("outcomes: %v", codes)
	}
}

// T9: a client pinned to another key refuses the server, shows both
// fingerprints and sends no credentials.
func TestChangedServerKeyRefused(t *testing.T) {
	s := testserver.Start(t, nil)
	cfg := testserver.ClientConfig(t, s)
	c, err := client.Signup(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Replace the pin with another key, as if the server's key had changed.
	other, _ := proto.NewKeyPair(rand.Reader)
	pins := client.KnownServersPath(cfg.Home)
	os.WriteFile(pins, []byte(fmt.Sprintf("%s x25519:%s %s\n", s.Addr(), other.Public, other.Public.Fingerprint())), 0o600)
	loginsBefore := s.Set.Stats.LoginsOK.Load() + s.Set.Stats.LoginsFailed.Load()
	_, err = client.Login(ctxT(t), cfg, "alice", pw)
	var kc *client.KeyChangedError
	if !errors.As(err, &kc) || !errors.Is(err, client.ErrServerKeyChanged) {
		t.Fatalf("login with a changed key: %v", err)
	}
	if kc.Pinned != other.Public.Fingerprint() || kc.Presented != s.Key.Public.Fingerprint() {
		t.Fatalf("fingerprints: %+v", kc)
	}
	if !strings.Contains(err.Error(), kc.Pinned) || !strings.Contains(err.Error(), kc.Presented) {
		t.Fatalf("message lacks a fingerprint: %v", err)
	}
	if n := s.Set.Stats.LoginsOK.Load() + s.Set.Stats.LoginsFailed.Load(); n != loginsBefore {
		t.Fatal("credentials reached the server")
	}
	// The pin file is untouched: a changed key is never re-pinned.
	if b, _ := os.ReadFile(pins); !strings.Contains(string(b), other.Public.String()) || strings.Contains(string(b), s.Key.Public.String()) {
		t.Fatalf("pin file changed:\n%s", b)
	}
	// --server-key on first contact: a wrong fingerprint is refused, the
	// right one accepted.
	fresh := testserver.ClientConfig(t, s)
	fresh.ServerKey = other.Public.Fingerprint()
	if _, err := client.Signup(ctxT(t), fresh, "bob", pw); !errors.Is(err, client.ErrServerKeyChanged) {
		t.Fatalf("wrong --server-key: %v", err)
	}
	fresh.ServerKey = s.Key.Public.Fingerprint()
	c2, err := client.Signup(ctxT(t), fresh, "bob", pw)
	if err != nil {
		t.Fatalf("right --server-key: %v", err)
	}
	c2.Close()
}

// recorder keeps every byte a connection carries, both ways.
type recorder struct {
	net.Conn
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (r recorder) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.mu.Lock()
	r.buf.Write(p[:n])
	r.mu.Unlock()
	return n, err
}

func (r recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.buf.Write(p)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

// No plaintext of a message, nor the password, appears on the wire or in
// the store file.
func TestNoPlaintextOnWireOrDisk(t *testing.T) {
	s := testserver.Start(t, nil)
	var mu sync.Mutex
	wire := &bytes.Buffer{}
	recDial := func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return recorder{Conn: nc, mu: &mu, buf: wire}, nil
	}
	cfgA := testserver.ClientConfig(t, s)
	cfgA.Dial = recDial
	cfgB := testserver.ClientConfig(t, s)
	cfgB.Dial = recDial
	alice, err := client.Signup(ctxT(t), cfgA, "alice", "the password 0f alice")
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := client.Signup(ctxT(t), cfgB, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	secret := "attack at dawn: the plaintext marker 7f3a"
	if _, err := alice.SendText(ctxT(t), "bob", secret); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, bob); m.Text != secret {
		t.Fatal("message not received")
	}
	db, err := os.ReadFile(s.Store.Path())
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, needle := range []string{secret, "plaintext marker", "the password 0f alice"} {
		if bytes.Contains(wire.Bytes(), []byte(needle)) {
			t.Errorf("%q on the wire", needle)
		}
		if bytes.Contains(db, []byte(needle)) {
			t.Errorf("%q in the store file", needle)
		}
	}
	if wire.Len() < 1000 {
		t.Fatalf("recorded only %d bytes", wire.Len())
	}
	// Private keys stay on the client: the identity file holds no raw key.
	idFile, _ := os.ReadFile(client.IdentityPath(cfgA.Home, "alice"))
	if bytes.Contains(idFile, alice.Identity().Box.Private.Bytes()) || bytes.Contains(db, alice.Identity().Box.Private.Bytes()) {
		t.Error("a private key is stored in the clear")
	}
	if st, _ := os.Stat(client.IdentityPath(cfgA.Home, "alice")); st.Mode().Perm() != 0o600 {
		t.Errorf("identity file mode %v", st.Mode().Perm())
	}
}

func TestResumeAndTokens(t *testing.T) {
	now := time.Now()
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	s := testserver.Start(t, func(c *server.Config) { c.Shard.Now = clock })
	alice := testserver.Signup(t, s, "alice")
	bob := testserver.Signup(t, s, "bob")
	hashes := s.Accounts.Hasher().Count()
	if err := alice.Reconnect(ctxT(t)); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if s.Accounts.Hasher().Count() != hashes {
		t.Fatal("resuming spent a password hash")
	}
	if _, err := alice.SendText(ctxT(t), "bob", "after resume"); err != nil {
		t.Fatal(err)
	}
	recvOne(t, bob)

	// T29: random, truncated and another user's tokens are refused.
	resume := func(user string, token []byte) error {
		conn, err := client.Dial(ctxT(t), s.Addr(), client.DialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		m := proto.Resume{User: []byte(user), Token: token}
		_, _, err = conn.Request(ctxT(t), func(b []byte, id uint32) []byte { return m.Append(b, id) })
		return err
	}
	random := make([]byte, 32)
	rand.Read(random)
	for name, err := range map[string]error{
		"random":          resume("alice", random),
		"another user's":  resume("bob", alice.Token()),
		"unknown user":    resume("zed", alice.Token()),
		"truncated token": resume("alice", alice.Token()[:31]),
	} {
		if !errors.Is(err, proto.CodeInvalidToken) && !errors.Is(err, proto.CodeBadRequest) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := resume("alice", alice.Token()); err != nil {
		t.Fatalf("the real token: %v", err)
	}
	// Expired: idle for more than 30 days.
	clockMu.Lock()
	now = now.Add(31 * 24 * time.Hour)
	clockMu.Unlock()
	if err := resume("alice", alice.Token()); !errors.Is(err, proto.CodeInvalidToken) {
		t.Fatalf("expired token: %v", err)
	}
	// Revoked: logout revokes the token.
	tok := bob.Token()
	if err := bob.Logout(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := resume("bob", tok); !errors.Is(err, proto.CodeInvalidToken) {
		t.Fatalf("revoked token: %v", err)
	}
}

// T30: after 10 failures the account is throttled with the same reply
// whether or not the password is right; after the window it works again.
func TestLoginThrottle(t *testing.T) {
	now := time.Now()
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	s := testserver.Start(t, func(c *server.Config) { c.Shard.Now = clock; c.Limits.LoginBurst = 1000 })
	cfg := testserver.ClientConfig(t, s)
	c, err := client.Signup(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	for i := 0; i < 20; i++ {
		if _, err := client.Login(ctxT(t), cfg, "alice", "wrong password"); !errors.Is(err, proto.CodeInvalidCredentials) {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	_, errRight := client.Login(ctxT(t), cfg, "alice", pw)
	_, errWrong := client.Login(ctxT(t), cfg, "alice", "wrong password")
	var a, b *proto.RemoteError
	if !errors.As(errRight, &a) || !errors.As(errWrong, &b) || *a != *b {
		t.Fatalf("throttled replies differ: right %v, wrong %v", errRight, errWrong)
	}
	t.Logf("throttle engaged after %d failures", 10)
	clockMu.Lock()
	now = now.Add(16 * time.Minute)
	clockMu.Unlock()
	c, err = client.Login(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatalf("after the window: %v", err)
	}
	c.Close()
}

// Unknown users cost the same argon2 work as wrong passwords (no
// enumeration by timing): both run exactly one hash. The median times are
// logged for the report, not asserted (the machines are noisy).
func TestLoginWorkIsUniform(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) {
		c.Limits.LoginBurst = 10000
		c.Limits.FailuresBeforeThrottle = 10000
	})
	cfg := testserver.ClientConfig(t, s)
	c, err := client.Signup(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	conn, err := client.Dial(ctxT(t), s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	try := func(user string) time.Duration {
		m := proto.Login{User: []byte(user), Password: []byte("wrong password")}
		before := s.Accounts.Hasher().Count()
		start := time.Now()
		_, _, err := conn.Request(ctxT(t), func(b []byte, id uint32) []byte { return m.Append(b, id) })
		d := time.Since(start)
		if !errors.Is(err, proto.CodeInvalidCredentials) {
			t.Fatalf("%s: %v", user, err)
		}
		if n := s.Accounts.Hasher().Count() - before; n != 1 {
			t.Fatalf("%s: %d hashes, want 1", user, n)
		}
		return d
	}
	var known, unknown []time.Duration
	for i := 0; i < 50; i++ {
		known = append(known, try("alice"))
		unknown = append(unknown, try("nobody"))
		unknown = append(unknown, try("Invalid-Name"))
	}
	med := func(d []time.Duration) time.Duration {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2]
	}
	t.Logf("auth: wrong password median %v, unknown user median %v (n=50, weak test parameters)", med(known), med(unknown))
}

func TestUnknownRecipientAndLimits(t *testing.T) {
	s := testserver.Start(t, nil)
	alice := testserver.Signup(t, s, "alice")
	bob := testserver.Signup(t, s, "bob")
	ctx := ctxT(t)
	// T31.
	if _, err := alice.SendText(ctx, "nobody", "hi"); !errors.Is(err, proto.CodeNoSuchUser) && !errors.Is(err, proto.CodeNoSuchRecipient) {
		t.Fatalf("unknown recipient: %v", err)
	}
	// Offline recipient: queued, not claimed delivered.
	testserver.Signup(t, s, "carol").Close()
	if r, err := alice.SendText(ctx, "carol", "hi"); err != nil || r.Status != proto.StatusQueued {
		t.Fatalf("offline recipient: %+v %v", r, err)
	}
	// T34: a body at the limit is accepted, one byte more is too_large.
	max := client.MaxTextLen("alice", "bob")
	if _, err := alice.SendText(ctx, "bob", strings.Repeat("x", max)); err != nil {
		t.Fatalf("body at the limit: %v", err)
	}
	if m := recvOne(t, bob); len(m.Text) != max {
		t.Fatalf("got %d bytes", len(m.Text))
	}
	if _, err := alice.SendText(ctx, "bob", strings.Repeat("x", max+1)); !errors.Is(err, proto.ErrTooLarge) {
		t.Fatalf("body over the limit (client): %v", err)
	}
	m := proto.SendDM{To: []byte("bob"), MsgID: make([]byte, 16), Kind: proto.KindText, Body: make([]byte, proto.MaxBodyLen+1)}
	_, _, err := alice.Conn().Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
	if !errors.Is(err, proto.CodeTooLarge) {
		t.Fatalf("body over the limit (server): %v", err)
	}
	// The connection is still usable after the refusals.
	if _, err := alice.SendText(ctx, "bob", "still here"); err != nil {
		t.Fatal(err)
	}
	recvOne(t, bob)
}

// T24: chat commands before login get unauthenticated, and nothing changes.
func TestCommandsBeforeLogin(t *testing.T) {
	s := testserver.Start(t, nil)
	testserver.Signup(t, s, "bob")
	conn, err := client.Dial(ctxT(t), s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	reqs := map[string]func(b []byte, id uint32) []byte{
		"send": func(b []byte, id uint32) []byte {
			return (&proto.SendDM{To: []byte("bob"), MsgID: make([]byte, 16), Kind: 1, Body: []byte("x")}).Append(b, id)
		},
		"ack": func(b []byte, id uint32) []byte { return (&proto.Ack{ServerIDs: []uint64{1}}).Append(b, id) },
		"keys": func(b []byte, id uint32) []byte {
			return (&proto.UserReq{User: []byte("bob")}).Append(b, proto.TGetKeys, id)
		},
		"logout": func(b []byte, id uint32) []byte { return proto.AppendEmpty(b, proto.TLogout, id) },
	}
	for name, build := range reqs {
		if _, _, err := conn.Request(ctxT(t), build); !errors.Is(err, proto.CodeUnauthenticated) {
			t.Errorf("%s before login: %v", name, err)
		}
	}
	if s.Set.Stats.Routed.Load() != 0 {
		t.Fatal("a message was routed before login")
	}
	if err := conn.Ping(ctxT(t)); err != nil {
		t.Fatalf("connection unusable: %v", err)
	}
}

// Logging in again elsewhere replaces the old connection.
func TestSecondLoginReplacesFirst(t *testing.T) {
	s := testserver.Start(t, nil)
	cfg := testserver.ClientConfig(t, s)
	first, err := client.Signup(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	second, err := client.Login(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	select {
	case <-first.Conn().Done():
		var ce *client.ClosedError
		if !errors.As(first.Conn().Err(), &ce) || ce.Reason != proto.CloseReplaced {
			t.Fatalf("first connection ended with %v", first.Conn().Err())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first connection was not closed")
	}
	bob := testserver.Signup(t, s, "bob")
	if _, err := bob.SendText(ctxT(t), "alice", "to the new one"); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, second); m.Text != "to the new one" {
		t.Fatal("wrong message")
	}
}

// A contact whose keys change is reported with both fingerprints.
func TestPeerKeyChangeWarning(t *testing.T) {
	s := testserver.Start(t, nil)
	var mu sync.Mutex
	var warned []string
	warn := func(ev client.Event) {
		if ev.Kind == client.EventKeyChange {
			mu.Lock()
			warned = append(warned, ev.User+" "+ev.OldFingerprint+" "+ev.Fingerprint)
			mu.Unlock()
		}
	}
	cfg := testserver.ClientConfig(t, s)
	alice, err := client.Signup(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	bob := testserver.Signup(t, s, "bob")
	if _, err := alice.SendText(ctxT(t), "bob", "first"); err != nil {
		t.Fatal(err)
	}
	recvOne(t, bob)
	alice.Close()
	// Bob's pinned keys in alice's home no longer match what the server serves.
	other := validKeys(t, "bob")
	path := filepath.Join(client.UserDir(cfg.Home, "alice"), "contacts")
	os.WriteFile(path, []byte(fmt.Sprintf("bob x25519:%x ed25519:%x\n", other.BoxKey, other.SignKey)), 0o600)
	alice, err = client.Login(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	testserver.OnEvent(alice, warn)
	if _, err := alice.SendText(ctxT(t), "bob", "second"); err != nil {
		t.Fatal(err)
	}
	// The warning is posted while the send looks up bob's keys; the
	// application reads it from Events.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(warned)
		mu.Unlock()
		if n > 0 {
			break
		}
	}
	time.Sleep(100 * time.Millisecond) // a second warning, if one were posted
	mu.Lock()
	defer mu.Unlock()
	if len(warned) != 1 || !strings.HasPrefix(warned[0], "bob SHA256:") {
		t.Fatalf("warnings: %v", warned)
	}
}

// Text messages are limited per user (burst, then one a second); the
// limit is global to the server, not per shard.
func TestMessageRateLimit(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) {
		c.Shard.MsgBurst = 5
		c.Shard.MsgEvery = time.Hour
	})
	alice := testserver.Signup(t, s, "alice")
	bob := testserver.Signup(t, s, "bob")
	for i := 0; i < 5; i++ {
		if _, err := alice.SendText(ctxT(t), "bob", "x"); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		recvOne(t, bob)
	}
	if _, err := alice.SendText(ctxT(t), "bob", "one too many"); !errors.Is(err, proto.CodeRateLimited) {
		t.Fatalf("sixth message: %v", err)
	}
	// Reconnecting on another shard does not reset the budget.
	if err := alice.Reconnect(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendText(ctxT(t), "bob", "after reconnect"); !errors.Is(err, proto.CodeRateLimited) {
		t.Fatalf("after reconnect: %v", err)
	}
	// Bob's budget is his own.
	if _, err := bob.SendText(ctxT(t), "alice", "hi"); err != nil {
		t.Fatal(err)
	}
}
