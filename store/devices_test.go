package store

import (
	"errors"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// A device chain grows by compare-and-set on its length, is read in
// pages, and goes with its account.
func TestDeviceChain(t *testing.T) {
	s := openTemp(t)
	if err := s.AppendDevice("ann", 0, []byte("s0")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a chain for nobody: %v", err)
	}
	s.CreateUser(&User{Name: "ann", Display: "ann"})
	if c, more, err := s.DeviceChain("ann", 0, 1<<10); err != nil || len(c) != 0 || more {
		t.Fatalf("no chain yet: %q %v %v", c, more, err)
	}
	for i, st := range []string{"s0", "s1", "s2"} {
		if err := s.AppendDevice("ann", uint32(i), []byte(st)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AppendDevice("ann", 2, []byte("s2 again")); !errors.Is(err, ErrConflict) {
		t.Fatalf("a statement in a taken place: %v", err)
	}
	if err := s.AppendDevice("ann", 4, []byte("s4")); !errors.Is(err, ErrConflict) {
		t.Fatalf("a statement past the end: %v", err)
	}
	if c, more, _ := s.DeviceChain("ann", 1, 1<<10); len(c) != 2 || string(c[0]) != "s1" || more {
		t.Fatalf("from 1: %q %v", c, more)
	}
	if c, more, _ := s.DeviceChain("ann", 0, 3); len(c) != 1 || !more {
		t.Fatalf("a page: %q %v", c, more)
	}
	if err := s.DeleteUser("ann"); err != nil {
		t.Fatal(err)
	}
	s.CreateUser(&User{Name: "ann", Display: "ann"})
	if c, _, _ := s.DeviceChain("ann", 0, 1<<10); len(c) != 0 {
		t.Fatalf("a new ann inherits the old chain: %q", c)
	}
}

// A schema 3 store (testdata/schema3.db, written by a running server of
// that build: alice and bob signed up, bob queued a message for alice)
// opens as the current schema: everything is there, and its accounts have no device
// chain until their clients make one.
func TestMigrateSchema3(t *testing.T) {
	s, _ := openCopy(t, "schema3.db")
	defer s.Close()
	if n, _, err := s.QueueLen("alice"); err != nil || n != 1 {
		t.Fatalf("alice's queue: %d %v", n, err)
	}
	if _, err := s.GetUser("bob"); err != nil {
		t.Fatal(err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get([]byte("schema")); len(v) != 1 || v[0] != schemaVersion {
			t.Errorf("schema after opening: %v", v)
		}
		return nil
	})
	if c, _, err := s.DeviceChain("alice", 0, 1<<10); err != nil || len(c) != 0 {
		t.Fatalf("alice's chain: %q %v", c, err)
	}
	if err := s.AppendDevice("alice", 0, []byte("s0")); err != nil {
		t.Fatal(err)
	}
}
