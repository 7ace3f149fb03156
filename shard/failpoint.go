//go:build !failpoints

package shard

// failpoint is a hook for fault-injection tests, built with
// -tags failpoints; in a normal build it does nothing and costs nothing.
func failpoint(where, user string) {}
