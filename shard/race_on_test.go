//go:build race

package shard

// raceEnabled: built with the race detector, under which sync.Pool drops
// a share of what is put back on purpose, so pooled paths allocate.
const raceEnabled = true
