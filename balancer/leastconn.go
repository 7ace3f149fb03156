package balancer

// leastConn picks the shard with the fewest connections (the lowest index
// on a tie). It reads every shard's count per pick.
type leastConn struct{}

func (leastConn) Name() string { return "least-conn" }

func (leastConn) Pick(n int, load func(int) int64) int {
	best, bestLoad := 0, load(0)
	for i := 1; i < n; i++ {
		if l := load(i); l < bestLoad {
			best, bestLoad = i, l
		}
	}
	return best
}
