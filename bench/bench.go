// Package bench drives load at a securefastchat server and measures it:
// the scenarios of `securefastchat bench`. The load speaks the protocol
// through the client package and seals every body end to end as a real
// client does; the server is either one the bench starts on loopback
// (embedded: the same binary in a child process, with its own data
// directory, so its CPU and memory are measured apart from the load) or one
// already running.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"securefastchat/balancer"
	"securefastchat/proto"
)

// Scenarios, in the order the help lists them.
var Scenarios = []string{"dm", "latency", "fanout", "idle", "login", "mixed"}

// Config is one bench run. Zero fields take the scenario's defaults.
type Config struct {
	// Server is the address of a running server; empty starts an embedded
	// one.
	Server string
	// ServerKey is the fingerprint a running server must present; empty
	// trusts the first key seen (a benchmark holds no secrets).
	ServerKey string
	// ServerPID, for a running server on this machine, lets the bench read
	// its CPU time and memory from /proc.
	ServerPID int
	// Exe is the securefastchat binary that runs the embedded server and
	// the idle load processes. If empty, this process's own executable.
	Exe string
	// Shards and Strategies configure the embedded server; a run per
	// strategy.
	Shards     int
	Strategies []string
	// Argon2 is the embedded server's password hashing cost (passwd
	// syntax); empty is the production default.
	Argon2 string

	Scenario string
	Clients  int           // connections (pairs are Clients/2; fanout: group members)
	Duration time.Duration // the measured window
	Warmup   time.Duration
	Size     int // message body bytes
	Window   int // messages in flight per sender
	Rate     int // latency: messages per second in all
	Procs    int // idle: load processes (0: one per 9,000 connections)
	// Devices is how many devices each receiver has online (dm, latency
	// and fanout, embedded server): a message goes to every one of them.
	Devices int

	// Progress receives a progress line now and then; nil for none.
	Progress io.Writer
	// ProgressTTY: Progress is a terminal, where each line overwrites
	// the last.
	ProgressTTY bool
	// ServerLog receives the embedded server's log; nil discards it.
	ServerLog io.Writer
	// capped says why Clients was lowered, if it was.
	capped string

	// ServerProfile, if set, is where the embedded server writes a CPU
	// profile of the run (one file per strategy: the name gets a suffix
	// when there are several).
	ServerProfile string
}

// Settings describe the server a run measured.
type Settings struct {
	Addr     string `json:"addr"`
	Embedded bool   `json:"embedded"`
	Shards   int    `json:"shards,omitempty"`
	Strategy string `json:"strategy,omitempty"`
	Argon2   string `json:"argon2,omitempty"`
	Limits   string `json:"limits,omitempty"`
}

// Latency is a latency summary in milliseconds.
type Latency struct {
	Samples int64   `json:"samples"`
	P50     float64 `json:"p50_ms"`
	P99     float64 `json:"p99_ms"`
	P999    float64 `json:"p999_ms"`
	Max     float64 `json:"max_ms"`
}

// Result is what one run measured.
type Result struct {
	Scenario string   `json:"scenario"`
	Server   Settings `json:"server"`
	Clients  int      `json:"clients"`
	Seconds  float64  `json:"seconds"` // the measured window

	// Count of the scenario's unit in the window, and per second.
	Unit  string  `json:"unit"`
	Count int64   `json:"count"`
	Rate  float64 `json:"rate"`
	// Password logins per second (login).
	PasswordLogins float64 `json:"password_logins_per_s,omitempty"`

	Latency *Latency `json:"latency,omitempty"`

	// Totals over the whole run, warm-up and drain included: messages
	// sent, acknowledged by the server (delivered / queued), received by
	// the load's clients, and errors.
	Sent      int64 `json:"sent"`
	Delivered int64 `json:"acked_delivered"`
	Queued    int64 `json:"acked_queued"`
	Received  int64 `json:"received"`
	Errors    int64 `json:"errors"`
	// With --devices: each receiver's devices online, and what its
	// devices other than the first received (Received is the first's).
	Devices              int   `json:"devices,omitempty"`
	OtherDevicesReceived int64 `json:"other_devices_received,omitempty"`

	// Per shard: connections at the end of the window, messages routed in
	// it. Empty if the server's counters cannot be read.
	ShardConns []int64 `json:"shard_conns,omitempty"`
	ShardMsgs  []int64 `json:"shard_msgs,omitempty"`

	// Server CPU seconds in the window, and per million of the unit.
	CPUSeconds    float64 `json:"server_cpu_s,omitempty"`
	CPUPerMillion float64 `json:"server_cpu_s_per_million,omitempty"`

	// Idle: server memory and goroutines per held connection.
	RSSPerConn        float64 `json:"rss_bytes_per_conn,omitempty"`
	GoroutinesPerConn float64 `json:"goroutines_per_conn,omitempty"`
	RSSBefore         int64   `json:"rss_before,omitempty"`
	RSSAfter          int64   `json:"rss_after,omitempty"`
	Probe             string  `json:"probe,omitempty"`

	Notes []string `json:"notes,omitempty"`
}

// ErrBadConfig is returned for a configuration the bench cannot run.
var ErrBadConfig = errors.New("bench: bad configuration")

