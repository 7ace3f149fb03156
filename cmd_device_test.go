package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"securefastchat/chat"
	"securefastchat/client"
	"securefastchat/history"
)

// annAndBob starts a server and signs ann and bob up with the CLI, each
// in a home of their own, as contacts (each wrote to the other). It
// returns the server's address and their homes' environments.
func annAndBob(t *testing.T) (addr string, ann, bob []string) {
	t.Helper()
	addr, _, _ = serve(t, t.TempDir())
	envs := signupAll(t, addr, "a password!", "ann", "bob")
	for _, m := range [][]string{{"ann", "bob"}, {"bob", "ann"}} {
		if r := run(t, envs[m[0]], "send", "--server", addr, "--user", m[0], "--to", m[1], "hello "+m[1]); r.code != 0 {
			t.Fatalf("send: %+v", r)
		}
	}
	return addr, envs["ann"], envs["bob"]
}

// startLink runs 'device link' for ann (env) with extra flags, and
// returns the code it shows and a function that, once the new device has
// asked, gives answer and waits for the command: the id it showed, a
// line, then all it printed.
func startLink(t *testing.T, addr string, env []string, answer string, extra ...string) (code string, done func() (string, error)) {
	t.Helper()
	cmd := exec.Command(binPath, append([]string{"device", "link", "--server", addr, "--user", "ann"}, extra...)...)
	cmd.Env = append(os.Environ(), env...)
	out, errb := &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, errb
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	codeRe := regexp.MustCompile(`--code (securefastchat-link:\S+)`)
	waitFor(t, func() bool { return strings.Contains(out.String(), "Waiting for the new device") })
	if !strings.Contains(out.String(), "█") && !strings.Contains(out.String(), "▀") {
		t.Fatalf("no QR code shown:\n%s", out.String())
	}
	code = codeRe.FindStringSubmatch(out.String())[1]
	return code, func() (string, error) {
		idRe := regexp.MustCompile(`with id ([0-9a-f]{16})`)
		waitFor(t, func() bool { return idRe.MatchString(out.String()) })
		io.WriteString(in, answer+"\n")
		err := cmd.Wait()
		return idRe.FindStringSubmatch(out.String())[1] + "\n" + out.String() + errb.String(), err
	}
}

