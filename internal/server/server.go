// Package server assembles a securefastchat server from its parts: the
// store, the account service, the shard set and the balancer. main and the
// tests use it, so both run the same server.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"
	"time"

	"securefastchat/balancer"
	"securefastchat/groups"
	"securefastchat/internal/account"
	"securefastchat/internal/passwd"
	"securefastchat/proto"
	"securefastchat/shard"
	"securefastchat/store"
)

// DBFileName is the store's file in the data directory.
const DBFileName = "securefastchat.db"

// Config configures a server. Zero fields take defaults.
type Config struct {
	// DataDir holds the store and the server key. Required.
	DataDir string
	// Listen is the address to listen on. If empty, DefaultListen.
	Listen string
	// Listener, if set, is used instead of listening on Listen.
	Listener net.Listener
	// Strategy names the shard strategy. If empty,
	// balancer.DefaultStrategy.
	Strategy string
	// Argon2 are the password hashing parameters. If zero, passwd.Default.
	Argon2 passwd.Params
	// AllowWeakArgon2 permits parameters below passwd.Floor (tests and
	// benchmarks only; the server logs a warning).
	AllowWeakArgon2 bool
	// HashConcurrency bounds parallel password hashes. If zero, 4.
	HashConcurrency int
	// Limits are the account throttles.
	Limits account.Limits
	// Signup is who may sign up. If empty, account.SignupOpen.
	Signup account.SignupPolicy
	// Shard configures the shard set; Static, Accounts, Groups and Logger
	// are filled in here.
	Shard shard.Options
	// Groups configures the group rules (limits); Store, Now and Logger
	// are filled in here.
	Groups groups.Options
	// Retention is how long a queued message waits for its receiver
	// before the sweeper deletes it. If zero, 7 days.
	Retention time.Duration
	// SweepEvery is how often the sweeper runs (it also runs at start).
	// If zero, one hour.
	SweepEvery time.Duration
	// Logger receives the logs. If nil, slog.Default().
	Logger *slog.Logger
}

// DefaultRetention is how long queued messages are kept by default.
const DefaultRetention = 7 * 24 * time.Hour

// DefaultListen is the address a server listens on by default, and the one
// clients dial by default.
const DefaultListen = "127.0.0.1:7878"

// Server is a running server.
type Server struct {
	Store    *store.Store
	Accounts *account.Service
	Set      *shard.Set
	Balancer *balancer.Balancer
	Key      *proto.KeyPair

	// Expired counts queued messages the sweeper deleted.
	Expired atomic.Int64

	accepting atomic.Bool // serving, and Shutdown has not begun

	ln      net.Listener
	log     *slog.Logger
	serveCh chan error
	cfg     Config

	sweepStop chan struct{}
	sweepDone chan struct{}
}

