package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"securefastchat/client"
)

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServe runs the binary's serve with env and args and waits until
// it serves on addr: a handshake succeeds. (The port is taken before the
// key and the store are made, so a bare TCP connect can succeed first.)
func startServe(t *testing.T, env []string, addr string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(binPath, append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := client.Dial(ctx, addr, client.DialOptions{})
		cancel()
		if err == nil {
			c.Close()
			return cmd, logs
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not start:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOperatorCommands drives the operator's commands against the real
// binary configured from the environment: health, invites, admin, a hot
// backup and a restore that keeps the server's identity.
func TestOperatorCommands(t *testing.T) {
	addr, adminAddr, data := freeAddr(t), freeAddr(t), t.TempDir()
	env := []string{"SFC_LISTEN=" + addr, "SFC_ADMIN=" + adminAddr, "SFC_DATA=" + data, "SFC_SIGNUP=invite",
		"SFC_ARGON2=t=1,m=64,p=1", "SFC_INSECURE_WEAK_ARGON2=true", "SFC_SHARDS=3", "SFC_LOG_FORMAT=json"}
	srv, logs := startServe(t, env, addr)
	waitFor(t, func() bool { return strings.Contains(logs.String(), `"msg":"serving"`) })
	if !strings.Contains(logs.String(), `"shards":3`) {
		t.Fatalf("SFC_SHARDS not applied:\n%s", logs)
	}
	// A flag wins over its variable.
	if r := run(t, []string{"SFC_SHARDS=x"}, "serve", "--shards", "0"); r.code != 2 || !strings.Contains(r.stderr, "SFC_SHARDS") {
		t.Fatalf("bad env: %d %s", r.code, r.stderr)
	}
	if r := run(t, nil, "serve", "--help"); r.code != 0 || !strings.Contains(r.stderr+r.stdout, "env SFC_MSG_EVERY") {
		t.Fatalf("serve --help does not list the variables: %s", r.stderr)
	}
	if r := run(t, env, "health"); r.code != 0 || !strings.HasPrefix(r.stdout, "ok SHA256:") {
		t.Fatalf("health: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := run(t, env, "health", "--admin", adminAddr); r.code != 0 {
		t.Fatalf("health --admin: %d %s", r.code, r.stderr)
	}
	if r := run(t, nil, "health", "--server", freeAddr(t), "--timeout", "1s"); r.code != 1 {
		t.Fatalf("health of nothing: %d", r.code)
	}

	// The operator, on the server's machine: the admin commands read the token
	// the server made in its data directory.
	user := []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=operator test pw", "SFC_ADMIN=" + adminAddr, "SFC_DATA=" + data}
	if r := run(t, user, "signup", "--server", addr, "--user", "ann"); r.code != 1 || !strings.Contains(r.stderr, "invitation") {
		t.Fatalf("signup without an invite: %d %s", r.code, r.stderr)
	}
	r := run(t, user, "admin", "invite", "--expires", "1h", "--count", "2")
	codes := strings.Fields(r.stdout)
	if r.code != 0 || len(codes) != 2 || len(codes[0]) != 19 {
		t.Fatalf("admin invite: %d %q %s", r.code, r.stdout, r.stderr)
	}
	bob := []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=operator test pw"}
	if r := run(t, user, "signup", "--server", addr, "--user", "ann", "--invite", codes[0]); r.code != 0 {
		t.Fatalf("signup with an invite: %s", r.stderr)
	}
	// (A used or unknown code is refused: TestInviteOnlySignup. Each
	// sign-up here spends two of the address's six quick attempts.)
	if r := run(t, bob, "signup", "--server", addr, "--user", "bob", "--invite", codes[1]); r.code != 0 {
		t.Fatalf("signup with the second invite: %s", r.stderr)
	}
	// JSON logs: a connection's lines carry its shard and, once logged in,
	// its user.
	waitFor(t, func() bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			var l map[string]any
			if json.Unmarshal([]byte(line), &l) == nil && l["msg"] == "logged in" && l["user"] == "ann" && l["shard"] != nil && l["remote"] != nil {
				return true
			}
		}
		return false
	})
	if r := run(t, user, "admin", "users"); r.code != 0 || !strings.Contains(r.stdout, "ann") {
		t.Fatalf("admin users: %s %s", r.stdout, r.stderr)
	}
	if r := run(t, user, "admin", "stats"); r.code != 0 || !strings.Contains(r.stdout, `"signup": "invite"`) {
		t.Fatalf("admin stats: %s %s", r.stdout, r.stderr)
	}
	if r := run(t, user, "admin", "delete", "ann"); r.code != 2 || !strings.Contains(r.stderr, "--yes") {
		t.Fatalf("delete without --yes off a terminal: %d %s", r.code, r.stderr)
	}
	if r := run(t, user, "admin", "revoke", "nobody", "--yes"); r.code != 1 || !strings.Contains(r.stderr, "no such user") {
		t.Fatalf("revoke of nobody: %d %s", r.code, r.stderr)
	}
	if r := run(t, bob, "send", "--server", addr, "--user", "bob", "--to", "ann", "note to ann"); r.code != 0 || !strings.Contains(r.stdout, "Queued") {
		t.Fatalf("send: %s", r.stderr)
	}

	out := filepath.Join(t.TempDir(), "backup.tar")
	if r := run(t, user, "backup", out); r.code != 0 || !strings.Contains(r.stdout, "Backed up") {
		t.Fatalf("backup: %s %s", r.stdout, r.stderr)
	}
	if r := run(t, user, "backup", out); r.code != 1 {
		t.Fatal("backup over an existing file")
	}
	srv.Process.Signal(syscall.SIGTERM)
	if err := srv.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, logs)
	}
	if r := run(t, nil, "restore", out, "--data", data); r.code != 1 || !strings.Contains(r.stderr, "not empty") {
		t.Fatalf("restore over the old directory: %d %s", r.code, r.stderr)
	}
	restored := filepath.Join(t.TempDir(), "restored")
	if r := run(t, nil, "restore", out, "--data", restored); r.code != 0 {
		t.Fatalf("restore: %s", r.stderr)
	}
	env2 := append(append([]string(nil), env...), "SFC_DATA="+restored)
	startServe(t, env2, addr)
	// Same address, same key: the client's pin holds; the account and its
	// queued message are back.
	r = run(t, user, "recv", "--server", addr, "--user", "ann")
	if r.code != 0 || !strings.Contains(r.stdout, "bob (request): note to ann") {
		t.Fatalf("recv after restore: %d %s %s", r.code, r.stdout, r.stderr)
	}
}
