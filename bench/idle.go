package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"securefastchat/client"
	"securefastchat/proto"
)

// perProcess is how many connections one load process holds: well under
// the open-file limit (20,000 on some machines, which cannot raise it).
func perProcess() int { return max(100, min(9000, openFileLimit()-100)) }

// openFileLimit is this process's open-file limit, which the processes it
// starts inherit.
func openFileLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 1 << 30
	}
	return int(rl.Cur)
}

// workerJob is what the bench sends an idle load process.
type workerJob struct {
	Addr     string       `json:"addr"`
	Key      string       `json:"key"`
	Loopback bool         `json:"loopback"`
	First    int          `json:"first"` // index of the first user, for source addresses
	Users    []workerUser `json:"users"`
}

type workerUser struct {
	Name  string `json:"name"`
	Token []byte `json:"token"`
}

// workerMsg is what an idle load process reports, one JSON object a line.
type workerMsg struct {
	Opened    int    `json:"opened,omitempty"`
	Ready     bool   `json:"ready,omitempty"`
	Failed    int    `json:"failed,omitempty"`
	Error     string `json:"error,omitempty"`
	ProbeSent int    `json:"probe_sent,omitempty"`
	ProbeGot  int    `json:"probe_got,omitempty"`
}

// worker is a running idle load process.
type worker struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Scanner
	count int
}

func (w *worker) next() (workerMsg, error) {
	if !w.out.Scan() {
		err := w.out.Err()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return workerMsg{}, fmt.Errorf("bench: a load process ended: %w", err)
	}
	var m workerMsg
	if err := json.Unmarshal(w.out.Bytes(), &m); err != nil {
		return m, fmt.Errorf("bench: a load process said %q", w.out.Text())
	}
	if m.Error != "" {
		return m, fmt.Errorf("bench: a load process failed: %s", m.Error)
	}
	return m, nil
}

