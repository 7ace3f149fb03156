package shard

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// seqs holds each user's delivery sequence: the numbers the server gives
// the messages it delivers to that user (and the receipts it gives them
// as a sender). Each user's numbers only grow, across restarts too (every
// sequence starts past the clock and past every number ever stored), and
// the gap between two of them counts that user's own messages only, so
// they reveal nothing of anyone else's traffic. A receiver's numbers order
// its queue, so the last one it has seen can serve as its cursor into what
// is stored for it.
//
// A user's counter is made on first use and kept; connections hold a
// pointer to their user's, so the per-message path does not look it up.
type seqs struct {
	floor uint64 // where every sequence starts
	seed  maphash.Seed
	s     [64]struct {
		mu sync.Mutex
		m  map[string]*atomic.Uint64
	}
}

func (q *seqs) init(floor uint64) {
	q.floor, q.seed = floor, maphash.MakeSeed()
	for i := range q.s {
		q.s[i].m = make(map[string]*atomic.Uint64)
	}
}

// of returns user's counter; next numbers come from its Add(1).
func (q *seqs) of(user string) *atomic.Uint64 {
	st := &q.s[maphash.String(q.seed, user)%uint64(len(q.s))]
	st.mu.Lock()
	defer st.mu.Unlock()
	c := st.m[user]
	if c == nil {
		c = new(atomic.Uint64)
		c.Store(q.floor)
		st.m[user] = c
	}
	return c
}
