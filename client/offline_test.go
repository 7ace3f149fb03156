package client_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

// restartable is a server on a data directory that a test can restart.
type restartable struct {
	t   *testing.T
	dir string
	mod func(*server.Config)
	s   *server.Server
}

func startRestartable(t *testing.T, mod func(*server.Config)) *restartable {
	r := &restartable{t: t, dir: t.TempDir(), mod: mod}
	r.start("127.0.0.1:0")
	t.Cleanup(func() {
		if r.s != nil {
			testserver.Stop(t, r.s)
		}
	})
	return r
}

func (r *restartable) start(addr string) {
	cfg := testserver.Config(r.t, r.dir)
	cfg.Listen = addr
	cfg.Shard.MsgEvery = -1
	if r.mod != nil {
		r.mod(&cfg)
	}
	s, err := server.Start(cfg)
	if err != nil {
		r.t.Fatalf("start: %v", err)
	}
	r.s = s
}

// restart stops the server cleanly and starts it again on the same
// address and data directory.
func (r *restartable) restart() {
	addr := r.s.Addr()
	testserver.Stop(r.t, r.s)
	r.s = nil
	r.start(addr)
}

func (r *restartable) config() client.Config {
	cfg := testserver.ClientConfig(r.t, r.s)
	return cfg
}

func signup(t *testing.T, cfg client.Config, user string) *client.Client {
	t.Helper()
	c, err := client.Signup(ctxT(t), cfg, user, pw)
	if err != nil {
		t.Fatalf("signup %s: %v", user, err)
	}
	return c
}

func login(t *testing.T, cfg client.Config, user string) *client.Client {
	t.Helper()
	c, err := client.Login(ctxT(t), cfg, user, pw)
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// The first test: 1,000 messages to an offline receiver, a
// restart, and all 1,000 arrive in order, exactly once.
func TestOfflineThousandAcrossRestart(t *testing.T) {
	r := startRestartable(t, nil)
	aliceCfg, bobCfg := r.config(), r.config()
	alice := signup(t, aliceCfg, "alice")
	signup(t, bobCfg, "bob").Close()
	const n = 1000
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64) // a window of sends in flight
	ids := make([]uint64, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			rc, err := alice.SendText(ctxT(t), "bob", fmt.Sprintf("message %04d", i))
			if err != nil || rc.Status != proto.StatusQueued {
				t.Errorf("send %d: %+v %v", i, rc, err)
				return
			}
			ids[i] = rc.ServerID
		}()
	}
	wg.Wait()
	alice.Close()
	if t.Failed() {
		return
	}
	r.restart()
	bobCfg.Addr = r.s.Addr()
	bob := login(t, bobCfg, "bob")
	got := map[string]int{}
	var last uint64
	for len(got) < n {
		m := recvOne(t, bob)
		got[m.Text]++
		if m.ServerID <= last {
			t.Fatalf("out of order: %d after %d", m.ServerID, last)
		}
		last = m.ServerID
	}
	for i := 0; i < n; i++ {
		if c := got[fmt.Sprintf("message %04d", i)]; c != 1 {
			t.Fatalf("message %d arrived %d times", i, c)
		}
	}
	select {
	case m := <-testserver.Messages(bob):
		t.Fatalf("extra message %+v", m)
	case <-time.After(300 * time.Millisecond):
	}
	waitQueueEmpty(t, r.s, "bob")
	commits, ops, _ := r.s.Set.Batcher().Stats()
	t.Logf("1000 queued, restart, 1000 delivered in order once; after restart %d commits for %d ops", commits, ops)
}

func waitQueueEmpty(t *testing.T, s *server.Server, user string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, _, err := s.Store.QueueLen(user)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages still queued for %s", n, user)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Queued messages come before new ones, and the queue empties only as
// they are acknowledged.
func TestQueuedBeforeNew(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Shard.MsgEvery = -1 })
	alice := testserver.Signup(t, s, "alice")
	bobCfg := testserver.ClientConfig(t, s)
	signup(t, bobCfg, "bob").Close()
	for i := 0; i < 20; i++ {
		if _, err := alice.SendText(ctxT(t), "bob", fmt.Sprint("old ", i)); err != nil {
			t.Fatal(err)
		}
	}
	bob := login(t, bobCfg, "bob")
	go alice.SendText(ctxT(t), "bob", "new")
	for i := 0; i < 20; i++ {
		if m := recvOne(t, bob); m.Text != fmt.Sprint("old ", i) {
			t.Fatalf("message %d: %q", i, m.Text)
		}
	}
	if m := recvOne(t, bob); m.Text != "new" {
		t.Fatalf("last: %q", m.Text)
	}
	waitQueueEmpty(t, s, "bob")
}

