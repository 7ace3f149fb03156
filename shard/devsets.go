package shard

import (
	"hash/maphash"
	"sync"
)

// devsets caches each account's device set (Accounts.Devices): the
// devices a message to the account goes to. A message path that finds it
// here reads nothing from the store. An entry is dropped when the
// account's device list changes (an append through this Set), the account
// is ended (Kick) or signed up (a name made again); the next message
// loads it again. Only
// accounts that exist are kept, so the cache is bounded by the accounts.
type devsets struct {
	seed maphash.Seed
	s    [64]struct {
		mu  sync.RWMutex
		gen uint64 // counts drops: a load that began before one is not kept
		m   map[string]*DeviceSet
	}
}

func (d *devsets) init() {
	d.seed = maphash.MakeSeed()
	for i := range d.s {
		d.s[i].m = make(map[string]*DeviceSet)
	}
}

// get returns the device set of a canonical name (nil: no such account),
// loading it from the accounts if it is not cached. The set must not be
// changed.
func (d *devsets) get(canon []byte, acc Accounts) (*DeviceSet, error) {
	st := &d.s[maphash.Bytes(d.seed, canon)%uint64(len(d.s))]
	st.mu.RLock()
	ds, gen := st.m[string(canon)], st.gen
	st.mu.RUnlock()
	if ds != nil {
		return ds, nil
	}
	name := string(canon)
	ds, err := acc.Devices(name)
	if err != nil || ds == nil {
		return ds, err
	}
	st.mu.Lock()
	if st.gen == gen {
		st.m[name] = ds
	}
	st.mu.Unlock()
	return ds, nil
}

// drop forgets user's device set.
func (d *devsets) drop(user string) {
	st := &d.s[maphash.String(d.seed, user)%uint64(len(d.s))]
	st.mu.Lock()
	st.gen++
	delete(st.m, user)
	st.mu.Unlock()
}

// devices returns where a message to a canonical name goes (nil: no such
// account).
func (s *Set) devices(canon []byte) (*DeviceSet, error) {
	return s.devsets.get(canon, s.opts.Accounts)
}
