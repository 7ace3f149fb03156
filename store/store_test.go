package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Check(); err != nil {
			t.Errorf("check: %v", err)
		}
		s.Close()
	})
	return s
}

func testUser(name string) *User {
	return &User{Name: name, Display: name, PasswordHash: "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		BoxKey: bytes.Repeat([]byte{1}, 32), SignKey: bytes.Repeat([]byte{2}, 32), KeySig: bytes.Repeat([]byte{3}, 64)}
}

func TestUsers(t *testing.T) {
	s := openTemp(t)
	u := testUser("alice")
	u.Display = "Alice"
	if err := s.CreateUser(u); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(testUser("alice")); !errors.Is(err, ErrUserExists) {
		t.Fatalf("duplicate: %v", err)
	}
	got, err := s.GetUser("alice")
	if err != nil || got.Display != "Alice" || !bytes.Equal(got.KeySig, u.KeySig) || got.PasswordHash != u.PasswordHash {
		t.Fatalf("got %+v, %v", got, err)
	}
	if _, err := s.GetUser("bob"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing user: %v", err)
	}
	if err := s.SetDisabled("alice", true); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetUser("alice"); !got.Disabled {
		t.Fatal("not disabled")
	}
	if err := s.SetPasswordHash("nobody", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update of a missing user: %v", err)
	}
}

// T28 at the store: concurrent creates of one name, exactly one wins.
func TestCreateUserRace(t *testing.T) {
	s := openTemp(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.CreateUser(testUser("carol")) == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("%d creates succeeded", ok)
	}
}

func TestSessions(t *testing.T) {
	s := openTemp(t)
	now := time.Unix(1_700_000_000, 0)
	var hashes [][32]byte
	for i, user := range []string{"alice", "alice", "bob", "alice"} {
		h := HashToken([]byte(fmt.Sprint("token", i)))
		hashes = append(hashes, h)
		if err := s.PutSession(&Session{TokenHash: h, User: user, Created: now, LastSeen: now}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.GetSession(hashes[2])
	if err != nil || got.User != "bob" || !got.Created.Equal(now) {
		t.Fatalf("got %+v %v", got, err)
	}
	if err := s.TouchSession(hashes[2], now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetSession(hashes[2]); !got.LastSeen.Equal(now.Add(time.Hour)) {
		t.Fatal("touch not stored")
	}
	n, err := s.DeleteUserSessions("alice")
	if err != nil || n != 3 {
		t.Fatalf("deleted %d, %v", n, err)
	}
	for i, h := range hashes {
		_, err := s.GetSession(h)
		if (i == 2) != (err == nil) {
			t.Fatalf("session %d: %v", i, err)
		}
	}
}

// TestChangePassword: a password change replaces the hash and revokes
// the user's sessions but the one kept, not another user's.
func TestChangePassword(t *testing.T) {
	s := openTemp(t)
	now := time.Unix(1_700_000_000, 0)
	if err := s.CreateUser(&User{Name: "alice", Display: "alice", PasswordHash: "old", BoxKey: make([]byte, 32), SignKey: make([]byte, 32), KeySig: make([]byte, 64), Created: now}); err != nil {
		t.Fatal(err)
	}
	var hashes [][32]byte
	for i, user := range []string{"alice", "alice", "bob", "alice"} {
		h := HashToken([]byte(fmt.Sprint("token", i)))
		hashes = append(hashes, h)
		if err := s.PutSession(&Session{TokenHash: h, User: user, Created: now, LastSeen: now}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.ChangePassword("alice", "new", hashes[1])
	if err != nil || n != 2 {
		t.Fatalf("revoked %d, %v", n, err)
	}
	for i, h := range hashes {
		_, err := s.GetSession(h)
		if (i == 1 || i == 2) != (err == nil) {
			t.Fatalf("session %d: %v", i, err)
		}
	}
	if u, err := s.GetUser("alice"); err != nil || u.PasswordHash != "new" {
		t.Fatalf("alice: %+v %v", u, err)
	}
	if _, err := s.ChangePassword("nobody", "new", hashes[1]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no such user: %v", err)
	}
}

// F4: a second opener of the same file gets ErrLocked after the timeout,
// and the first is unaffected.
func TestLockedByAnother(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	first, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	start := time.Now()
	_, err = Open(path, &Options{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second open took %v", d)
	}
	t.Logf("F4 lock: second open refused after %v", time.Since(start).Round(time.Millisecond))
	if err := first.CreateUser(testUser("dave")); err != nil {
		t.Fatalf("first store broken: %v", err)
	}
}

// F5: a corrupt or truncated file is refused with ErrCorrupt, never
// rewritten or deleted.
func TestCorruptFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "db")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if err := s.CreateUser(testUser(fmt.Sprint("user", i))); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	good, _ := os.ReadFile(path)
	damage := map[string]func([]byte) []byte{
		"garbage":   func(b []byte) []byte { return bytes.Repeat([]byte("not a database "), 1000) },
		"truncated": func(b []byte) []byte { return b[:100] },
		"meta flip": func(b []byte) []byte { c := append([]byte(nil), b...); c[20] ^= 0xff; c[4096+20] ^= 0xff; return c },
	}
	for name, f := range damage {
		p := filepath.Join(dir, name)
		bad := f(good)
		if err := os.WriteFile(p, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(p, &Options{LockTimeout: time.Second})
		if err == nil {
			s.Close()
			t.Errorf("%s: opened", name)
			continue
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
		after, _ := os.ReadFile(p)
		if !bytes.Equal(after, bad) {
			t.Errorf("%s: the file was changed", name)
		}
	}
}

func TestCorruptRecordIsAnError(t *testing.T) {
	if _, err := unmarshalUser("x", []byte{1, 200}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v", err)
	}
	if _, err := unmarshalSession([32]byte{}, []byte{1}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v", err)
	}
}

// Unknown flag bits make a user record corrupt (found by FuzzRecords).
func TestUserRecordUnknownFlags(t *testing.T) {
	rec := testUser("alice").marshal()
	rec[len(rec)-1] = 0xfc
	if _, err := unmarshalUser("alice", rec); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v", err)
	}
}
