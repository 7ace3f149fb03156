package shard

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"securefastchat/proto"
	"securefastchat/ratelimit"
	"securefastchat/store"
)

// Options configure a Set. Zero fields take the documented defaults.
type Options struct {
	// Shards is the number of shards. If zero, 1 is used.
	Shards int
	// Static is the server's long-term key pair. Required.
	Static *proto.KeyPair
	// Accounts runs signup and login. Required.
	Accounts Accounts
	// Store holds the receivers' queues. Required.
	Store *store.Store
	// Groups holds the group rules (package groups). Without it,
	// group changes are refused.
	Groups GroupRules
	// Logger receives the logs. If nil, slog.Default() is used.
	Logger *slog.Logger
	// Observer, if set, is told of each message's delivery latency and
	// each group message's fan-out (for metrics).
	Observer Observer
	// Now is the clock. If nil, time.Now is used.
	Now func() time.Time

	// What bounds time, what bounds use, and who hears what: each in its
	// own part, read through Options (o.IdleTimeout, o.MsgBurst).
	Timeouts
	Limits
	Live
}

// Timeouts are the deadlines the shards keep on connections.
type Timeouts struct {
	// HandshakeTimeout is the absolute deadline for the handshake, from
	// accept. If zero, 5 s.
	HandshakeTimeout time.Duration
	// LoginTimeout is the absolute deadline for login, from accept. If
	// zero, 10 s.
	LoginTimeout time.Duration
	// IdleTimeout closes a logged-in connection that sends nothing (clients
	// ping). If zero, 5 min.
	IdleTimeout time.Duration
	// FrameTimeout bounds how long one frame may take to arrive once it has
	// started. If zero, 30 s.
	FrameTimeout time.Duration
	// WriteTimeout is the deadline of each write. If zero, 10 s.
	WriteTimeout time.Duration
	// AckTimeout disconnects a receiver that has left a delivery unacked
	// this long (a stuck client); what it had not acknowledged is queued.
	// If zero, 10 s.
	AckTimeout time.Duration
	// GroupUploadTimeout bounds a multi-part group change from its first
	// part to its last. If zero, 30 s.
	GroupUploadTimeout time.Duration
}

// Limits bound what one connection, user or address may use.
type Limits struct {
	// QueueLimits cap each receiver's queue. Zero fields take 10,000
	// messages and 100 MiB, of which one sender may hold a quarter if the
	// receiver has written to it or shares a group with it, and a tenth
	// otherwise.
	QueueLimits store.QueueLimits
	// Retention is how long a queued message may wait; an older one is
	// never delivered, even between sweeps. If zero, 7 days.
	Retention time.Duration
	// MaxPending caps the bytes queued for one connection. If zero, 4 MiB.
	MaxPending int
	// MaxUnacked caps deliveries waiting for one receiver's ack. If zero, 128.
	MaxUnacked int

	// MaxUnauth caps connections that have not logged in, in all; past it
	// the oldest of them is closed to make room. If zero, 4096.
	MaxUnauth int
	// MaxUnauthPerIP caps them per remote address; past it new connections
	// are refused. If zero, 256.
	MaxUnauthPerIP int
	// HandshakeBurst and HandshakeEvery are the per-address handshake token
	// bucket. If zero, a burst of 100 and one more every 20 ms (50/s).
	HandshakeBurst int
	HandshakeEvery time.Duration

	// MsgBurst and MsgEvery limit messages per user (a file chunk counts
	// as one message), and every message also spends MsgBytesBurst /
	// MsgBytesPerSec. Zero means the defaults (60, one per second; 128 MiB,
	// 8 MiB/s); a negative MsgEvery turns message limits off (benchmarks
	// do, and say so).
	MsgBurst       int
	MsgEvery       time.Duration
	MsgBytesBurst  int
	MsgBytesPerSec int

	// SignalBurst and SignalEvery limit signals (typing) per user. If
	// zero, a burst of 30 and one more every 200 ms.
	SignalBurst int
	SignalEvery time.Duration
}

