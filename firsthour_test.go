package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"securefastchat/internal/account"
	"securefastchat/proto"
	"securefastchat/shard"
)

// Commands that only send or ask (send, send to oneself, a failed send to
// a group, group list, group create, group members) log in without taking
// deliveries: what is queued for the user stays queued, and recv shows
// every message afterwards.
func TestSendingCommandsKeepTheQueue(t *testing.T) {
	addr, _, _ := serve(t, t.TempDir())
	users := signupAll(t, addr, "shared password", "bob", "dave")
	bob, dave := users["bob"], users["dave"]
	for i := 0; i < 5; i++ {
		r := run(t, bob, "send", "--server", addr, "--user", "bob", "--to", "dave", fmt.Sprintf("queued message %d", i))
		if r.code != 0 || !strings.Contains(r.stdout, "Queued for dave") {
			t.Fatalf("send %d: %+v", i, r)
		}
	}
	as := func(cmd string, args ...string) result {
		return run(t, dave, append([]string{cmd, "--server", addr, "--user", "dave"}, args...)...)
	}
	if r := as("send", "--to", "bob", "back soon"); r.code != 0 {
		t.Fatalf("dave's send: %+v", r)
	}
	if r := as("send", "--to", "dave", "a note to myself"); r.code != 0 {
		t.Fatalf("dave's send to himself: %+v", r)
	}
	if r := as("send", "--group", "nosuch", "hello?"); r.code == 0 {
		t.Fatalf("a send to a group that does not exist succeeded: %+v", r)
	}
	for _, args := range [][]string{{"group", "list"}, {"group", "create", "crew"}, {"group", "members", "crew"}} {
		if r := as(args[0], args[1:]...); r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
	}
	r := as("recv")
	for i := 0; i < 5; i++ {
		if !strings.Contains(r.stdout, fmt.Sprintf("bob: queued message %d", i)) {
			t.Fatalf("recv after the other commands misses message %d; it printed:\n%s%s", i, r.stdout, r.stderr)
		}
	}
	if !strings.Contains(r.stdout, "dave: a note to myself") {
		t.Fatalf("recv misses the note to himself:\n%s", r.stdout)
	}
}

// Scripts: every command resumes the session kept in the home, so a long
// run of commands spends no password hash on the server (past the
// per-address login limit of 20 a minute) and leaves no sessions behind;
// send reads its text from standard input; a rate-limited refusal says
// when a retry will pass.
func TestScripts(t *testing.T) {
	addr, _, logs := serve(t, t.TempDir(), "--msg-burst", "30", "--msg-every", "1m")
	users := signupAll(t, addr, "shared password", "ann", "ben")
	ann, ben := users["ann"], users["ben"]
	for i := 0; i < 25; i++ {
		r := run(t, ann, "send", "--server", addr, "--user", "ann", "--to", "ben", fmt.Sprintf("scripted %d", i))
		if r.code != 0 {
			t.Fatalf("send %d: %+v", i, r)
		}
	}
	if n := strings.Count(logs.String(), "user=ann kind=password"); n != 0 {
		t.Fatalf("%d password logins for 25 sends; want 0 (the session kept in the home is resumed)", n)
	}
	// Standard input: "-" and a pipe with no text.
	if r := runIn(t, ann, "line one\nline two\n", "send", "--server", addr, "--user", "ann", "--to", "ben", "-"); r.code != 0 {
		t.Fatalf("send -: %+v", r)
	}
	if r := runIn(t, ann, "from a pipe", "send", "--server", addr, "--user", "ann", "--to", "ben"); r.code != 0 {
		t.Fatalf("send from a pipe: %+v", r)
	}
	if r := runIn(t, ann, strings.Repeat("x", 70000), "send", "--server", addr, "--user", "ann", "--to", "ben", "-"); r.code != 1 || !strings.Contains(r.stderr, "the limit is") {
		t.Fatalf("send of too much from stdin: %+v", r)
	}
	r := run(t, ben, "recv", "--server", addr, "--user", "ben", "--json")
	for _, want := range []string{`"text":"scripted 0"`, `"text":"scripted 24"`, `"text":"line one\nline two"`, `"text":"from a pipe"`} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("recv misses %s:\n%s", want, r.stdout)
		}
	}
	// ann has spent 27 of 30 messages: the fourth next is refused, with
	// when to retry.
	var refused result
	for i := 0; i < 4; i++ {
		refused = run(t, ann, "send", "--server", addr, "--user", "ann", "--to", "ben", "more")
	}
	if refused.code != 1 || !regexp.MustCompile(`sending too fast; retry in [0-9]+s`).MatchString(refused.stderr) {
		t.Fatalf("a rate-limited send: %+v", refused)
	}
}

