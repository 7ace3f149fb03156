package shard

import (
	"log/slog"
	"sync"
	"time"

	"securefastchat/proto"
)

// CloseReason is why a connection was closed: the first ones are the
// wire's (a Close frame carries them), the rest close without one. Each is
// counted (Stats.Closes) once per connection: the first reason wins.
type CloseReason uint8

const (
	CloseNormal                   = CloseReason(proto.CloseNormal)
	CloseReplaced                 = CloseReason(proto.CloseReplaced)
	CloseShutdown                 = CloseReason(proto.CloseShutdown)
	CloseSlowConsumer             = CloseReason(proto.CloseSlowConsume) // its output passed the cap
	CloseRekey                    = CloseReason(proto.CloseRekey)
	CloseProtocol                 = CloseReason(proto.CloseProtocol)
	CloseRevoked                  = CloseReason(proto.CloseRevoked)
	CloseUpgrade                  = CloseReason(proto.CloseUpgrade)    // its queue holds what its version cannot open
	CloseLoginAgain               = CloseReason(proto.CloseLoginAgain) // the account's password changed
	CloseWriteTimeout CloseReason = iota                               // a write did not finish in time
	CloseStuck                                                         // deliveries unacknowledged past the ack timeout
	CloseEvicted                                                       // not logged in, closed to make room
	ClosePeer                                                          // the peer closed, or reading failed
	CloseWriteFailed                                                   // writing failed (the peer is gone)
	CloseSealFailed                                                    // a frame could not be sealed
	CloseServerStop                                                    // the server stopped without waiting
	numCloseReasons
)

var closeNames = [numCloseReasons]string{"normal", "replaced", "shutdown", "slow_consumer", "rekey", "protocol", "revoked",
	"upgrade", "login_again", "write_timeout", "stuck", "evicted", "peer", "write_failed", "seal_failed", "server_stop"}

func (r CloseReason) String() string {
	if r < numCloseReasons {
		return closeNames[r]
	}
	return "unknown"
}

// CloseReasons lists every close reason (for metrics).
func CloseReasons() []CloseReason {
	out := make([]CloseReason, numCloseReasons)
	for i := range out {
		out[i] = CloseReason(i)
	}
	return out
}

// DropReason is why a message or live signal went to nobody. Each drop
// is counted (Stats.Drops).
type DropReason uint8

const (
	DropLiveBehind  DropReason = iota // presence, typing or a broadcast for a receiver far behind
	DropBlocked                       // the receiver blocks the sender
	DropExpired                       // queued past the retention
	DropInvited                       // a group message for a member only invited
	DropNotAccepted                   // typing between people who have not both accepted
	DropNoAccount                     // a group message for a member whose account is gone
	numDropReasons
)

var dropNames = [numDropReasons]string{"live_behind", "blocked", "expired", "invited", "not_accepted", "no_account"}

func (r DropReason) String() string {
	if r < numDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// DropReasons lists every drop reason (for metrics).
func DropReasons() []DropReason {
	out := make([]DropReason, numDropReasons)
	for i := range out {
		out[i] = DropReason(i)
	}
	return out
}

// dropped counts a drop (and the older counter it also feeds).
func (s *Stats) dropped(r DropReason) {
	s.Drops[r].Add(1)
	switch r {
	case DropLiveBehind:
		s.LiveDropped.Add(1)
	case DropBlocked:
		s.BlockedDropped.Add(1)
	case DropExpired:
		s.ExpiredAtFetch.Add(1)
	}
}

// rateLog logs lines of hot paths (closes under a flood, say): at most
// rateLogBurst per reason per second; the rest are counted and their
// number logged with the next line let through.
type rateLog struct {
	now        func() time.Time // nil: time.Now
	mu         sync.Mutex
	window     [numCloseReasons]time.Time
	n          [numCloseReasons]int
	suppressed [numCloseReasons]int
}

const rateLogBurst = 10

func (l *rateLog) log(log *slog.Logger, r CloseReason, msg string, args ...any) {
	now := time.Now()
	if l.now != nil {
		now = l.now()
	}
	l.mu.Lock()
	if now.Sub(l.window[r]) >= time.Second {
		l.window[r], l.n[r] = now, 0
	}
	l.n[r]++
	if l.n[r] > rateLogBurst {
		l.suppressed[r]++
		l.mu.Unlock()
		return
	}
	if s := l.suppressed[r]; s > 0 {
		args = append(args, "suppressed", s)
		l.suppressed[r] = 0
	}
	l.mu.Unlock()
	log.Info(msg, append(args, "reason", r.String())...)
}