// Live is the policy of what is told live, beside messages: presence and
// broadcasts, and who may send the latter how often.
type Live struct {
	// Presence says who is told when a user comes online or goes. If
	// empty, PresenceContacts.
	Presence PresenceMode
	// Broadcast says who may broadcast. If empty, BroadcastAnyone.
	Broadcast BroadcastPolicy
	// Admins are the canonical names of the server's admins (who may
	// broadcast under BroadcastAdmins).
	Admins []string
	// BroadcastBurst and BroadcastEvery limit broadcasts per user. If
	// zero, a burst of 3 and one more every 20 s.
	BroadcastBurst int
	BroadcastEvery time.Duration
	// BroadcastAddrBurst and BroadcastAddrEvery limit broadcasts per
	// remote address (many accounts, one machine); BroadcastAllBurst and
	// BroadcastAllEvery limit them on the whole server. If zero, a burst
	// of 6 then one every 10 s, and a burst of 20 then one a second.
	BroadcastAddrBurst, BroadcastAllBurst int
	BroadcastAddrEvery, BroadcastAllEvery time.Duration
}

// Default shares of one receiver's queue that one sender may hold.
const (
	DefaultContactShare  = 0.25
	DefaultStrangerShare = 0.1
)

// Defaults of the Options that serve's flags set (the flags show them).
const (
	DefaultQueueCount     = 10_000    // messages queued for one receiver, at most
	DefaultQueueBytes     = 100 << 20 // bytes queued for one receiver, at most
	DefaultMaxUnauth      = 4096      // connections not logged in, at most
	DefaultMaxUnauthPerIP = 256       // of them, from one address
	DefaultMsgBurst       = 60        // messages a user may send at once
	DefaultMsgEvery       = time.Second
)

// Observer receives measurements from the shards' hot paths; its methods
// must be quick, safe for concurrent use and must not block.
type Observer interface {
	// Delivered: a message handed to a receiver online was acknowledged
	// d after the server accepted it.
	Delivered(d time.Duration)
	// FannedOut: a group message went to n members besides its sender.
	FannedOut(n int)
	// Committed: the store committed a transaction of ops queue writes
	// in d.
	Committed(d time.Duration, ops int)
}

