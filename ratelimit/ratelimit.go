// Package ratelimit provides keyed token buckets and failure throttles.
// One instance serves all shards, so a limit is global to the server and
// never multiplied by the number of shards.
package ratelimit

import (
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"securefastchat/proto"
)

const stripes = 32

// maxKeysPerStripe bounds memory: past it, full buckets (which carry no
// information) are dropped first.
const maxKeysPerStripe = 1 << 14

type bucket struct {
	tokens float64
	last   time.Time
}

// Limiter is a set of token buckets, one per key. The zero value is not
// usable; use New. It is safe for concurrent use.
type Limiter struct {
	rate  float64 // tokens per second
	burst float64
	now   func() time.Time
	seed  maphash.Seed
	s     [stripes]struct {
		mu sync.Mutex
		m  map[string]*bucket
	}
}

// New returns a limiter that allows burst events at once and refills one
// token every per. A zero per means unlimited. now may be nil (time.Now).
func New(burst int, per time.Duration, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	l := &Limiter{burst: float64(burst), now: now, seed: maphash.MakeSeed()}
	if per > 0 {
		l.rate = float64(time.Second) / float64(per)
	}
	for i := range l.s {
		l.s[i].m = make(map[string]*bucket)
	}
	return l
}

// Unlimited reports whether the limiter allows everything.
func (l *Limiter) Unlimited() bool { return l == nil || l.rate == 0 }

// Allow takes one token for key.
func (l *Limiter) Allow(key string) bool { return l.AllowN(key, 1) }

// AllowN takes n tokens for key if it has them.
func (l *Limiter) AllowN(key string, n float64) bool { return l.TakeN(key, n) == 0 }

// Take takes one token for key; see TakeN.
func (l *Limiter) Take(key string) time.Duration { return l.TakeN(key, 1) }

// TakeN takes n tokens for key if it has them and returns 0; otherwise it
// takes nothing and returns how long until it will have them (at least a
// second: a retry sooner is not worth saying).
func (l *Limiter) TakeN(key string, n float64) time.Duration {
	if l.Unlimited() {
		return 0
	}
	st := &l.s[maphash.String(l.seed, key)%stripes]
	now := l.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	b := st.m[key]
	if b == nil {
		if len(st.m) >= maxKeysPerStripe {
			l.evict(st.m, now)
		}
		b = &bucket{tokens: l.burst, last: now}
		st.m[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < n {
		need := min(n, l.burst) - b.tokens
		return max(time.Second, time.Duration(need/l.rate*float64(time.Second)).Round(time.Second))
	}
	b.tokens -= n
	return 0
}

// Refused is a refusal by a limit: what was limited and when a retry will
// succeed. It is a proto.CodeRateLimited (errors.Is), and its text is what
// the client is told.
type Refused struct {
	What    string // "too many sign-ups from this address"
	RetryIn time.Duration
}

// Refuse returns a *Refused for a wait from Take or TakeN, or nil if the
// wait is 0.
func Refuse(wait time.Duration, what string) error {
	if wait == 0 {
		return nil
	}
	return &Refused{What: what, RetryIn: wait}
}

func (e *Refused) Error() string {
	return fmt.Sprintf("%s; retry in %s", e.What, e.RetryIn.Round(time.Second))
}

// Unwrap makes errors.Is(err, proto.CodeRateLimited) true.
func (e *Refused) Unwrap() error { return proto.CodeRateLimited }

// evict drops buckets that have refilled completely.
func (l *Limiter) evict(m map[string]*bucket, now time.Time) {
	for k, b := range m {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(m, k)
		}
	}
}

// Throttle counts failures per key in a fixed window; at max failures the
// key is throttled for the lockout period, then starts afresh. It never
// locks a key out for good. Safe for concurrent use.
type Throttle struct {
	max     int
	window  time.Duration
	lockout time.Duration
	now     func() time.Time
	mu      sync.Mutex
	m       map[string]*failures
}

type failures struct {
	count int
	first time.Time
	until time.Time
}

// NewThrottle returns a throttle: max failures within window throttle a
// key for lockout. now may be nil (time.Now).
func NewThrottle(max int, window, lockout time.Duration, now func() time.Time) *Throttle {
	if now == nil {
		now = time.Now
	}
	return &Throttle{max: max, window: window, lockout: lockout, now: now, m: make(map[string]*failures)}
}

// Throttled reports whether key is throttled now.
func (t *Throttle) Throttled(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.m[key]
	return f != nil && t.now().Before(f.until)
}

// Fail records a failure for key.
func (t *Throttle) Fail(key string) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.m[key]
	if f == nil {
		if len(t.m) >= maxKeysPerStripe*stripes {
			for k, v := range t.m {
				if now.Sub(v.first) > t.window && now.After(v.until) {
					delete(t.m, k)
				}
			}
		}
		f = &failures{first: now}
		t.m[key] = f
	}
	if now.Sub(f.first) > t.window && now.After(f.until) {
		*f = failures{first: now}
	}
	f.count++
	if f.count >= t.max {
		f.until = now.Add(t.lockout)
		f.count = 0
		f.first = f.until
	}
}

// Succeed clears the failures of key (unless it is throttled).
func (t *Throttle) Succeed(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.m[key]; f != nil && !t.now().Before(f.until) {
		delete(t.m, key)
	}
}
