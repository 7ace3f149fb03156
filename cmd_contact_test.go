package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/proto"
)

// TestContactCommands: recv marks a stranger's message as a request and
// says once how to answer it; 'contact block' stops the sender (whose
// sends still say "Queued"), 'contact blocked' lists, a send to someone
// blocked is refused with what to do, and unblock and accept work.
func TestContactCommands(t *testing.T) {
	addr, _, _ := serve(t, t.TempDir())
	bob := []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=bob password!"}
	mallory := []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=mallory password"}
	for _, u := range []struct {
		env  []string
		name string
	}{{bob, "bob"}, {mallory, "mallory"}} {
		if r := run(t, u.env, "signup", "--server", addr, "--user", u.name); r.code != 0 {
			t.Fatalf("signup %s: %+v", u.name, r)
		}
	}
	send := func(env []string, from, to, text string) result {
		return run(t, env, "send", "--server", addr, "--user", from, "--to", to, text)
	}
	if r := send(mallory, "mallory", "bob", "hi, a prize for you"); r.code != 0 || !strings.Contains(r.stdout, "Queued for bob") {
		t.Fatalf("send: %+v", r)
	}
	r := run(t, bob, "recv", "--server", addr, "--user", "bob")
	if r.code != 0 || !strings.Contains(r.stdout, "mallory (request): hi, a prize for you") ||
		strings.Count(r.stderr, "is not in your contacts") != 1 || !strings.Contains(r.stderr, "securefastchat contact block mallory") {
		t.Fatalf("recv of a request: %+v", r)
	}
	if r := run(t, bob, "contact", "block", "mallory", "--server", addr, "--user", "bob"); r.code != 0 || !strings.Contains(r.stdout, "Blocked mallory") {
		t.Fatalf("block: %+v", r)
	}
	if r := send(mallory, "mallory", "bob", "second prize"); r.code != 0 || !strings.Contains(r.stdout, "Queued for bob") {
		t.Fatalf("a blocked sender's send must look as before: %+v", r)
	}
	if r := run(t, bob, "recv", "--server", addr, "--user", "bob"); r.code != 0 || strings.Contains(r.stdout, "prize") {
		t.Fatalf("recv after the block: %+v", r)
	}
	if r := run(t, bob, "contact", "blocked", "--server", addr, "--user", "bob"); r.code != 0 || strings.TrimSpace(r.stdout) != "mallory" {
		t.Fatalf("blocked: %+v", r)
	}
	if r := send(bob, "bob", "mallory", "oops"); r.code != 1 || !strings.Contains(r.stderr, "you block mallory") {
		t.Fatalf("a send to someone blocked: %+v", r)
	}
	if r := run(t, bob, "contact", "unblock", "mallory", "--server", addr, "--user", "bob"); r.code != 0 || !strings.Contains(r.stdout, "Unblocked mallory") {
		t.Fatalf("unblock: %+v", r)
	}
	if r := run(t, bob, "contact", "accept", "mallory", "--server", addr, "--user", "bob"); r.code != 0 || !strings.Contains(r.stdout, "Accepted mallory") {
		t.Fatalf("accept: %+v", r)
	}
	if r := send(mallory, "mallory", "bob", "thanks"); r.code != 0 {
		t.Fatalf("send after accept: %+v", r)
	}
	if r := run(t, bob, "recv", "--server", addr, "--user", "bob"); r.code != 0 || !strings.Contains(r.stdout, "mallory: thanks") || strings.Contains(r.stderr, "not in your contacts") {
		t.Fatalf("recv after accept: %+v", r)
	}
	if r := run(t, bob, "contact", "frobnicate", "--user", "bob"); r.code != 2 || !strings.Contains(r.stderr, "usage: securefastchat contact") {
		t.Fatalf("bad subcommand: %+v", r)
	}
}