func (o *Options) setDefaults() {
	if o.Shards == 0 {
		o.Shards = 1
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Timeouts.setDefaults()
	o.Limits.setDefaults()
	o.Live.setDefaults()
}

// def and defI set a zero duration or int to its default.
func def(d *time.Duration, v time.Duration) {
	if *d == 0 {
		*d = v
	}
}

func defI(d *int, v int) {
	if *d == 0 {
		*d = v
	}
}

func (o *Timeouts) setDefaults() {
	def(&o.HandshakeTimeout, 5*time.Second)
	def(&o.LoginTimeout, 10*time.Second)
	def(&o.IdleTimeout, 5*time.Minute)
	def(&o.FrameTimeout, 30*time.Second)
	def(&o.WriteTimeout, 10*time.Second)
	def(&o.AckTimeout, 10*time.Second)
	def(&o.GroupUploadTimeout, 30*time.Second)
}

func (o *Limits) setDefaults() {
	defI(&o.MaxPending, 4<<20)
	defI(&o.MaxUnacked, 128)
	def(&o.Retention, 7*24*time.Hour)
	if o.QueueLimits.Count == 0 {
		o.QueueLimits.Count = DefaultQueueCount
	}
	if o.QueueLimits.Bytes == 0 {
		o.QueueLimits.Bytes = DefaultQueueBytes
	}
	if o.QueueLimits.ContactShare == 0 {
		o.QueueLimits.ContactShare = DefaultContactShare
	}
	if o.QueueLimits.StrangerShare == 0 {
		o.QueueLimits.StrangerShare = DefaultStrangerShare
	}
	defI(&o.MaxUnauth, DefaultMaxUnauth)
	defI(&o.MaxUnauthPerIP, DefaultMaxUnauthPerIP)
	defI(&o.HandshakeBurst, 100)
	def(&o.HandshakeEvery, 20*time.Millisecond)
	defI(&o.MsgBurst, DefaultMsgBurst)
	def(&o.MsgEvery, DefaultMsgEvery)
	defI(&o.MsgBytesBurst, 128<<20)
	defI(&o.MsgBytesPerSec, 8<<20)
	defI(&o.SignalBurst, 30)
	def(&o.SignalEvery, 200*time.Millisecond)
}

func (o *Live) setDefaults() {
	if o.Presence == "" {
		o.Presence = PresenceContacts
	}
	if o.Broadcast == "" {
		o.Broadcast = BroadcastAnyone
	}
	defI(&o.BroadcastBurst, 3)
	def(&o.BroadcastEvery, 20*time.Second)
	defI(&o.BroadcastAddrBurst, 6)
	def(&o.BroadcastAddrEvery, 10*time.Second)
	defI(&o.BroadcastAllBurst, 20)
	def(&o.BroadcastAllEvery, time.Second)
}

// ErrClosed is returned by Handoff after Shutdown has begun.
var ErrClosed = errors.New("shard: set is shut down")

// Set is the server core: the shards, the directory of who is online
// where, and the limits shared by all shards.
type Set struct {
	// Static after construction.
	opts     Options
	log      *slog.Logger
	shards   []*Shard
	dir      directory
	router   router // &dir: where recipient endpoints are connected
	gate     gate
	msgs     *ratelimit.Limiter
	msgBytes *ratelimit.Limiter
	// broadcasts and signals limit live signals per user; broadcastsAddr
	// and broadcastsAll limit broadcasts per address and in all.
	broadcasts     *ratelimit.Limiter
	broadcastsAddr *ratelimit.Limiter
	broadcastsAll  *ratelimit.Limiter
	signals        *ratelimit.Limiter
	closeLog       rateLog            // close lines of hot paths, rate-limited
	relations      *ratelimit.Limiter // accepts and blocks per user
	batcher        *store.Batcher     // the group committer of the queues

	// Lifecycle.
	closing  atomic.Bool
	wg       sync.WaitGroup // every goroutine the set starts
	stopOnce sync.Once

	seqs    seqs    // each device's delivery sequence
	devsets devsets // each account's devices, as messages to it are addressed
	links   links   // device links offered and joined (links.go)

	// Counters.
	Stats Stats
}

// Stats are the set's counters.
type Stats struct {
	Accepted        atomic.Int64
	Refused         atomic.Int64 // closed at admission (per-address cap, handshake rate)
	Evicted         atomic.Int64 // not logged in, closed to make room at the global cap
	HandshakeFailed atomic.Int64
	LoginsOK        atomic.Int64
	LoginsFailed    atomic.Int64
	Routed          atomic.Int64 // messages handed to a receiver's connection
	Delivered       atomic.Int64 // messages acked by their receiver
	Queued          atomic.Int64 // messages stored for a receiver who was away or slow
	FromQueue       atomic.Int64 // messages delivered from the store
	ExpiredAtFetch  atomic.Int64 // queued messages found expired when fetched (deleted, not served)
	QueueFull       atomic.Int64 // messages refused: the receiver's queue was full
	StoreErrors     atomic.Int64 // commits that failed (disk full, I/O)
	SlowConsumers   atomic.Int64 // receivers cut off: queue full, write deadline or ack timeout
	ProtocolErrors  atomic.Int64 // connections closed for a bad frame
	Signals         atomic.Int64 // signals passed to a receiver online
	Broadcasts      atomic.Int64 // broadcasts sent
	LiveDropped     atomic.Int64 // live signals dropped for a receiver far behind
	BlockedDropped  atomic.Int64 // messages dropped: the receiver blocks the sender
	Panics          atomic.Int64

	// Closes counts closed connections by reason, Drops what went to
	// nobody by reason (reasons.go).
	Closes [numCloseReasons]atomic.Int64
	Drops  [numDropReasons]atomic.Int64
}

// New starts a Set's shards.
func New(opts Options) (*Set, error) {
	if opts.Static == nil || opts.Accounts == nil || opts.Store == nil {
		return nil, errors.New("shard: Options.Static, Options.Accounts and Options.Store are required")
	}
	opts.setDefaults()
	s := &Set{opts: opts, log: opts.Logger}
	s.dir.init()
	s.devsets.init()
	s.links.init()
	s.router = &s.dir
	s.gate.init(opts.MaxUnauth, opts.MaxUnauthPerIP, ratelimit.New(opts.HandshakeBurst, opts.HandshakeEvery, opts.Now))
	s.broadcasts = ratelimit.New(opts.BroadcastBurst, opts.BroadcastEvery, opts.Now)
	s.broadcastsAddr = ratelimit.New(opts.BroadcastAddrBurst, opts.BroadcastAddrEvery, opts.Now)
	s.broadcastsAll = ratelimit.New(opts.BroadcastAllBurst, opts.BroadcastAllEvery, opts.Now)
	s.signals = ratelimit.New(opts.SignalBurst, opts.SignalEvery, opts.Now)
	s.relations = ratelimit.New(relationBurst, relationEvery, opts.Now)
	if opts.MsgEvery > 0 {
		s.msgs = ratelimit.New(opts.MsgBurst, opts.MsgEvery, opts.Now)
		s.msgBytes = ratelimit.New(opts.MsgBytesBurst, time.Second/time.Duration(max(1, opts.MsgBytesPerSec)), opts.Now)
	}
	// Every device's sequence only grows, across restarts too: it starts past
	// the clock and past every id ever stored.
	maxID, err := opts.Store.MaxServerID()
	if err != nil {
		return nil, err
	}
	s.seqs.init(max(uint64(opts.Now().UnixNano()), maxID+1))
	bo := store.BatcherOptions{Limits: opts.QueueLimits, NewID: func(in store.Inbox) uint64 { return s.seqs.of(in).Add(1) }}
	if opts.Observer != nil {
		bo.OnCommit = opts.Observer.Committed
	}
	s.batcher = opts.Store.NewBatcher(bo)
	for i := 0; i < opts.Shards; i++ {
		sh := newShard(s, i)
		s.shards = append(s.shards, sh)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			sh.loop()
		}()
	}
	return s, nil
}

