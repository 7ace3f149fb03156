package main

import (
	"testing"

	"securefastchat/internal/testbin"
)

// child is the server binary running as a child process (testbin.Child).
type child = testbin.Child

// newChild prepares a server child on a free loopback port and a fresh
// data directory; the test kills it at the end.
func newChild(t *testing.T) *child { return testbin.NewChild(t, binPath) }
