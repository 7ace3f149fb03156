// Package balancer runs the front listener: it accepts connections and hands
// each one to a shard over the shard's channel, choosing the shard with a
// Strategy. It knows nothing of the protocol.
package balancer

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Shards are what a balancer spreads connections over (shard.Set is one):
// how many there are, how loaded each is, and a handoff to one of them,
// which owns the connection from then on.
type Shards interface {
	Len() int
	Load(i int) int64
	Handoff(i int, nc net.Conn) error
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("balancer: server closed")

// Balancer accepts connections and spreads them over a shard set.
type Balancer struct {
	// Static after construction.
	set   Shards
	strat Strategy
	log   *slog.Logger

	mu     sync.Mutex
	ln     net.Listener
	closed bool
	picks  []int64 // connections handed to each shard
}

// New returns a balancer over set. A nil logger means slog.Default().
func New(set Shards, strat Strategy, log *slog.Logger) *Balancer {
	if log == nil {
		log = slog.Default()
	}
	return &Balancer{set: set, strat: strat, log: log, picks: make([]int64, set.Len())}
}

// Strategy returns the strategy in use.
func (b *Balancer) Strategy() Strategy { return b.strat }

// Serve accepts on ln until Close, backing off on temporary errors (such
// as running out of file descriptors). It returns ErrServerClosed after
// Close, or the listener's error.
func (b *Balancer) Serve(ln net.Listener) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrServerClosed
	}
	b.ln = ln
	b.mu.Unlock()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			b.mu.Lock()
			closed := b.closed
			b.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				b.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("balancer: accept: %w", err)
		}
		backoff = 0
		i := b.strat.Pick(b.set.Len(), b.load)
		b.mu.Lock()
		b.picks[i]++
		b.mu.Unlock()
		if err := b.set.Handoff(i, nc); err != nil {
			return ErrServerClosed
		}
	}
}

func (b *Balancer) load(i int) int64 { return b.set.Load(i) }

// Picks returns how many connections went to each shard.
func (b *Balancer) Picks() []int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int64(nil), b.picks...)
}

// Close stops accepting. Connections already handed over are the shard
// set's to close. Close is idempotent.
func (b *Balancer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	if b.ln != nil {
		return b.ln.Close()
	}
	return nil
}

// isTemporary reports accept errors worth retrying (EMFILE, ENFILE,
// ECONNABORTED and the like).
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}
