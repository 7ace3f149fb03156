package balancer

import (
	"fmt"
	"sort"
	"strings"
)

// Strategy picks the shard for a new connection. load(i) is shard i's
// current number of connections. Pick may be called from one goroutine
// only (the accept loop).
type Strategy interface {
	Name() string
	Pick(n int, load func(i int) int64) int
}

// DefaultStrategy is the strategy a server uses unless told otherwise:
// power of two choices. It spreads connections as evenly as round-robin
// (measured, docs/BENCHMARKS.md), but a client cannot steer it: under
// round-robin the n-th connection lands on shard n mod N, so a client that
// opens connections and keeps every N-th piles them onto one shard and
// sends a share of newcomers there; p2c picks by the shards' loads, which
// no one client decides.
const DefaultStrategy = "p2c"

var strategies = map[string]func() Strategy{
	"random":      func() Strategy { return newRandom() },
	"round-robin": func() Strategy { return &roundRobin{} },
	"least-conn":  func() Strategy { return leastConn{} },
	"p2c":         func() Strategy { return newP2C() },
}

// Names lists the strategy names.
func Names() []string {
	var n []string
	for k := range strategies {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// ParseStrategy returns the strategy with that name.
func ParseStrategy(name string) (Strategy, error) {
	f, ok := strategies[name]
	if !ok {
		return nil, fmt.Errorf("balancer: unknown strategy %q (want one of %s)", name, strings.Join(Names(), ", "))
	}
	return f(), nil
}