// T35: a message resent with the same msg_id is stored once, and each
// resend gets the same server id.
func TestResendStoredOnce(t *testing.T) {
	s := testserver.Start(t, nil)
	bob := testserver.Signup(t, s, "bob")
	bob.Close()
	alice := testserver.Signup(t, s, "alice")
	msgID := make([]byte, 16)
	rand.Read(msgID)
	m := proto.SendDM{To: []byte("bob"), KeyID: bob.Identity().KeyID("bob"), MsgID: msgID, Kind: proto.KindText, Body: bytes.Repeat([]byte{7}, 100)}
	var ids []uint64
	for i := 0; i < 3; i++ {
		typ, body, err := alice.Conn().Request(ctxT(t), func(b []byte, id uint32) []byte { return m.Append(b, id) })
		var sent proto.Sent
		if err != nil || typ != proto.TSent || sent.Parse(body) != nil || sent.Status != proto.StatusQueued {
			t.Fatalf("send %d: %v", i, err)
		}
		ids = append(ids, sent.ServerID)
	}
	if ids[0] != ids[1] || ids[1] != ids[2] {
		t.Fatalf("server ids %v", ids)
	}
	if n, _, _ := s.Store.QueueLen("bob"); n != 1 {
		t.Fatalf("%d stored", n)
	}
}

// T37 in small: past the receiver's queue limit the sender gets a clear
// error; nothing queued before is dropped, and it all arrives.
func TestQueueLimit(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) {
		c.Shard.MsgEvery = -1
		c.Shard.QueueLimits.Count = 10
		c.Shard.QueueLimits.ContactShare, c.Shard.QueueLimits.StrangerShare = 1, 1 // the whole queue: the cap is what is tested
	})
	alice := testserver.Signup(t, s, "alice")
	bobCfg := testserver.ClientConfig(t, s)
	signup(t, bobCfg, "bob").Close()
	for i := 0; i < 10; i++ {
		if _, err := alice.SendText(ctxT(t), "bob", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := alice.SendText(ctxT(t), "bob", "one too many")
	if !errors.Is(err, proto.CodeQueueFull) {
		t.Fatalf("over the limit: %v", err)
	}
	bob := login(t, bobCfg, "bob")
	for i := 0; i < 10; i++ {
		if m := recvOne(t, bob); m.Text != fmt.Sprint(i) {
			t.Fatalf("got %q", m.Text)
		}
	}
	waitQueueEmpty(t, s, "bob")
	// With room again, sending works.
	if _, err := alice.SendText(ctxT(t), "bob", "room again"); err != nil {
		t.Fatal(err)
	}
}

// Expiry: with a short retention, old messages are swept and new ones are
// not (F10 at the server: the sweep runs at start and on its ticker).
func TestExpiry(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := testserver.Start(t, func(c *server.Config) {
		c.Shard.Now = clock
		c.Retention = time.Hour
	})
	alice := testserver.Signup(t, s, "alice")
	bobCfg := testserver.ClientConfig(t, s)
	signup(t, bobCfg, "bob").Close()
	alice.SendText(ctxT(t), "bob", "old")
	mu.Lock()
	now = now.Add(59 * time.Minute)
	mu.Unlock()
	alice.SendText(ctxT(t), "bob", "young")
	mu.Lock()
	now = now.Add(2 * time.Minute) // "old" is 61 minutes old, "young" 2
	mu.Unlock()
	// Between sweeps, an expired message is not served either (F2/F10).
	bob := login(t, bobCfg, "bob")
	if m := recvOne(t, bob); m.Text != "young" {
		t.Fatalf("got %q", m.Text)
	}
	waitQueueEmpty(t, s, "bob")
	bob.Close()
	if n := s.Set.Stats.ExpiredAtFetch.Load(); n != 1 {
		t.Fatalf("expired at fetch: %d", n)
	}
	alice.SendText(ctxT(t), "bob", "young")
	mu.Lock()
	now = now.Add(59 * time.Minute)
	mu.Unlock()
	alice.SendText(ctxT(t), "bob", "young")
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	if n := s.Sweep(); n != 1 {
		t.Fatalf("swept %d, want 1", n)
	}
	bob = login(t, bobCfg, "bob")
	if m := recvOne(t, bob); m.Text != "young" {
		t.Fatalf("got %q", m.Text)
	}
	select {
	case m := <-testserver.Messages(bob):
		t.Fatalf("expired message delivered: %q", m.Text)
	case <-time.After(200 * time.Millisecond):
	}
}

// A receiver that disconnects mid-delivery gets, at the next login, what
// it had not acknowledged, and not what it had.
func TestDisconnectMidDelivery(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Shard.MsgEvery = -1 })
	alice := testserver.Signup(t, s, "alice")
	bobCfg := testserver.ClientConfig(t, s)
	signup(t, bobCfg, "bob").Close()
	for i := 0; i < 30; i++ {
		alice.SendText(ctxT(t), "bob", fmt.Sprint(i))
	}
	// bob logs in by hand, acknowledges the first 10 deliveries, and drops.
	conn, err := client.Dial(ctxT(t), s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lm := proto.Login{User: []byte("bob"), Password: []byte(testserver.LoginKey(t, "bob"))}
	if _, _, err := conn.Request(ctxT(t), func(b []byte, id uint32) []byte { return lm.Append(b, id) }); err != nil {
		t.Fatal(err)
	}
	var acked []uint64
	for d := range conn.Deliveries() {
		if len(acked) < 10 {
			acked = append(acked, d.ServerID)
			conn.Ack(d.ServerID)
		}
		if len(acked) == 10 {
			break
		}
	}
	// Wait for the server to have processed the acks, then drop without Close.
	deadline := time.Now().Add(5 * time.Second)
	for n, _, _ := s.Store.QueueLen("bob"); n != 20 && time.Now().Before(deadline); n, _, _ = s.Store.QueueLen("bob") {
		time.Sleep(5 * time.Millisecond)
	}
	conn.Abort()
	bob := login(t, bobCfg, "bob")
	for i := 10; i < 30; i++ {
		m := recvOne(t, bob)
		if m.Text != fmt.Sprint(i) {
			t.Fatalf("got %q, want %d", m.Text, i)
		}
		for _, a := range acked {
			if a == m.ServerID {
				t.Fatalf("acknowledged message %d delivered again", a)
			}
		}
	}
	waitQueueEmpty(t, s, "bob")
}

