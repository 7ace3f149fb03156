package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// WriteTable prints results as a table, a row per run, with the server's
// settings above and each run's notes below.
func WriteTable(w io.Writer, rs []*Result) {
	if len(rs) == 0 {
		return
	}
	r0 := rs[0]
	where := "embedded server (child process, loopback, temporary data directory)"
	if !r0.Server.Embedded {
		where = "server at " + r0.Server.Addr
	}
	fmt.Fprintf(w, "scenario %s, %d clients, %s\n", r0.Scenario, r0.Clients, where)
	if r0.Server.Argon2 != "" {
		fmt.Fprintf(w, "server: %d shards, argon2 %s; %s\n", r0.Server.Shards, r0.Server.Argon2, r0.Server.Limits)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	var head []string
	switch r0.Scenario {
	case "idle":
		head = []string{"strategy", "conns", "open s", "RSS/conn", "goroutines/conn", "conns/shard max", "min", "probe", "errors"}
	case "login":
		head = []string{"strategy", "resumes/s", "password logins/s", "CPU s/M resumes", "conns/shard max", "min", "errors"}
	default:
		head = []string{"strategy", r0.Unit, "p50 ms", "p99 ms", "p99.9 ms", "msgs/shard max", "min", "conns/shard max", "min", "CPU s/M", "errors"}
	}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, r := range rs {
		strat := r.Server.Strategy
		if strat == "" {
			strat = "(server's)"
		}
		cmax, cmin := spread(r.ShardConns)
		var row []string
		switch r.Scenario {
		case "idle":
			row = []string{strat, fmt.Sprint(r.Count), fmt.Sprintf("%.1f", r.Seconds), kib(r.RSSPerConn),
				opt(r.GoroutinesPerConn, "%.2f"), cmax, cmin, r.Probe, fmt.Sprint(r.Errors)}
		case "login":
			row = []string{strat, fmt.Sprintf("%.0f", r.Rate), fmt.Sprintf("%.1f", r.PasswordLogins), opt(r.CPUPerMillion, "%.0f"), cmax, cmin, fmt.Sprint(r.Errors)}
		default:
			mmax, mmin := spread(r.ShardMsgs)
			p50, p99, p999 := "-", "-", "-"
			if l := r.Latency; l != nil {
				p50, p99, p999 = fmt.Sprintf("%.2f", l.P50), fmt.Sprintf("%.2f", l.P99), fmt.Sprintf("%.2f", l.P999)
			}
			row = []string{strat, fmt.Sprintf("%.0f", r.Rate), p50, p99, p999, mmax, mmin, cmax, cmin, opt(r.CPUPerMillion, "%.1f"), fmt.Sprint(r.Errors)}
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()
	for _, r := range rs {
		for _, n := range r.Notes {
			prefix := ""
			if len(rs) > 1 {
				prefix = r.Server.Strategy + ": "
			}
			fmt.Fprintf(w, "  %s%s\n", prefix, n)
		}
	}
	if r0.Scenario != "idle" && r0.Scenario != "login" {
		fmt.Fprintf(w, "  %s counted in a %.1f s window; CPU s/M is server CPU seconds per million; latency is end to end, from the send time sealed in each message\n", r0.Unit, r0.Seconds)
	}
}

func spread(v []int64) (string, string) {
	if len(v) == 0 {
		return "-", "-"
	}
	return fmt.Sprint(slices.Max(v)), fmt.Sprint(slices.Min(v))
}

func kib(b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f KiB", b/1024)
}

func opt(v float64, f string) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf(f, v)
}
