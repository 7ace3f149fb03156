package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"securefastchat/internal/testbin"
	"securefastchat/internal/testserver"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sfc-bin")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "securefastchat")
	if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the binary: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return runIn(t, env, "", args...)
}

// runIn is run with stdin.
func runIn(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	r := testbin.Run(t, binPath, env, stdin, args...)
	return result{r.Stdout, r.Stderr, r.Code}
}

// signupAll signs each user up on addr with a home of its own and returns
// each one's environment (SFC_HOME first, then SFC_PASSWORD).
func signupAll(t *testing.T, addr, password string, names ...string) map[string][]string {
	t.Helper()
	envs := map[string][]string{}
	for _, u := range names {
		envs[u] = []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=" + password}
		if r := run(t, envs[u], "signup", "--server", addr, "--user", u); r.code != 0 {
			t.Fatalf("signup %s: %+v", u, r)
		}
	}
	return envs
}

// serve starts the binary as a server on a free port and returns its
// address and process.
func serve(t *testing.T, data string, extra ...string) (string, *exec.Cmd, *syncBuffer) {
	t.Helper()
	addr := freeAddr(t)
	args := append([]string{"--listen", addr, "--data", data, "--shards", "2",
		"--argon2", "t=1,m=64,p=1", "--insecure-weak-argon2"}, extra...)
	cmd, logs := startServe(t, nil, addr, args...)
	return addr, cmd, logs
}

