package client

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"securefastchat/proto"
)

// Bounds on files being received (partial transfers), so a sender cannot
// fill the receiver's disk with transfers it never finishes. A file past
// a bound is refused (and reported); a transfer that has not moved for
// StalledAfter is deleted.
const (
	MaxPartialsPerSender     = 4
	MaxPartialBytesPerSender = 256 << 20
	MaxPartials              = 32
	MaxPartialBytes          = 2 << 30
	// StalledAfter is how long a partial transfer may sit unchanged.
	StalledAfter = 24 * time.Hour
)

// partial is what the receiver knows of one unfinished transfer.
type partial struct {
	from    string
	size    uint64
	touched time.Time
}

// partials indexes the unfinished transfers in the downloads folder.
// Owned by the receiver (under its mu).
type partials struct {
	dl  Downloads
	key *[32]byte // seals the states
	m   map[[proto.MsgIDLen]byte]*partial
}

// stateMagic: a partial transfer's state file is sealed (atrest.go); from
// before, the same content in plain text.
const stateMagic = "SFCPRT1"

// loadPartials reads what earlier runs left in dir, deleting transfers
// that stalled and files that belong to none. A state this user's key
// does not open (another user's, in a shared folder) is left alone.
func loadPartials(dl Downloads, now time.Time, key *[32]byte) *partials {
	p := &partials{dl: dl, key: key, m: map[[proto.MsgIDLen]byte]*partial{}}
	states := map[[proto.MsgIDLen]byte]bool{}
	entries, err := dl.List()
	if err != nil {
		return p
	}
	for _, e := range entries {
		name := e.Name
		if !strings.HasPrefix(name, ".incoming-") {
			continue
		}
		hexID, ext, _ := strings.Cut(strings.TrimPrefix(name, ".incoming-"), ".")
		raw, err := hex.DecodeString(hexID)
		if err != nil || len(raw) != proto.MsgIDLen || now.Sub(e.Modified) > StalledAfter {
			dl.Remove(name)
			continue
		}
		var id [proto.MsgIDLen]byte
		copy(id[:], raw)
		if ext != "state" {
			continue
		}
		states[id] = true
		content, err := readState(dl, key, name) // one from before sealing is sealed at its next write (or gone when it stalls): it may be another user's
		if err != nil {
			continue // another user's, or not readable now
		}
		from, size, ok := stateHead(content)
		if !ok {
			dl.Remove(name)
			dl.Remove(incomingName(id, "part"))
			delete(states, id)
			continue
		}
		p.m[id] = &partial{from: from, size: size, touched: e.Modified}
	}
	// A part file with no state (removed above, or never written: none of
	// its chunks was acknowledged) cannot be resumed.
	for _, e := range entries {
		hexID, ok := strings.CutSuffix(strings.TrimPrefix(e.Name, ".incoming-"), ".part")
		if !ok || !strings.HasPrefix(e.Name, ".incoming-") {
			continue
		}
		var id [proto.MsgIDLen]byte
		if raw, err := hex.DecodeString(hexID); err == nil && len(raw) == proto.MsgIDLen {
			copy(id[:], raw)
			if states[id] {
				continue
			}
		}
		dl.Remove(e.Name)
	}
	return p
}

// readState reads a state, sealed or from before sealing.
func readState(dl Downloads, key *[32]byte, name string) ([]byte, error) {
	content, _, err := readSealed(dl, key, stateMagic, name)
	return content, err
}

// stateHead reads the sender and size from a state.
func stateHead(content []byte) (from string, size uint64, ok bool) {
	lines := strings.SplitN(string(content), "\n", 4)
	if len(lines) < 4 {
		return "", 0, false
	}
	size, err := strconv.ParseUint(lines[2], 10, 64)
	return lines[0], size, err == nil && proto.ValidUsername([]byte(lines[0]))
}

// admit records a new transfer from from, or refuses it past a bound
// (expire the stalled ones first).
func (p *partials) admit(id [proto.MsgIDLen]byte, from string, size uint64, now time.Time) error {
	if q := p.m[id]; q != nil {
		q.touched = now
		return nil
	}
	var n, bytes, nFrom, bytesFrom uint64
	for _, q := range p.m {
		n++
		bytes += q.size
		if q.from == from {
			nFrom++
			bytesFrom += q.size
		}
	}
	switch {
	case nFrom >= MaxPartialsPerSender || bytesFrom+size > MaxPartialBytesPerSender:
		return fmt.Errorf("%w: %s already has %d unfinished files (%d MiB) coming; at most %d and %d MiB from one sender",
			ErrTooManyPartials, from, nFrom, bytesFrom>>20, MaxPartialsPerSender, MaxPartialBytesPerSender>>20)
	case n >= MaxPartials || bytes+size > MaxPartialBytes:
		return fmt.Errorf("%w: %d unfinished files (%d MiB) are coming in; at most %d and %d MiB in all",
			ErrTooManyPartials, n, bytes>>20, MaxPartials, MaxPartialBytes>>20)
	}
	p.m[id] = &partial{from: from, size: size, touched: now}
	return nil
}

// touch marks a transfer as moving.
func (p *partials) touch(id [proto.MsgIDLen]byte, now time.Time) {
	if q := p.m[id]; q != nil {
		q.touched = now
	}
}

// done forgets a finished (or dropped) transfer.
func (p *partials) done(id [proto.MsgIDLen]byte) { delete(p.m, id) }

// expire deletes the transfers that have not moved for StalledAfter.
func (p *partials) expire(now time.Time) [][proto.MsgIDLen]byte {
	var gone [][proto.MsgIDLen]byte
	for id, q := range p.m {
		if now.Sub(q.touched) > StalledAfter {
			p.dl.Remove(incomingName(id, "part"))
			p.dl.Remove(incomingName(id, "state"))
			delete(p.m, id)
			gone = append(gone, id)
		}
	}
	return gone
}
