package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/charmbracelet/lipgloss"
)

// chatPassword is every test user's password.
const chatPassword = "chat test password"

// screenTerm is a tmux session running the chat client on its own tmux server.
type screenTerm struct {
	t      *testing.T
	socket string
	name   string
}

// tmuxOrSkip finds tmux; CI installs it and sets SFC_REQUIRE_TMUX, so
// there a missing tmux fails instead of skipping.
func tmuxOrSkip(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("SFC_REQUIRE_TMUX") != "" {
			t.Fatal("tmux is required (SFC_REQUIRE_TMUX is set) but not installed")
		}
		t.Skip("tmux not installed")
	}
}

func (tm *screenTerm) tmux(args ...string) string {
	tm.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", tm.socket}, args...)...).CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// startChat runs "securefastchat chat" for user in a 100x30 terminal.
func startChat(t *testing.T, socket, name string, args ...string) *screenTerm {
	tm := &screenTerm{t: t, socket: socket, name: name}
	cmd := binPath + " chat " + strings.Join(args, " ") + " 2>" + filepath.Join(t.TempDir(), "stderr") + "; sleep 600"
	tm.tmux("new-session", "-d", "-s", name, "-x", "100", "-y", "30", "-e", "SFC_PASSWORD="+chatPassword, cmd)
	return tm
}

func (tm *screenTerm) screen() string { return tm.tmux("capture-pane", "-p", "-t", tm.name) }

// typeLine types text literally, then Enter.
func (tm *screenTerm) typeLine(text string) {
	tm.tmux("send-keys", "-t", tm.name, "-l", text)
	tm.tmux("send-keys", "-t", tm.name, "Enter")
}

// waitFor waits until the screen matches re, failing with the screen
// after 15 s.
func (tm *screenTerm) waitFor(re string) string {
	tm.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := tm.screen()
		if rx.MatchString(s) {
			return s
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("%s's screen never matched %q; it shows:\n%s", tm.name, re, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestChatInTerminal drives two chat clients in real terminals (tmux) as
// users would, and reads their screens: a direct conversation with
// delivered and read marks and typing, a broadcast marked as not
// end-to-end, a file, history after a restart, a key-change warning that
// holds messages until accepted, and sending through a server restart.
func TestChatInTerminal(t *testing.T) {
	tmuxOrSkip(t)
	srv := newChild(t)
	adminAddr := freeAddr(t)
	srv.Args = []string{"--admin", adminAddr}
	srv.Start()
	env := []string{"SFC_PASSWORD=" + chatPassword}
	annHome, bobHome := t.TempDir(), t.TempDir()
	for _, u := range []struct{ name, home string }{{"ann", annHome}, {"bob", bobHome}} {
		if r := run(t, env, "signup", "--server", srv.Addr, "--user", u.name, "--home", u.home); r.code != 0 {
			t.Fatalf("signup %s: %s", u.name, r.stderr)
		}
	}
	socket := fmt.Sprintf("sfc-test-%d", os.Getpid())
	t.Cleanup(func() { exec.Command("tmux", "-L", socket, "kill-server").Run() })
	annArgs := []string{"--server", srv.Addr, "--user", "ann", "--home", annHome}
	ann := startChat(t, socket, "ann", annArgs...)
	bob := startChat(t, socket, "bob", "--server", srv.Addr, "--user", "bob", "--home", bobHome)
	ann.waitFor(`● connected`)
	bob.waitFor(`● connected`)

	// Bob looks at a group of his own, so ann's message arrives unread.
	bob.typeLine("/create bobs")
	bob.waitFor(`#bobs`)
	ann.typeLine("/dm bob")
	ann.waitFor(`@bob`)
	// Ann is not bob's contact: her first message is a request, and bob's
	// chat sends nothing back (no receipts) until he accepts it.
	ann.typeLine("hello bob, ünïcödé ✓ 日本語")
	ann.waitFor(`ann: hello bob, ünïcödé ✓ 日本語  ✓ queued`)
	bob.waitFor(`\? ann \(1\)`) // unread in his list, marked as a request
	bob.typeLine("/dm ann")
	bob.waitFor(`ann: hello bob, ünïcödé ✓ 日本語`)
	bob.waitFor(`MESSAGE REQUEST: ann is not in your contacts`)
	ann.never("✓✓", time.Second)
	bob.typeLine("/accept ann")
	bob.waitFor(`accepted ann's message request`)
	bob.never("MESSAGE REQUEST", 300*time.Millisecond)
	ann.typeLine("are you there?")
	ann.waitFor(`ann: are you there\?  ✓✓ read`)

	// Typing shows on the other side, then the message.
	bob.tmux("send-keys", "-t", bob.name, "-l", "on my way")
	ann.waitFor(`bob typing…`)
	bob.tmux("send-keys", "-t", bob.name, "Enter")
	ann.waitFor(`bob: on my way`)
	bob.waitFor(`bob: on my way  ✓✓ read`)

	// A broadcast is shown as not end-to-end encrypted.
	bob.typeLine("/broadcast fire drill at 3")
	bob.waitFor(`broadcast sent to everyone online`)
	ann.waitFor(`!broadcast \(1\)`)
	ann.typeLine("/broadcast")
	ann.waitFor(`\[NOT E2E\] bob: fire drill at 3`)

	// A file, saved on the other side and shown with its path.
	file := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(file, []byte(strings.Repeat("notes\n", 20000)), 0o600); err != nil {
		t.Fatal(err)
	}
	ann.typeLine("/dm bob")
	ann.typeLine("/file " + file)
	bob.waitFor(`ann: \[file\] notes.txt \(117.2 KiB\) saved to`)
	saved := filepath.Join(bobHome, "downloads", "bob", "notes.txt")
	if got, err := os.ReadFile(saved); err != nil || len(got) != 120000 {
		t.Fatalf("received file: %d bytes, %v", len(got), err)
	}
	ann.waitFor(`ann: \[file\] notes.txt \(117.2 KiB\)  ✓✓ read`)

	// A group: created, joined, a message read by its member, and /members.
	ann.typeLine("/create team")
	ann.waitFor(`team: 1 member \(/members`)
	ann.typeLine("/add bob")
	ann.waitFor(`team: 2 members \(Esc closes this\)`)
	ann.tmux("send-keys", "-t", ann.name, "Escape")
	ann.typeLine("hello team")
	// Unread in bob's list: the line that ann added him, then her message
	// (his screen may be drawn after the first or after both).
	bob.waitFor(`#team \([12]\)`)
	ann.waitFor(`ann: hello team  ✓✓ delivered`)
	bob.typeLine("/group team")
	bob.waitFor(`ann: hello team`)
	ann.waitFor(`ann: hello team  ✓✓ read by 1`)
	teamFile := filepath.Join(t.TempDir(), "team.txt")
	if err := os.WriteFile(teamFile, []byte("for the team\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ann.typeLine("/file " + teamFile)
	bob.waitFor(`ann: \[file\] team.txt \(13 bytes\) saved to`)
	ann.waitFor(`ann: \[file\] team.txt \(13 bytes\)  ✓✓ read by 1`)
	bob.typeLine("/members")
	bob.waitFor(`(?s)team: 2 members.*ann \(admin\).*bob`)
	bob.tmux("send-keys", "-t", bob.name, "Escape")
	bob.typeLine("/dm ann")

	// Ann leaves; bob reinstalls (his account is deleted and he signs up
	// again from a new home), so his keys are not the ones ann's client
	// pinned, as they would not be if someone stood in between.
	ann.typeLine("/quit")
	ann.waitFor(`^\s*$`)
	bob.typeLine("/quit")
	bob.waitFor(`^\s*$`)
	if r := run(t, nil, "admin", "--admin", adminAddr, "--data", srv.Data, "delete", "bob", "--yes"); r.code != 0 {
		t.Fatalf("admin delete: %+v", r)
	}
	bobHome = t.TempDir()
	if r := run(t, env, "signup", "--server", srv.Addr, "--user", "bob", "--home", bobHome); r.code != 0 {
		t.Fatalf("signup bob again: %s", r.stderr)
	}
	bob.tmux("kill-session", "-t", "bob")
	bob = startChat(t, socket, "bob", "--server", srv.Addr, "--user", "bob", "--home", bobHome)
	bob.waitFor(`● connected`)
	ann.tmux("kill-session", "-t", "ann")
	ann = startChat(t, socket, "ann", annArgs...)
	ann.waitFor(`● connected`)
	// The history is back after the restart.
	ann.typeLine("/dm bob")
	ann.waitFor(`are you there\?  ✓✓ read`)
	ann.waitFor(`bob's KEY CHANGED`)
	ann.typeLine("is this still you?")
	ann.waitFor(`is this still you\?  ⚠ held: key changed`)
	if strings.Contains(bob.screen(), "is this still you") {
		t.Fatal("a held message reached bob")
	}
	ann.typeLine("/accept bob")
	bob.waitFor(`ann: is this still you\?`)
	ann.waitFor(`is this still you\?  ✓✓ (delivered|read)`)

	// The server restarts: ann sees she is offline, what she types waits,
	// and it goes once the client has reconnected by itself.
	srv.Stop(syscall.SIGTERM)
	ann.waitFor(`OFFLINE`)
	ann.typeLine("typed while the server was down")
	ann.waitFor(`typed while the server was down  … sending`)
	srv.Start()
	ann.waitFor(`● connected`)
	bob.waitFor(`ann: typed while the server was down`)
	ann.waitFor(`typed while the server was down  ✓✓ (delivered|read)`)

	// Small terminals and resizes draw without the list, long lines wrap.
	ann.tmux("resize-window", "-t", "ann", "-x", "40", "-y", "12")
	ann.typeLine(strings.Repeat("wrap ", 20) + "end")
	s := ann.waitFor(`end  ✓✓`)
	for _, line := range strings.Split(s, "\n") {
		if w := lipgloss.Width(line); w > 40 {
			t.Fatalf("a line of %d cells in a 40-column terminal: %q", w, line)
		}
	}
}