// recv --wait goes on across a server restart: it says the connection was
// lost, reconnects by itself and prints what arrives afterwards.
func TestRecvWaitReconnects(t *testing.T) {
	srv := newChild(t)
	srv.Start()
	users := signupAll(t, srv.Addr, "shared password", "ann", "ben")
	ann, ben := users["ann"], users["ben"]
	recv := exec.Command(binPath, "recv", "--server", srv.Addr, "--user", "ben", "--wait", "60s")
	recv.Env = append(os.Environ(), ben...)
	out, errb := &syncBuffer{}, &syncBuffer{}
	recv.Stdout, recv.Stderr = out, errb
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { recv.Process.Kill(); recv.Wait() }()
	waitFor(t, func() bool { return strings.Contains(srv.Logs.String(), "user=ben kind=resume") })
	if r := run(t, ann, "send", "--server", srv.Addr, "--user", "ann", "--to", "ben", "before the restart"); r.code != 0 {
		t.Fatalf("send: %+v", r)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), "ann (request): before the restart") })
	srv.Stop(syscall.SIGTERM)
	waitFor(t, func() bool { return strings.Contains(errb.String(), "reconnecting") })
	srv.Start()
	waitFor(t, func() bool { return strings.Contains(errb.String(), "Reconnected.") })
	if r := run(t, ann, "send", "--server", srv.Addr, "--user", "ann", "--to", "ben", "after the restart"); r.code != 0 {
		t.Fatalf("send after the restart: %+v", r)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), "ann (request): after the restart") })
	if recv.ProcessState != nil {
		t.Fatalf("recv --wait exited: %s", errb)
	}
}

// The first contact with a server names its key before anything else,
// also when the command then fails; an address that is not a
// securefastchat server (an HTTP port) is named as such.
func TestFirstContact(t *testing.T) {
	data := t.TempDir()
	addr, _, _ := serve(t, data)
	fp := strings.TrimSpace(run(t, nil, "fingerprint", "--data", data).stdout)
	home := "SFC_HOME=" + t.TempDir()
	r := run(t, []string{home, "SFC_PASSWORD=short"}, "signup", "--server", addr, "--user", "zoe")
	if r.code != 1 || !strings.HasPrefix(r.stderr, "First contact with "+addr+": its key is "+fp) || !strings.Contains(r.stderr, "invalid password") {
		t.Fatalf("a failed first sign-up must name the server's key first: %+v", r)
	}
	r = run(t, []string{home, "SFC_PASSWORD=long enough"}, "signup", "--server", addr, "--user", "zoe")
	if r.code != 0 || strings.Contains(r.stderr, "First contact") {
		t.Fatalf("the second contact: %+v", r)
	}
	// An HTTP server that refuses a request it cannot parse, as most do at
	// once (nginx, or Go's on a line it cannot read).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				buf := make([]byte, 512)
				nc.Read(buf)
				nc.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
			}()
		}
	}()
	webAddr := ln.Addr().String()
	for _, c := range []struct {
		home string
		args []string
	}{
		{"SFC_HOME=" + t.TempDir(), []string{"signup", "--server", webAddr, "--user", "zoe"}},
		{home, []string{"send", "--server", webAddr, "--user", "zoe", "--to", "x", "hi"}}, // zoe's home has her identity
	} {
		args := c.args
		r := run(t, []string{c.home, "SFC_PASSWORD=long enough"}, args...)
		if r.code != 1 || !strings.Contains(r.stderr, "not a securefastchat server") || strings.Contains(r.stderr, "frame") {
			t.Fatalf("%v against an HTTP port: %+v", args[0], r)
		}
	}
}

