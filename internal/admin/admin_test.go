package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
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

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startAdmin runs a server with metrics and an admin listener on
// loopback.
func startAdmin(t *testing.T, token string, mod func(*server.Config)) (*server.Server, *admin.Admin) {
	t.Helper()
	mx := metrics.New()
	s := testserver.Start(t, func(c *server.Config) {
		c.Shard.Observer = mx
		if mod != nil {
			mod(c)
		}
	})
	mx.Register(s)
	a, err := admin.Start(admin.Config{Addr: "127.0.0.1:0", Token: token, Server: s, Metrics: mx, Logger: testserver.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	return s, a
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
	s, a := startAdmin(t, "", nil)
	ctx := ctxT(t)
	ann := testserver.Signup(t, s, "ann")
	cfgBob := testserver.ClientConfig(t, s)
	bob, err := client.Signup(ctx, cfgBob, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if _, err := ann.SendText(ctx, "bob", "hello"); err != nil {
		t.Fatal(err)
	}
	<-bob.Messages()

	var users []admin.User
	if code := call(t, a, "GET", "/v1/users", "", nil, &users); code != 200 || len(users) != 2 || users[1].Name != "bob" || !users[1].Online {
		t.Fatalf("users: %d %+v", code, users)
	}
	// Disable: bob is cut off, told why, and cannot log in again.
	var res admin.ActionResult
	if code := call(t, a, "POST", "/v1/users/bob/disable", "", nil, &res); code != 200 || !res.Kicked || res.Sessions != 1 {
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
	call(t, a, "POST", "/v1/users/bob/enable", "", nil, &res)
	bob2, err := client.Login(ctx, cfgBob, "bob", pw)
	if err != nil {
		t.Fatalf("login after enable: %v", err)
	}
	// Revoke: the token no longer resumes.
	tok := bob2.Token()
	if code := call(t, a, "POST", "/v1/users/bob/revoke", "", nil, &res); code != 200 || res.Sessions != 1 || !res.Kicked {
		t.Fatalf("revoke: %d %+v", code, res)
	}
	bob2.Close()
	conn, err := client.Dial(ctx, s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Resume(ctx, "bob", tok); !errors.Is(err, proto.CodeInvalidToken) {
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
	if code := call(t, a, "DELETE", "/v1/users/bob", "", nil, &res); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	if n, _, _ := s.Store.QueueLen("bob"); n != 0 {
		t.Fatalf("bob's queue after delete: %d", n)
	}
	if code := call(t, a, "DELETE", "/v1/users/bob", "", nil, nil); code != 404 {
		t.Fatalf("second delete: %d", code)
	}
	if _, err := ann.SendText(ctx, "bob", "to nobody"); !errors.Is(err, proto.CodeNoSuchRecipient) {
		t.Fatalf("send to a deleted user: %v", err)
	}
	if code := call(t, a, "POST", "/v1/users/..%2f/disable", "", nil, nil); code != 400 && code != 404 {
		t.Fatalf("bad name: %d", code)
	}

	var st admin.Stats
	if code := call(t, a, "GET", "/v1/stats", "", nil, &st); code != 200 || st.Users != 1 || st.Counters["messages_delivered"] < 1 || !st.Ready || st.Signup != "open" {
		t.Fatalf("stats: %d %+v", code, st)
	}
	var text string
	if code := call(t, a, "GET", "/metrics", "", nil, &text); code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	for _, series := range []string{
		`securefastchat_shard_connections{shard="0"}`, `securefastchat_logins_total{result="ok"}`, `securefastchat_logins_total{result="failed"}`,
		"securefastchat_messages_routed_total", "securefastchat_messages_queued_total", "securefastchat_messages_delivered_total",
		"securefastchat_messages_expired_total", "securefastchat_queued_messages", "securefastchat_slow_consumers_total",
		"securefastchat_message_latency_seconds_bucket", "securefastchat_group_fanout_members_bucket",
		"securefastchat_store_commit_seconds_bucket", "securefastchat_ready 1", "go_goroutines", "process_resident_memory_bytes",
	} {
		if !strings.Contains(text, series) {
			t.Errorf("metrics lack %s", series)
		}
	}
	if strings.Contains(text, "securefastchat_message_latency_seconds_count 0") {
		t.Error("a delivered message left no latency sample")
	}
	var idx string
	if code := call(t, a, "GET", "/debug/pprof/", "", nil, &idx); code != 200 || !strings.Contains(idx, "goroutine") {
		t.Fatalf("pprof: %d", code)
	}
	var ready string
	if code := call(t, a, "GET", "/readyz", "", nil, &ready); code != 200 {
		t.Fatalf("readyz: %d", code)
	}
}

func TestAdminToken(t *testing.T) {
	if _, err := admin.Start(admin.Config{Addr: "0.0.0.0:0"}); !errors.Is(err, admin.ErrTokenRequired) {
		t.Fatalf("non-loopback without a token: %v", err)
	}
	if _, err := admin.Start(admin.Config{Addr: "127.0.0.1:0", Token: "short"}); err == nil {
		t.Fatal("a short token was accepted")
	}
	for addr, want := range map[string]bool{"127.0.0.1:1": true, "[::1]:1": true, "localhost:1": true, "0.0.0.0:1": false, ":1": false, "10.0.0.1:1": false} {
		if admin.IsLoopback(addr) != want {
			t.Errorf("IsLoopback(%s) != %v", addr, want)
		}
	}
	const token = "0123456789abcdef-token"
	_, a := startAdmin(t, token, nil)
	for _, p := range []string{"/metrics", "/v1/users", "/v1/stats", "/debug/pprof/", "/v1/backup"} {
		if code := call(t, a, "GET", p, "", nil, nil); code != 401 {
			t.Errorf("%s without the token: %d", p, code)
		}
		if code := call(t, a, "GET", p, "wrong-token-wrong-token", nil, nil); code != 401 {
			t.Errorf("%s with a wrong token: %d", p, code)
		}
	}
	if code := call(t, a, "GET", "/v1/users", token, nil, new([]admin.User)); code != 200 {
		t.Fatalf("with the token: %d", code)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code := call(t, a, "GET", p, "", nil, nil); code != 200 {
			t.Errorf("%s: %d (probes need no token)", p, code)
		}
	}
}

func TestInviteOnlySignup(t *testing.T) {
	s, a := startAdmin(t, "", func(c *server.Config) { c.Signup = account.SignupInvite })
	ctx := ctxT(t)
	if _, err := client.Signup(ctx, testserver.ClientConfig(t, s), "ann", pw); !errors.Is(err, proto.CodeInvalidInvite) {
		t.Fatalf("signup without a code: %v", err)
	}
	var inv admin.InviteResponse
	if code := call(t, a, "POST", "/v1/invites", "", admin.InviteRequest{Count: 2, Expires: "1h"}, &inv); code != 200 || len(inv.Codes) != 2 || inv.Codes[0] == inv.Codes[1] {
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
	for _, bad := range []admin.InviteRequest{{Count: 101}, {Count: -1}, {Expires: "soon"}, {Expires: "-1h"}} {
		if code := call(t, a, "POST", "/v1/invites", "", bad, nil); code != 400 {
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
	a, err := admin.Start(admin.Config{Addr: "127.0.0.1:0", Server: s, Metrics: mx, Logger: testserver.Logger(t)})
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
	resp, err := http.Get("http://" + a.Addr() + "/v1/backup")
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
	if _, err := backup.Restore(bytes.NewReader(archive[:len(archive)/2]), dir); !errors.Is(err, backup.ErrDamaged) {
		t.Fatalf("truncated archive: %v", err)
	}
	flipped := append([]byte(nil), archive...)
	flipped[2048] ^= 1
	if _, err := backup.Restore(bytes.NewReader(flipped), dir); !errors.Is(err, backup.ErrDamaged) {
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
	if _, err := backup.Restore(bytes.NewReader(archive), cfg.DataDir); !errors.Is(err, backup.ErrNotEmpty) {
		t.Fatalf("restore over a used directory: %v", err)
	}
	m, err := backup.Restore(bytes.NewReader(archive), dir)
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
		case <-bob.Messages():
			got++
		case <-timeout:
			t.Fatalf("got %d of at least 20 queued messages after restore", got)
		}
	}
	t.Logf("backup: %d bytes, %d messages sent while it ran", len(archive), during)
}
