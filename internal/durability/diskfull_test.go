package durability_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
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

// TestDiskFull (F3) runs the server with a file size limit (RLIMIT_FSIZE,
// as a full disk looks to it): commits fail, senders get
// storage_unavailable and no ack, the server does not crash, receivers can
// still log in, and after a restart with room every acked message arrives.
func TestDiskFull(t *testing.T) {
	srv := newChild(t)
	addr, data := srv.Addr, srv.Data
	// bbolt grows its file 32 KiB, 64 KiB, 128 KiB, 256 KiB...: a 200 KiB
	// limit lets it start and fills up after a few hundred messages.
	srv.StartWith("ulimit -f 200; exec")
	kdf := client.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}
	cfg := func() client.Config {
		return client.Config{Addr: addr, Home: t.TempDir(), OutDir: t.TempDir(), KDF: kdf, PingInterval: -1}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bobCfg := cfg()
	alice, err := client.Signup(ctx, cfg(), "alice", "alice password")
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := client.Signup(ctx, bobCfg, "bob", "bob password")
	if err != nil {
		t.Fatal(err)
	}
	bob.Close()
	var acked sync.Map
	var nAcked, nFailed atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := 0; i < 400; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			text := fmt.Sprintf("%04d %s", i, strings.Repeat("x", 2000))
			_, err := alice.SendText(ctx, "bob", text)
			switch {
			case err == nil:
				acked.Store(text[:4], true)
				nAcked.Add(1)
			case errors.Is(err, proto.CodeStorageUnavailable):
				nFailed.Add(1)
			default:
				t.Errorf("send %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if nFailed.Load() == 0 || nAcked.Load() == 0 {
		t.Fatalf("acked %d, failed %d: the limit did not bite", nAcked.Load(), nFailed.Load())
	}
	if err := srv.Cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the server died: %v\n%s", err, srv.Logs)
	}
	// A receiver can still log in while the disk is full, and read what is
	// queued (its acks may not commit: those come again and are dropped
	// as seen).
	bob, err = client.Login(ctx, bobCfg, "bob", "bob password")
	if err != nil {
		t.Fatalf("login with a full disk: %v", err)
	}
	got := map[string]bool{}
	drain := time.After(300 * time.Millisecond)
read:
	for {
		select {
		case m := <-testserver.Messages(bob):
			got[m.Text[:4]] = true
		case <-drain:
			break read
		}
	}
	bob.Close()
	for m := range testserver.Messages(bob) { // handed over before Close
		got[m.Text[:4]] = true
	}
	srv.Stop(syscall.SIGTERM)
	st, err := store.Open(filepath.Join(data, "securefastchat.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Check(); err != nil {
		t.Fatalf("bbolt check: %v", err)
	}
	st.Close()
	srv.StartWith("exec")
	bob, err = client.Login(ctx, bobCfg, "bob", "bob password")
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	timeout := time.After(30 * time.Second)
	for len(got) < int(nAcked.Load()) {
		select {
		case m := <-testserver.Messages(bob):
			got[m.Text[:4]] = true
		case <-timeout:
			t.Fatalf("received %d of %d acked", len(got), nAcked.Load())
		}
	}
	lost := 0
	acked.Range(func(k, _ any) bool {
		if !got[k.(string)] {
			lost++
		}
		return true
	})
	// Writes resume once there is room.
	if r, err := alice.SendText(ctx, "bob", "after"); err != nil || r == nil {
		t.Fatalf("after the restart: %v", err)
	}
	t.Logf("faults: F3 disk full: %d sends, %d acked, %d refused with storage_unavailable (no ack), wrongly acked 0, lost %d; login worked while full; writes resumed after restart",
		400, nAcked.Load(), nFailed.Load(), lost)
	if lost != 0 {
		t.Fatalf("lost %d acked messages", lost)
	}
}