// TestDeviceLink: 'device link' on ann's first device shows a code (text
// and QR) and waits; 'device add --code' in a second home shows the new
// device's id, which the first device shows too; ann answers yes, and the
// second home is her laptop: 'recv' there gets what bob sends her, and
// what it sends bob reaches him and shows on her first device as hers.
// bob, holding his contacts' new devices, has his message to ann held
// until he approves the laptop. A second 'device link' answered no adds
// nothing.
func TestDeviceLink(t *testing.T) {
	addr, ann, bob := annAndBob(t)
	if r := run(t, ann, "recv", "--server", addr, "--user", "ann"); r.code != 0 || !strings.Contains(r.stdout, "hello ann") {
		t.Fatalf("ann's recv: %+v", r)
	}
	// bob holds his contacts' new devices: ann's first device is trusted
	// as he sees it now.
	if r := run(t, bob, "contact", "hold", "on", "--server", addr, "--user", "bob"); r.code != 0 || !strings.Contains(r.stdout, "Holding your contacts' new devices") {
		t.Fatalf("contact hold on: %+v", r)
	}
	if r := run(t, bob, "send", "--server", addr, "--user", "bob", "--to", "ann", "before ann's laptop"); r.code != 0 {
		t.Fatalf("bob's send with the hold on: %+v", r)
	}
	laptop := []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=laptop passphrase"}

	code, answer := startLink(t, addr, ann, "yes")
	added := make(chan result, 1)
	go func() { added <- run(t, laptop, "device", "add", "--code", code, "--name", "laptop") }()
	firstOut, err := answer()
	if err != nil {
		t.Fatalf("device link: %v\n%s", err, firstOut)
	}
	r := <-added
	firstID := strings.SplitN(firstOut, "\n", 2)[0]
	if r.code != 0 || !strings.Contains(r.stdout, "This device's id is "+firstID) || !strings.Contains(r.stdout, "is now ann's device \"laptop\"") {
		t.Fatalf("device add (the first device showed %s): %+v", firstID, r)
	}
	if !strings.Contains(firstOut, "Added laptop ("+firstID+")") {
		t.Fatalf("device link:\n%s", firstOut)
	}
	if r := run(t, ann, "device", "list", "--server", addr, "--user", "ann"); r.code != 0 || !strings.Contains(r.stdout, "ann has 2 device(s)") || !strings.Contains(r.stdout, firstID+"  laptop") {
		t.Fatalf("ann's devices: %+v", r)
	}
	// bob's messages to ann wait until he approves the laptop.
	if r := run(t, bob, "send", "--server", addr, "--user", "bob", "--to", "ann", "held"); r.code != 1 || !strings.Contains(r.stderr, "ann has a device you have not approved: laptop ("+firstID+")") || !strings.Contains(r.stderr, "securefastchat contact approve ann") {
		t.Fatalf("bob's send with ann's laptop held: %+v", r)
	}
	if r := run(t, bob, "contact", "devices", "ann", "--server", addr, "--user", "bob"); r.code != 0 || !strings.Contains(r.stdout, firstID+"  laptop") || !strings.Contains(r.stdout, "held: not approved") {
		t.Fatalf("contact devices ann: %+v", r)
	}
	if r := run(t, bob, "contact", "approve", "ann", "--server", addr, "--user", "bob"); r.code != 0 || !strings.Contains(r.stdout, "Approved ann's 2 device(s)") {
		t.Fatalf("contact approve ann: %+v", r)
	}
	if r := run(t, bob, "contact", "devices", "ann", "--server", addr, "--user", "bob"); r.code != 0 || strings.Contains(r.stdout, "held") {
		t.Fatalf("contact devices ann, approved: %+v", r)
	}

	// The laptop is a device of ann's like the first.
	// (--per-device: neither is online, so the message is stored for each.)
	if r := run(t, bob, "send", "--server", addr, "--user", "bob", "--to", "ann", "--per-device", "to both of ann's devices"); r.code != 0 ||
		!regexp.MustCompile(`(?m)^  [0-9a-f]{16}  first device +stored for it until it connects$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^  `+firstID+`  laptop +stored for it until it connects$`).MatchString(r.stdout) {
		t.Fatalf("bob's send: %+v", r)
	}
	for name, env := range map[string][]string{"the first device": ann, "the laptop": laptop} {
		if r := run(t, env, "recv", "--server", addr, "--user", "ann"); r.code != 0 || !strings.Contains(r.stdout, "bob: to both of ann's devices") {
			t.Fatalf("recv on %s: %+v", name, r)
		}
	}
	if r := run(t, laptop, "send", "--server", addr, "--user", "ann", "--to", "bob", "from the laptop"); r.code != 0 {
		t.Fatalf("the laptop's send: %+v", r)
	}
	if r := run(t, bob, "recv", "--server", addr, "--user", "bob"); r.code != 0 || !strings.Contains(r.stdout, "ann: from the laptop") {
		t.Fatalf("bob's recv: %+v", r)
	}
	if r := run(t, ann, "recv", "--server", addr, "--user", "ann"); r.code != 0 || !strings.Contains(r.stdout, "you, to bob from another device: from the laptop") {
		t.Fatalf("recv on ann's first device: %+v", r)
	}
	if r := run(t, laptop, "device", "link", "--server", addr, "--user", "ann"); r.code != 1 || !strings.Contains(r.stderr, "does not manage") {
		t.Fatalf("device link on the laptop: %+v", r)
	}

	// Answered no: nothing added, and the new device is told.
	code, answer = startLink(t, addr, ann, "n")
	added = make(chan result, 1)
	go func() {
		added <- run(t, []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=tablet passphrase"}, "device", "add", "--code", code, "--name", "tablet")
	}()
	if out, err := answer(); err == nil || !strings.Contains(out, "not added") {
		t.Fatalf("device link answered no: %v\n%s", err, out)
	}
	if r := <-added; r.code != 1 || !strings.Contains(r.stderr, "refused") {
		t.Fatalf("device add, refused: %+v", r)
	}
	if r := run(t, ann, "device", "list", "--server", addr, "--user", "ann"); !strings.Contains(r.stdout, "ann has 2 device(s)") {
		t.Fatalf("ann's devices after a refusal: %+v", r)
	}
	if r := run(t, laptop, "device", "add", "--name", "x"); r.code != 2 || !strings.Contains(r.stderr, "--code") {
		t.Fatalf("device add without a code: %+v", r)
	}
}

// TestRecoverCommand: ann, her devices lost, starts again from a new home
// with her password, and her group is told that her key changed; bob's
// recv says her keys changed, and his send is held until he accepts; the
// old home's send fails.
func TestRecoverCommand(t *testing.T) {
	addr, ann, bob := annAndBob(t)
	if r := run(t, ann, "group", "create", "team", "--server", addr, "--user", "ann"); r.code != 0 {
		t.Fatalf("group create: %+v", r)
	}
	fresh := []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=a password!"}
	if r := run(t, fresh, "recover", "--server", addr, "--user", "ann"); r.code != 0 || !strings.Contains(r.stdout, "starts again from this device") ||
		!strings.Contains(r.stdout, "Your groups were told that your key changed, with the one before, so their members still check what you signed in them: team.") {
		t.Fatalf("recover: %+v", r)
	}
	// Her group goes on from the new home: its chain checks from the start.
	if r := run(t, fresh, "send", "--server", addr, "--user", "ann", "--group", "team", "after the recovery"); r.code != 0 {
		t.Fatalf("ann's group send after the recovery: %+v", r)
	}
	if r := run(t, ann, "recover", "--server", addr, "--user", "ann"); r.code != 1 || !strings.Contains(r.stderr, "already holds an identity") {
		t.Fatalf("recover in a home that holds ann's identity: %+v", r)
	}
	if r := run(t, fresh, "device", "list", "--server", addr, "--user", "ann"); r.code != 0 || !strings.Contains(r.stdout, "ann has 1 device(s)") {
		t.Fatalf("ann's devices after the recovery: %+v", r)
	}
	if r := run(t, bob, "send", "--server", addr, "--user", "bob", "--to", "ann", "are you there?"); r.code == 0 || !strings.Contains(r.stderr, "ann's keys have CHANGED") {
		t.Fatalf("bob's send after ann's recovery: %+v", r)
	}
	if r := run(t, ann, "send", "--server", addr, "--user", "ann", "--to", "bob", "from the lost phone"); r.code != 1 || !strings.Contains(r.stderr, "recovered on another device") {
		t.Fatalf("the old home's send after the recovery: %+v", r)
	}
}

// TestDeviceLinkManage: 'device link --manage' makes ann's laptop a device
// that manages her devices: from the laptop she removes her first device
// (lost), which is then told so when it opens, even with the password.
func TestDeviceLinkManage(t *testing.T) {
	addr, ann, _ := annAndBob(t)
	first := run(t, ann, "device", "list", "--server", addr, "--user", "ann")
	firstID := regexp.MustCompile(`([0-9a-f]{16})  `).FindStringSubmatch(first.stdout)
	if first.code != 0 || firstID == nil {
		t.Fatalf("device list: %+v", first)
	}
	laptop := []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=laptop passphrase"}
	code, answer := startLink(t, addr, ann, "yes", "--manage")
	added := make(chan result, 1)
	go func() { added <- run(t, laptop, "device", "add", "--code", code, "--name", "laptop") }()
	out, err := answer()
	if err != nil || !strings.Contains(out, "laptop manages your devices too") {
		t.Fatalf("device link --manage: %v\n%s", err, out)
	}
	if r := <-added; r.code != 0 || !strings.Contains(r.stdout, "It manages your devices") {
		t.Fatalf("device add: %+v", r)
	}
	if r := run(t, laptop, "device", "remove", firstID[1], "--server", addr, "--user", "ann"); r.code != 0 || !strings.Contains(r.stdout, "removed "+firstID[1]) {
		t.Fatalf("the laptop removing the first device: %+v", r)
	}
	if r := run(t, laptop, "device", "list", "--server", addr, "--user", "ann"); r.code != 0 || !strings.Contains(r.stdout, "ann has 1 device(s)") {
		t.Fatalf("ann's devices: %+v", r)
	}
	if r := run(t, ann, "recv", "--server", addr, "--user", "ann"); r.code == 0 || !strings.Contains(r.stderr, "removed it from the list") {
		t.Fatalf("the removed first device's recv: %+v", r)
	}
}

// TestDeviceLinkHistory: 'device link --history' copies the conversations
// ann's chat kept on her first device to the new one: the newest that fit
// a link when they do not all fit, in their order, without what was still
// to be sent; both commands say how much came. While a chat holds the
// history, the command says to link from the chat.
func TestDeviceLinkHistory(t *testing.T) {
	addr, ann, _ := annAndBob(t)
	h := homeHistory(t, addr, ann, "ann", "a password!")
	t0 := time.Now().Add(-72 * time.Hour)
	var kept []*history.Entry
	for i := range 2500 {
		e := &history.Entry{Conv: "@bob", ID: client.NewMsgID(), From: "bob", Text: fmt.Sprintf("message %04d %s", i, strings.Repeat("·", 800)), Time: t0.Add(time.Duration(i) * time.Second)}
		if i%2 == 1 {
			e.From, e.Mine, e.Status = "ann", true, history.Read
		}
		kept = append(kept, e)
	}
	kept = append(kept, &history.Entry{Conv: "@bob", ID: client.NewMsgID(), From: "ann", Mine: true, Text: "still to send", Time: time.Now(), Status: history.Sending})
	if err := h.Add(kept...); err != nil {
		t.Fatal(err)
	}
	if r := run(t, ann, "device", "link", "--history", "--server", addr, "--user", "ann"); r.code == 0 || !strings.Contains(r.stderr, "/link history") {
		t.Fatalf("device link --history while a chat holds the history: %+v", r)
	}
	h.Close()

	laptop := []string{"SFC_HOME=" + t.TempDir(), "SFC_PASSWORD=laptop passphrase"}
	code, answer := startLink(t, addr, ann, "yes", "--history")
	added := make(chan result, 1)
	go func() { added <- run(t, laptop, "device", "add", "--code", code, "--name", "laptop") }()
	out, err := answer()
	said := regexp.MustCompile(`It has a copy of the newest (\d+) of 2500 entries`)
	m := said.FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("device link --history: %v\n%s", err, out)
	}
	if r := <-added; r.code != 0 || !strings.Contains(r.stdout, m[0]) {
		t.Fatalf("device add (the first device said %q): %+v", m[0], r)
	}
	n, _ := strconv.Atoi(m[1])
	if n < 1000 || n >= 2500 {
		t.Fatalf("%d entries copied", n)
	}

	// The laptop's history holds the newest n, in order, as the chat
	// there reads them.
	all, bad, err := homeHistory(t, addr, laptop, "ann", "laptop passphrase").All()
	if err != nil || bad != 0 || len(all) != n {
		t.Fatalf("the laptop's history: %d entries (%d bad): %v", len(all), bad, err)
	}
	for i, e := range all {
		want := kept[2500-n+i]
		if e.ID != want.ID || e.Text != want.Text || e.Mine != want.Mine || e.Status != want.Status || !e.Time.Equal(want.Time.Truncate(time.Millisecond)) {
			t.Fatalf("entry %d: %+v, want %+v", i, e, want)
		}
	}
}

// homeHistory opens the history the chat keeps in the home of env (its
// SFC_HOME) for user, whose identity opens with pass, as the chat would;
// it is closed when the test ends (or before, by the caller: a second
// Close does nothing).
func homeHistory(t *testing.T, addr string, env []string, user, pass string) *history.History {
	t.Helper()
	home := strings.TrimPrefix(env[0], "SFC_HOME=")
	c, err := client.Load(client.Config{Addr: addr, Home: home}, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	h, err := chat.OpenHistory(c, home)
	c.Close() // (the history has its key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}
