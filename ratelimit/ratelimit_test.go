package ratelimit

import (
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestLimiter(t *testing.T) {
	c := &clock{t: time.Unix(0, 0)}
	l := New(3, time.Second, c.now)
	for i := 0; i < 3; i++ {
		if !l.Allow("a") {
			t.Fatalf("burst token %d refused", i)
		}
	}
	if l.Allow("a") {
		t.Fatal("fourth allowed")
	}
	if !l.Allow("b") {
		t.Fatal("keys are not independent")
	}
	c.t = c.t.Add(time.Second)
	if !l.Allow("a") || l.Allow("a") {
		t.Fatal("refill is not one per second")
	}
	if !New(1, 0, nil).Unlimited() {
		t.Fatal("zero period must mean unlimited")
	}
}

func TestThrottle(t *testing.T) {
	c := &clock{t: time.Unix(0, 0)}
	th := NewThrottle(3, time.Minute, 10*time.Minute, c.now)
	for i := 0; i < 3; i++ {
		if th.Throttled("u") {
			t.Fatalf("throttled after %d failures", i)
		}
		th.Fail("u")
	}
	if !th.Throttled("u") {
		t.Fatal("not throttled after 3 failures")
	}
	th.Succeed("u") // does not lift a throttle
	c.t = c.t.Add(9 * time.Minute)
	if !th.Throttled("u") {
		t.Fatal("throttle lifted early")
	}
	c.t = c.t.Add(2 * time.Minute)
	if th.Throttled("u") {
		t.Fatal("throttle outlived its period")
	}
	// Failures outside the window do not add up.
	th.Fail("v")
	th.Fail("v")
	c.t = c.t.Add(2 * time.Minute)
	th.Fail("v")
	if th.Throttled("v") {
		t.Fatal("failures from an old window counted")
	}
}
