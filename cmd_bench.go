package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"

	"golang.org/x/term"

	"securefastchat/balancer"
	"securefastchat/bench"
	"securefastchat/internal/passwd"
)

func cmdBench(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	srv := fs.String("server", "", "benchmark the server at ADDR instead of an embedded one")
	embedded := fs.Bool("embedded", false, "start a server on loopback with a temporary data directory (the default without --server)")
	serverKey := fs.String("server-key", "", "with --server: the fingerprint the server must present")
	serverPID := fs.Int("server-pid", 0, "with --server on this machine: its process id, to read its CPU time and memory")
	shards := fs.Int("shards", runtime.NumCPU(), "embedded server: number of shards")
	strategy := fs.String("strategy", "round-robin", "embedded server: shard strategies, comma-separated, a run each ("+strings.Join(balancer.Names(), ", ")+", or all)")
	argon := fs.String("argon2", passwd.Default.String(), "embedded server: password hashing cost")
	scenario := fs.String("scenario", "dm", "what to measure: "+strings.Join(bench.Scenarios, ", "))
	clients := fs.Int("clients", 0, "connections (default per scenario: dm 1000, latency 200, fanout 100 members, idle 10000, login 1000, mixed 1000)")
	duration := fs.Duration("duration", 0, "the measured window (default 10s; latency 30s)")
	warmup := fs.Duration("warmup", 0, "load before the window starts (default 2s)")
	size := fs.Int("size", 256, "message body in bytes")
	window := fs.Int("window", 0, "messages in flight per sender (default 64; mixed 16)")
	rate := fs.Int("rate", 0, "latency: messages per second in all (default 100)")
	procs := fs.Int("procs", 0, "idle: load processes holding the connections (default one per 9,000)")
	devices := fs.Int("devices", 1, "dm, latency and fanout, embedded server: devices each receiver (each member) has online; every message goes to each")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	quiet := fs.Bool("quiet", false, "no progress line")
	serverLog := fs.Bool("server-log", false, "copy the embedded server's log to standard error")
	serverProfile := fs.String("server-profile", "", "embedded server: write a CPU profile of the run to FILE")
	loadProfile := fs.String("load-profile", "", "write a CPU profile of the load side (this process) to FILE")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: securefastchat bench [--server ADDR | --embedded] [--shards N] [--strategy S[,S...]]
                           [--clients N] [--scenario dm|latency|fanout|idle|login|mixed]
                           [--duration D] [--size BYTES] [--json]

Measures a server under load on this machine. Every message is sealed end to
end as a real client seals it. Without --server it starts its own server on
loopback (this binary, in a child process with a temporary data directory)
and runs the scenario once per strategy, printing a row per strategy.

Scenarios:
  dm       pairs of clients; each sender keeps a window of messages in flight
  latency  a light fixed rate (100 pairs, 100 messages/s): end-to-end latency
  fanout   one sender to a group of every other client
  idle     hold N logged-in connections (in separate load processes); server
           memory and goroutines per connection
  login    new connection + handshake + session resume per second, then
           password logins per second at the server's argon2 cost
  mixed    direct messages, groups, offline receivers, logins and logouts

Against a running server (--server), users are signed up as any client would
be, so the server's sign-up limits apply; its message rate limit should be off
(serve --msg-every 0). Load goes only to loopback unless --server names
another host.

`)
		printFlags(fs.Output(), fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("bench takes no arguments (got %q)", fs.Args())
	}
	if *embedded && *srv != "" {
		return usagef("--embedded and --server exclude each other")
	}
	var strategies []string
	for _, s := range strings.Split(*strategy, ",") {
		s = strings.TrimSpace(s)
		if s == "all" {
			strategies = append(strategies, balancer.Names()...)
			continue
		}
		if _, err := balancer.ParseStrategy(s); err != nil {
			return usagef("--strategy: %v", err)
		}
		strategies = append(strategies, s)
	}
	if *srv != "" && fs.Lookup("strategy").Value.String() != "round-robin" {
		return usagef("--strategy applies to the embedded server; a running server has its own")
	}
	if _, err := passwd.ParseParams(*argon); err != nil {
		return usagef("--argon2: %v", err)
	}
	if *shards < 1 {
		return usagef("--shards must be at least 1")
	}
	cfg := bench.Config{
		Server: *srv, ServerKey: *serverKey, ServerPID: *serverPID,
		Shards: *shards, Strategies: strategies, Argon2: *argon,
		Scenario: *scenario, Clients: *clients, Duration: *duration, Warmup: *warmup,
		Size: *size, Window: *window, Rate: *rate, Procs: *procs, Devices: *devices,
	}
	if !*quiet {
		cfg.Progress = os.Stderr
		cfg.ProgressTTY = term.IsTerminal(int(os.Stderr.Fd()))
	}
	cfg.ServerProfile = *serverProfile
	if *serverLog {
		cfg.ServerLog = os.Stderr
	}
	if *loadProfile != "" {
		f, err := os.Create(*loadProfile)
		if err != nil {
			return fmt.Errorf("--load-profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--load-profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rs, err := bench.Run(ctx, cfg)
	if cfg.ProgressTTY {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
	if len(rs) > 0 {
		if *asJSON {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			if jerr := enc.Encode(rs); jerr != nil {
				return jerr
			}
		} else {
			bench.WriteTable(os.Stdout, rs)
		}
	}
	if errors.Is(err, bench.ErrBadConfig) {
		return usagef("%v", err)
	}
	return err
}

// cmdBenchWorker is a load process of `bench --scenario idle`; it is
// started by bench, not by hand.
func cmdBenchWorker(args []string) error {
	if len(args) != 0 {
		return usagef("bench-worker is started by 'securefastchat bench'")
	}
	return bench.Worker(os.Stdin, os.Stdout)
}
