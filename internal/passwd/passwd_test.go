package passwd

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
)

// The production defaults are RFC 9106's second profile, and the floor is
// OWASP's minimum; both are part of the security bar.
func TestProductionDefaults(t *testing.T) {
	if Default != (Params{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}) {
		t.Fatalf("Default = %s", Default)
	}
	if Floor != (Params{Time: 2, MemoryKiB: 19 * 1024, Threads: 1}) {
		t.Fatalf("Floor = %s", Floor)
	}
	if !Default.AtLeast(Floor) || Weak.AtLeast(Floor) {
		t.Fatal("ordering of Default, Floor and Weak is wrong")
	}
	if _, err := NewHasher(Weak, 1, false); !errors.Is(err, ErrBelowFloor) {
		t.Fatalf("weak parameters accepted without allowWeak: %v", err)
	}
}

func TestHashVerify(t *testing.T) {
	h, err := NewHasher(Weak, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	phc, err := h.Hash(ctx, []byte("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(phc, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("PHC %q", phc)
	}
	if ok, _, err := h.Verify(ctx, phc, []byte("correct horse")); !ok || err != nil {
		t.Fatalf("right password: %v %v", ok, err)
	}
	if ok, _, _ := h.Verify(ctx, phc, []byte("wrong horse")); ok {
		t.Fatal("wrong password verified")
	}
	if ok, _, _ := h.Verify(ctx, "", []byte("dummy password for unknown users")); ok {
		t.Fatal("the dummy hash verified")
	}
	// Rehash: a hasher with stronger parameters asks for a new hash.
	strong, err := NewHasher(Params{Time: 2, MemoryKiB: 128, Threads: 1}, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	if ok, rehash, _ := strong.Verify(ctx, phc, []byte("correct horse")); !ok || !rehash {
		t.Fatalf("ok=%v rehash=%v", ok, rehash)
	}
}

func TestParsePHC(t *testing.T) {
	for _, bad := range []string{"", "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=18$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "$argon2id$v=19$m=64,t=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "$argon2id$v=19$m=64,t=1,p=1$!!$aGFzaGhhc2hoYXNoaGFzaA"} {
		if _, _, _, err := ParsePHC(bad); !errors.Is(err, ErrBadPHC) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// The semaphore bounds concurrent hashes (T22's memory bound).
func TestConcurrencyBound(t *testing.T) {
	h, err := NewHasher(Params{Time: 1, MemoryKiB: 1024, Threads: 1}, 3, true)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = h.Hash(context.Background(), []byte("password"))
		}()
	}
	wg.Wait()
	if m := h.MaxActive(); m > 3 || m < 1 {
		t.Fatalf("max concurrent hashes %d, bound 3", m)
	}
}

func FuzzParsePHC(f *testing.F) {
	f.Add("$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
	f.Fuzz(func(t *testing.T, s string) {
		p, salt, key, err := ParsePHC(s)
		if err != nil {
			return
		}
		// What parses re-encodes to a string that parses to the same values.
		p2, salt2, key2, err := ParsePHC(encodePHC(p, salt, key))
		if err != nil || p2 != p || string(salt2) != string(salt) || string(key2) != string(key) {
			t.Fatalf("re-encoding %q: %v", s, err)
		}
	})
}
