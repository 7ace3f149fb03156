package balancer

// roundRobin picks shards in turn.
type roundRobin struct{ next int }

func (*roundRobin) Name() string { return "round-robin" }

func (s *roundRobin) Pick(n int, _ func(int) int64) int {
	i := s.next % n
	s.next = i + 1
	return i
}
