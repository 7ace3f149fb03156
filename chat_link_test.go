package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
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

// TestChatLink: /link in ann's chat shows a code and a QR code; a new home
// joins with 'device add'; the chat shows the id the new device says,
// which is the one it shows; /link yes adds it, and /devices lists it.
func TestChatLink(t *testing.T) {
	tmuxOrSkip(t)
	srv := newChild(t)
	srv.Start()
	users := signupAll(t, srv.Addr, chatPassword, "ann", "bob")
	socket := fmt.Sprintf("sfc-link-%d", os.Getpid())
	t.Cleanup(func() { exec.Command("tmux", "-L", socket, "kill-server").Run() })
	ann := startChatPane(t, socket, "ann", users["ann"], "--server", srv.Addr, "--user", "ann")
	ann.waitFor(`● connected`)

	ann.typeLine("/link")
	ann.waitFor(`Or scan it:`)
	if s := ann.screen(); !strings.Contains(s, "▀") && !strings.Contains(s, "▄") {
		t.Fatalf("no QR code drawn:\n%s", s)
	}
	code := linkCodeOn(t, ann.screen())
	laptop := []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=laptop passphrase"}
	added := make(chan result, 1)
	go func() { added <- run(t, laptop, "device", "add", "--code", code, "--name", "laptop") }()
	ann.waitFor(`asks to be added, with id [0-9a-f]{16}`)
	id := regexp.MustCompile(`with id ([0-9a-f]{16})`).FindStringSubmatch(ann.screen())[1]
	ann.typeLine("/link yes")
	r := <-added
	if r.code != 0 || !strings.Contains(r.stdout, "This device's id is "+id) {
		t.Fatalf("device add (the chat showed %s): %+v", id, r)
	}
	ann.waitFor(`Added laptop \(` + id + `\)`)
	ann.tmux("send-keys", "-t", ann.name, "Escape")
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
	code = linkCodeOn(t, ann.screen())
	go func() {
		added <- run(t, []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=tablet passphrase"}, "device", "add", "--code", code, "--name", "tablet")
	}()
	ann.waitFor(`asks to be added`)
	ann.typeLine("/link no")
	if r := <-added; r.code != 1 || !strings.Contains(r.stderr, "refused") {
		t.Fatalf("device add, refused: %+v", r)
	}
}