func TestCommandLine(t *testing.T) {
	data := t.TempDir()
	addr, srv, logs := serve(t, data)
	alice := []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=alice password"}
	bob := []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=bob password!"}
	fp := strings.TrimSpace(run(t, nil, "fingerprint", "--data", data).stdout)
	if !strings.HasPrefix(fp, "SHA256:") || len(fp) != 50 {
		t.Fatalf("fingerprint %q", fp)
	}
	if r := run(t, alice, "signup", "--server", addr, "--user", "Alice", "--server-key", fp); r.code != 0 || !strings.Contains(r.stdout, "Signed up as Alice") {
		t.Fatalf("signup: %+v", r)
	}
	if r := run(t, bob, "signup", "--server", addr, "--user", "bob"); r.code != 0 || !strings.Contains(r.stderr, fp) {
		t.Fatalf("signup without --server-key must print the pinned fingerprint: %+v", r)
	}
	// bob waits for messages while alice sends text and a file.
	out := t.TempDir()
	recv := exec.Command(binPath, "recv", "--server", addr, "--user", "bob", "--wait", "20s", "--json", "--out", out)
	recv.Env = append(os.Environ(), bob...)
	stdout, _ := recv.StdoutPipe()
	var recvErr bytes.Buffer
	recv.Stderr = &recvErr
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	defer recv.Process.Kill()
	// recv resumes the session signup kept in bob's home (no password hash).
	waitFor(t, func() bool { return strings.Count(logs.String(), "user=bob kind=resume") == 1 })
	// bob has not written to alice: her first message is a request, stored
	// and answered "queued" whether bob is online or not (sends are no
	// presence oracle); bob's waiting recv still gets it at once, below.
	if r := run(t, alice, "send", "--server", addr, "--user", "alice", "--to", "BOB", "hello", "bob"); r.code != 0 || !strings.Contains(r.stdout, "Queued for BOB") {
		t.Fatalf("send: %+v", r)
	}
	file := filepath.Join(t.TempDir(), "report.txt")
	os.WriteFile(file, bytes.Repeat([]byte("securefastchat "), 10000), 0o600)
	if r := run(t, alice, "send", "--server", addr, "--user", "alice", "--to", "bob", "--file", file); r.code != 0 {
		t.Fatalf("send file: %+v", r)
	}
	sc := bufio.NewScanner(stdout)
	var got []map[string]any
	for len(got) < 2 && sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("recv --json line %q: %v", sc.Text(), err)
		}
		got = append(got, m)
	}
	if len(got) != 2 || got[0]["text"] != "hello bob" || got[0]["sender"] != "alice" || got[0]["request"] != true || got[1]["kind"] != "file" {
		t.Fatalf("recv printed %v (stderr %s)", got, recvErr.String())
	}
	saved, _ := os.ReadFile(got[1]["file"].(string))
	want, _ := os.ReadFile(file)
	if !bytes.Equal(saved, want) || filepath.Dir(got[1]["file"].(string)) != out {
		t.Fatalf("file saved as %v differs", got[1]["file"])
	}
	recv.Process.Kill()
	recv.Wait()

	// Every error a user can cause: one clear line, non-zero exit.
	errCases := []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"wrong password", []string{alice[0], "SFC_PASSWORD=not the password"}, []string{"send", "--server", addr, "--user", "alice", "--to", "bob", "x"}, 1, "wrong password"},
		{"unknown peer", alice, []string{"send", "--server", addr, "--user", "alice", "--to", "nobody", "x"}, 1, "no such user"},
		{"taken name", []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=whatever123"}, []string{"signup", "--server", addr, "--user", "ALICE"}, 1, "taken"},
		{"server down", alice, []string{"send", "--server", "127.0.0.1:1", "--user", "alice", "--to", "bob", "x"}, 1, "cannot connect"},
		{"bad flag", alice, []string{"send", "--bogus"}, 2, "send: flag provided but not defined: -bogus (see 'securefastchat send --help')"},
		{"invalid name", alice, []string{"signup", "--user", "no-dashes"}, 2, "not a valid name"},
		{"missing --to", alice, []string{"send", "--user", "alice", "x"}, 2, "--to (or --group) is required"},
		{"no password", []string{alice[0], "SFC_PASSWORD="}, []string{"send", "--server", addr, "--user", "alice", "--to", "bob", "x"}, 1, "wrong password"},
		{"wrong server key", []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=whatever123"}, []string{"signup", "--server", addr, "--user", "zed", "--server-key", "SHA256:" + strings.Repeat("A", 43)}, 1, "not the one given with --server-key"},
		{"unknown command", nil, []string{"frobnicate"}, 2, "unknown command"},
	}
	for _, c := range errCases {
		r := run(t, c.env, c.args...)
		// A command's first contact with a server names its key first
		// (two lines); the error is the one line after.
		stderr := r.stderr
		if strings.HasPrefix(stderr, "First contact with ") {
			_, stderr, _ = strings.Cut(stderr, "someone may be in between.\n")
		}
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		last := lines[len(lines)-1]
		if c.name != "wrong server key" && len(lines) != 1 {
			t.Errorf("%s: %d lines on stderr: %q", c.name, len(lines), r.stderr)
		}
		if r.code != c.code || !strings.Contains(last, c.want) {
			t.Errorf("%s: exit %d, stderr %q", c.name, r.code, r.stderr)
		}
	}
	// --help on every command exits 0 and says what it does.
	for _, cmd := range []string{"serve", "fingerprint", "signup", "send", "recv"} {
		if r := run(t, nil, cmd, "--help"); r.code != 0 || !strings.Contains(r.stderr, "Usage: securefastchat "+cmd) {
			t.Errorf("%s --help: %+v", cmd, r)
		}
	}

	// A second server on the same data directory exits with a clear error,
	// and the first keeps serving (F4).
	start := time.Now()
	r := run(t, nil, "serve", "--data", data, "--listen", "127.0.0.1:0")
	if r.code != 1 || !strings.Contains(r.stderr, "locked by another process") {
		t.Fatalf("second server: %+v", r)
	}
	t.Logf("F4: second server exited in %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(r.stderr))
	if r := run(t, bob, "send", "--server", addr, "--user", "bob", "--to", "alice", "x"); r.code != 0 || !strings.Contains(r.stdout, "Queued for alice") {
		t.Fatalf("first server after the second tried: %+v", r)
	}

	// The server's key survives a restart, so pinned clients keep working;
	// SIGTERM stops it cleanly.
	srv.Process.Signal(syscall.SIGTERM)
	if err := srv.Wait(); err != nil {
		t.Fatalf("server exit after SIGTERM: %v\n%s", err, logs)
	}
	if !strings.Contains(logs.String(), "shutting down") || !strings.Contains(logs.String(), "stopped") {
		t.Fatalf("shutdown logs:\n%s", logs)
	}
	addr2, _, _ := serve(t, data)
	_ = addr2
	if fp2 := strings.TrimSpace(run(t, nil, "fingerprint", "--data", data).stdout); fp2 != fp {
		t.Fatalf("key changed across restart: %s -> %s", fp, fp2)
	}
	if st, _ := os.Stat(filepath.Join(data, "server.key")); st.Mode().Perm() != 0o600 {
		t.Fatalf("server.key mode %v", st.Mode().Perm())
	}
}

type syncBuffer = testserver.Buffer

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDefaultsNeedNoSetup: serve with no flags but --listen (to avoid the
// fixed port) creates its data directory and key under the data home.
func TestDefaultDataDir(t *testing.T) {
	home := t.TempDir()
	t.Setenv("XDG_DATA_HOME", home)
	if d := defaultDataDir(); d != filepath.Join(home, "securefastchat") {
		t.Fatalf("default data dir %s", d)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(binPath, "serve", "--listen", addr)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+home)
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(logs.String(), "msg=serving") })
	if !strings.Contains(logs.String(), `argon2="m=65536,t=3,p=4"`) {
		t.Fatalf("production argon2 is not the default:\n%s", logs.String())
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v", err)
	}
	for _, f := range []string{"server.key", "securefastchat.db"} {
		if _, err := os.Stat(filepath.Join(home, "securefastchat", f)); err != nil {
			t.Fatalf("%s not created: %v", f, err)
		}
	}
}

