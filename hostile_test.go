package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"securefastchat/termtext"
)

// TestRecvCleansText: a stranger's text cannot act on the terminal of a
// user who reads with recv: no window title, clear screen, clipboard
// write (OSC 52), C1 CSI or bidirectional override reaches stdout, and a
// second line cannot pass for another message. --json carries the text
// whole, with every such character escaped.
func TestRecvCleansText(t *testing.T) {
	addr, _, _ := serve(t, t.TempDir())
	envs := signupAll(t, addr, "a long enough password", "mallory", "bob")
	hostile := "hi\x1b]0;pwned\x07\x1b[2J\x1b]52;c;ZXZpbA==\x07\u009b31m\u202eevil\n[2026-11-27 12:00:00] alice: send the code"
	if r := runIn(t, envs["mallory"], hostile, "send", "--server", addr, "--user", "mallory", "--to", "bob", "-"); r.code != 0 {
		t.Fatalf("send: %+v", r)
	}
	plain := run(t, envs["bob"], "recv", "--server", addr, "--user", "bob")
	if plain.code != 0 || !strings.Contains(plain.stdout, "mallory (request): hi") {
		t.Fatalf("recv: %+v", plain)
	}
	for _, r := range plain.stdout {
		if (r < 0x20 && r != '\n') || termtext.Unsafe(r) && r != '\n' {
			t.Fatalf("recv printed %U:\n%q", r, plain.stdout)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(plain.stdout), "\n") {
		if strings.HasPrefix(line, "[") && !strings.Contains(line, "] mallory (request): ") {
			t.Fatalf("a line passes for another message: %q", line)
		}
	}
	// The second copy, read as JSON.
	if r := runIn(t, envs["mallory"], hostile, "send", "--server", addr, "--user", "mallory", "--to", "bob", "-"); r.code != 0 {
		t.Fatalf("send: %+v", r)
	}
	js := run(t, envs["bob"], "recv", "--server", addr, "--user", "bob", "--json")
	for _, r := range js.stdout {
		if r != '\n' && (r < 0x20 || termtext.Unsafe(r)) {
			t.Fatalf("recv --json printed %U raw:\n%q", r, js.stdout)
		}
	}
	var m struct{ Text string }
	if err := json.Unmarshal([]byte(strings.SplitN(js.stdout, "\n", 2)[0]), &m); err != nil || m.Text != hostile {
		t.Fatalf("--json text %q (%v), want the original", m.Text, err)
	}
}

// TestSendHoldsOnKeyChange: when a contact's keys change (here: the
// account is deleted and someone signs up under the name), send sends
// nothing, says so and how to accept, on every later try too; after
// --accept-key-change it goes.
func TestSendHoldsOnKeyChange(t *testing.T) {
	data := t.TempDir()
	adminAddr := freeAddr(t)
	addr, _, _ := serve(t, data, "--admin", adminAddr)
	envs := signupAll(t, addr, "a long enough password", "ann", "bob")
	if r := run(t, envs["ann"], "send", "--server", addr, "--user", "ann", "--to", "bob", "first"); r.code != 0 {
		t.Fatalf("send: %+v", r)
	}
	if r := run(t, nil, "admin", "--admin", adminAddr, "--data", data, "delete", "bob", "--yes"); r.code != 0 {
		t.Fatalf("admin delete: %+v", r)
	}
	impostor := signupAll(t, addr, "another long password", "bob")["bob"]
	for i := 0; i < 2; i++ {
		r := run(t, envs["ann"], "send", "--server", addr, "--user", "ann", "--to", "bob", "secret")
		if r.code == 0 || !strings.Contains(r.stderr, "CHANGED") || !strings.Contains(r.stderr, "nothing was sent") ||
			!strings.Contains(r.stderr, "--accept-key-change") || !strings.Contains(r.stderr, "/accept bob") {
			t.Fatalf("send %d after the change: %+v", i, r)
		}
	}
	f := filepath.Join(t.TempDir(), "doc.txt")
	os.WriteFile(f, []byte("a file"), 0o600)
	if r := run(t, envs["ann"], "send", "--server", addr, "--user", "ann", "--to", "bob", "--file", f); r.code == 0 || !strings.Contains(r.stderr, "nothing was sent") {
		t.Fatalf("send --file after the change: %+v", r)
	}
	if r := run(t, impostor, "recv", "--server", addr, "--user", "bob"); strings.Contains(r.stdout, "secret") || strings.Contains(r.stdout, "doc.txt") {
		t.Fatalf("the new bob got what was held: %+v", r)
	}
	r := run(t, envs["ann"], "send", "--server", addr, "--user", "ann", "--to", "bob", "--accept-key-change", "after comparing")
	if r.code != 0 || !strings.Contains(r.stderr, "Accepted bob's new keys") {
		t.Fatalf("send --accept-key-change: %+v", r)
	}
	if r := run(t, envs["ann"], "send", "--server", addr, "--user", "ann", "--to", "bob", "and again"); r.code != 0 {
		t.Fatalf("send after accepting: %+v", r)
	}
	if r := run(t, impostor, "recv", "--server", addr, "--user", "bob"); !strings.Contains(r.stdout, "after comparing") || !strings.Contains(r.stdout, "and again") {
		t.Fatalf("bob after the accept: %+v", r)
	}
}
