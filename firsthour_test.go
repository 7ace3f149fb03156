package main

import (
	"fmt"
	"strings"
	"testing"
)

// Commands that only send or ask (send, send to oneself, a failed send to
// a group, group list, group create, group members) log in without taking
// deliveries: what is queued for the user stays queued, and recv shows
// every message afterwards.
func TestSendingCommandsKeepTheQueue(t *testing.T) {
	addr, _, _ := serve(t, t.TempDir())
	bob := []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=bob password!"}
	dave := []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=dave password"}
	for _, u := range []struct {
		env  []string
		name string
	}{{bob, "bob"}, {dave, "dave"}} {
		if r := run(t, u.env, "signup", "--server", addr, "--user", u.name); r.code != 0 {
			t.Fatalf("signup %s: %+v", u.name, r)
		}
	}
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
