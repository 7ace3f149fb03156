package store

import "sync"

// groupCache keeps the groups' states as last read, so a group message
// (which needs its group's roster and epoch) reads no bbolt page. Every
// write of a group's state or invitations drops its entry after the
// commit; a read that raced a write keeps nothing (gen).
type groupCache struct {
	mu  sync.Mutex
	m   map[string]*GroupState
	gen uint64 // bumped by every drop
}

// maxCachedGroups bounds the cache; past it, it starts over.
const maxCachedGroups = 10_000

func (c *groupCache) get(name string) (*GroupState, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[name], c.gen
}

// put keeps g unless a drop happened since gen was read.
func (c *groupCache) put(g *GroupState, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if c.m == nil || len(c.m) >= maxCachedGroups {
		c.m = map[string]*GroupState{}
	}
	c.m[g.Name] = g
}

func (c *groupCache) drop(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.m, name)
}
