package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// linkCodeOn reads the link code off a screen where the chat drew it
// alone on its line, wrapped at the pane's width.
func linkCodeOn(t *testing.T, screen string) string {
	t.Helper()
	lines := strings.Split(screen, "\n")
	for i, l := range lines {
		r := []rune(l)
		col := strings.Index(l, "securefastchat-link:")
		if col < 0 {
			continue
		}
		col = len([]rune(l[:col]))
		code := strings.TrimRight(string(r[col:]), " │")
		for _, next := range lines[i+1:] {
			nr := []rune(next)
			if len(nr) <= col {
				break
			}
			seg := strings.TrimRight(string(nr[col:]), " │")
			if seg == "" || strings.IndexFunc(seg, func(c rune) bool {
				return !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_')
			}) >= 0 {
				break
			}
			code += seg
		}
		return code
	}
	t.Fatalf("no link code on the screen:\n%s", screen)
	return ""
}

// linkFromChat links a new home as a device named name of the chat's
// user: /link in the chat shows a code and a QR code, 'device add' in the
// new home joins with the code and shows its id, the chat shows the same
// id, and /link yes adds it. It returns the new home's environment and
// the device's id. how is what follows /link ("manage", or nothing).
func linkFromChat(t *testing.T, chat *screenTerm, name string, how ...string) ([]string, string) {
	t.Helper()
	chat.typeLine(strings.Join(append([]string{"/link"}, how...), " "))
	chat.waitFor(`Or scan it:`)
	if s := chat.screen(); !strings.Contains(s, "▀") && !strings.Contains(s, "▄") {
		t.Fatalf("no QR code drawn:\n%s", s)
	}
	code := linkCodeOn(t, chat.screen())
	home := []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=" + name + " passphrase"}
	added := make(chan result, 1)
	go func() { added <- run(t, home, "device", "add", "--code", code, "--name", name) }()
	chat.waitFor(`asks to be added, with id [0-9a-f]{16}`)
	id := regexp.MustCompile(`with id ([0-9a-f]{16})`).FindStringSubmatch(chat.screen())[1]
	chat.typeLine("/link yes")
	r := <-added
	if r.code != 0 || !strings.Contains(r.stdout, "This device's id is "+id) {
		t.Fatalf("device add (the chat showed %s): %+v", id, r)
	}
	chat.waitFor(`Added ` + name + ` \(` + id + `\)`)
	if slices.Contains(how, "manage") {
		chat.waitFor(`manages your devices too: it holds`)
		if !strings.Contains(r.stdout, "It manages your devices") {
			t.Fatalf("device add, managing: %+v", r)
		}
	}
	if slices.Contains(how, "history") {
		chat.waitFor(`It has a copy of the history: all \d+ entries`)
	}
	if copied := strings.Contains(r.stdout, "It has a copy of the history"); copied != slices.Contains(how, "history") ||
		!copied && !strings.Contains(r.stdout, "No history was copied: it starts empty") {
		t.Fatalf("device add says of the history (asked: %v): %+v", slices.Contains(how, "history"), r)
	}
	chat.tmux("send-keys", "-t", chat.name, "Escape")
	return home, id
}

// annChat starts a server, signs ann and bob up, and runs ann's chat in a
// tmux pane on a socket named from prefix, connected.
func annChat(t *testing.T, prefix string) (*child, map[string][]string, string, *screenTerm) {
	t.Helper()
	tmuxOrSkip(t)
	srv := newChild(t)
	srv.Start()
	users := signupAll(t, srv.Addr, chatPassword, "ann", "bob")
	socket := fmt.Sprintf("%s-%d", prefix, os.Getpid())
	t.Cleanup(func() { exec.Command("tmux", "-L", socket, "kill-server").Run() })
	ann := startChatPane(t, socket, "ann", users["ann"], "--server", srv.Addr, "--user", "ann")
	ann.waitFor(`● connected`)
	return srv, users, socket, ann
}

