package shard

import (
	"container/list"
	"hash/maphash"
	"slices"
	"sync"

	"securefastchat/ratelimit"
)

const dirStripes = 64

// directory maps a canonical user name to the connections that receive
// for the user, one per device, and keeps the user's other sessions (those
// that take no deliveries) so an admin can end them too. Readers look
// receivers up without allocating; writes happen at login and logout only.
// A user's receivers are an immutable slice, replaced whole on a change,
// so a reader may keep one it got.
type directory struct {
	seed maphash.Seed
	s    [dirStripes]struct {
		mu   sync.RWMutex
		m    map[string][]*conn // receiving connections, one per device
		side map[string][]*conn // sessions that take no deliveries
	}
}

func (d *directory) init() {
	d.seed = maphash.MakeSeed()
	for i := range d.s {
		d.s[i].m = make(map[string][]*conn)
		d.s[i].side = make(map[string][]*conn)
	}
}

// addSide records a session of name's that takes no deliveries.
func (d *directory) addSide(name string, c *conn) {
	st := &d.s[d.stripe([]byte(name))]
	st.mu.Lock()
	st.side[name] = append(st.side[name], c)
	st.mu.Unlock()
}

// removeSide forgets a session added with addSide.
func (d *directory) removeSide(name string, c *conn) {
	st := &d.s[d.stripe([]byte(name))]
	st.mu.Lock()
	l := slices.DeleteFunc(st.side[name], func(x *conn) bool { return x == c })
	if len(l) == 0 {
		delete(st.side, name)
	} else {
		st.side[name] = l
	}
	st.mu.Unlock()
}

// sessions returns every connection of name: those that receive, and the
// others.
func (d *directory) sessions(name string) []*conn {
	st := &d.s[d.stripe([]byte(name))]
	st.mu.RLock()
	defer st.mu.RUnlock()
	return append(slices.Clone(st.side[name]), st.m[name]...)
}

func (d *directory) stripe(name []byte) int { return int(maphash.Bytes(d.seed, name) % dirStripes) }

// receivers returns the connections receiving for a canonical name, one
// per device online (nil if none). The slice must not be changed.
func (d *directory) receivers(name []byte) []*conn {
	st := &d.s[d.stripe(name)]
	st.mu.RLock()
	l := st.m[string(name)]
	st.mu.RUnlock()
	return l
}

// lookup returns the connection receiving for one device of a canonical
// name, or nil.
func (d *directory) lookup(name []byte, dev uint64) *conn {
	for _, c := range d.receivers(name) {
		if c.dev == dev {
			return c
		}
	}
	return nil
}

// online reports whether any device of a canonical name is receiving.
func (d *directory) online(name []byte) bool { return len(d.receivers(name)) > 0 }

// register makes c the connection of its user's device. It returns the
// one it replaces (the same device's), and whether c is the user's first
// device online.
func (d *directory) register(c *conn) (old *conn, first bool) {
	st := &d.s[d.stripe([]byte(c.user))]
	st.mu.Lock()
	defer st.mu.Unlock()
	l := st.m[c.user]
	next := make([]*conn, 0, len(l)+1)
	for _, x := range l {
		if x.dev == c.dev {
			old = x
		} else {
			next = append(next, x)
		}
	}
	st.m[c.user] = append(next, c)
	return old, len(l) == 0
}

// unregister removes c, if it is still its device's connection. It says
// whether it was, and whether no device of the user is online now.
func (d *directory) unregister(c *conn) (was, last bool) {
	st := &d.s[d.stripe([]byte(c.user))]
	st.mu.Lock()
	defer st.mu.Unlock()
	l := st.m[c.user]
	if !slices.Contains(l, c) {
		return false, false
	}
	next := slices.DeleteFunc(slices.Clone(l), func(x *conn) bool { return x == c })
	if len(next) == 0 {
		delete(st.m, c.user)
		return true, true
	}
	st.m[c.user] = next
	return true, false
}

// each calls fn for every receiving connection. fn runs with no lock
// held, on a snapshot taken one stripe at a time.
func (d *directory) each(fn func(c *conn)) {
	var snap []*conn
	for i := range d.s {
		st := &d.s[i]
		st.mu.RLock()
		snap = snap[:0]
		for _, l := range st.m {
			snap = append(snap, l...)
		}
		st.mu.RUnlock()
		for _, c := range snap {
			fn(c)
		}
	}
}

// len returns the number of users with a device receiving.
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
// caps on connections that have not logged in, per address and in all. All
// checks are cheap and run before any key agreement. At the per-address cap
// a new connection is refused; at the global cap the oldest connection that
// has not logged in is closed to make room, so idle connections from many
// addresses cannot lock out a client that completes its login in
// milliseconds.
type gate struct {
	max, maxPerIP int
	rate          *ratelimit.Limiter

	mu    sync.Mutex
	order list.List // of *conn, oldest first
	perIP map[string]int
}

func (g *gate) init(max, maxPerIP int, rate *ratelimit.Limiter) {
	g.max, g.maxPerIP, g.rate = max, maxPerIP, rate
	g.perIP = make(map[string]int)
}

// admit records c as not logged in. It returns false if c must be refused,
// and the connection evicted to make room, if any.
func (g *gate) admit(c *conn) (ok bool, evicted *conn) {
	if !g.rate.Allow(c.ip) {
		return false, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.perIP[c.ip] >= g.maxPerIP {
		return false, nil
	}
	if g.order.Len() >= g.max {
		evicted = g.removeLocked(g.order.Front())
	}
	c.gateElem = g.order.PushBack(c)
	g.perIP[c.ip]++
	return true, evicted
}

// release removes c (at login or close); releasing twice is harmless.
func (g *gate) release(c *conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c.gateElem != nil {
		g.removeLocked(c.gateElem)
	}
}

func (g *gate) removeLocked(e *list.Element) *conn {
	c := g.order.Remove(e).(*conn)
	c.gateElem = nil
	if g.perIP[c.ip] <= 1 {
		delete(g.perIP, c.ip)
	} else {
		g.perIP[c.ip]--
	}
	return c
}

func (g *gate) unauthenticated() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.order.Len()
}