// Files sent to an offline receiver arrive whole after a restart.
func TestFileToOfflineReceiver(t *testing.T) {
	r := startRestartable(t, nil)
	aliceCfg, bobCfg := r.config(), r.config()
	alice := signup(t, aliceCfg, "alice")
	signup(t, bobCfg, "bob").Close()
	data := make([]byte, 5*proto.FileChunkData+123)
	rand.Read(data)
	path := filepath.Join(t.TempDir(), "photo.jpg")
	os.WriteFile(path, data, 0o600)
	if _, err := alice.SendFile(ctxT(t), "bob", path, nil); err != nil {
		t.Fatal(err)
	}
	alice.Close()
	r.restart()
	bobCfg.Addr = r.s.Addr()
	bob := login(t, bobCfg, "bob")
	m := recvOne(t, bob)
	got, _ := os.ReadFile(m.File.Path)
	if m.File == nil || !bytes.Equal(got, data) {
		t.Fatalf("file differs: %+v", m.File)
	}
}

// The receiving client remembers what it has shown across restarts: a
// message resent with the same msg_id after it was acknowledged is not
// shown twice, even by a new client process on the same home directory.
func TestSeenAcrossClientRestart(t *testing.T) {
	s := testserver.Start(t, nil)
	alice := testserver.Signup(t, s, "alice")
	bobCfg := testserver.ClientConfig(t, s)
	bob := signup(t, bobCfg, "bob")
	// alice's client seals once and sends the same bytes twice (a resend).
	send := sealedSender(t, alice, "bob", "only once")
	if _, err := send(); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, bob); m.Text != "only once" {
		t.Fatal("first copy")
	}
	bob.Close()
	bob = login(t, bobCfg, "bob")
	if _, err := send(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-testserver.Messages(bob):
		t.Fatalf("shown twice: %q", m.Text)
	case <-time.After(500 * time.Millisecond):
	}
}

// The sender's client resends what was not acknowledged after the
// connection drops; the receiver sees it once.
func TestResendAfterReconnect(t *testing.T) {
	r := startRestartable(t, nil)
	aliceCfg, bobCfg := r.config(), r.config()
	alice := signup(t, aliceCfg, "alice")
	defer alice.Close()
	signup(t, bobCfg, "bob").Close()
	done := make(chan error, 1)
	// Restart the server while sends are under way.
	go func() {
		var err error
		for i := 0; i < 200 && err == nil; i++ {
			_, err = alice.SendText(ctxT(t), "bob", fmt.Sprint(i))
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	r.restart()
	if err := <-done; err != nil {
		t.Fatalf("sends across a restart: %v", err)
	}
	bobCfg.Addr = r.s.Addr()
	bob := login(t, bobCfg, "bob")
	got := map[string]int{}
	for len(got) < 200 {
		got[recvOne(t, bob).Text]++
	}
	for k, v := range got {
		if v != 1 {
			t.Fatalf("%s shown %d times", k, v)
		}
	}
}

// sealedSender seals one message and returns a function that sends those
// same bytes (a resend) each time it is called.
func sealedSender(t *testing.T, c *client.Client, to, text string) func() (*client.Receipt, error) {
	out, err := c.Prepare(ctxT(t), to, proto.KindText, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return func() (*client.Receipt, error) { return c.Send(ctxT(t), out) }
}

// joinAs has an offline user accept an invitation to group from a session
// that takes no deliveries, so what waits for them stays queued.
func joinAs(t *testing.T, cfg client.Config, user, group string) {
	t.Helper()
	cfg.SendOnly = true
	c, err := client.Open(ctxT(t), cfg, user, pw)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testserver.Join(t, c, group)
}
