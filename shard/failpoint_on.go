//go:build failpoints

package shard

import "sync/atomic"

var failpointHook atomic.Pointer[func(where, user string)]

func failpoint(where, user string) {
	if f := failpointHook.Load(); f != nil {
		(*f)(where, user)
	}
}

// SetFailpoint installs a hook that runs at named points of the server
// ("handle" in a connection's reader, "route" in a shard loop) with the
// user concerned. Only in builds with -tags failpoints.
func SetFailpoint(f func(where, user string)) {
	if f == nil {
		failpointHook.Store(nil)
		return
	}
	failpointHook.Store(&f)
}
