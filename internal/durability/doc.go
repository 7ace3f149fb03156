// Package durability holds the server's durability and crash tests (it
// has no other code): the real binary is killed with SIGKILL or SIGTERM
// under load, runs out of disk, is killed during the sweep, and meets a
// corrupt store; every test checks that nothing acknowledged is lost.
// `go test -run TestCrashLosesNothing -crash.rounds=50 -v
// ./internal/durability` runs the long form.
package durability
