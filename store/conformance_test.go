package store_test

import (
	"os"
	"path/filepath"
	"testing"

	"securefastchat/store"
	"securefastchat/store/storetest"
)

// bboltBackend runs the conformance suite on the bbolt store. A crash
// leaves the file as it is on disk: every write is synced before it
// returns, so a copy taken between two operations is what a kill -9 at
// that moment leaves (internal/durability kills real server processes).
type bboltBackend struct{}

func (bboltBackend) Open(t testing.TB, dir string) storetest.Store {
	t.Helper()
	s, err := store.Open(filepath.Join(dir, "store.db"), nil)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

func (bboltBackend) Crash(t testing.TB, s storetest.Store, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	left := t.TempDir()
	if err := os.WriteFile(filepath.Join(left, "store.db"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return left
}

// TestConformance: the bbolt store keeps the store's contract, with a
// crash after every step (docs/STORE.md).
func TestConformance(t *testing.T) {
	storetest.Run(t, bboltBackend{})
}