func (c *Config) setDefaults() error {
	if c.Scenario == "" {
		c.Scenario = "dm"
	}
	known := false
	for _, s := range Scenarios {
		known = known || s == c.Scenario
	}
	if !known {
		return fmt.Errorf("%w: unknown scenario %q (one of %v)", ErrBadConfig, c.Scenario, Scenarios)
	}
	if c.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: finding the securefastchat binary: %w", err)
		}
		c.Exe = exe
	}
	if c.Shards == 0 {
		c.Shards = 2
	}
	if len(c.Strategies) == 0 {
		c.Strategies = []string{balancer.DefaultStrategy}
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	switch c.Scenario {
	case "dm":
		def(&c.Clients, 1000)
		def(&c.Window, 64)
	case "latency":
		def(&c.Clients, 200)
		def(&c.Rate, 100)
		def(&c.Window, 64)
		if c.Duration == 0 {
			c.Duration = 30 * time.Second
		}
	case "fanout":
		def(&c.Clients, 100)
		def(&c.Window, 64)
	case "idle":
		def(&c.Clients, 10000)
	case "login":
		def(&c.Clients, 1000)
	case "mixed":
		def(&c.Clients, 1000)
		def(&c.Window, 16)
	}
	def(&c.Size, 256)
	def(&c.Devices, 1)
	if c.Devices < 1 || c.Devices > proto.MaxDevices {
		return fmt.Errorf("%w: --devices must be 1 to %d", ErrBadConfig, proto.MaxDevices)
	}
	if c.Devices > 1 && (c.Scenario != "dm" && c.Scenario != "latency" && c.Scenario != "fanout" || c.Server != "") {
		return fmt.Errorf("%w: --devices is for the dm, latency and fanout scenarios on the embedded server", ErrBadConfig)
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = 2 * time.Second
	}
	if c.Clients < 2 {
		return fmt.Errorf("%w: at least 2 clients", ErrBadConfig)
	}
	if c.Size < 1 || c.Size > 60000 {
		return fmt.Errorf("%w: --size must be 1 to 60000 bytes", ErrBadConfig)
	}
	if c.Window < 0 || c.Window > 120 {
		return fmt.Errorf("%w: --window must be 1 to 120 (the server holds 128 unacked per receiver)", ErrBadConfig)
	}
	if lim := openFileLimit(); c.Scenario == "idle" && c.Server == "" && c.Clients > lim-500 {
		c.capped = fmt.Sprintf("capped at %d connections (asked for %d): the embedded server's open-file limit is %d", lim-500, c.Clients, lim)
		c.Clients = lim - 500
	}
	if c.Server != "" && len(c.Strategies) > 1 {
		return fmt.Errorf("%w: several strategies need the embedded server (a running server has its own)", ErrBadConfig)
	}
	return nil
}

// Run runs the scenario once per strategy (embedded) or once (a running
// server) and returns a result per run.
func Run(ctx context.Context, cfg Config) ([]*Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	var out []*Result
	strategies := cfg.Strategies
	if cfg.Server != "" {
		strategies = []string{""}
	}
	for _, s := range strategies {
		r, err := runOne(ctx, &cfg, s)
		if err != nil {
			if s != "" {
				return out, fmt.Errorf("strategy %s: %w", s, err)
			}
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

func runOne(ctx context.Context, cfg *Config, strategy string) (*Result, error) {
	r := &run{cfg: cfg}
	r.progress("%s: preparing %d users", cfg.Scenario, r.usersNeeded())
	t, err := r.openTarget(ctx, strategy)
	if err != nil {
		return nil, err
	}
	defer t.close()
	r.t = t
	res := &Result{Scenario: cfg.Scenario, Server: t.settings, Clients: cfg.Clients}
	switch cfg.Scenario {
	case "dm":
		err = r.dm(ctx, res, false)
	case "latency":
		err = r.dm(ctx, res, true)
	case "fanout":
		err = r.fanout(ctx, res)
	case "idle":
		err = r.idle(ctx, res)
	case "login":
		err = r.login(ctx, res)
	case "mixed":
		err = r.mixed(ctx, res)
	}
	if err != nil {
		return nil, err
	}
	if res.CPUSeconds > 0 && res.Count > 0 {
		res.CPUPerMillion = res.CPUSeconds / float64(res.Count) * 1e6
	}
	if res.Seconds > 0 {
		res.Rate = float64(res.Count) / res.Seconds
	}
	return res, nil
}

// run is the state of one run.
type run struct {
	cfg *Config
	t   *target
}

func (r *run) progress(format string, args ...any) {
	switch {
	case r.cfg.Progress == nil:
	case r.cfg.ProgressTTY:
		fmt.Fprintf(r.cfg.Progress, "\r\033[K"+format, args...)
	default:
		fmt.Fprintf(r.cfg.Progress, format+"\n", args...)
	}
}

// usersNeeded is how many accounts the scenario uses.
func (r *run) usersNeeded() int {
	c := r.cfg
	switch c.Scenario {
	case "dm", "latency":
		return c.Clients / 2 * 2
	case "fanout":
		return c.Clients - 1 // and the owner, who signs up
	}
	return c.Clients
}
