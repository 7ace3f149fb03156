package admin_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/account"
	"securefastchat/internal/admin"
	"securefastchat/internal/backup"
	"securefastchat/internal/metrics"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

const pw = "correct horse battery"

// tok is the admin token of the tests' listeners.
const tok = "test-admin-token-0123456789abcdef"

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startAdmin runs a server with metrics and an admin listener on
// loopback.
func startAdmin(t *testing.T, token string, mod func(*server.Config)) (*server.Server, *admin.Admin) {
	t.Helper()
	return startAdmin2(t, admin.Config{Token: token}, mod)
}

func call(t *testing.T, a *admin.Admin, method, path, token string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+a.Addr()+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if method != "GET" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == 200 {
		if s, ok := out.(*string); ok {
			*s = string(b)
		} else if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

func TestAdminUsersAndMetrics(t *testing.T) {
	s, a := startAdmin(t, tok, nil)
	ctx := ctxT(t)
	ann := testserver.Signup(t, s, "ann")
	cfgBob := testserver.ClientConfig(t, s)
	bob, err := client.Signup(ctx, cfgBob, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	testserver.Acquaint(t, ann, bob) // (ann's message goes live, as to a contact, and is timed)
	if _, err := ann.SendText(ctx, "bob", "hello"); err != nil {
		t.Fatal(err)
	}
	<-testserver.Messages(bob)

	var users []admin.User
	if code := call(t, a, "GET", "/v1/users", tok, nil, &users); code != 200 || len(users) != 2 || users[1].Name != "bob" || !users[1].Online {
		t.Fatalf("users: %d %+v", code, users)
	}
	// Disable: bob is cut off, told why, and cannot log in again.
	var res admin.ActionResult
	if code := call(t, a, "POST", "/v1/users/bob/disable", tok, nil, &res); code != 200 || !res.Kicked || res.Sessions != 1 {
		t.Fatalf("disable: %d %+v", code, res)
	}
	select {
	case <-bob.Conn().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("bob's connection stayed open")
	}
	var ce *client.ClosedError
	if !errors.As(bob.Conn().Err(), &ce) || ce.Reason != proto.CloseRevoked {
		t.Fatalf("bob's connection ended with %v", bob.Conn().Err())
	}
	if _, err := client.Login(ctx, cfgBob, "bob", pw); !errors.Is(err, proto.CodeInvalidCredentials) {
		t.Fatalf("login while disabled: %v", err)
	}
	call(t, a, "POST", "/v1/users/bob/enable", tok, nil, &res)
	bob2, err := client.Login(ctx, cfgBob, "bob", pw)
	if err != nil {
		t.Fatalf("login after enable: %v", err)
	}
	// Revoke: the token no longer resumes.
	bobTok := bob2.Token()
	if code := call(t, a, "POST", "/v1/users/bob/revoke", tok, nil, &res); code != 200 || res.Sessions != 1 || !res.Kicked {
		t.Fatalf("revoke: %d %+v", code, res)
	}
	bob2.Close()
	conn, err := client.Dial(ctx, s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Resume(ctx, "bob", bobTok); !errors.Is(err, proto.CodeInvalidToken) {
		t.Fatalf("resume after revoke: %v", err)
	}
	conn.Close()
	// Delete: the queue goes with the account.
	if _, err := ann.SendText(ctx, "bob", "queued for bob"); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := s.Store.QueueLen("bob"); n != 1 {
		t.Fatalf("bob's queue: %d", n)
	}
	if code := call(t, a, "DELETE", "/v1/users/bob", tok, nil, &res); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	if n, _, _ := s.Store.QueueLen("bob"); n != 0 {
		t.Fatalf("bob's queue after delete: %d", n)
	}
	if code := call(t, a, "DELETE", "/v1/users/bob", tok, nil, nil); code != 404 {
		t.Fatalf("second delete: %d", code)
	}
	if _, err := ann.SendText(ctx, "bob", "to nobody"); !errors.Is(err, proto.CodeNoSuchRecipient) {
		t.Fatalf("send to a deleted user: %v", err)
	}
	if code := call(t, a, "POST", "/v1/users/..%2f/disable", tok, nil, nil); code != 400 && code != 404 {
		t.Fatalf("bad name: %d", code)
	}

	var st admin.Stats
	if code := call(t, a, "GET", "/v1/stats", tok, nil, &st); code != 200 || st.Users != 1 || st.Counters["messages_delivered"] < 1 || !st.Ready || st.Signup != "open" {
		t.Fatalf("stats: %d %+v", code, st)
	}
	var text string
	if code := call(t, a, "GET", "/metrics", tok, nil, &text); code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	for _, series := range []string{
		`securefastchat_shard_connections{shard="0"}`, `securefastchat_logins_total{result="ok"}`, `securefastchat_logins_total{result="failed"}`,
		"securefastchat_messages_routed_total", "securefastchat_messages_queued_total", "securefastchat_messages_delivered_total",
		"securefastchat_messages_expired_total", "securefastchat_queued_messages", "securefastchat_slow_consumers_total",
		"securefastchat_message_latency_seconds_bucket", "securefastchat_group_fanout_members_bucket",
		"securefastchat_store_commit_seconds_bucket", "securefastchat_ready 1", "go_goroutines", "process_resident_memory_bytes",
		`securefastchat_connections_closed_total{reason="protocol"}`, `securefastchat_connections_closed_total{reason="slow_consumer"}`,
		`securefastchat_dropped_total{reason="blocked"}`, `securefastchat_dropped_total{reason="invited"}`,
	} {
		if !strings.Contains(text, series) {
			t.Errorf("metrics lack %s", series)
		}
	}
	if strings.Contains(text, "securefastchat_message_latency_seconds_count 0") {
		t.Error("a delivered message left no latency sample")
	}
	var idx string
	if code := call(t, a, "GET", "/debug/pprof/", tok, nil, &idx); code != 200 || !strings.Contains(idx, "goroutine") {
		t.Fatalf("pprof: %d", code)
	}
	var ready string
	if code := call(t, a, "GET", "/readyz", "", nil, &ready); code != 200 {
		t.Fatalf("readyz: %d", code)
	}
}

func TestAdminToken(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "127.0.0.1:0"} {
		if _, err := admin.Start(admin.Config{Addr: addr}); !errors.Is(err, admin.ErrTokenRequired) {
			t.Fatalf("%s without a token: %v", addr, err)
		}
	}
	if _, err := admin.Start(admin.Config{Addr: "127.0.0.1:0", Token: "0123456789abcdef-too-short"}); err == nil {
		t.Fatal("a short token was accepted")
	}
	for addr, want := range map[string]bool{"127.0.0.1:1": true, "[::1]:1": true, "localhost:1": true, "0.0.0.0:1": false, ":1": false, "10.0.0.1:1": false} {
		if admin.IsLoopback(addr) != want {
			t.Errorf("IsLoopback(%s) != %v", addr, want)
		}
	}
	_, a := startAdmin(t, tok, nil)
	for _, p := range []string{"/metrics", "/v1/users", "/v1/stats", "/debug/pprof/", "/v1/backup"} {
		if code := call(t, a, "GET", p, "", nil, nil); code != 401 {
			t.Errorf("%s on loopback without the token: %d", p, code)
		}
	}
	for _, p := range []string{"/v1/users", "/v1/backup"} { // (fewer than the failures that throttle)
		if code := call(t, a, "GET", p, "wrong-token-wrong-token-wrong-token", nil, nil); code != 401 {
			t.Errorf("%s with a wrong token: %d", p, code)
		}
	}
	if code := call(t, a, "GET", "/v1/users", tok, nil, new([]admin.User)); code != 200 {
		t.Fatalf("with the token: %d", code)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code := call(t, a, "GET", p, "", nil, nil); code != 200 {
			t.Errorf("%s: %d (probes need no token)", p, code)
		}
	}
}

// TestTokenFile: a server's own token is made once, 256 random bits in a
// file only its owner can read, and read back the same.
func TestTokenFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	t1, created, err := admin.LoadOrCreateToken(dir)
	if err != nil || !created || len(t1) < admin.MinTokenLen {
		t.Fatalf("made %q %v %v", t1, created, err)
	}
	st, err := os.Stat(filepath.Join(dir, admin.TokenFileName))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", st, err)
	}
	t2, created, err := admin.LoadOrCreateToken(dir)
	if err != nil || created || t2 != t1 {
		t.Fatalf("second load: %q %v %v", t2, created, err)
	}
	if r, err := admin.ReadToken(dir); err != nil || r != t1 {
		t.Fatalf("read: %q %v", r, err)
	}
	other := t.TempDir()
	t3, _, _ := admin.LoadOrCreateToken(other)
	if t3 == t1 {
		t.Fatal("two servers made the same token")
	}
	os.WriteFile(filepath.Join(other, admin.TokenFileName), []byte("short\n"), 0o600)
	if _, err := admin.ReadToken(other); err == nil {
		t.Fatal("a short token file was read")
	}
}

// raw sends one hand-made request, as a web page or a local process
// would, and returns its status and body.
func raw(t *testing.T, a *admin.Admin, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminFromABrowser: what a web page the operator opens can make
// the browser send to the loopback admin port changes nothing. A page
// cannot set the Authorization header across origins; a form posts
// form-encoded bodies; a page that rebinds its DNS name to 127.0.0.1
// sends its own name as Host. Each is refused, even where the page holds
// the token (rebinding, a leaked token in a form).
func TestAdminFromABrowser(t *testing.T) {
	s, a := startAdmin(t, tok, nil)
	testserver.Signup(t, s, "ann").Close()
	url := "http://" + a.Addr()

	// A cross-site form post: no token, form body.
	req, _ := http.NewRequest("POST", url+"/v1/users/ann/disable", strings.NewReader("x=1"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://evil.example")
	if code, _ := raw(t, a, req); code != 401 && code != 415 {
		t.Fatalf("cross-site form post: %d", code)
	}
	// Even with the token, a change that is not JSON is refused.
	for _, ct := range []string{"application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", ""} {
		req, _ = http.NewRequest("POST", url+"/v1/users/ann/disable", strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+tok)
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		if code, body := raw(t, a, req); code != 415 || !strings.Contains(body, "JSON") {
			t.Fatalf("change as %q: %d %s", ct, code, body)
		}
	}
	// DNS rebinding: the page's own name in Host.
	for _, p := range []string{"/v1/users", "/metrics", "/v1/backup"} {
		req, _ = http.NewRequest("GET", url+p, nil)
		req.Host = "evil.example:9090"
		req.Header.Set("Authorization", "Bearer "+tok)
		if code, body := raw(t, a, req); code != http.StatusMisdirectedRequest || !strings.Contains(body, "--admin-host") {
			t.Fatalf("%s with a foreign Host: %d %s", p, code, body)
		}
	}
	// Probes answer any Host (an orchestrator's name for the pod).
	req, _ = http.NewRequest("GET", url+"/healthz", nil)
	req.Host = "pod-name:9090"
	if code, _ := raw(t, a, req); code != 200 {
		t.Fatalf("healthz with a name: %d", code)
	}
	// Nothing changed: ann is still enabled.
	var users []admin.User
	if code := call(t, a, "GET", "/v1/users", tok, nil, &users); code != 200 || len(users) != 1 || users[0].Disabled {
		t.Fatalf("after the attempts: %d %+v", code, users)
	}
}

// TestAdminHostName: a name the operator configured is accepted in Host.
func TestAdminHostName(t *testing.T) {
	_, named := startAdmin2(t, admin.Config{Token: tok, Hosts: []string{"admin.internal"}}, nil)
	req, _ := http.NewRequest("GET", "http://"+named.Addr()+"/v1/stats", nil)
	req.Host = "Admin.Internal:9090"
	req.Header.Set("Authorization", "Bearer "+tok)
	if code, body := raw(t, named, req); code != 200 {
		t.Fatalf("a configured host name: %d %s", code, body)
	}
}

// startAdmin2 runs an admin listener with cfg on a new server.
func startAdmin2(t *testing.T, cfg admin.Config, mod func(*server.Config)) (*server.Server, *admin.Admin) {
	t.Helper()
	mx := metrics.New()
	s := testserver.Start(t, func(c *server.Config) {
		c.Shard.Observer = mx
		if mod != nil {
			mod(c)
		}
	})
	mx.Register(s)
	cfg.Addr, cfg.Server, cfg.Metrics, cfg.Logger = "127.0.0.1:0", s, mx, testserver.Logger(t)
	a, err := admin.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	return s, a
}

// TestTokenGuessing: wrong tokens from one address are throttled (429
// with Retry-After, even for the right token then) and logged, and the
// log does not grow with every guess.
func TestTokenGuessing(t *testing.T) {
	var logBuf testserver.Buffer
	mx := metrics.New()
	s := testserver.Start(t, func(c *server.Config) { c.Shard.Observer = mx })
	mx.Register(s)
	a, err := admin.Start(admin.Config{Addr: "127.0.0.1:0", Token: tok, Server: s, Metrics: mx, Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	codes := map[int]int{}
	for i := 0; i < 50; i++ {
		codes[call(t, a, "GET", "/v1/users", fmt.Sprintf("guess-%032d", i), nil, nil)]++
	}
	if codes[401] != 10 || codes[429] != 40 {
		t.Fatalf("50 guesses: %v, want 10 refused and then 40 throttled", codes)
	}
	req, _ := http.NewRequest("GET", "http://"+a.Addr()+"/v1/users", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("the right token while throttled: %d retry-after %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	logged := strings.Count(logBuf.String(), "wrong or missing token")
	if logged < 1 || logged > 2 {
		t.Fatalf("%d log lines for 50 guesses:\n%s", logged, logBuf.String())
	}
}

// TestAdminConnections: a connection that sends nothing, or sends its
// headers too slowly, is closed; and the listener holds a bounded number
// of connections, so idle ones cannot use up the server's files.
func TestAdminConnections(t *testing.T) {
	_, a := startAdmin(t, tok, nil)
	c, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET /v1/users HTTP/1.1\r\nHost: 127.0.0.1\r\n")) // never finished
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	start := time.Now()
	_, err = io.ReadAll(c)
	if err != nil || time.Since(start) > 15*time.Second {
		t.Fatalf("a request whose headers never end held the connection %v (%v)", time.Since(start), err)
	}
	// MaxConns idle connections: the next request waits for one to close
	// rather than opening more.
	var held []net.Conn
	for i := 0; i < admin.MaxConns; i++ {
		c, err := net.Dial("tcp", a.Addr())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		c.Write([]byte("G"))
	}
	time.Sleep(200 * time.Millisecond)
	done := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + a.Addr() + "/healthz")
		if err != nil {
			done <- -1
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	select {
	case code := <-done:
		t.Fatalf("a request beyond %d connections was served at once: %d", admin.MaxConns, code)
	case <-time.After(300 * time.Millisecond):
	}
	held[0].Close()
	select {
	case code := <-done:
		if code != 200 {
			t.Fatalf("after a connection closed: %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting request was not served after a connection closed")
	}
	for _, c := range held[1:] {
		c.Close()
	}
}

func TestInviteOnlySignup(t *testing.T) {
	s, a := startAdmin(t, tok, func(c *server.Config) { c.Signup = account.SignupInvite; c.Limits.SignupBurst = 100 })
	ctx := ctxT(t)
	if _, err := client.Signup(ctx, testserver.ClientConfig(t, s), "ann", pw); !errors.Is(err, proto.CodeInvalidInvite) {
		t.Fatalf("signup without a code: %v", err)
	}
	var inv admin.InviteResponse
	if code := call(t, a, "POST", "/v1/invites", tok, admin.InviteRequest{Count: 2, Expires: "1h"}, &inv); code != 200 || len(inv.Codes) != 2 || inv.Codes[0] == inv.Codes[1] {
		t.Fatalf("invites: %d %+v", code, inv)
	}
	if time.Until(inv.Expires) > time.Hour || time.Until(inv.Expires) < 50*time.Minute {
		t.Fatalf("expires %v", inv.Expires)
	}
	cfg := testserver.ClientConfig(t, s)
	cfg.Invite = "AAAA-BBBB-CCCC-DDDD"
	if _, err := client.Signup(ctx, cfg, "ann", pw); !errors.Is(err, proto.CodeInvalidInvite) {
		t.Fatalf("signup with an unknown code: %v", err)
	}
	cfg = testserver.ClientConfig(t, s)
	cfg.Invite = inv.Codes[0]
	ann, err := client.Signup(ctx, cfg, "ann", pw)
	if err != nil {
		t.Fatalf("signup with a code: %v", err)
	}
	ann.Close()
	cfg = testserver.ClientConfig(t, s)
	cfg.Invite = inv.Codes[0]
	if _, err := client.Signup(ctx, cfg, "bob", pw); !errors.Is(err, proto.CodeInvalidInvite) {
		t.Fatalf("second use of a code: %v", err)
	}
	// Without a valid code nothing tells whether a name exists: a sign-up
	// as ann (who exists) and as nobody (who does not) get the same answer,
	// and so does the name check.
	for _, name := range []string{"ann", "nobody"} {
		cfg = testserver.ClientConfig(t, s)
		cfg.Invite = "AAAA-BBBB-CCCC-DDDD"
		if _, err := client.Signup(ctx, cfg, name, pw); !errors.Is(err, proto.CodeInvalidInvite) {
			t.Fatalf("sign-up as %s with a bad code: %v", name, err)
		}
		if free, err := client.Available(ctx, testserver.ClientConfig(t, s), name); err != nil || !free {
			t.Fatalf("name check of %s on an invite-only server: %v %v", name, free, err)
		}
	}
	// With a valid code, a taken name is said to be taken.
	more := admin.InviteResponse{}
	call(t, a, "POST", "/v1/invites", tok, admin.InviteRequest{Count: 1, Expires: "1h"}, &more)
	cfg = testserver.ClientConfig(t, s)
	cfg.Invite = more.Codes[0]
	if _, err := client.Signup(ctx, cfg, "ann", pw); !errors.Is(err, proto.CodeUsernameTaken) {
		t.Fatalf("sign-up as ann with a valid code: %v", err)
	}
	for _, bad := range []admin.InviteRequest{{Count: 101}, {Count: -1}, {Expires: "soon"}, {Expires: "-1h"}} {
		if code := call(t, a, "POST", "/v1/invites", tok, bad, nil); code != 400 {
			t.Errorf("invite %+v: %d", bad, code)
		}
	}
}

func TestClosedSignup(t *testing.T) {
	closed := testserver.Start(t, func(c *server.Config) { c.Signup = account.SignupClosed })
	if _, err := client.Signup(ctxT(t), testserver.ClientConfig(t, closed), "eve", pw); !errors.Is(err, proto.CodeSignupClosed) {
		t.Fatalf("closed signup: %v", err)
	}
}

// TestBackupRestore takes a hot backup while a client sends, restores it
// into a new data directory and starts a server there on the same
// address: the existing account logs in with its pinned server key, and
// what was queued is delivered.
func TestBackupRestore(t *testing.T) {
	mx := metrics.New()
	cfg := testserver.Config(t, t.TempDir())
	s, err := server.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mx.Register(s)
	a, err := admin.Start(admin.Config{Addr: "127.0.0.1:0", Token: tok, Server: s, Metrics: mx, Logger: testserver.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	ccfg := testserver.ClientConfig(t, s)
	ann, err := client.Signup(ctx, ccfg, "ann", pw)
	if err != nil {
		t.Fatal(err)
	}
	bcfg := testserver.ClientConfig(t, s)
	bob, err := client.Signup(ctx, bcfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	bob.Close()
	for i := 0; i < 20; i++ {
		if _, err := ann.SendText(ctx, "bob", "before the backup"); err != nil {
			t.Fatal(err)
		}
	}
	// Writes go on during the backup.
	stop := make(chan struct{})
	sent := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				sent <- n
				return
			default:
			}
			if _, err := ann.SendText(ctx, "bob", "during"); err == nil {
				n++
			}
		}
	}()
	req, _ := http.NewRequest("GET", "http://"+a.Addr()+"/v1/backup", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	archive, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	close(stop)
	during := <-sent
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("backup: %d %v", resp.StatusCode, err)
	}
	ann.Close()
	a.Close(context.Background())
	addr := s.Addr()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Damaged archives and used directories are refused.
	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := backup.Restore(bytes.NewReader(archive[:len(archive)/2]), dir, backup.Limits{}); !errors.Is(err, backup.ErrDamaged) {
		t.Fatalf("truncated archive: %v", err)
	}
	flipped := append([]byte(nil), archive...)
	flipped[2048] ^= 1
	if _, err := backup.Restore(bytes.NewReader(flipped), dir, backup.Limits{}); !errors.Is(err, backup.ErrDamaged) {
		t.Fatalf("altered archive: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a refused archive left %d files", len(entries))
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused restore left the directory it made: %v", err)
	}
	// An empty target that others may write is made private.
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777)
	if _, err := backup.Restore(bytes.NewReader(archive), cfg.DataDir, backup.Limits{}); !errors.Is(err, backup.ErrNotEmpty) {
		t.Fatalf("restore over a used directory: %v", err)
	}
	m, err := backup.Restore(bytes.NewReader(archive), dir, backup.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Fatalf("restored directory mode %v", st.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("the restored directory holds %d entries, want the key and the store", len(entries))
	}
	if m.Fingerprint != s.Key.Public.Fingerprint() {
		t.Fatal("the backup has another key")
	}
	// A new server on the restored directory, at the same address.
	rcfg := testserver.Config(t, dir)
	rcfg.Listen = addr
	r, err := server.Start(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer testserver.Stop(t, r)
	bob, err = client.Login(ctx, bcfg, "bob", pw) // pinned key: must not change
	if err != nil {
		t.Fatalf("login after restore: %v", err)
	}
	defer bob.Close()
	got := 0
	timeout := time.After(10 * time.Second)
	for got < 20 {
		select {
		case <-testserver.Messages(bob):
			got++
		case <-timeout:
			t.Fatalf("got %d of at least 20 queued messages after restore", got)
		}
	}
	t.Logf("backup: %d bytes, %d messages sent while it ran", len(archive), during)
}

// TestStalledBackup: a backup client that stops reading holds nothing
// up. It asks for a backup bigger than the socket buffers and reads
// nothing while a sender queues enough for an offline user that the store
// file must grow; every send completes, and the backup, read at last, is
// whole.
func TestStalledBackup(t *testing.T) {
	s, a := startAdmin(t, tok, func(c *server.Config) { c.Shard.MsgEvery = -1 })
	ctx := ctxT(t)
	ann := testserver.Signup(t, s, "ann")
	carol := testserver.Signup(t, s, "carol")
	bob := testserver.Signup(t, s, "bob")
	for _, to := range []string{"ann", "carol"} { // (each may then fill a quarter of bob's queue)
		if _, err := bob.SendText(ctx, to, "send me anything"); err != nil {
			t.Fatal(err)
		}
	}
	bob.Close()
	send := func(from *client.Client, n int) error {
		text := strings.Repeat("x", client.MaxTextLen(from.User(), "bob"))
		for i := 0; i < n; i++ {
			if _, err := from.SendText(ctx, "bob", text); err != nil {
				return fmt.Errorf("send %d: %w", i, err)
			}
		}
		return nil
	}
	start := time.Now()
	if err := send(ann, 160); err != nil { // about 10 MiB queued: more than loopback's socket buffers
		t.Fatal(err)
	}
	t.Logf("queued 10 MiB in %v", time.Since(start))
	st, _ := os.Stat(filepath.Join(s.DataDir(), server.DBFileName))
	before := st.Size()

	c, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /v1/backup HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n", tok)
	time.Sleep(500 * time.Millisecond) // the server writes until the socket is full

	if code := call(t, a, "GET", "/v1/backup", tok, nil, nil); code != http.StatusConflict {
		t.Fatalf("a second backup while one runs: %d", code)
	}
	done := make(chan error, 1)
	start = time.Now()
	go func() { done <- errors.Join(send(ann, 150), send(carol, 200)) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("queued 22 MiB more in %v", time.Since(start))
	case <-time.After(20 * time.Second):
		t.Fatal("sends to an offline user hung behind a stalled backup download")
	}
	st, _ = os.Stat(filepath.Join(s.DataDir(), server.DBFileName))
	if st.Size() <= before {
		t.Fatalf("the store did not grow (%d bytes before, %d after): the test proves nothing", before, st.Size())
	}

	// The backup, read now, is whole: it restores.
	start = time.Now()
	defer func() { t.Logf("read the backup in %v", time.Since(start)) }()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("backup: %d", resp.StatusCode)
	}
	m, err := backup.Restore(resp.Body, filepath.Join(t.TempDir(), "r"), backup.Limits{})
	if err != nil {
		t.Fatalf("the stalled backup does not restore: %v", err)
	}
	if m.Sizes[server.DBFileName] < before/2 {
		t.Fatalf("the backup's store is %d bytes, the store was %d", m.Sizes[server.DBFileName], before)
	}
	leftovers, _ := filepath.Glob(filepath.Join(s.DataDir(), ".backup-*"))
	if len(leftovers) != 0 {
		t.Fatalf("staging files left: %v", leftovers)
	}
}

// TestStalledBackupCutOff: a backup download that stops reading is cut
// off after the stall timeout, and its staging file goes with it.
func TestStalledBackupCutOff(t *testing.T) {
	s, a := startAdmin2(t, admin.Config{Token: tok, StallTimeout: time.Second}, func(c *server.Config) { c.Shard.MsgEvery = -1 })
	ann := testserver.Signup(t, s, "ann")
	bob := testserver.Signup(t, s, "bob")
	ctx := ctxT(t)
	if _, err := bob.SendText(ctx, "ann", "hi"); err != nil {
		t.Fatal(err)
	}
	bob.Close()
	text := strings.Repeat("x", client.MaxTextLen("ann", "bob"))
	for i := 0; i < 160; i++ { // more than the socket buffers hold
		if _, err := ann.SendText(ctx, "bob", text); err != nil {
			t.Fatal(err)
		}
	}
	c, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /v1/backup HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n", tok)
	time.Sleep(3 * time.Second) // read nothing for longer than the timeout
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		t.Fatalf("the connection was not closed: %v after %d bytes", err, n)
	}
	if n > 9<<20 {
		t.Fatalf("the whole backup (%d bytes) came through a stalled download", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		left, _ := filepath.Glob(filepath.Join(s.DataDir(), ".backup-*"))
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("staging files left after the cut-off: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// And the next backup runs.
	if code := call(t, a, "GET", "/v1/backup", tok, nil, nil); code != 200 {
		t.Fatalf("the next backup: %d", code)
	}
}