// idle runs the idle scenario: the connections are held by separate load
// processes (so the server's process holds only its own side, and each
// process stays under the open-file limit); the server's memory and
// goroutines are read before and after.
func (r *run) idle(ctx context.Context, res *Result) error {
	cfg := r.cfg
	res.Unit = "conns"
	procs := cfg.Procs
	if procs == 0 {
		procs = (len(r.t.users) + perProcess() - 1) / perProcess()
	}
	if cfg.capped != "" {
		res.Notes = append(res.Notes, cfg.capped)
	}
	time.Sleep(500 * time.Millisecond) // let the fresh server settle
	before := r.t.rss()
	st0 := r.t.serverStats()
	var ws []*worker
	defer func() {
		// Closing a load process's input tells it to close its
		// connections and exit; one that does not within 30 s is killed.
		for _, w := range ws {
			w.in.Close()
		}
		for _, w := range ws {
			done := make(chan struct{})
			go func() { _ = w.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = w.cmd.Process.Kill()
				<-done
			}
		}
	}()
	per := int(math.Ceil(float64(len(r.t.users)) / float64(procs)))
	start := time.Now()
	for p := 0; p*per < len(r.t.users); p++ {
		us := r.t.users[p*per : min((p+1)*per, len(r.t.users))]
		job := workerJob{Addr: r.t.addr, Key: r.t.key, Loopback: r.t.loopback, First: p * per}
		for _, u := range us {
			job.Users = append(job.Users, workerUser{Name: u.name, Token: u.token})
		}
		cmd := exec.Command(cfg.Exe, "bench-worker")
		dieWithParent(cmd)
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("bench: starting a load process: %w", err)
		}
		w := &worker{cmd: cmd, in: in, out: bufio.NewScanner(out), count: len(us)}
		ws = append(ws, w)
		if err := json.NewEncoder(in).Encode(job); err != nil {
			return fmt.Errorf("bench: instructing a load process: %w", err)
		}
	}
	// Wait for every process to have opened its connections.
	var mu sync.Mutex
	opened := make([]int, len(ws))
	errc := make(chan error, len(ws))
	for i, w := range ws {
		go func() {
			for {
				m, err := w.next()
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				opened[i] = max(opened[i], m.Opened)
				mu.Unlock()
				if m.Ready {
					errc <- nil
					return
				}
			}
		}()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for waiting := len(ws); waiting > 0; {
		select {
		case err := <-errc:
			if err != nil {
				return err
			}
			waiting--
		case <-tick.C:
			mu.Lock()
			n := 0
			for _, o := range opened {
				n += o
			}
			mu.Unlock()
			r.progress("idle: %d of %d connections open (%d load processes)", n, len(r.t.users), len(ws))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	openSecs := time.Since(start).Seconds()
	r.progress("idle: %d connections open; holding them", len(r.t.users))
	time.Sleep(3 * time.Second)
	after := r.t.rss()
	st1 := r.t.serverStats()
	res.Count = int64(len(r.t.users))
	res.Seconds = openSecs
	if before > 0 && after > 0 {
		res.RSSBefore, res.RSSAfter = before, after
		res.RSSPerConn = float64(after-before) / float64(res.Count)
	}
	if st0 != nil && st1 != nil {
		res.GoroutinesPerConn = float64(statInt(st1, "goroutines")-statInt(st0, "goroutines")) / float64(res.Count)
		res.ShardConns = statInts(st1, "shard_conns")
		if on := statInt(st1, "online"); on != res.Count {
			res.Notes = append(res.Notes, fmt.Sprintf("the server counts %d online, not %d", on, res.Count))
		}
	}
	// The probe: 100 messages between idle sessions, all delivered?
	sent, got := 0, 0
	for _, w := range ws {
		fmt.Fprintf(w.in, "probe %d\n", max(1, 100/len(ws)))
	}
	for _, w := range ws {
		m, err := w.next()
		if err != nil {
			return err
		}
		sent += m.ProbeSent
		got += m.ProbeGot
	}
	res.Sent, res.Received = int64(sent), int64(got)
	res.Probe = fmt.Sprintf("%d/%d delivered", got, sent)
	procWord := "load processes"
	if len(ws) == 1 {
		procWord = "load process"
	}
	res.Notes = append(res.Notes, fmt.Sprintf("%d %s; connections opened in %.1f s from %d source addresses", len(ws), procWord, openSecs, min(len(sources), len(r.t.users))))
	if got != sent {
		return fmt.Errorf("bench: the probe delivered %d of %d messages between idle sessions", got, sent)
	}
	return nil
}

// Worker is the body of an idle load process (`securefastchat
// bench-worker`): it reads a job from in, opens and holds its
// connections, answers probes, and closes everything when in ends.
func Worker(in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	enc := json.NewEncoder(out)
	var encMu sync.Mutex
	say := func(m workerMsg) {
		encMu.Lock()
		defer encMu.Unlock()
		_ = enc.Encode(m)
	}
	if !sc.Scan() {
		return fmt.Errorf("bench-worker: no job on standard input")
	}
	var job workerJob
	if err := json.Unmarshal(sc.Bytes(), &job); err != nil {
		return fmt.Errorf("bench-worker: bad job: %w", err)
	}
	t := &target{addr: job.Addr, key: job.Key, loopback: job.Loopback}
	ctx := context.Background()
	conns := make([]*client.Conn, len(job.Users))
	var got sync.Map // msg id -> true, for the probe
	var gotN atomic.Int64
	var opened atomic.Int64
	stopTick := make(chan struct{})
	go func() {
		tk := time.NewTicker(500 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stopTick:
				return
			case <-tk.C:
				say(workerMsg{Opened: int(opened.Load())})
			}
		}
	}()
	onDelivery := func(d *client.Delivery) bool {
		if d.DM != nil {
			if _, dup := got.LoadOrStore(string(d.DM.MsgID), true); !dup {
				gotN.Add(1)
			}
		}
		return true
	}
	err := parallel(ctx, len(job.Users), 64, func(i int) error {
		u := &user{name: job.Users[i].Name, token: job.Users[i].Token}
		c, err := t.login(ctx, job.First+i, u, client.DialOptions{OnDelivery: onDelivery, Deliveries: 1})
		if err != nil {
			return err
		}
		conns[i] = c
		opened.Add(1)
		return nil
	}, nil)
	close(stopTick)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if err != nil {
		say(workerMsg{Error: err.Error()})
		return err
	}
	say(workerMsg{Opened: len(conns), Ready: true})
	for sc.Scan() {
		var n int
		if _, err := fmt.Sscanf(sc.Text(), "probe %d", &n); err != nil || len(conns) < 2 {
			continue
		}
		before := gotN.Load()
		sent := 0
		var body [64]byte
		for k := 0; k < n; k++ {
			a := mrand.IntN(len(conns))
			b := (a + 1 + mrand.IntN(len(conns)-1)) % len(conns)
			_, _ = rand.Read(body[:])
			m := proto.SendDM{To: []byte(job.Users[b].Name), MsgID: body[:proto.MsgIDLen], Kind: proto.KindText, Body: body[:]}
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			// An unchecked (version 1) send: the probe counts arrivals of
			// bodies nobody opens.
			_, _, err := conns[a].Request(pctx, func(buf []byte, id uint32) []byte { return m.AppendV1(buf, id) })
			cancel()
			if err == nil {
				sent++
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for gotN.Load()-before < int64(sent) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		say(workerMsg{ProbeSent: n, ProbeGot: int(gotN.Load() - before)})
	}
	return nil
}
