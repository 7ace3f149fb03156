package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"securefastchat/bench"
)

// benchJSON runs the bench command and decodes its results.
func benchJSON(t *testing.T, args ...string) []*bench.Result {
	t.Helper()
	args = append([]string{"bench", "--json", "--quiet", "--duration", "1s", "--warmup", "300ms"}, args...)
	r := run(t, nil, args...)
	if r.code != 0 {
		t.Fatalf("bench %v: exit %d\n%s\n%s", args, r.code, r.stdout, r.stderr)
	}
	var rs []*bench.Result
	if err := json.Unmarshal([]byte(r.stdout), &rs); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, r.stdout)
	}
	return rs
}

// checkSane asserts what every run must show: work counted in the window,
// no errors, every acknowledged message received.
func checkSane(t *testing.T, r *bench.Result) {
	t.Helper()
	if r.Count <= 0 || r.Rate <= 0 || r.Seconds <= 0 {
		t.Errorf("%s: count %d, rate %.1f in %.2f s", r.Scenario, r.Count, r.Rate, r.Seconds)
	}
	if r.Errors != 0 {
		t.Errorf("%s: %d errors", r.Scenario, r.Errors)
	}
	if r.Received < r.Delivered {
		t.Errorf("%s: %d acknowledged as delivered, %d received", r.Scenario, r.Delivered, r.Received)
	}
}

func sum(v []int64) (s int64) {
	for _, x := range v {
		s += x
	}
	return s
}

// TestBenchDevices: with --devices 3 each receiver (each member of the
// fan-out group) has three devices online, and every message reaches each
// of them.
func TestBenchDevices(t *testing.T) {
	rs := benchJSON(t, "--argon2", "t=1,m=64,p=1", "--shards", "2", "--scenario", "dm", "--clients", "40", "--devices", "3")
	if len(rs) != 1 {
		t.Fatalf("%d results", len(rs))
	}
	r := rs[0]
	checkSane(t, r)
	if r.Devices != 3 || r.Queued != 0 || r.OtherDevicesReceived != 2*r.Received {
		t.Errorf("%d devices: the first received %d (%d acknowledged queued), the others %d; want twice as many", r.Devices, r.Received, r.Queued, r.OtherDevicesReceived)
	}
	// In a group, each member's three devices get every message: the
	// group's keys are wrapped for each.
	rs = benchJSON(t, "--argon2", "t=1,m=64,p=1", "--shards", "2", "--scenario", "fanout", "--clients", "20", "--devices", "3")
	if len(rs) != 1 {
		t.Fatalf("%d results", len(rs))
	}
	r = rs[0]
	checkSane(t, r)
	if r.Devices != 3 || r.Received == 0 || r.OtherDevicesReceived != 2*r.Received {
		t.Errorf("fanout, %d devices: the first devices received %d, the others %d; want twice as many", r.Devices, r.Received, r.OtherDevicesReceived)
	}
	if r := run(t, nil, "bench", "--scenario", "idle", "--devices", "2"); r.code != 2 || !strings.Contains(r.stderr, "--devices is for the dm, latency and fanout scenarios") {
		t.Errorf("--devices with idle: %+v", r)
	}
}