// Start opens the store, loads or creates the server key, starts the shards
// and begins accepting.
func Start(cfg Config) (_ *Server, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("server: a data directory is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.Strategy == "" {
		cfg.Strategy = balancer.DefaultStrategy
	}
	if cfg.Argon2 == (passwd.Params{}) {
		cfg.Argon2 = passwd.Default
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.SweepEvery == 0 {
		cfg.SweepEvery = time.Hour
	}
	if cfg.Shard.Now == nil {
		cfg.Shard.Now = time.Now
	}
	strat, err := balancer.ParseStrategy(cfg.Strategy)
	if err != nil {
		return nil, err
	}
	if cfg.AllowWeakArgon2 && !cfg.Argon2.AtLeast(passwd.Floor) {
		cfg.Logger.Warn("password hashing below the production floor; use only for tests and benchmarks", "argon2", cfg.Argon2.String())
	}
	hasher, err := passwd.NewHasher(cfg.Argon2, cfg.HashConcurrency, cfg.AllowWeakArgon2)
	if err != nil {
		return nil, err
	}
	// The port first: a server that cannot listen makes no key and no
	// store in a data directory it would leave unused.
	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
	}
	defer func() {
		if err != nil {
			ln.Close()
		}
	}()
	key, created, err := LoadOrCreateKey(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if created {
		cfg.Logger.Info("created server key", "fingerprint", key.Public.Fingerprint())
	}
	st, err := store.Open(filepath.Join(cfg.DataDir, DBFileName), nil)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	acc := account.New(st, account.Options{Hasher: hasher, Limits: cfg.Limits, Now: cfg.Shard.Now, Signup: cfg.Signup, Logger: cfg.Logger})
	so := cfg.Shard
	gopts := cfg.Groups
	gopts.Store, gopts.Now, gopts.Logger, gopts.DeviceIDs, gopts.DeviceSignKey = st, cfg.Shard.Now, cfg.Logger, acc.DeviceIDs, acc.DeviceSignKey
	so.Static, so.Accounts, so.Store, so.Logger = key, shardAccounts{acc}, st, cfg.Logger
	so.Groups = shardGroups{groups.New(gopts)}
	so.Retention = cfg.Retention
	set, err := shard.New(so)
	if err != nil {
		return nil, err
	}
	s := &Server{Store: st, Accounts: acc, Set: set, Key: key, ln: ln, log: cfg.Logger, serveCh: make(chan error, 1), cfg: cfg,
		sweepStop: make(chan struct{}), sweepDone: make(chan struct{})}
	s.Sweep() // before serving: nothing expired is ever delivered
	go s.sweeper()
	s.Balancer = balancer.New(set, strat, cfg.Logger)
	s.accepting.Store(true)
	go func() {
		err := s.Balancer.Serve(ln)
		s.accepting.Store(false)
		s.serveCh <- err
	}()
	cfg.Logger.Info("serving", "addr", ln.Addr().String(), "shards", set.Len(), "strategy", strat.Name(),
		"argon2", cfg.Argon2.String(), "data", cfg.DataDir, "retention", cfg.Retention.String(), "fingerprint", key.Public.Fingerprint())
	return s, nil
}

// Ready reports whether the server accepts connections and its store
// answers a read.
func (s *Server) Ready() bool {
	if !s.accepting.Load() {
		return false
	}
	return s.Store.Ping() == nil
}

// DataDir returns the data directory.
func (s *Server) DataDir() string { return s.cfg.DataDir }

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Done returns a channel that yields the accept loop's error if it stops
// by itself.
func (s *Server) Done() <-chan error { return s.serveCh }

// Shutdown stops accepting, closes every connection with a Close frame,
// waits for in-flight work and closes the store. It is safe to call once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.accepting.Store(false)
	_ = s.Balancer.Close()
	close(s.sweepStop)
	<-s.sweepDone
	err := s.Set.Shutdown(ctx)
	if cerr := s.Store.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	s.log.Info("stopped")
	return err
}

// Sweep deletes queued messages older than the retention, the group key
// epochs no message kept can need any more, the sessions that expired and
// the inboxes of devices removed from their accounts' lists, and logs how
// many. It returns the number of messages.
func (s *Server) Sweep() int {
	cutoff := s.cfg.Shard.Now().Add(-s.cfg.Retention)
	n, err := s.Store.Sweep(cutoff)
	if err != nil {
		s.log.Error("expiry sweep failed", "err", err)
	}
	epochs, perr := s.Store.PruneEpochs(cutoff)
	if perr != nil {
		s.log.Error("pruning group key epochs failed", "err", perr)
	}
	sessions, serr := s.Store.SweepSessions(s.cfg.Shard.Now(), account.SessionIdle, account.SessionMax)
	if serr != nil {
		s.log.Error("sweeping expired sessions failed", "err", serr)
	}
	removed, rerr := s.Accounts.DropRemovedInboxes()
	if rerr != nil {
		s.log.Error("dropping removed devices' inboxes failed", "err", rerr)
	}
	if n > 0 || epochs > 0 || sessions > 0 || removed > 0 || err != nil {
		s.log.Info("expiry sweep", "expired", n, "epochs_pruned", epochs, "sessions_expired", sessions, "removed_devices_messages", removed, "retention", s.cfg.Retention.String())
	}
	s.Expired.Add(int64(n))
	return n
}

func (s *Server) sweeper() {
	defer close(s.sweepDone)
	t := time.NewTicker(s.cfg.SweepEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.Sweep()
		case <-s.sweepStop:
			return
		}
	}
}
