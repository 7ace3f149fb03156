package durability_test

import (
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
	"securefastchat/store"
)

var crashRounds = flag.Int("crash.rounds", 10, "SIGKILL rounds in TestCrashLosesNothing (the nightly run uses 50)")

// TestCrashLosesNothing (F1) drives senders and receivers through the
// client package against the real binary, kills the server with SIGKILL
// at random moments, restarts it on the same data directory, and checks
// that every message whose sender got an ack was received exactly once.
// Every receiver has two devices, and each device gets every message.
func TestCrashLosesNothing(t *testing.T) { faultRounds(t, syscall.SIGKILL, *crashRounds) }

// TestGracefulRestartLosesNothing (F9) does the same with SIGTERM: the
// server stops accepting, queues what was in flight, closes the store and
// exits 0, and nothing acknowledged is lost.
func TestGracefulRestartLosesNothing(t *testing.T) { faultRounds(t, syscall.SIGTERM, 5) }

func faultRounds(t *testing.T, sig syscall.Signal, rounds int) {
	srv := newChild(t)
	addr := srv.Addr
	srv.Start()

	// Senders send until the kill rounds are over, at most perSender each.
	const senders, receivers, perSender = 8, 4, 20000
	kdf := client.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}
	nextIP := 10
	cfg := func() client.Config {
		// Each client dials from its own loopback address, as users do.
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(nextIP))}
		nextIP++
		dial := func(ctx context.Context, a string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: src}
			return d.DialContext(ctx, "tcp", a)
		}
		return client.Config{Addr: addr, Home: t.TempDir(), OutDir: t.TempDir(), KDF: kdf, PingInterval: -1, Dial: dial}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Receivers: half stay online, half come and go.
	type recv struct {
		name string
		cfg  client.Config
		mu   sync.Mutex
		c    *client.Client
		got  map[string]int
		dups int64
	}
	var rs []*recv
	for i := 0; i < receivers; i++ {
		r := &recv{name: fmt.Sprintf("r%d", i), cfg: cfg(), got: map[string]int{}}
		c, err := client.Signup(ctx, r.cfg, r.name, "receiver pass")
		if err != nil {
			t.Fatal(err)
		}
		r.c = c
		rs = append(rs, r)
	}
	var wgRecv sync.WaitGroup
	consume := func(r *recv, c *client.Client) {
		defer wgRecv.Done()
		for m := range testserver.Messages(c) {
			r.mu.Lock()
			r.got[m.Text]++
			r.mu.Unlock()
		}
	}
	for _, r := range rs {
		wgRecv.Add(1)
		go consume(r, r.c)
	}

	// Each receiver has a second device, its laptop, logged in with its
	// own key beside the client, which reconnects whenever the server
	// comes back: what a receiver is sent must reach both devices. Each
	// laptop has keys of its own, and opens its copies with them.
	senderKeys := sync.Map{} // sender -> proto.PublicKey
	stopLaptops := make(chan struct{})
	var wgLaptops sync.WaitGroup
	laptops := make([]*laptop, len(rs))
	for i, r := range rs {
		box, err := proto.NewKeyPair(crand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		st, key := testserver.AddDevice(t, r.c, "laptop", &box)
		laptops[i] = &laptop{user: r.name, st: st, key: key, box: box, got: map[string]int{}}
		wgLaptops.Add(1)
		go func() {
			defer wgLaptops.Done()
			laptops[i].run(ctx, t, addr, &senderKeys, stopLaptops)
		}()
	}

	var sent, acked, failed atomic.Int64
	var ackedMu sync.Mutex
	ackedSet := map[string]string{} // text -> receiver
	var wgSend sync.WaitGroup
	stopSending := make(chan struct{})
	for i := 0; i < senders; i++ {
		c, err := client.Signup(ctx, cfg(), fmt.Sprintf("s%d", i), "sender pass")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		senderKeys.Store(c.User(), c.Identity().Box.Public)
		wgSend.Add(1)
		go func() {
			defer wgSend.Done()
			for j := 0; j < perSender; j++ {
				select {
				case <-stopSending:
					return
				default:
				}
				to := fmt.Sprintf("r%d", (i+j)%receivers)
				text := fmt.Sprintf("s%d-%d", i, j)
				sent.Add(1)
				sctx, scancel := context.WithTimeout(ctx, time.Minute)
				_, err := c.SendText(sctx, to, text)
				scancel()
				if err != nil {
					if failed.Add(1) <= 3 {
						t.Logf("send %s: %v", text, err)
					}
					continue
				}
				acked.Add(1)
				ackedMu.Lock()
				ackedSet[text] = to
				ackedMu.Unlock()
			}
		}()
	}

	// Kill the server at random moments; toggle half the receivers.
	checks := 0
	var maxRestart time.Duration
	sendersDone := make(chan struct{})
	go func() { wgSend.Wait(); close(sendersDone) }()
	for round := 0; round < rounds; round++ {
		time.Sleep(time.Duration(50+rand.IntN(300)) * time.Millisecond)
		if round%2 == 0 {
			r := rs[receivers-1-round/2%2]
			r.c.Close() // offline for a while
		}
		srv.Stop(sig)
		st, err := store.Open(filepath.Join(srv.Data, "securefastchat.db"), nil)
		if err != nil {
			t.Fatalf("round %d: store after kill: %v", round, err)
		}
		if err := st.Check(); err != nil {
			t.Fatalf("round %d: bbolt check: %v", round, err)
		}
		st.Close()
		checks++
		if d := srv.Start(); d > maxRestart {
			maxRestart = d
		}
		if round%2 == 0 {
			r := rs[receivers-1-round/2%2]
			c, err := client.Login(ctx, r.cfg, r.name, "receiver pass")
			if err != nil {
				t.Fatalf("receiver back: %v", err)
			}
			r.mu.Lock()
			r.dups += r.c.DuplicatesDropped()
			r.c = c
			r.mu.Unlock()
			wgRecv.Add(1)
			go consume(r, c)
		}
	}
	close(stopSending)
	<-sendersDone

	// Everything acked must arrive; wait for it.
	deadline := time.Now().Add(20 * time.Second)
	var lost, lostLaptop, dupShown int
	for {
		lost, lostLaptop, dupShown = 0, 0, 0
		ackedMu.Lock()
		for text, to := range ackedSet {
			r := rs[to[1]-'0']
			r.mu.Lock()
			n := r.got[text]
			r.mu.Unlock()
			if n == 0 {
				lost++
			}
			if n > 1 {
				dupShown++
			}
			if laptops[to[1]-'0'].count(text) == 0 {
				lostLaptop++
			}
		}
		ackedMu.Unlock()
		if lost == 0 && lostLaptop == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stopLaptops)
	wgLaptops.Wait()
	if lost > 0 || lostLaptop > 0 {
		// Where are they? Stop the server and look in the store.
		srv.Kill()
		st, err := store.Open(filepath.Join(srv.Data, "securefastchat.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			n, _, _ := st.QueueLen(r.name)
			var ids []uint64
			inboxes, _ := st.Inboxes(r.name)
			for _, in := range inboxes {
				q, _ := st.Peek(in, 0, 5)
				for _, m := range q {
					ids = append(ids, m.ServerID)
				}
			}
			t.Logf("queue of %s: %d waiting; first ids %v", r.name, n, ids)
		}
		st.Close()
		ackedMu.Lock()
		shown := 0
		for text, to := range ackedSet {
			r := rs[to[1]-'0']
			r.mu.Lock()
			if r.got[text] == 0 && shown < 10 {
				t.Logf("missing %s for %s", text, to)
				shown++
			}
			r.mu.Unlock()
		}
		ackedMu.Unlock()
	}
	var received, rawDups int64
	for _, r := range rs {
		r.mu.Lock()
		received += int64(len(r.got))
		rawDups += r.dups + r.c.DuplicatesDropped()
		r.mu.Unlock()
		r.c.Close()
	}
	wgRecv.Wait()
	name := map[syscall.Signal]string{syscall.SIGKILL: "F1 kill -9", syscall.SIGTERM: "F9 SIGTERM"}[sig]
	var laptopGot, laptopAgain int
	for _, l := range laptops {
		l.mu.Lock()
		laptopGot += len(l.got)
		for _, n := range l.got {
			laptopAgain += n - 1
		}
		l.mu.Unlock()
	}
	t.Logf("faults: %s: %d rounds, sent %d, acked %d, send errors %d, received %d, lost %d, duplicates dropped by the client %d, duplicates shown %d; second devices received %d, lost %d, got again %d; bbolt check %d/%d OK; slowest restart %v",
		name, rounds, sent.Load(), acked.Load(), failed.Load(), received, lost, rawDups, dupShown, laptopGot, lostLaptop, laptopAgain, checks, checks, maxRestart.Round(time.Millisecond))
	if lost != 0 || dupShown != 0 || lostLaptop != 0 {
		t.Fatalf("lost %d, duplicates shown %d; lost by second devices %d", lost, dupShown, lostLaptop)
	}
	if acked.Load() != sent.Load() {
		t.Errorf("%d sends never acknowledged", sent.Load()-acked.Load())
	}
	if maxRestart > 2*time.Second {
		t.Errorf("a restart took %v", maxRestart)
	}
}

// laptop is a receiver's second device, speaking the protocol: it logs in
// with its own key, opens what it is sent, and acknowledges it once it
// has recorded it.
type laptop struct {
	user string
	st   *proto.DeviceStatement
	key  ed25519.PrivateKey
	box  proto.KeyPair

	mu  sync.Mutex
	got map[string]int // text -> times delivered
}

func (l *laptop) count(text string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.got[text]
}

// run keeps the laptop connected until stop is closed, logging in again
// whenever the server comes back.
func (l *laptop) run(ctx context.Context, t *testing.T, addr string, senderKeys *sync.Map, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		conn, err := client.Dial(ctx, addr, client.DialOptions{})
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if _, err := conn.LoginDevice(ctx, l.user, l.st.DeviceID, l.key, 0); err != nil {
			conn.Close()
			time.Sleep(20 * time.Millisecond)
			continue
		}
		l.receive(t, conn, senderKeys, stop)
		conn.Close()
	}
}

func (l *laptop) receive(t *testing.T, conn *client.Conn, senderKeys *sync.Map, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case d, ok := <-conn.Deliveries():
			if !ok {
				return
			}
			if d.Devices == nil {
				continue
			}
			pub, ok := senderKeys.Load(string(d.Devices.From))
			if !ok {
				t.Errorf("%s's laptop: a message from %s, who is no sender", l.user, d.Devices.From)
				continue
			}
			in, err := testserver.OpenCopy(d.Devices, &l.box, pub.(proto.PublicKey))
			if err != nil {
				t.Errorf("%s's laptop: a message from %s does not open: %v", l.user, d.Devices.From, err)
				continue
			}
			l.mu.Lock()
			l.got[string(in.Body)]++
			l.mu.Unlock()
			if conn.Ack(d.ServerID) != nil {
				return
			}
		}
	}
}
