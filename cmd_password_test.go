package main

import (
	"strings"
	"testing"
)

// TestPasswordCommand: 'password' changes ann's password from her home:
// the home opens with the new one only, and a wrong current password or
// a too short new one is refused with a message that says so.
func TestPasswordCommand(t *testing.T) {
	addr, _, _ := serve(t, t.TempDir())
	env := signupAll(t, addr, "a password!", "ann")["ann"]
	with := func(env []string, kv ...string) []string { return append(append([]string(nil), env...), kv...) }

	if r := run(t, with(env, "SFC_PASSWORD=not the password", "SFC_NEW_PASSWORD=a better password"), "password", "--server", addr, "--user", "ann"); r.code == 0 || !strings.Contains(r.stderr, "wrong password") {
		t.Fatalf("a wrong current password: %+v", r)
	}
	if r := run(t, with(env, "SFC_NEW_PASSWORD=short"), "password", "--server", addr, "--user", "ann"); r.code == 0 || !strings.Contains(r.stderr, "8 to 1024 bytes") {
		t.Fatalf("a short new password: %+v", r)
	}
	r := run(t, with(env, "SFC_NEW_PASSWORD=a better password"), "password", "--server", addr, "--user", "ann")
	if r.code != 0 || !strings.Contains(r.stdout, "Password changed for ann") {
		t.Fatalf("password: %+v", r)
	}
	if r := run(t, env, "recv", "--server", addr, "--user", "ann"); r.code == 0 || !strings.Contains(r.stderr, "wrong password") {
		t.Fatalf("the old password after the change: %+v", r)
	}
	if r := run(t, with(env, "SFC_PASSWORD=a better password"), "recv", "--server", addr, "--user", "ann"); r.code != 0 {
		t.Fatalf("the new password: %+v", r)
	}
}