// Len returns the number of shards.
func (s *Set) Len() int { return len(s.shards) }

// Shard returns shard i.
func (s *Set) Shard(i int) *Shard { return s.shards[i] }

// Load returns shard i's load (see Shard.Load): what a balancer weighs.
func (s *Set) Load(i int) int64 { return s.shards[i].Load() }

// Batcher returns the group committer of the queues.
func (s *Set) Batcher() *store.Batcher { return s.batcher }

// Unauthenticated returns how many connections have not logged in yet.
func (s *Set) Unauthenticated() int { return s.gate.unauthenticated() }

// Online returns how many users are logged in.
func (s *Set) Online() int { return s.dir.len() }

// IsOnline reports whether a user (canonical name) is logged in on a
// device that receives.
func (s *Set) IsOnline(user string) bool { return s.dir.online([]byte(user)) }

// Kick closes a user's connections, if any, telling the clients their
// sessions were revoked. It reports whether there was one. What was
// delivered but not acknowledged stays queued. The account's devices are
// looked up again (it may have been deleted, or made again).
func (s *Set) Kick(user string) bool { return s.endSessions(user, "sessions revoked by an admin") }

// endSessions closes every connection of user (Close revoked) and forgets
// its device set; it reports whether there was one.
func (s *Set) endSessions(user, why string) bool {
	s.devsets.drop(user)
	cs := s.dir.sessions(user)
	for _, c := range cs {
		c.logger().Info("closing: " + why)
		c.closeGraceful(CloseRevoked)
	}
	return len(cs) > 0
}

// Handoff gives a new connection to shard i over its channel. After
// Shutdown has begun it closes the connection and returns ErrClosed.
func (s *Set) Handoff(i int, nc net.Conn) error {
	if s.closing.Load() {
		nc.Close()
		return ErrClosed
	}
	sh := s.shards[i]
	sh.handing.Add(1)
	select {
	case sh.in <- event{kind: evAdd, nc: nc}:
		return nil
	case <-sh.done:
		sh.handing.Add(-1)
		nc.Close()
		return ErrClosed
	}
}

// Shutdown closes every connection with a Close frame, lets in-flight work
// finish and waits for every goroutine of the set. It is idempotent; if ctx
// ends first, the remaining connections are cut and it still waits.
func (s *Set) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.stopOnce.Do(func() {
		for _, sh := range s.shards {
			close(sh.stop)
		}
	})
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		for _, sh := range s.shards {
			sh.forceClose()
		}
		<-done
		err = ctx.Err()
	}
	// Every connection is gone and its unacknowledged deliveries were
	// handed to the committer: commit them before the store closes.
	s.batcher.Close()
	return err
}

// go starts a goroutine the set waits for.
func (s *Set) goTracked(fn func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
}

// chargeMessage spends a sender's message limits for one message of n
// bytes: every message counts, a file chunk as one message like a text,
// and every message spends its bytes. It returns a *ratelimit.Refused
// saying when a retry will pass.
func (s *Set) chargeMessage(user string, n int) error {
	if s.msgs == nil {
		return nil
	}
	if wait := s.msgs.Take(user); wait > 0 {
		return ratelimit.Refuse(wait, "sending too fast")
	}
	return ratelimit.Refuse(s.msgBytes.TakeN(user, float64(n)), "sending too many bytes")
}