// TestBenchScenarios runs every scenario of 'securefastchat bench' at a
// small scale on its embedded server and checks its figures add up.
func TestBenchScenarios(t *testing.T) {
	weak := []string{"--argon2", "t=1,m=64,p=1", "--shards", "2"}
	t.Run("dm", func(t *testing.T) {
		rs := benchJSON(t, append(weak, "--scenario", "dm", "--clients", "40", "--strategy", "round-robin,p2c")...)
		if len(rs) != 2 || rs[0].Server.Strategy != "round-robin" || rs[1].Server.Strategy != "p2c" {
			t.Fatalf("want a row per strategy, got %d", len(rs))
		}
		for _, r := range rs {
			checkSane(t, r)
			if r.Sent != r.Delivered+r.Queued {
				t.Errorf("%d sent, %d+%d acknowledged", r.Sent, r.Delivered, r.Queued)
			}
			if r.Latency == nil || r.Latency.Samples != r.Count || r.Latency.P50 <= 0 || r.Latency.P99 < r.Latency.P50 {
				t.Errorf("latency %+v for %d messages", r.Latency, r.Count)
			}
			if len(r.ShardConns) != 2 || sum(r.ShardConns) != 40 {
				t.Errorf("connections per shard %v, want 2 shards holding 40", r.ShardConns)
			}
			// The server's window and the clients' are read a moment
			// apart; messages in flight fall on either side.
			if m := sum(r.ShardMsgs); m < r.Count*9/10 || m > r.Count*11/10 {
				t.Errorf("messages per shard %v, not about the %d delivered in the window", r.ShardMsgs, r.Count)
			}
			if r.CPUSeconds <= 0 || r.CPUPerMillion <= 0 {
				t.Errorf("server CPU %.3f s", r.CPUSeconds)
			}
		}
	})
	t.Run("latency", func(t *testing.T) {
		r := benchJSON(t, append(weak, "--scenario", "latency", "--clients", "20", "--rate", "200")...)[0]
		checkSane(t, r)
		if r.Rate < 100 || r.Rate > 300 {
			t.Errorf("paced at 200/s, measured %.0f/s", r.Rate)
		}
	})
	t.Run("fanout", func(t *testing.T) {
		r := benchJSON(t, append(weak, "--scenario", "fanout", "--clients", "10", "--window", "4")...)[0]
		checkSane(t, r)
		if r.Received < r.Delivered*9 {
			t.Errorf("%d group messages delivered to 9 members, %d deliveries", r.Delivered, r.Received)
		}
	})
	t.Run("login", func(t *testing.T) {
		r := benchJSON(t, append(weak, "--scenario", "login", "--clients", "40")...)[0]
		checkSane(t, r)
		if r.PasswordLogins <= 0 {
			t.Errorf("password logins %.1f/s", r.PasswordLogins)
		}
	})
	t.Run("mixed", func(t *testing.T) {
		r := benchJSON(t, append(weak, "--scenario", "mixed", "--clients", "60")...)[0]
		checkSane(t, r)
		if r.Queued == 0 {
			t.Error("nothing was stored for the offline receivers")
		}
	})
	t.Run("idle", func(t *testing.T) {
		r := benchJSON(t, append(weak, "--scenario", "idle", "--clients", "400", "--procs", "2")...)[0]
		if r.Count != 400 || r.Errors != 0 {
			t.Errorf("held %d connections, %d errors", r.Count, r.Errors)
		}
		if r.RSSPerConn <= 0 || r.GoroutinesPerConn <= 0 {
			t.Errorf("RSS per connection %.0f B, goroutines per connection %.2f", r.RSSPerConn, r.GoroutinesPerConn)
		}
		if r.Sent == 0 || r.Received != r.Sent {
			t.Errorf("probe: %s", r.Probe)
		}
		if sum(r.ShardConns) != 400 {
			t.Errorf("connections per shard %v", r.ShardConns)
		}
	})
}

// TestBenchRunningServer benchmarks a server started on its own: users
// are signed up through the protocol and the server is measured from
// /proc by its pid.
func TestBenchRunningServer(t *testing.T) {
	addr, cmd, _ := serve(t, t.TempDir(), "--msg-every", "0")
	r := benchJSON(t, "--server", addr, "--server-pid", strconv.Itoa(cmd.Process.Pid), "--scenario", "dm", "--clients", "20")[0]
	checkSane(t, r)
	if r.Server.Embedded || r.CPUSeconds <= 0 {
		t.Errorf("settings %+v, server CPU %.3f s", r.Server, r.CPUSeconds)
	}
	res := run(t, nil, "bench", "--server", addr, "--strategy", "p2c")
	if res.code != 2 {
		t.Errorf("--strategy with --server: exit %d, want 2 (%s)", res.code, res.stderr)
	}
	res = run(t, nil, "bench", "--scenario", "nope")
	if res.code != 2 {
		t.Errorf("unknown scenario: exit %d, want 2 (%s)", res.code, res.stderr)
	}

}
