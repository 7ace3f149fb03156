// Package serve runs the server process that 'securefastchat serve'
// starts: the server (internal/server), its admin listener (health,
// metrics, pprof and the admin API), the signals that stop it or log its
// counters, and an orderly shutdown. The command turns flags into a
// Config; Run does the rest.
package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"securefastchat/balancer"
	"securefastchat/internal/admin"
	"securefastchat/internal/metrics"
	"securefastchat/internal/server"
)

// Config is a server process.
type Config struct {
	// Server is the server; its Shard.Observer is set to the metrics.
	Server server.Config
	// AdminAddr serves health, metrics, pprof and the admin API; off if
	// empty.
	AdminAddr string
	// AdminHosts are the names besides IP addresses and localhost that
	// requests to the admin listener may give as their Host.
	AdminHosts []string
	// AdminToken is the admin API's token; if empty, one kept in the data
	// directory (made on the first run).
	AdminToken string
	// CPUProfile, if set, receives a CPU profile of the whole run.
	CPUProfile string
	// Notes receives what the operator is told besides the logs (where a
	// new admin token was made).
	Notes io.Writer
}

// ShutdownTimeout bounds an orderly shutdown.
const ShutdownTimeout = 30 * time.Second

// Run runs the server until SIGINT or SIGTERM (SIGUSR1 logs its
// counters), or until it stops by itself, then shuts it down. Both ports
// are taken before anything is made in the data directory.
func Run(cfg Config) error {
	logger := cfg.Server.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	// Signals first: a SIGTERM during startup (the first sweep can take a
	// while on a big store) waits for startup to finish, then shuts down.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)

	var adminLn net.Listener
	adminToken := cfg.AdminToken
	if cfg.AdminAddr != "" {
		var err error
		if adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
		defer adminLn.Close() // a no-op once the admin server has it and closed it
		if adminToken == "" {
			tok, created, err := admin.LoadOrCreateToken(cfg.Server.DataDir)
			if err != nil {
				return err
			}
			adminToken = tok
			if created && cfg.Notes != nil {
				fmt.Fprintf(cfg.Notes, "Made an admin token in %s (mode 0600): the admin commands on this machine read it there; elsewhere set SFC_ADMIN_TOKEN to it.\n",
					filepath.Join(cfg.Server.DataDir, admin.TokenFileName))
			}
		}
	}
	mx := metrics.New()
	cfg.Server.Shard.Observer = mx
	srv, err := server.Start(cfg.Server)
	if err != nil {
		return err
	}
	mx.Register(srv)
	var adm *admin.Admin
	if adminLn != nil {
		adm, err = admin.Start(admin.Config{Addr: cfg.AdminAddr, Listener: adminLn, Token: adminToken, Hosts: cfg.AdminHosts,
			Server: srv, Metrics: mx, Logger: logger})
		if err != nil {
			_ = srv.Shutdown(context.Background())
			return err
		}
	}
	var serveErr error
wait:
	for {
		select {
		case <-usr1:
			LogStats(logger, srv)
		case s := <-sig:
			logger.Info("shutting down", "signal", s.String())
			break wait
		case serveErr = <-srv.Done():
			logger.Error("accept loop stopped", "err", serveErr)
			break wait
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	err = srv.Shutdown(ctx)
	if adm != nil {
		_ = adm.Close(ctx)
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if serveErr != nil && !errors.Is(serveErr, balancer.ErrServerClosed) {
		return serveErr
	}
	return nil
}

// LogStats logs the server's counters, per shard and in all, and the
// process's goroutines and heap.
func LogStats(logger *slog.Logger, srv *server.Server) {
	n := srv.Set.Len()
	conns, msgs := make([]int64, n), make([]int64, n)
	for i := range n {
		conns[i], msgs[i] = srv.Set.Shard(i).Conns(), srv.Set.Shard(i).Messages()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st := &srv.Set.Stats
	logger.Info("stats", "shard_conns", conns, "shard_msgs", msgs, "online", srv.Set.Online(),
		"logins_ok", st.LoginsOK.Load(), "logins_failed", st.LoginsFailed.Load(),
		"routed", st.Routed.Load(), "delivered", st.Delivered.Load(), "queued", st.Queued.Load(),
		"from_queue", st.FromQueue.Load(), "slow_consumers", st.SlowConsumers.Load(), "expired", srv.Expired.Load(),
		"signals", st.Signals.Load(), "broadcasts", st.Broadcasts.Load(), "live_dropped", st.LiveDropped.Load(),
		"goroutines", runtime.NumGoroutine(), "heap_inuse", ms.HeapInuse, "stack_inuse", ms.StackInuse)
}
