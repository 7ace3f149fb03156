package durability_test

import (
	"context"
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
	"securefastchat/store"
)

var crashRounds = flag.Int("crash.rounds", 10, "SIGKILL rounds in TestCrashLosesNothing (the nightly run uses 50)")

// TestCrashLosesNothing (F1) drives senders and receivers through the
// client package against the real binary, kills the server with SIGKILL
// at random moments, restarts it on the same data directory, and checks
// that every message whose sender got an ack was received exactly once.
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
	var lost, dupShown int
	for {
		lost, dupShown = 0, 0
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
		}
		ackedMu.Unlock()
		if lost == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if lost > 0 {
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
	t.Logf("faults: %s: %d rounds, sent %d, acked %d, send errors %d, received %d, lost %d, duplicates dropped by the client %d, duplicates shown %d; bbolt check %d/%d OK; slowest restart %v",
		name, rounds, sent.Load(), acked.Load(), failed.Load(), received, lost, rawDups, dupShown, checks, checks, maxRestart.Round(time.Millisecond))
	if lost != 0 || dupShown != 0 {
		t.Fatalf("lost %d, duplicates shown %d", lost, dupShown)
	}
	if acked.Load() != sent.Load() {
		t.Errorf("%d sends never acknowledged", sent.Load()-acked.Load())
	}
	if maxRestart > 2*time.Second {
		t.Errorf("a restart took %v", maxRestart)
	}
}
