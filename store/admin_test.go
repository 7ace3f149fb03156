package store

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"
)

func TestAdminOps(t *testing.T) {
	s := openTemp(t)
	now := time.Now()
	for _, n := range []string{"ann", "bob", "cat"} {
		if err := s.CreateUser(&User{Name: n, Display: n, PasswordHash: "x", BoxKey: make([]byte, 32), SignKey: make([]byte, 32), KeySig: make([]byte, 64)}); err != nil {
			t.Fatal(err)
		}
	}
	s.PutSession(&Session{TokenHash: [32]byte{1}, User: "bob", Created: now, LastSeen: now})
	s.PutSession(&Session{TokenHash: [32]byte{2}, User: "ann", Created: now, LastSeen: now})
	s.AddContact("bob", "ann")
	s.AddContact("cat", "bob")
	if errs, err := s.Enqueue([]*Queued{qmsg("bob", "ann", 10, "one", now), qmsg("bob", "ann", 11, "two", now)}, QueueLimits{}); err != nil || errs[0] != nil {
		t.Fatal(err, errs)
	}
	users, err := s.ListUsers()
	if err != nil || len(users) != 3 || users[1].Name != "bob" || users[1].Queued != 2 {
		t.Fatalf("users %+v %v", users, err)
	}
	if n, b, _ := s.QueueTotals(); n != 2 || b == 0 {
		t.Fatalf("totals %d %d", n, b)
	}
	if err := s.DeleteUser("bob"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser("bob"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if ok, _ := s.UserExists("bob"); ok {
		t.Fatal("bob still exists")
	}
	if _, err := s.GetSession([32]byte{1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("bob's session: %v", err)
	}
	if _, err := s.GetSession([32]byte{2}); err != nil {
		t.Fatalf("ann's session went too: %v", err)
	}
	if n, _, _ := s.QueueLen("bob"); n != 0 {
		t.Fatalf("bob's queue: %d", n)
	}
	if n, _, _ := s.QueueTotals(); n != 0 {
		t.Fatalf("totals after delete: %d", n)
	}
	for _, u := range []string{"ann", "cat"} {
		if c, _ := s.Contacts(u); len(c) != 0 {
			t.Fatalf("%s's contacts still name bob: %v", u, c)
		}
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestInvites(t *testing.T) {
	s := openTemp(t)
	mk := func(name string) *User {
		return &User{Name: name, Display: name, PasswordHash: "x", BoxKey: make([]byte, 32), SignKey: make([]byte, 32), KeySig: make([]byte, 64)}
	}
	if err := s.AddInvite("good", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	s.AddInvite("old", time.Now().Add(-time.Second))
	if ok, _ := s.InviteValid("good"); !ok {
		t.Fatal("fresh invite not valid")
	}
	for _, code := range []string{"old", "unknown", ""} {
		if err := s.CreateUserWithInvite(mk("x"+code), code); !errors.Is(err, ErrInvalidInvite) {
			t.Fatalf("code %q: %v", code, err)
		}
	}
	// One code, many concurrent sign-ups: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.CreateUserWithInvite(mk(string(rune('a'+i))), "good") == nil {
				mu.Lock()
				won++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d sign-ups used one code", won)
	}
	if ok, _ := s.InviteValid("good"); ok {
		t.Fatal("a used invite is still valid")
	}
}

func TestBackupIsAStore(t *testing.T) {
	s := openTemp(t)
	s.CreateUser(&User{Name: "ann", Display: "Ann", PasswordHash: "x", BoxKey: make([]byte, 32), SignKey: make([]byte, 32), KeySig: make([]byte, 64)})
	var buf bytes.Buffer
	var size int64
	n, err := s.Backup(func(sz int64) (io.Writer, error) { size = sz; return &buf, nil })
	if err != nil || n != int64(buf.Len()) || size != n {
		t.Fatalf("backup: wrote %d of %d, buffer %d: %v", n, size, buf.Len(), err)
	}
	path := t.TempDir() + "/copy.db"
	if err := writeFileAtomicForTest(path, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	c, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if u, err := c.GetUser("ann"); err != nil || u.Display != "Ann" {
		t.Fatalf("restored user: %+v %v", u, err)
	}
}

func writeFileAtomicForTest(path string, b []byte) error { return os.WriteFile(path, b, 0o600) }