// The limits docs/OPERATIONS.md lists are the ones the server applies.
func TestDocumentedLimits(t *testing.T) {
	doc, err := os.ReadFile("docs/OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	l := account.DefaultLimits
	help := run(t, nil, "serve", "--help").stderr
	for _, want := range []string{
		fmt.Sprintf("a burst of %d, then one every %s) | address", l.LoginBurst, l.LoginEvery),
		fmt.Sprintf("a burst of %d, then %d a second | address", l.ResumeBurst, time.Second/l.ResumeEvery),
		fmt.Sprintf("after %d in %d minutes the account is throttled for %d minutes", l.FailuresBeforeThrottle, int(l.FailureWindow.Minutes()), int(l.ThrottleFor.Minutes())),
		fmt.Sprintf("a burst of %d, then one every %s;", l.SignupBurst, l.SignupEvery),
		fmt.Sprintf("%d per %d minutes", l.LookupBurst, int((time.Duration(l.LookupBurst) * l.LookupEvery).Minutes())),
		fmt.Sprintf("| %d; a new login past it revokes the least recently used; a session unused for %d days, or older than %d,", account.MaxSessions, int(account.SessionIdle.Hours()/24), int(account.SessionMax.Hours()/24)),
	} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("docs/OPERATIONS.md does not say %q", want)
		}
	}
	for _, flagDefault := range []string{`SFC_MSG_BURST, default "60"`, `SFC_MSG_EVERY, default "1s"`, `SFC_QUEUE_MAX_MESSAGES, default "10000"`, `SFC_QUEUE_MAX_BYTES, default "104857600"`} {
		if !strings.Contains(help, flagDefault) {
			t.Errorf("serve --help does not say %q", flagDefault)
		}
	}
	if !strings.Contains(string(doc), "10,000 messages and 100 MiB") || !strings.Contains(string(doc), "a burst of 60, then one a second") {
		t.Error("docs/OPERATIONS.md does not give the message and queue limits")
	}
	if want := fmt.Sprintf("| %d at once; %s statements in an account's device list", proto.MaxDevices, "1,000"); !strings.Contains(string(doc), want) || proto.MaxDeviceStatements != 1000 {
		t.Errorf("docs/OPERATIONS.md does not say %q", want)
	}
	silent := fmt.Sprintf("not logged in for %d days while another device of the account has", int(proto.DeviceSilentAfter/(24*time.Hour)))
	if !strings.Contains(string(doc), silent) || !strings.Contains(string(doc), fmt.Sprintf("warns %s before", "a week")) || proto.DeviceSilentWarning != 7*24*time.Hour {
		t.Errorf("docs/OPERATIONS.md does not say %q and when it warns", silent)
	}
	links := fmt.Sprintf("%d open at once per account; each lives %d minutes and relays at most %d frames and %d MiB", shard.LinkMaxOffers, int(shard.LinkTTL/time.Minute), shard.LinkMaxFrames, shard.LinkMaxBytes>>20)
	if !strings.Contains(string(doc), links) {
		t.Errorf("docs/OPERATIONS.md does not say %q", links)
	}
}

// What a careful operator notices: serve on a port in use makes nothing
// in its data directory; admin invite on an open server says codes are
// not needed; a damaged contacts file says what to do; the Quick start's
// data directory is ignored by git.
func TestOperatorDetails(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	data := filepath.Join(t.TempDir(), "fresh")
	r := run(t, nil, "serve", "--listen", busy.Addr().String(), "--data", data, "--argon2", "t=1,m=64,p=1", "--insecure-weak-argon2")
	if r.code != 1 || !strings.Contains(r.stderr, "address already in use") {
		t.Fatalf("serve on a busy port: %+v", r)
	}
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("serve on a busy port made its data directory: %v", err)
	}

	addr, adminAddr, sdata := freeAddr(t), freeAddr(t), t.TempDir()
	env := []string{"SFC_LISTEN=" + addr, "SFC_ADMIN=" + adminAddr, "SFC_DATA=" + sdata,
		"SFC_ARGON2=t=1,m=64,p=1", "SFC_INSECURE_WEAK_ARGON2=true"}
	startServe(t, env, addr)
	if r := run(t, env, "admin", "invite"); r.code != 0 || !strings.Contains(r.stderr, "nobody needs a code") {
		t.Fatalf("admin invite on an open server: %+v", r)
	}

	ann := []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=ann password"}
	if r := run(t, ann, "signup", "--server", addr, "--user", "ann"); r.code != 0 {
		t.Fatalf("signup: %+v", r)
	}
	contacts := filepath.Join(strings.TrimPrefix(ann[0], "SFC_HOME="), "users", "ann", "contacts")
	if err := os.WriteFile(contacts, []byte("bob garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = run(t, ann, "send", "--server", addr, "--user", "ann", "--to", "ann", "x")
	if r.code != 1 || !strings.Contains(r.stderr, "contacts file is damaged") || !strings.Contains(r.stderr, "move the file away") {
		t.Fatalf("a damaged contacts file: %+v", r)
	}

	readme, _ := os.ReadFile("README.md")
	ignore, _ := os.ReadFile(".gitignore")
	if strings.Contains(string(readme), "--data ./data") && !strings.Contains(string(ignore), "\n/data/\n") {
		t.Fatal("the Quick start's ./data is not in .gitignore")
	}
}

// Every command's help writes its flags one way: --name.
func TestHelpFlagStyle(t *testing.T) {
	for _, cmd := range []string{"serve", "fingerprint", "signup", "chat", "send", "recv", "group", "bench", "admin", "backup", "restore", "health"} {
		r := run(t, nil, cmd, "--help")
		out := r.stdout + r.stderr
		if !strings.Contains(out, "  --") {
			t.Errorf("%s --help lists no --flags:\n%s", cmd, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "-") && !strings.HasPrefix(strings.TrimSpace(line), "--") && !strings.HasPrefix(strings.TrimSpace(line), "- ") {
				t.Errorf("%s --help: a flag written with one dash: %q", cmd, line)
			}
		}
	}
}