// TestLayers: the top-level packages depend on nothing under internal/
// (accounts, limits and the rest reach them through interfaces they
// define), and the balancer does not depend on the shards.
func TestLayers(t *testing.T) {
	for _, pkg := range []string{"./proto", "./store", "./balancer", "./shard", "./client", "./ratelimit", "./termtext", "./history", "./groups"} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.HasPrefix(dep, "securefastchat/internal/") || pkg == "./balancer" && dep == "securefastchat/shard" {
				t.Errorf("%s depends on %s", pkg, dep)
			}
		}
	}
}

// TestDeps keeps the core packages on the standard library, x/crypto and
// bbolt, and keeps testing code out of the binary.
func TestDeps(t *testing.T) {
	allowed := []string{"golang.org/x/crypto/", "golang.org/x/sys/", "go.etcd.io/bbolt", "securefastchat/"}
	for _, pkg := range []string{"./proto", "./store", "./shard", "./balancer", "./internal/account", "./internal/passwd", "./ratelimit"} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg).Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, dep := range strings.Fields(string(out)) {
			ok := false
			for _, a := range allowed {
				ok = ok || strings.HasPrefix(dep, a) || dep == strings.TrimSuffix(a, "/")
			}
			if !ok || strings.Contains(dep, "testserver") {
				t.Errorf("%s depends on %s", pkg, dep)
			}
		}
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "testing" || strings.Contains(dep, "testserver") {
			t.Errorf("the binary links %s", dep)
		}
	}
}

// TestGroupCommands drives the group commands of the binary.
func TestGroupCommands(t *testing.T) {
	addr, _, _ := serve(t, t.TempDir())
	env := func(u string) []string {
		return []string{"SFC_HOME=" + filepath.Join(t.TempDir(), u), "SFC_PASSWORD=" + u + " password"}
	}
	homes := map[string][]string{}
	for _, u := range []string{"alice", "bob", "carol"} {
		homes[u] = env(u)
		if r := run(t, homes[u], "signup", "--server", addr, "--user", u); r.code != 0 {
			t.Fatalf("signup %s: %+v", u, r)
		}
	}
	steps := []struct {
		who  string
		args []string
		code int
		want string
	}{
		{"alice", []string{"group", "create", "team"}, 0, "Created group team"},
		{"alice", []string{"group", "add", "team", "bob"}, 0, "Added bob"},
		{"alice", []string{"group", "add", "team", "carol"}, 0, "Added carol"},
		// alice is a stranger to carol: carol is invited, and joins.
		{"carol", []string{"group", "invites"}, 0, "team (invited by alice"},
		{"carol", []string{"group", "join", "team"}, 0, "Joined team"},
		{"carol", []string{"group", "invites"}, 0, "No invitations."},
		{"bob", []string{"group", "members", "team"}, 0, "alice (admin)\nbob\ncarol"},
		{"bob", []string{"group", "add", "team", "alice"}, 1, "not allowed"},
		{"bob", []string{"group", "create", "team"}, 1, "exists"},
		{"alice", []string{"send", "--group", "team", "hello", "team"}, 0, "stored for the others"},
		{"carol", []string{"recv", "--json"}, 0, `"group":"team"`},
		{"carol", []string{"group", "leave", "team"}, 0, "Left team"},
		{"carol", []string{"group", "members", "team"}, 1, "not a member"},
		{"bob", []string{"group", "list"}, 0, "team"},
		{"bob", []string{"group", "rekey", "team"}, 0, "team has a new key"},
		{"bob", []string{"group", "frob"}, 2, "usage"},
	}
	for _, s := range steps {
		args := append([]string{s.args[0], "--server", addr, "--user", s.who}, s.args[1:]...)
		r := run(t, homes[s.who], args...)
		if r.code != s.code || !strings.Contains(r.stdout+r.stderr, s.want) {
			t.Fatalf("%s %v: exit %d, stdout %q, stderr %q", s.who, s.args, r.code, r.stdout, r.stderr)
		}
	}
}

// TestCommandTable: the usage text lists every command of the table, and
// each command's --help says how to use it.
func TestCommandTable(t *testing.T) {
	help := run(t, nil, "help")
	if help.code != 0 {
		t.Fatalf("help: %+v", help)
	}
	for _, c := range commands {
		listed := strings.Contains(help.stdout, "  securefastchat "+c.name+" ") || strings.Contains(help.stdout, "  securefastchat "+c.name+"\n")
		if listed == c.hidden {
			t.Errorf("%s: listed %v, hidden %v", c.name, listed, c.hidden)
		}
		if c.hidden || c.name == "version" {
			continue
		}
		if r := run(t, nil, c.name, "--help"); r.code != 0 || !strings.Contains(r.stderr, "Usage: securefastchat "+c.name) {
			t.Errorf("%s --help: %+v", c.name, r)
		}
	}
}
