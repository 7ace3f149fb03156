package shard

import (
	"hash/maphash"
	"sync"

	"securefastchat/internal/ratelimit"
)

const dirStripes = 64

// directory maps a canonical user name to the connection the user is
// logged in on. Readers look receivers up without allocating; writes happen
// at login and logout only.
type directory struct {
	seed maphash.Seed
	s    [dirStripes]struct {
		mu sync.RWMutex
		m  map[string]*conn
	}
}

func (d *directory) init() {
	d.seed = maphash.MakeSeed()
	for i := range d.s {
		d.s[i].m = make(map[string]*conn)
	}
}

func (d *directory) stripe(name []byte) int { return int(maphash.Bytes(d.seed, name) % dirStripes) }

// lookup returns the connection of a canonical name, or nil.
func (d *directory) lookup(name []byte) *conn {
	st := &d.s[d.stripe(name)]
	st.mu.RLock()
	c := st.m[string(name)]
	st.mu.RUnlock()
	return c
}

// register makes c the user's connection and returns the one it replaces.
func (d *directory) register(name string, c *conn) *conn {
	st := &d.s[d.stripe([]byte(name))]
	st.mu.Lock()
	old := st.m[name]
	st.m[name] = c
	st.mu.Unlock()
	return old
}

// unregister removes c, if it is still the user's connection.
func (d *directory) unregister(name string, c *conn) {
	st := &d.s[d.stripe([]byte(name))]
	st.mu.Lock()
	if st.m[name] == c {
		delete(st.m, name)
	}
	st.mu.Unlock()
}

func (d *directory) len() int {
	n := 0
	for i := range d.s {
		d.s[i].mu.RLock()
		n += len(d.s[i].m)
		d.s[i].mu.RUnlock()
	}
	return n
}

// gate admits new connections: a per-address handshake token bucket and
// caps on connections that have not logged in, in all and per address.
// All checks are cheap and run before any key agreement.
type gate struct {
	max, maxPerIP int
	rate          *ratelimit.Limiter
	mu            sync.Mutex
	total         int
	perIP         map[string]int
}

func (g *gate) init(max, maxPerIP int, rate *ratelimit.Limiter) {
	g.max, g.maxPerIP, g.rate = max, maxPerIP, rate
	g.perIP = make(map[string]int)
}

func (g *gate) admit(ip string) bool {
	if !g.rate.Allow(ip) {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.total >= g.max || g.perIP[ip] >= g.maxPerIP {
		return false
	}
	g.total++
	g.perIP[ip]++
	return true
}

func (g *gate) release(ip string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total--
	if g.perIP[ip] <= 1 {
		delete(g.perIP, ip)
	} else {
		g.perIP[ip]--
	}
}

func (g *gate) unauthenticated() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total
}
