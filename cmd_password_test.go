package main

import (
	"os"
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

// TestRecoverPasswordAsIs: a store from before login keys
// (client/testdata/upgrade-v3), where the server knows bob's password
// itself. 'recover' from a new home sends the login key, is refused, and
// says to use --password-as-is; with it, bob starts again and is told to
// change his password.
func TestRecoverPasswordAsIs(t *testing.T) {
	data := t.TempDir()
	if err := os.CopyFS(data, os.DirFS("client/testdata/upgrade-v3/data")); err != nil {
		t.Fatal(err)
	}
	addr, _, _ := serve(t, data)
	fresh := []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=correct horse battery"}
	if r := run(t, fresh, "recover", "--server", addr, "--user", "bob"); r.code != 1 || !strings.Contains(r.stderr, "recover --password-as-is") {
		t.Fatalf("recover: %+v", r)
	}
	if r := run(t, fresh, "recover", "--password-as-is", "--server", addr, "--user", "bob"); r.code != 0 || !strings.Contains(r.stdout, "change it now ('securefastchat password')") {
		t.Fatalf("recover --password-as-is: %+v", r)
	}
	if r := run(t, append(fresh, "SFC_NEW_PASSWORD=a password of bob's own"), "password", "--server", addr, "--user", "bob"); r.code != 0 {
		t.Fatalf("password: %+v", r)
	}
}
