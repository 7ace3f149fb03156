package shard

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"securefastchat/store"
)

// seqs holds each device's delivery sequence: the numbers the server gives
// the messages it delivers to that device of a user (and the receipts it
// gives it as a sender). Each device's numbers only grow, across restarts
// too (every sequence starts past the clock and past every number ever
// stored), and the gap between two of them counts that device's own
// messages only, so they reveal nothing of anyone else's traffic. A
// device's numbers order its inbox, so the last one it has seen can serve
// as its cursor into what is stored for it.
//
// A device's counter is made on first use and kept; connections hold a
// pointer to their device's, so the per-message path does not look it up.
type seqs struct {
	floor uint64 // where every sequence starts
	seed  maphash.Seed
	s     [64]struct {
		mu sync.Mutex
		m  map[store.Inbox]*atomic.Uint64
	}
}

func (q *seqs) init(floor uint64) {
	q.floor, q.seed = floor, maphash.MakeSeed()
	for i := range q.s {
		q.s[i].m = make(map[store.Inbox]*atomic.Uint64)
	}
}

// of returns a device's counter; next numbers come from its Add(1).
func (q *seqs) of(in store.Inbox) *atomic.Uint64 {
	st := &q.s[(maphash.String(q.seed, in.User)+in.Device)%uint64(len(q.s))]
	st.mu.Lock()
	defer st.mu.Unlock()
	c := st.m[in]
	if c == nil {
		c = new(atomic.Uint64)
		c.Store(q.floor)
		st.m[in] = c
	}
	return c
}
