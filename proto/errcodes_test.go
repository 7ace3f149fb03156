package proto

import "testing"

// The codes are part of the protocol: each has a distinct number and name.
func TestErrorCodes(t *testing.T) {
	names := map[string]bool{}
	for c := ErrorCode(1); c <= CodeLinkUnknown; c++ {
		n := c.String()
		if _, ok := codeNames[c]; !ok || names[n] {
			t.Errorf("code %d: %q missing or repeated", c, n)
		}
		names[n] = true
	}
	if CodeConnectionLimit != 24 || CodeQueueFull != 25 {
		t.Fatal("codes renumbered")
	}
}