// TestChatLink: /link in ann's chat shows a code and a QR code; a new home
// joins with 'device add'; the chat shows the id the new device says,
// which is the one it shows; /link yes adds it, and /devices lists it.
func TestChatLink(t *testing.T) {
	srv, users, socket, ann := annChat(t, "sfc-link")

	laptop, id := linkFromChat(t, ann, "laptop")
	ann.typeLine("/devices")
	ann.waitFor(id + `\s+laptop`)

	// The laptop runs a chat of its own: what bob sends reaches both
	// chats, and what the laptop writes to bob shows in ann's first chat
	// as hers.
	ann.tmux("send-keys", "-t", ann.name, "Escape")
	lp := startChatPane(t, socket, "laptop", laptop, "--server", srv.Addr, "--user", "ann")
	lp.waitFor(`● connected`)
	if r := run(t, users["bob"], "send", "--server", srv.Addr, "--user", "bob", "--to", "ann", "to each of ann's devices"); r.code != 0 {
		t.Fatalf("bob's send: %+v", r)
	}
	ann.typeLine("/dm bob")
	ann.waitFor(`to each of ann's devices`)
	lp.typeLine("/dm bob")
	lp.waitFor(`to each of ann's devices`)
	lp.typeLine("hello from the laptop")
	ann.waitFor(`hello from the laptop`)
	if r := run(t, users["bob"], "recv", "--server", srv.Addr, "--user", "bob"); r.code != 0 || !strings.Contains(r.stdout, "ann: hello from the laptop") {
		t.Fatalf("bob's recv: %+v", r)
	}

	// /link no: nothing is added, and the new device is told.
	ann.tmux("send-keys", "-t", ann.name, "Escape")
	ann.typeLine("/link")
	ann.waitFor(`Or scan it:`)
	code := linkCodeOn(t, ann.screen())
	added := make(chan result, 1)
	go func() {
		added <- run(t, []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=tablet passphrase"}, "device", "add", "--code", code, "--name", "tablet")
	}()
	ann.waitFor(`asks to be added`)
	ann.typeLine("/link no")
	if r := <-added; r.code != 1 || !strings.Contains(r.stderr, "refused") {
		t.Fatalf("device add, refused: %+v", r)
	}

	// /link manage history: the new device gets the master key, and
	// removes the laptop from the account's list; its chat shows ann's
	// conversation with bob as her first chat kept it.
	ann.tmux("send-keys", "-t", ann.name, "Escape")
	desk, _ := linkFromChat(t, ann, "desk", "manage", "history")
	if r := run(t, desk, "device", "remove", "laptop", "--server", srv.Addr, "--user", "ann"); r.code != 0 || !strings.Contains(r.stdout, "removed "+id+" laptop") {
		t.Fatalf("the desk removing the laptop: %+v", r)
	}
	dp := startChatPane(t, socket, "desk", desk, "--server", srv.Addr, "--user", "ann")
	dp.waitFor(`● connected`)
	dp.typeLine("/dm bob")
	dp.waitFor(`bob: to each of ann's devices`)
	dp.waitFor(`ann: hello from the laptop`)
}

// TestThreeDevices: ann has three devices: the chat on her first home, a
// script's home (linked, used by send and recv) and a laptop (linked).
// Her group team was made before the links. What bob sends to her, and in
// team, reaches all three; what the script sends shows in the chat and
// on the laptop as hers; removing the laptop from the chat stops delivery
// to it at once and gives team a new key that the laptop does not get,
// while what it sent before still reaches those who were away, marked.
func TestThreeDevices(t *testing.T) {
	srv, users, socket, ann := annChat(t, "sfc-three")
	ok := func(r result, what string) result {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("%s: %+v", what, r)
		}
		return r
	}
	ok(run(t, users["ann"], "send", "--server", srv.Addr, "--user", "ann", "--to", "bob", "hi bob"), "ann's first message")
	ok(run(t, users["bob"], "send", "--server", srv.Addr, "--user", "bob", "--to", "ann", "hi ann"), "bob's reply")
	ann.typeLine("/create team")
	ann.waitFor(`team: 1 member`)
	ann.typeLine("/add bob")
	ann.waitFor(`team: 2 members`) // bob, a contact, is a member at once
	ann.tmux("send-keys", "-t", ann.name, "Escape")

	script, _ := linkFromChat(t, ann, "script")
	laptop, _ := linkFromChat(t, ann, "laptop")
	recvAs := func(user string, home []string, want ...string) {
		t.Helper()
		r := ok(run(t, home, "recv", "--server", srv.Addr, "--user", user), "recv")
		for _, w := range want {
			if !strings.Contains(r.stdout, w) {
				t.Fatalf("recv shows no %q:\n%s", w, r.stdout)
			}
		}
	}

	ok(run(t, users["bob"], "send", "--server", srv.Addr, "--user", "bob", "--to", "ann", "to all three"), "bob's message")
	ok(run(t, users["bob"], "send", "--server", srv.Addr, "--user", "bob", "--group", "team", "in team, to all three"), "bob's group message")
	recvAs("ann", script, "bob: to all three", "bob in team: in team, to all three")
	recvAs("ann", laptop, "bob: to all three", "bob in team: in team, to all three")
	ann.typeLine("/group team")
	ann.waitFor(`in team, to all three`)
	ann.typeLine("/dm bob")
	ann.waitFor(`to all three`)

	ok(run(t, script, "send", "--server", srv.Addr, "--user", "ann", "--to", "bob", "from the script"), "the script's message")
	ok(run(t, script, "send", "--server", srv.Addr, "--user", "ann", "--group", "team", "the script, in team"), "the script's group message")
	ann.waitFor(`from the script`)
	ann.typeLine("/group team")
	ann.waitFor(`the script, in team`)
	recvAs("ann", laptop, "you, to bob from another device: from the script", "you, in team from another device: the script, in team")
	recvAs("bob", users["bob"], "ann: from the script", "ann in team: the script, in team")

	// What the laptop sent before its removal still reaches bob and the
	// script, which were away, said to be from a device removed since.
	ok(run(t, laptop, "send", "--server", srv.Addr, "--user", "ann", "--to", "bob", "the laptop, before its removal"), "the laptop's message")
	ok(run(t, laptop, "send", "--server", srv.Addr, "--user", "ann", "--group", "team", "the laptop in team, before its removal"), "the laptop's group message")
	ann.typeLine("/dm bob")
	ann.waitFor(`the laptop, before its removal`)
	ann.typeLine("/devices remove laptop")
	ann.waitFor(`Every group you are in has a new key, which it does not get.`)
	removedLine := `(sent from ann's device "laptop" before it was removed from the account's devices)`
	bob := startChatPane(t, socket, "bob", users["bob"], "--server", srv.Addr, "--user", "bob")
	bob.waitFor(`● connected`)
	bob.typeLine("/dm ann")
	bob.waitFor(`ann: the laptop, before its removal`)
	bob.waitFor(`that came from ann.s device "laptop", since removed from the account.s`)
	bob.typeLine("/group team")
	bob.waitFor(`ann: the laptop in team, before its removal`)
	bob.waitFor(`that came from ann.s device "laptop", since removed from the account.s`)
	ok(run(t, users["bob"], "send", "--server", srv.Addr, "--user", "bob", "--to", "ann", "after the laptop"), "bob's message after")
	ok(run(t, users["bob"], "send", "--server", srv.Addr, "--user", "bob", "--group", "team", "in team, after the laptop"), "bob's group message after")
	recvAs("ann", script, "you, to bob from another device: the laptop, before its removal\n    "+removedLine,
		"you, in team from another device: the laptop in team, before its removal\n    "+removedLine, "bob: after the laptop", "bob in team: in team, after the laptop")
	ann.tmux("send-keys", "-t", ann.name, "Escape")
	ann.typeLine("/group team")
	ann.waitFor(`in team, after the laptop`)
	if r := run(t, laptop, "recv", "--server", srv.Addr, "--user", "ann"); r.code == 0 || strings.Contains(r.stdout, "after the laptop") || !strings.Contains(r.stderr, "removed") {
		t.Fatalf("the removed laptop's recv: %+v", r)
	}
}
