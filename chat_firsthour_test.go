package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startChatPane runs "securefastchat chat" in a 100x30 tmux pane with its
// errors on the pane, and says on the pane how it exited.
func startChatPane(t *testing.T, socket, name string, env []string, args ...string) *screenTerm {
	tm := &screenTerm{t: t, socket: socket, name: name}
	cmd := binPath + " chat " + strings.Join(args, " ") + `; echo "chat exited: $?"; sleep 600`
	a := []string{"new-session", "-d", "-s", name, "-x", "100", "-y", "30"}
	for _, e := range env {
		a = append(a, "-e", e)
	}
	tm.tmux(append(a, cmd)...)
	return tm
}

// waitForJoined waits until the screen, its lines joined (long text
// wraps at any character), contains text.
func (tm *screenTerm) waitForJoined(text string) {
	tm.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := tm.screen()
		if strings.Contains(strings.ReplaceAll(s, "\n", ""), text) {
			return
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("%s's screen never showed %q; it shows:\n%s", tm.name, text, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitGone waits until the screen no longer shows text, failing with the
// screen after 15 s.
func (tm *screenTerm) waitGone(text string) {
	tm.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for s := tm.screen(); strings.Contains(s, text); s = tm.screen() {
		if time.Now().After(deadline) {
			tm.t.Fatalf("%s's screen still shows %q:\n%s", tm.name, text, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// never checks that the screen does not match re for a while.
func (tm *screenTerm) never(re string, d time.Duration) {
	tm.t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if s := tm.screen(); strings.Contains(s, re) {
			tm.t.Fatalf("%s's screen shows %q:\n%s", tm.name, re, s)
		}
	}
}

// TestChatFirstHour drives the chat as a new user would in the first hour,
// through the real binary in tmux: a script and a second program using the
// same account, a second chat and a damaged history, a contact whose key
// changes while the chat runs, a revoked session, and a chat started
// while the server is down.
func TestChatFirstHour(t *testing.T) {
	tmuxOrSkip(t)
	addr, adminAddr, data := freeAddr(t), freeAddr(t), t.TempDir()
	senv := []string{"SFC_LISTEN=" + addr, "SFC_ADMIN=" + adminAddr, "SFC_DATA=" + data,
		"SFC_ARGON2=t=1,m=64,p=1", "SFC_INSECURE_WEAK_ARGON2=true", "SFC_SHARDS=2"}
	srv, _ := startServe(t, senv, addr)
	users := signupAll(t, addr, chatPassword, "ann", "bob", "carol", "dave")
	as := func(u string, args ...string) result {
		return run(t, users[u], append([]string{args[0], "--server", addr, "--user", u}, args[1:]...)...)
	}
	socket := fmt.Sprintf("sfc-first-%d", os.Getpid())
	t.Cleanup(func() { exec.Command("tmux", "-L", socket, "kill-server").Run() })
	bobArgs := []string{"--server", addr, "--user", "bob"}
	bob := startChatPane(t, socket, "bob", users["bob"], bobArgs...)
	bob.waitFor(`● connected`)

	// Item 2: a script sending as bob does not take bob's session.
	if r := as("bob", "send", "--to", "ann", "from bob's script"); r.code != 0 {
		t.Fatalf("bob's script: %+v", r)
	}
	if r := as("ann", "send", "--to", "bob", "are you there"); r.code != 0 || !strings.Contains(r.stdout, "Delivered") {
		t.Fatalf("ann's send to bob's chat: %+v", r)
	}
	bob.waitFor(`ann: are you there`)
	bob.never("NOT CONNECTED", time.Second)
	bob.waitFor(`● connected`)

	// A second receiver (recv) takes the session: the chat says so plainly
	// and never claims to be connected; what is typed waits; Ctrl+R takes
	// the session back, and the recv stops saying why.
	recv := exec.Command(binPath, "recv", "--server", addr, "--user", "bob", "--wait", "60s")
	recv.Env = append(os.Environ(), users["bob"]...)
	recvErr := &syncBuffer{}
	recv.Stderr = recvErr
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { recv.Process.Kill(); recv.Wait() }()
	s := bob.waitFor(`bob is open in another program or on another machine`)
	if strings.Contains(s, "● connected") || !strings.Contains(s, "Ctrl+R") {
		t.Fatalf("replaced chat:\n%s", s)
	}
	bob.typeLine("/dm ann")
	bob.waitFor(`(?m)^\S*\s*│?@ann( ·|\s*$)`)
	bob.typeLine("typed while replaced")
	bob.waitFor(`typed while replaced  … sending`)
	bob.tmux("send-keys", "-t", bob.name, "C-r")
	bob.waitFor(`● connected`)
	bob.waitFor(`typed while replaced  ✓ queued`)
	waitFor(t, func() bool { return strings.Contains(recvErr.String(), "bob is now receiving in another program") })

	// Item 3: a second chat of bob, and a damaged history, stop with a
	// clear error (the running chat keeps its session).
	second := startChatPane(t, socket, "bob2", users["bob"], bobArgs...)
	second.waitFor(`(?s)history is in use by another chat of bob.*chat exited: 1`)
	bob.never("NOT CONNECTED", 500*time.Millisecond)
	carolHome := strings.TrimPrefix(users["carol"][0], "SFC_HOME=")
	hist := filepath.Join(carolHome, "users", "carol", "history.db")
	if err := os.WriteFile(hist, []byte(strings.Repeat("not a history ", 2000)), 0o600); err != nil {
		t.Fatal(err)
	}
	carol := startChatPane(t, socket, "carol", users["carol"], "--server", addr, "--user", "carol")
	carol.waitForJoined(`history file is damaged: ` + hist + `; move it away to start a fresh history`)
	carol.waitFor(`chat exited: 1`)

	// Item 4: dave's account is deleted and made again while bob's chat
	// runs: bob's next message to dave is held at once, with the warning.
	bob.typeLine("/dm dave")
	bob.waitFor(`(?m)^\S*\s*│?@dave( ·|\s*$)`)
	bob.typeLine("hello dave")
	bob.waitFor(`hello dave  ✓ queued`)
	if r := run(t, senv, "admin", "delete", "dave", "--yes"); r.code != 0 {
		t.Fatalf("admin delete: %+v", r)
	}
	users["dave"] = []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=" + chatPassword}
	if r := as("dave", "signup"); r.code != 0 {
		t.Fatalf("dave signs up again: %+v", r)
	}
	bob.waitFor(`dave's KEY CHANGED`)
	bob.typeLine("are you the same dave?")
	bob.waitFor(`are you the same dave\?  ⚠ held: key changed`)
	if r := as("dave", "recv"); strings.Contains(r.stdout, "same dave") || strings.Contains(r.stderr, "dropped") {
		t.Fatalf("the held message reached the new dave: %+v", r)
	}

	// Item 5: a revoked session stops and says so in full; started again,
	// the chat logs in with the password and goes on.
	if r := run(t, senv, "admin", "revoke", "bob", "--yes"); r.code != 0 {
		t.Fatalf("admin revoke: %+v", r)
	}
	bob.waitFor(`An admin of the server ended this session or disabled the account`)
	bob.never("● connected", 500*time.Millisecond)
	bob.tmux("send-keys", "-t", bob.name, "C-c")
	bob.waitFor(`chat exited: 0`)
	bob.tmux("kill-session", "-t", "bob")
	bob = startChatPane(t, socket, "bob", users["bob"], bobArgs...)
	bob.waitFor(`● connected`)

	// Item 5: the chat opens while the server is down, with its history;
	// what is typed goes once the server is back.
	srv.Process.Signal(syscall.SIGTERM)
	srv.Wait()
	bob.waitFor(`OFFLINE`)
	bob.tmux("send-keys", "-t", bob.name, "C-c")
	bob.waitFor(`chat exited: 0`)
	bob.tmux("kill-session", "-t", "bob")
	bob = startChatPane(t, socket, "bob", users["bob"], bobArgs...)
	bob.waitFor(`OFFLINE: connecting`)
	bob.typeLine("/dm ann")
	bob.waitFor(`(?m)^\S*\s*│?@ann( ·|\s*$)`)
	bob.waitFor(`typed while replaced`) // the history is there
	bob.typeLine("typed while the server was down")
	bob.waitFor(`typed while the server was down  … sending`)
	srv, _ = startServe(t, senv, addr)
	bob.waitFor(`● connected`)
	bob.waitFor(`typed while the server was down  ✓ queued`)
	if r := as("ann", "recv"); !strings.Contains(r.stdout, "bob: typed while the server was down") {
		t.Fatalf("ann did not get what bob typed while the server was down: %+v", r)
	}

	// Item 7: the home copied to another machine meets the server for the
	// first time there: the chat shows the server's key and asks before its
	// screen opens.
	annHome := strings.TrimPrefix(users["ann"][0], "SFC_HOME=")
	copied := t.TempDir()
	if out, err := exec.Command("cp", "-a", annHome+"/.", copied).CombinedOutput(); err != nil {
		t.Fatalf("copying ann's home: %v %s", err, out)
	}
	os.Remove(filepath.Join(copied, "known_servers"))
	fp := strings.TrimSpace(run(t, nil, "fingerprint", "--data", data).stdout)
	ann := startChatPane(t, socket, "ann", []string{"SFC_HOME=" + copied, "SFC_PASSWORD=" + chatPassword}, "--server", addr, "--user", "ann")
	ann.waitForJoined("First contact with " + addr + ": its key is " + fp)
	ann.waitFor(`Pin this key and continue\? \[y/N\]`)
	ann.typeLine("y")
	ann.waitFor(`● connected`)
	if r := as("bob", "send", "--to", "ann", "hello on the new machine"); r.code != 0 {
		t.Fatalf("bob's send: %+v", r)
	}
	ann.waitFor(`bob: hello on the new machine`)
	_ = srv
}
