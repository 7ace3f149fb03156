package shard

import (
	"hash/maphash"
	"slices"
	"sync"
	"time"
)

// devsets caches each account's device set (Accounts.Devices): the
// devices a message to the account goes to. A message path that finds it
// here reads nothing from the store. An entry is dropped when the
// account's device list changes (an append through this Set), the account
// is ended (Kick) or signed up (a name made again), or a device not in it
// logs in (one silent for a month, back); it is loaded again after
// devsetTTL anyway (a device goes silent with time). Only
// accounts that exist are kept, so the cache is bounded by the accounts.
type devsets struct {
	seed maphash.Seed
	s    [64]struct {
		mu  sync.RWMutex
		gen uint64 // counts drops: a load that began before one is not kept
		m   map[string]cachedSet
	}
}

type cachedSet struct {
	ds     *DeviceSet
	loaded int64 // unix ms
}

// devsetTTL is how long a device set is used before it is loaded again.
const devsetTTL = time.Hour

func (d *devsets) init() {
	d.seed = maphash.MakeSeed()
	for i := range d.s {
		d.s[i].m = make(map[string]cachedSet)
	}
}

// get returns the device set of a canonical name (nil: no such account),
// loading it from the accounts if it is not cached. The set must not be
// changed.
func (d *devsets) get(canon []byte, acc Accounts, nowMs int64) (*DeviceSet, error) {
	st := &d.s[maphash.Bytes(d.seed, canon)%uint64(len(d.s))]
	st.mu.RLock()
	e, gen := st.m[string(canon)], st.gen
	st.mu.RUnlock()
	if e.ds != nil && nowMs-e.loaded < devsetTTL.Milliseconds() {
		return e.ds, nil
	}
	name := string(canon)
	ds, err := acc.Devices(name)
	if err != nil || ds == nil {
		return ds, err
	}
	st.mu.Lock()
	if st.gen == gen {
		st.m[name] = cachedSet{ds: ds, loaded: nowMs}
	}
	st.mu.Unlock()
	return ds, nil
}

// loggedIn drops user's device set if dev is not in it: a device that was
// silent is sent to again from its login on.
func (d *devsets) loggedIn(user string, dev uint64) {
	st := &d.s[maphash.String(d.seed, user)%uint64(len(d.s))]
	st.mu.RLock()
	e := st.m[user]
	st.mu.RUnlock()
	if e.ds != nil && !slices.Contains(e.ds.IDs, dev) {
		d.drop(user)
	}
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
// account), at nowMs (unix ms).
func (s *Set) devices(canon []byte, nowMs int64) (*DeviceSet, error) {
	return s.devsets.get(canon, s.opts.Accounts, nowMs)
}
