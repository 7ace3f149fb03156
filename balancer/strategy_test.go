package balancer

import "testing"

func TestStrategies(t *testing.T) {
	loads := []int64{5, 2, 9, 2}
	load := func(i int) int64 { return loads[i] }
	cases := []struct {
		name  string
		picks int
		check func(t *testing.T, got []int)
	}{
		{"round-robin", 8, func(t *testing.T, got []int) {
			for i, g := range got {
				if g != i%4 {
					t.Fatalf("pick %d = %d", i, g)
				}
			}
		}},
		{"least-conn", 3, func(t *testing.T, got []int) {
			for _, g := range got {
				if g != 1 {
					t.Fatalf("picked %d, want the least loaded (1)", g)
				}
			}
		}},
		{"random", 2000, func(t *testing.T, got []int) {
			seen := map[int]int{}
			for _, g := range got {
				seen[g]++
			}
			for i := 0; i < 4; i++ {
				if seen[i] < 300 {
					t.Fatalf("shard %d picked %d of 2000 times", i, seen[i])
				}
			}
		}},
		{"p2c", 2000, func(t *testing.T, got []int) {
			seen := map[int]int{}
			for _, g := range got {
				seen[g]++
			}
			// Shard 2 (load 9) loses every comparison.
			if seen[2] != 0 {
				t.Fatalf("p2c picked the most loaded shard %d times", seen[2])
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := ParseStrategy(c.name)
			if err != nil || s.Name() != c.name {
				t.Fatalf("%v %v", s, err)
			}
			var got []int
			for i := 0; i < c.picks; i++ {
				p := s.Pick(len(loads), load)
				if p < 0 || p >= len(loads) {
					t.Fatalf("pick %d out of range", p)
				}
				got = append(got, p)
			}
			c.check(t, got)
		})
	}
	if _, err := ParseStrategy("fastest"); err == nil {
		t.Fatal("unknown strategy accepted")
	}
	for _, n := range Names() {
		s, _ := ParseStrategy(n)
		if s.Pick(1, load) != 0 {
			t.Fatalf("%s with one shard", n)
		}
	}
}
