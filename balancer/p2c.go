package balancer

import "math/rand/v2"

// p2c is power-of-two-choices: sample two distinct shards at random and
// take the less loaded. It reads two counters per pick instead of N, and
// avoids the herding of least-conn when counts lag behind reality.
type p2c struct{ r *rand.Rand }

func newP2C() *p2c { return &p2c{r: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))} }

func (*p2c) Name() string { return "p2c" }

func (s *p2c) Pick(n int, load func(int) int64) int {
	if n == 1 {
		return 0
	}
	a := s.r.IntN(n)
	b := s.r.IntN(n - 1)
	if b >= a {
		b++
	}
	if load(b) < load(a) {
		return b
	}
	return a
}
