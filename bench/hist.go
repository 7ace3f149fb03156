package bench

import (
	"math/bits"
	"time"
)

// hist is a latency histogram with about 3% resolution: 32 buckets per
// power of two of nanoseconds. Histograms add, so each receiver keeps its
// own and they are merged at the end.
type hist struct {
	b   [65 * 32]int64
	n   int64
	max int64
}

func bucketOf(ns int64) int {
	if ns < 32 {
		return int(max(ns, 0))
	}
	l := bits.Len64(uint64(ns))
	return l*32 + int(ns>>(l-6)&31)
}

// bucketMid is the middle of bucket i, in nanoseconds.
func bucketMid(i int) int64 {
	if i < 32 {
		return int64(i)
	}
	l, m := i/32, int64(i%32)
	lo := (32 + m) << (l - 6)
	return lo + (int64(1)<<(l-6))/2
}

func (h *hist) add(d time.Duration) {
	ns := int64(d)
	h.b[bucketOf(ns)]++
	h.n++
	h.max = max(h.max, ns)
}

func (h *hist) merge(o *hist) {
	for i, v := range o.b {
		h.b[i] += v
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile (0 < q <= 1).
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	want := int64(q*float64(h.n) + 0.5)
	want = min(max(want, 1), h.n)
	var seen int64
	for i, v := range h.b {
		seen += v
		if seen >= want {
			return time.Duration(min(bucketMid(i), h.max))
		}
	}
	return time.Duration(h.max)
}

// latency summarises h.
func (h *hist) latency() *Latency {
	if h.n == 0 {
		return nil
	}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return &Latency{Samples: h.n, P50: ms(h.quantile(0.50)), P99: ms(h.quantile(0.99)),
		P999: ms(h.quantile(0.999)), Max: ms(time.Duration(h.max))}
}
