package balancer

import "math/rand/v2"

// random picks a shard uniformly at random.
type random struct{ r *rand.Rand }

func newRandom() *random { return &random{r: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))} }

func (*random) Name() string { return "random" }

func (s *random) Pick(n int, _ func(int) int64) int { return s.r.IntN(n) }
