package client_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

// junk sends n direct messages of junk (the server cannot tell) from m to
// user.
func junk(t *testing.T, m *client.Client, user string, keyID uint64, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		id := client.NewMsgID()
		dm := proto.SendDM{To: []byte(user), KeyID: keyID, MsgID: id[:], Kind: proto.KindText, Body: make([]byte, 200)}
		if _, _, err := m.Conn().Request(ctxT(t), func(b []byte, rid uint32) []byte { return dm.Append(b, rid) }); err != nil {
			t.Fatal(err)
		}
	}
}

// A stranger's junk costs the receiver nothing it needs for others: the
// keys of whoever wrote to bob are free for him to fetch, so a flood of
// junk (more than his whole lookup budget) leaves his contacts' messages
// opening, online and queued; each junk message is reported as one that
// could not be opened, never dropped silently.
func TestJunkCostsNothing(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) {
		c.Shard.MsgEvery = -1
		c.Limits.LookupBurst, c.Limits.LookupEvery = 5, time.Hour // a budget junk would spend at once
	})
	var mu sync.Mutex
	var rejected []error
	bcfg := testserver.ClientConfig(t, s)
	bob, err := client.Signup(ctxT(t), bcfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	testserver.OnEvent(bob, func(ev client.Event) {
		if ev.Kind == client.EventRejected {
			mu.Lock()
			rejected = append(rejected, ev.Err)
			mu.Unlock()
		}
	})
	alice := testserver.Signup(t, s, "alice")
	carol := testserver.Signup(t, s, "carol")
	mallory := testserver.Signup(t, s, "mallory")
	key := bob.Identity().KeyID("bob")

	// Online: 30 junk, then real messages from two contacts.
	junk(t, mallory, "bob", key, 30)
	for _, c := range []*client.Client{alice, carol} {
		if _, err := c.SendText(ctxT(t), "bob", "real, from "+c.User()); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]bool{}
	for len(got) < 2 {
		got[recvOne(t, bob).Text] = true
	}
	// Queued: junk first, then a contact's message, then bob logs in.
	bob.Close()
	junk(t, mallory, "bob", key, 30)
	if _, err := alice.SendText(ctxT(t), "bob", "queued after the junk"); err != nil {
		t.Fatal(err)
	}
	bob, err = client.Open(ctxT(t), bcfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	testserver.OnEvent(bob, func(ev client.Event) {
		if ev.Kind == client.EventRejected {
			mu.Lock()
			rejected = append(rejected, ev.Err)
			mu.Unlock()
		}
	})
	defer bob.Close()
	if m := recvOne(t, bob); m.Text != "queued after the junk" {
		t.Fatalf("bob got %q", m.Text)
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(rejected) >= 60 })
	mu.Lock()
	defer mu.Unlock()
	for _, err := range rejected {
		if !errors.Is(err, client.ErrRejected) || strings.Contains(err.Error(), "rate_limited") {
			t.Fatalf("a junk message was reported as %v", err)
		}
	}
	waitQueueEmpty(t, s, "bob")
}