// TestDeviceCommand: 'device list' shows one's own first device, made by
// the client at sign-up, and another account's list as checked against
// its pinned master key.
func TestDeviceCommand(t *testing.T) {
	addr, _, logs := serve(t, t.TempDir())
	ann := []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=ann password!"}
	bobHome := t.TempDir()
	bob := []string{"SFC_HOME=" + bobHome, "SFC_PASSWORD=bob password!"}
	for _, u := range []struct {
		env  []string
		name string
	}{{ann, "ann"}, {bob, "bob"}} {
		if r := run(t, u.env, "signup", "--server", addr, "--user", u.name); r.code != 0 {
			t.Fatalf("signup %s: %+v", u.name, r)
		}
	}
	r := run(t, ann, "device", "list", "--server", addr, "--user", "ann")
	if r.code != 0 || !strings.Contains(r.stdout, "ann has 1 device(s)") || !strings.Contains(r.stdout, "first device") {
		t.Fatalf("ann's devices: %+v", r)
	}
	r = run(t, bob, "device", "list", "ann", "--server", addr, "--user", "bob")
	if r.code != 0 || !strings.Contains(r.stdout, "ann has 1 device(s)") {
		t.Fatalf("ann's devices as bob sees them: %+v", r)
	}
	if r := run(t, bob, "device", "rename", "x", "--server", addr, "--user", "bob"); r.code != 2 || !strings.Contains(r.stderr, "device list") {
		t.Fatalf("an unknown subcommand: %+v", r)
	}

	// ann and bob write to each other; while ann's recv waits, bob's list
	// gains a device (signed with his master key, as a linking device
	// would), and ann's recv says so.
	for _, m := range [][]string{{"ann", "bob"}, {"bob", "ann"}} {
		env := ann
		if m[0] == "bob" {
			env = bob
		}
		if r := run(t, env, "send", "--server", addr, "--user", m[0], "--to", m[1], "hello "+m[1]); r.code != 0 {
			t.Fatalf("send: %+v", r)
		}
	}
	recv := exec.Command(binPath, "recv", "--server", addr, "--user", "ann", "--wait", "60s")
	recv.Env = append(os.Environ(), ann...)
	out, errb := &syncBuffer{}, &syncBuffer{}
	recv.Stdout, recv.Stderr = out, errb
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { recv.Process.Kill(); recv.Wait() }()
	waitFor(t, func() bool { return strings.Contains(out.String(), "hello ann") })
	waitFor(t, func() bool { return strings.Contains(logs.String(), "user=ann kind=resume") })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bc, err := client.Open(ctx, client.Config{Addr: addr, Home: bobHome, SendOnly: true}, "bob", "bob password!")
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	list, err := bc.Devices(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	box, _ := proto.NewKeyPair(rand.Reader)
	sign, _, _ := ed25519.GenerateKey(rand.Reader)
	st := &proto.DeviceStatement{User: []byte("bob"), Seq: list.Seq + 1, Prev: list.Last, Op: proto.DeviceAdd, Name: []byte("laptop"),
		BoxKey: box.Public.Bytes(), SignKey: sign, Time: time.Now().Unix()}
	st.DeviceID = proto.KeyRecordID(&proto.Keys{BoxKey: st.BoxKey, SignKey: st.SignKey})
	st.Sign(bc.Identity().Sign)
	m := proto.DeviceAppend{Statement: st.Append(nil)}
	if typ, _, err := bc.Conn().Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) }); err != nil || typ != proto.TOK {
		t.Fatalf("bob's new device: %#x %v", uint8(typ), err)
	}
	waitFor(t, func() bool { return strings.Contains(errb.String(), "bob added a device: laptop") })

	// bob's own list says when each device last logged in (the laptop
	// never has: from when it was added); he removes the laptop by name,
	// and ann's recv says so. His only other device, the one that manages
	// the list, he cannot remove.
	bc.Close()
	r = run(t, bob, "device", "list", "--server", addr, "--user", "bob")
	if r.code != 0 || strings.Count(r.stdout, "seen today") != 2 {
		t.Fatalf("bob's own devices: %+v", r)
	}
	if r := run(t, bob, "device", "remove", "phone", "--server", addr, "--user", "bob"); r.code != 1 || !strings.Contains(r.stderr, `no device "phone"`) {
		t.Fatalf("removing a device bob does not have: %+v", r)
	}
	if r := run(t, bob, "device", "remove", "laptop", "--server", addr, "--user", "bob"); r.code != 0 || !strings.Contains(r.stdout, "removed") {
		t.Fatalf("removing bob's laptop: %+v", r)
	}
	waitFor(t, func() bool { return strings.Contains(errb.String(), "bob removed a device: laptop") })
	r = run(t, bob, "device", "list", "--server", addr, "--user", "bob")
	if r.code != 0 || !strings.Contains(r.stdout, "bob has 1 device(s)") {
		t.Fatalf("bob's devices after the removal: %+v", r)
	}
	first := strings.Fields(strings.SplitN(r.stdout, "\n", 3)[1])[0]
	if r := run(t, bob, "device", "remove", first, "--server", addr, "--user", "bob"); r.code != 1 || !strings.Contains(r.stderr, "cannot remove itself") {
		t.Fatalf("bob removing the device that manages his list: %+v", r)
	}
}

// TestDeviceSilence: what 'device list' says of a device by how long it
// has not logged in: a week before it is sent nothing more, it says how
// many days are left; after, that nothing more is sent and how to
// remove it.
func TestDeviceSilence(t *testing.T) {
	day := 24 * time.Hour
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{time.Hour, "seen today"},
		{3*day + time.Hour, "last seen 3 days ago"},
		{24*day + time.Hour, "silent for 24 days: log in on it within 6 days, or nothing more is sent to it"},
		{31 * day, "silent for 31 days: nothing more is sent to it until it logs in; remove it with 'securefastchat device remove tablet'"},
	} {
		if got := client.DeviceSilence("tablet", c.d); got != c.want {
			t.Errorf("%v: %q, want %q", c.d, got, c.want)
		}
	}
}
