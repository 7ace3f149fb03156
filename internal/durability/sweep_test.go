package durability_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"securefastchat/internal/server"
	"securefastchat/store"
)

// TestKillDuringSweep (F2) fills a store with messages just past the 7-day
// line and just inside it, starts the binary (it sweeps before serving),
// kills it with SIGKILL at random moments of the sweep, and checks that
// nothing unexpired was ever removed; after a final clean start nothing
// expired is left to be served.
func TestKillDuringSweep(t *testing.T) {
	srv := newChild(t)
	data := srv.Data
	srv.Start() // makes the key and the store
	srv.Stop(syscall.SIGTERM)

	const users, perUser = 40, 500
	now := time.Now()
	week := server.DefaultRetention
	st, err := store.Open(filepath.Join(data, "securefastchat.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	id := uint64(1)
	fresh := map[string]int{}
	for u := 0; u < users; u++ {
		var batch []*store.Queued
		to := fmt.Sprintf("user%d", u)
		for i := 0; i < perUser; i++ {
			q := &store.Queued{ServerID: id, To: to, From: "sender", Kind: 1, Body: make([]byte, 200)}
			q.MsgID[0], q.MsgID[1], q.MsgID[2] = byte(id>>16), byte(id>>8), byte(id)
			if i%2 == 0 {
				q.Stored = now.Add(-week - time.Minute) // expired
			} else {
				q.Stored = now.Add(-week + 10*time.Minute) // expires in 10 minutes
				fresh[to]++
			}
			batch = append(batch, q)
			id++
		}
		if _, err := st.Enqueue(batch, store.QueueLimits{}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()

	check := func(round int) (remaining int64) {
		st, err := store.Open(filepath.Join(data, "securefastchat.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := st.Check(); err != nil {
			t.Fatalf("round %d: bbolt check: %v", round, err)
		}
		for u := 0; u < users; u++ {
			to := fmt.Sprintf("user%d", u)
			msgs, err := st.Peek(store.Inbox{User: to}, 0, perUser)
			if err != nil {
				t.Fatal(err)
			}
			young := 0
			for _, m := range msgs {
				if m.Stored.After(now.Add(-week)) {
					young++
				}
			}
			if young != fresh[to] {
				t.Fatalf("round %d: %s has %d unexpired messages, want %d", round, to, young, fresh[to])
			}
			remaining += int64(len(msgs))
		}
		return remaining
	}
	rounds := 0
	var left []int64
	for ; rounds < 5; rounds++ {
		cmd := srv.Spawn()
		time.Sleep(time.Duration(5+rand.IntN(30)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		left = append(left, check(rounds))
	}
	srv.Start()
	srv.Stop(syscall.SIGTERM)
	if left := check(rounds); left != int64(users*perUser/2) {
		t.Fatalf("%d messages left after a full sweep, want only the %d unexpired", left, users*perUser/2)
	}
	t.Logf("faults: F2 kill -9 during the sweep: %d rounds (messages left after each kill: %v of %d), %d unexpired kept every time, every expired one gone after a clean start",
		rounds, left, users*perUser, users*perUser/2)
}

// TestCorruptStoreRefused (F5): the binary refuses a corrupt data file with
// a clear message, exits non-zero, and leaves the file untouched.
func TestCorruptStoreRefused(t *testing.T) {
	data := t.TempDir()
	path := filepath.Join(data, "securefastchat.db")
	bad := []byte(strings.Repeat("this is not a database ", 2000))
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	r := run(t, nil, "serve", "--data", data, "--listen", "127.0.0.1:0")
	if r.Code != 1 || !strings.Contains(r.Stderr, "corrupt") || !strings.Contains(r.Stderr, "left untouched") {
		t.Fatalf("exit %d, stderr %q", r.Code, r.Stderr)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(after, bad) {
		t.Fatal("the corrupt file was changed")
	}
	lines := strings.Split(strings.TrimSpace(r.Stderr), "\n")
	t.Logf("faults: F5 corrupt store: refused with exit 1, file untouched: %s", lines[len(lines)-1])
}
