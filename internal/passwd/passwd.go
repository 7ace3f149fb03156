// Package passwd hashes and verifies passwords with argon2id, stored as PHC
// strings ($argon2id$v=19$m=..,t=..,p=..$salt$hash) so the parameters can
// be raised later. A semaphore bounds how many hashes run at once, so a
// login storm cannot exhaust memory.
package passwd

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"golang.org/x/crypto/argon2"
)

// Params are argon2id parameters.
type Params struct {
	Time      uint32 // iterations
	MemoryKiB uint32
	Threads   uint8
}

// Default is RFC 9106's second recommended profile: t=3, m=64 MiB, p=4.
var Default = Params{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

// Floor is the weakest setting allowed outside tests (OWASP: m=19 MiB,
// t=2, p=1).
var Floor = Params{Time: 2, MemoryKiB: 19 * 1024, Threads: 1}

// Weak is a cheap setting for tests and benchmarks only.
var Weak = Params{Time: 1, MemoryKiB: 64, Threads: 1}

const (
	saltLen = 16
	keyLen  = 32
	// DefaultConcurrency is how many hashes may run at once by default
	// (4 x 64 MiB = 256 MiB at worst).
	DefaultConcurrency = 4
)

// Errors.
var (
	// ErrBelowFloor: parameters weaker than Floor without AllowWeak.
	ErrBelowFloor = errors.New("passwd: argon2 parameters below the allowed floor")
	// ErrBadPHC: a stored hash that does not parse.
	ErrBadPHC = errors.New("passwd: malformed PHC string")
)

// String renders the parameters as in a PHC string.
func (p Params) String() string {
	return fmt.Sprintf("m=%d,t=%d,p=%d", p.MemoryKiB, p.Time, p.Threads)
}

// ParseParams reads "t=3,m=65536,p=4" in any order.
func ParseParams(s string) (Params, error) {
	var p Params
	for _, f := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		var n uint64
		if _, err := fmt.Sscanf(v, "%d", &n); !ok || err != nil || n == 0 || n > 1<<32-1 {
			return p, fmt.Errorf("passwd: bad parameter %q (want t=N,m=KiB,p=N)", f)
		}
		switch k {
		case "t":
			p.Time = uint32(n)
		case "m":
			p.MemoryKiB = uint32(n)
		case "p":
			if n > 255 {
				return p, fmt.Errorf("passwd: p=%d is over 255", n)
			}
			p.Threads = uint8(n)
		default:
			return p, fmt.Errorf("passwd: unknown parameter %q", k)
		}
	}
	if p.Time == 0 || p.MemoryKiB == 0 || p.Threads == 0 {
		return p, fmt.Errorf("passwd: %q must set t, m and p", s)
	}
	return p, nil
}

// AtLeast reports whether p is at least as strong as q in every parameter.
func (p Params) AtLeast(q Params) bool {
	return p.Time >= q.Time && p.MemoryKiB >= q.MemoryKiB && p.Threads >= q.Threads
}

// Hasher hashes and verifies passwords with bounded concurrency. It is safe
// for concurrent use.
type Hasher struct {
	params Params
	sem    chan struct{}
	dummy  string

	// Counters.
	active    atomic.Int64
	maxActive atomic.Int64
	hashes    atomic.Int64
}

// NewHasher returns a hasher for params that runs at most concurrency
// hashes at once (DefaultConcurrency if zero). Parameters below Floor are
// refused unless allowWeak is set.
func NewHasher(params Params, concurrency int, allowWeak bool) (*Hasher, error) {
	if !allowWeak && !params.AtLeast(Floor) {
		return nil, fmt.Errorf("%w: %s < %s", ErrBelowFloor, params, Floor)
	}
	if concurrency <= 0 {
		concurrency = DefaultConcurrency
	}
	h := &Hasher{params: params, sem: make(chan struct{}, concurrency)}
	dummy, err := h.Hash(context.Background(), []byte("dummy password for unknown users"))
	if err != nil {
		return nil, err
	}
	h.dummy = dummy
	return h, nil
}

// Params returns the parameters new hashes use.
func (h *Hasher) Params() Params { return h.params }

// MaxActive returns the most hashes that ever ran at once.
func (h *Hasher) MaxActive() int64 { return h.maxActive.Load() }

// Count returns how many hashes have run.
func (h *Hasher) Count() int64 { return h.hashes.Load() }

func (h *Hasher) run(ctx context.Context, pw, salt []byte, p Params, n uint32) ([]byte, error) {
	select {
	case h.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-h.sem }()
	a := h.active.Add(1)
	for {
		m := h.maxActive.Load()
		if a <= m || h.maxActive.CompareAndSwap(m, a) {
			break
		}
	}
	defer h.active.Add(-1)
	h.hashes.Add(1)
	return argon2.IDKey(pw, salt, p.Time, p.MemoryKiB, p.Threads, n), nil
}

// Hash returns the PHC string of password with a fresh salt.
func (h *Hasher) Hash(ctx context.Context, password []byte) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("passwd: reading randomness: %w", err)
	}
	key, err := h.run(ctx, password, salt, h.params, keyLen)
	if err != nil {
		return "", err
	}
	return encodePHC(h.params, salt, key), nil
}

// Verify checks password against a PHC string in constant time. It
// reports whether the hash should be replaced because its parameters are
// weaker than the hasher's. An empty phc verifies against a dummy hash
// (same cost) and always fails, so unknown users take as long as known ones.
func (h *Hasher) Verify(ctx context.Context, phc string, password []byte) (ok, rehash bool, err error) {
	useDummy := phc == ""
	if useDummy {
		phc = h.dummy
	}
	p, salt, want, err := ParsePHC(phc)
	if err != nil {
		return false, false, err
	}
	got, err := h.run(ctx, password, salt, p, uint32(len(want)))
	if err != nil {
		return false, false, err
	}
	ok = subtle.ConstantTimeCompare(got, want) == 1 && !useDummy
	return ok, ok && !p.AtLeast(h.params), nil
}

var b64 = base64.RawStdEncoding

func encodePHC(p Params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$%s$%s$%s", argon2.Version, p, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// ParsePHC reads an argon2id PHC string.
func ParsePHC(s string) (Params, []byte, []byte, error) {
	var p Params
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, nil, nil, fmt.Errorf("%w: want $argon2id$v=..$params$salt$hash", ErrBadPHC)
	}
	if parts[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return p, nil, nil, fmt.Errorf("%w: version %q", ErrBadPHC, parts[2])
	}
	p, err := ParseParams(parts[3])
	if err != nil {
		return p, nil, nil, fmt.Errorf("%w: %v", ErrBadPHC, err)
	}
	if p.MemoryKiB > 4<<20 || p.Time > 64 {
		return p, nil, nil, fmt.Errorf("%w: parameters %s out of range", ErrBadPHC, p)
	}
	salt, err1 := b64.DecodeString(parts[4])
	key, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(key) < 16 || len(key) > 64 {
		return p, nil, nil, fmt.Errorf("%w: salt or hash", ErrBadPHC)
	}
	return p, salt, key, nil
}
