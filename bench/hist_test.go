package bench

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestHistQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 100000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {0.999, 99900 * time.Microsecond}} {
		got := h.quantile(c.q)
		if d := float64(got-c.want) / float64(c.want); d > 0.03 || d < -0.03 {
			t.Errorf("q%v = %v, want %v within 3%%", c.q, got, c.want)
		}
	}
	var a, b hist
	for i := 0; i < 1000; i++ {
		v := time.Duration(rand.Int64N(int64(time.Second)))
		if i%2 == 0 {
			a.add(v)
		} else {
			b.add(v)
		}
	}
	a.merge(&b)
	if a.n != 1000 {
		t.Fatalf("merged n = %d", a.n)
	}
	for i := 0; i < 62*32; i++ {
		if i >= 6*32 && bucketOf(bucketMid(i)) != i { // buckets 32 to 191 are never used
			t.Fatalf("bucket %d: middle %d falls in bucket %d", i, bucketMid(i), bucketOf(bucketMid(i)))
		}
	}
}
