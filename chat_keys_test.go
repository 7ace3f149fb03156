package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/history"
)

// TestChatKeys drives what users of irssi, weechat and gomuks expect of a
// terminal client, through the real binary in tmux: multi-line messages
// (Alt+Enter and a bracketed paste), scrollback past the last 500
// messages, input history, Alt+N, the "new messages" line, the bell,
// /search, a group's timeline as members are added and removed, no
// "delivered" in a group of one, and notes that fade.
func TestChatKeys(t *testing.T) {
	tmuxOrSkip(t)
	srv := newChild(t)
	srv.Start()
	users := signupAll(t, srv.Addr, chatPassword, "ann", "bob")
	// 700 old messages from bob in ann's history (written as her chat
	// would), for the scrollback.
	annHome := strings.TrimPrefix(users["ann"][0], "SFC_HOME=")
	h := homeHistory(t, srv.Addr, users["ann"], "ann", chatPassword)
	t0 := time.Now().Add(-48 * time.Hour)
	var old []*history.Entry
	for i := 0; i < 700; i++ {
		old = append(old, &history.Entry{Conv: "@bob", ID: client.NewMsgID(), From: "bob", Text: fmt.Sprintf("old message %03d", i), Time: t0.Add(time.Duration(i) * time.Second)})
	}
	if err := h.Add(old...); err != nil {
		t.Fatal(err)
	}
	h.Close()

	socket := fmt.Sprintf("sfc-keys-%d", os.Getpid())
	t.Cleanup(func() { exec.Command("tmux", "-L", socket, "kill-server").Run() })
	ann := startChatPane(t, socket, "ann", users["ann"], "--server", srv.Addr, "--user", "ann")
	bob := startChatPane(t, socket, "bob", users["bob"], "--server", srv.Addr, "--user", "bob")
	ann.waitFor(`● connected`)
	bob.waitFor(`● connected`)

	// Scrollback: the last 500 are drawn, older ones load at the top.
	ann.typeLine("/dm bob")
	ann.waitFor(`(?m)^\S*\s*│?@bob( ·|\s*$)`)
	ann.waitFor(`old message 699`)
	for i := 0; i < 80 && !strings.Contains(ann.screen(), "old message 000"); i++ {
		ann.tmux("send-keys", "-t", ann.name, "PageUp")
		time.Sleep(30 * time.Millisecond)
	}
	ann.waitFor(`old message 000`)
	ann.tmux("send-keys", "-t", ann.name, "PageDown")

	// Multi-line: Alt+Enter, and a bracketed paste keeps its lines.
	ann.tmux("send-keys", "-t", ann.name, "-l", "line one")
	ann.tmux("send-keys", "-t", ann.name, "M-Enter")
	ann.tmux("send-keys", "-t", ann.name, "-l", "line two")
	ann.tmux("send-keys", "-t", ann.name, "Enter")
	ann.tmux("set-buffer", "-b", "p", "pasted one\npasted two")
	ann.tmux("paste-buffer", "-p", "-b", "p", "-t", ann.name)
	ann.tmux("send-keys", "-t", ann.name, "Enter")
	bob.waitFor(`(?s)ann: line one *\n[^\n]*│line two`)
	bob.waitFor(`(?s)ann: pasted one *\n[^\n]*│pasted two`)

	// Input history: Up brings back what was typed.
	ann.typeLine("/help")
	ann.waitFor(`Commands \(Tab completes`)
	ann.tmux("send-keys", "-t", ann.name, "Escape")
	// (Up right behind Escape could read as Alt+Up.)
	ann.waitGone("Commands (Tab completes")
	ann.tmux("send-keys", "-t", ann.name, "Up")
	ann.waitFor(`> /help`)
	ann.tmux("send-keys", "-t", ann.name, "C-u")
	ann.tmux("send-keys", "-t", ann.name, "Down")

	// A group: bob learns at once that ann added him; ann's message to a
	// group with nobody else never shows delivered.
	ann.typeLine("/create solo")
	ann.waitFor(`solo: 1 member`)
	ann.typeLine("just me here")
	ann.waitFor(`just me here  ✓ sent`)
	ann.never("just me here  ✓✓ delivered", time.Second)
	ann.typeLine("/create team")
	ann.waitFor(`team: 1 member`)
	ann.typeLine("/add bob")
	bob.waitFor(`#team`)
	bob.typeLine("/group team")
	bob.waitFor(`(?m)^\S*\s*│?#team( ·|\s*$)`)
	bob.waitFor(`ann added you`)
	// ann is a stranger to bob: he is only invited until he joins.
	bob.waitFor(`INVITATION: ann added you to team`)
	bob.typeLine("/join")
	bob.waitFor(`joined team: its messages reach you`)
	bob.never("INVITATION", 300*time.Millisecond)
	ann.typeLine("welcome aboard")
	bob.waitFor(`ann: welcome aboard`)
	ann.typeLine("/remove bob")
	bob.waitFor(`you were removed from team`)
	bob.typeLine("still here?")
	bob.waitFor(`still here\?  ✗ failed: you are not a member of team`)

	// Alt+N opens the Nth conversation of the list; the "new messages"
	// line shows where unread messages start; a message elsewhere rings
	// the bell.
	bob.typeLine("/dm ann")
	bob.waitFor(`(?m)^\S*\s*│?@ann( ·|\s*$)`)
	ann.typeLine("/group team")
	ann.waitFor(`(?m)^\S*\s*│?#team( ·|\s*$)`)
	ann.waitFor(`(?m)│#team\s*$`)
	if f := strings.TrimSpace(ann.tmux("display", "-p", "-t", ann.name, "#{window_bell_flag}")); f != "0" {
		t.Fatalf("bell flag before: %q", f)
	}
	bob.typeLine("first unread")
	bob.typeLine("second unread")
	ann.waitFor(`bob \(2\)`)
	if f := strings.TrimSpace(ann.tmux("display", "-p", "-t", ann.name, "#{window_bell_flag}")); f != "1" {
		t.Fatalf("no bell for a message in another conversation (flag %q)", f)
	}
	var n int
	for i, line := range strings.Split(ann.screen(), "\n") {
		if strings.Contains(line, "bob (2)") {
			n = i // the list starts on line 1 (after the header and its title)
		}
	}
	ann.tmux("send-keys", "-t", ann.name, fmt.Sprintf("M-%d", n-1))
	ann.waitFor(`(?s)──── new messages ─+.*bob: first unread.*bob: second unread`)

	// /search finds text in every conversation of the history.
	ann.typeLine("/search PASTED TWO")
	ann.waitFor(`/search PASTED TWO: 1 found`)
	ann.tmux("send-keys", "-t", ann.name, "Escape")

	// A note on the status line fades.
	ann.typeLine("/bogus")
	ann.waitFor(`unknown command /bogus`)
	deadline := time.Now().Add(15 * time.Second)
	for strings.Contains(ann.screen(), "unknown command /bogus") {
		if time.Now().After(deadline) {
			t.Fatal("the note on the status line never faded")
		}
		time.Sleep(200 * time.Millisecond)
	}

	// /verify marks bob's keys verified in ann's account, not only in this
	// chat: her other programs, and devices she links later, see it.
	ann.typeLine("/verify bob")
	ann.waitFor(`bob is marked verified`)
	vc, err := client.Load(client.Config{Addr: srv.Addr, Home: annHome}, "ann", chatPassword)
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	if fp := vc.VerifiedFingerprint("bob"); !strings.HasPrefix(fp, "SHA256:") {
		t.Fatalf("ann's account has bob verified as %q", fp)
	}
}
