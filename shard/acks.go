package shard

import "sync/atomic"

// maxBogusAcks is how many acknowledgements of deliveries that are not
// pending a connection may send before it is closed: a client acks each
// delivery once, so a few strays (a race with a disconnect) are all an
// honest one sends.
const maxBogusAcks = 256

// ackGate lets through to the shard loop only as many acknowledgements
// as the connection has deliveries waiting for one, so a client that
// floods acks costs its reader, not the loop that bystanders share.
//
// The loop counts a delivery when it makes one pending (expect); the
// reader takes one count per id it passes on (admit), so at most that many
// ack tasks are ever queued for the loop; an id that matched nothing gives
// its count back (unmatched). Safe for concurrent use: atomics only.
type ackGate struct {
	waiting atomic.Int64 // deliveries pending an ack, less the acks on their way to the loop
	bogus   atomic.Int64 // acks of nothing pending
}

// expect counts a delivery about to be written and made pending (the
// shard loop, before the write: the ack may come back at once).
func (g *ackGate) expect() { g.waiting.Add(1) }

// unexpect takes back expect for a delivery that could not be written.
func (g *ackGate) unexpect() { g.waiting.Add(-1) }

// unmatched gives back the count of an ack that matched no pending
// delivery, and counts it as bogus (the shard loop).
func (g *ackGate) unmatched() {
	g.waiting.Add(1)
	g.bogus.Add(1)
}

// admit reports whether an ack may go to the loop (the reader). It fails
// when nothing is pending for it; tooMany says the connection has sent too
// many of those and must be closed.
func (g *ackGate) admit() (ok, tooMany bool) {
	if g.waiting.Add(-1) >= 0 {
		return true, false
	}
	g.waiting.Add(1)
	return false, g.bogus.Add(1) > maxBogusAcks
}
