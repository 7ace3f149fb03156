package bench

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"securefastchat/client"
	"securefastchat/internal/passwd"
	"securefastchat/internal/server"
	"securefastchat/proto"
	"securefastchat/store"
)

// user is one bench account.
type user struct {
	name     string
	token    []byte
	id       *client.Identity
	password string
	// devices are the user's devices besides its first (--devices): each
	// logs in with its own session.
	devices []*user
	dev     uint64 // a device's id in its account's list (set with --devices)
}

// target is the server under load.
type target struct {
	settings Settings
	addr     string
	key      string // fingerprint
	pid      int
	loopback bool
	users    []*user
	password string

	cmd     *exec.Cmd
	dir     string
	stats   chan map[string]any
	logMu   sync.Mutex
	logTail []string
	exited  chan struct{}
}

// openTarget starts the embedded server with the scenario's users, or
// signs them up on the running one.
func (r *run) openTarget(ctx context.Context, strategy string) (*target, error) {
	n := r.usersNeeded()
	pw := "bench-" + hex.EncodeToString(randBytes(8))
	if r.cfg.Server == "" {
		return r.startEmbedded(ctx, strategy, n, pw)
	}
	t := &target{addr: r.cfg.Server, key: r.cfg.ServerKey, pid: r.cfg.ServerPID, password: pw,
		settings: Settings{Addr: r.cfg.Server}}
	host, _, err := net.SplitHostPort(t.addr)
	if err != nil {
		return nil, fmt.Errorf("%w: --server %q: %v", ErrBadConfig, t.addr, err)
	}
	ip := net.ParseIP(host)
	t.loopback = ip != nil && ip.IsLoopback() || host == "localhost"
	if t.key == "" {
		// First contact: pin the key the server presents now, before the
		// load's connections, which all expect it.
		c, err := t.dial(ctx, 0, client.DialOptions{})
		if err != nil {
			return nil, err
		}
		t.key = c.ServerKey().Fingerprint()
		c.Close()
	}
	if err := r.signupUsers(ctx, t, n); err != nil {
		return nil, err
	}
	return t, nil
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return b
}

func (r *run) startEmbedded(ctx context.Context, strategy string, n int, pw string) (*target, error) {
	argon := r.cfg.Argon2
	if argon == "" {
		argon = passwd.Default.String()
	}
	params, err := passwd.ParseParams(argon)
	if err != nil {
		return nil, fmt.Errorf("%w: --argon2: %v", ErrBadConfig, err)
	}
	dir, err := os.MkdirTemp("", "securefastchat-bench-")
	if err != nil {
		return nil, err
	}
	t := &target{dir: dir, loopback: true, password: pw, stats: make(chan map[string]any, 1), exited: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			t.close()
		}
	}()
	if err := r.seed(ctx, t, n, params); err != nil {
		return nil, err
	}
	args := []string{"serve", "--data", dir, "--listen", "127.0.0.1:0",
		"--shards", strconv.Itoa(r.cfg.Shards), "--strategy", strategy, "--argon2", argon,
		"--msg-every", "0", "--group-change-every", "0", "--key-lookups", "1000000", "--max-unauth", "8192",
		"--log-format", "json"}
	if !params.AtLeast(passwd.Floor) {
		args = append(args, "--insecure-weak-argon2")
	}
	if prof := r.cfg.ServerProfile; prof != "" {
		if len(r.cfg.Strategies) > 1 {
			prof += "." + strategy
		}
		args = append(args, "--cpuprofile", prof)
	}
	t.cmd = exec.Command(r.cfg.Exe, args...)
	dieWithParent(t.cmd)
	t.cmd.Stdout = io.Discard
	stderr, err := t.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := t.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: starting the embedded server: %w", err)
	}
	t.pid = t.cmd.Process.Pid
	addrCh := make(chan string, 1)
	go t.readLog(stderr, addrCh, r.cfg.ServerLog)
	select {
	case t.addr = <-addrCh:
	case <-t.exited:
		return nil, fmt.Errorf("bench: the embedded server exited: %s", t.tail())
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("bench: the embedded server did not start in 30 s: %s", t.tail())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	kp, err := server.LoadKey(dir)
	if err != nil {
		return nil, err
	}
	t.key = kp.Public.Fingerprint()
	t.settings = Settings{Addr: t.addr, Embedded: true, Shards: r.cfg.Shards, Strategy: strategy, Argon2: params.String(),
		Limits: "message and group change limits off, key lookups 1,000,000/15 min; other throttles as shipped"}
	ok = true
	return t, nil
}

// seed writes the users, their keys and a session each straight into the
// embedded server's store before it starts: signing up thousands of users
// through argon2 would take longer than the benchmark.
func (r *run) seed(ctx context.Context, t *target, n int, params passwd.Params) error {
	h, err := passwd.NewHasher(params, 1, true)
	if err != nil {
		return err
	}
	phc, err := h.Hash(ctx, []byte(t.password))
	if err != nil {
		return err
	}
	st, err := store.Open(filepath.Join(t.dir, server.DBFileName), nil)
	if err != nil {
		return err
	}
	defer st.Close()
	now := time.Now()
	var us []*store.User
	var ss []*store.Session
	for i := 0; i < n; i++ {
		if i%1000 == 0 {
			r.progress("%s: making keys for user %d of %d", r.cfg.Scenario, i, n)
		}
		id, err := client.NewIdentity()
		if err != nil {
			return err
		}
		u := &user{name: fmt.Sprintf("b%06d", i), token: randBytes(proto.TokenLen), id: id, password: t.password}
		k := id.PublicKeys(u.name)
		su := &store.User{Name: u.name, Display: u.name, PasswordHash: phc,
			BoxKey: k.BoxKey, SignKey: k.SignKey, KeySig: k.KeySig, Created: now}
		us = append(us, su)
		ss = append(ss, &store.Session{TokenHash: store.HashToken(u.token), User: u.name, Created: now, LastSeen: now, Device: store.FirstDevice(su)})
		t.users = append(t.users, u)
	}
	if err := st.CreateUsers(us, ss); err != nil {
		return err
	}
	if r.cfg.Devices < 2 {
		return nil
	}
	ss = ss[:0]
	first, step := 1, 2 // the receivers of the dm pairs
	if r.cfg.Scenario == "fanout" {
		first, step = 0, 1 // every member
	}
	for i := first; i < n; i += step {
		extra, err := seedDevices(st, t.users[i], r.cfg.Devices, now)
		if err != nil {
			return err
		}
		ss = append(ss, extra...)
	}
	return st.CreateUsers(nil, ss)
}

// seedDevices writes u's device list: its first device, and devices-1
// more, each with a session. The devices share the first one's box key,
// so the load can open what each one gets with one key; each has its own
// sign key and id, so the server routes to each as to a device of its
// own.
func seedDevices(st *store.Store, u *user, devices int, now time.Time) ([]*store.Session, error) {
	keys := u.id.PublicKeys(u.name)
	stmt := &proto.DeviceStatement{User: []byte(u.name), Op: proto.DeviceAdd, DeviceID: proto.KeyRecordID(&keys), Name: []byte("first"),
		BoxKey: keys.BoxKey, SignKey: keys.SignKey, Time: now.Unix()}
	var ss []*store.Session
	u.dev = stmt.DeviceID
	for seq := 0; seq < devices; seq++ {
		if seq > 0 {
			pub, _, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return nil, err
			}
			next := &proto.DeviceStatement{User: stmt.User, Seq: uint32(seq), Prev: stmt.Hash(), Op: proto.DeviceAdd, Name: []byte(fmt.Sprint("device ", seq+1)),
				BoxKey: keys.BoxKey, SignKey: pub, Time: now.Unix()}
			next.DeviceID = proto.KeyRecordID(&proto.Keys{BoxKey: next.BoxKey, SignKey: next.SignKey})
			stmt = next
			d := &user{name: u.name, token: randBytes(proto.TokenLen), id: u.id, dev: stmt.DeviceID}
			u.devices = append(u.devices, d)
			ss = append(ss, &store.Session{TokenHash: store.HashToken(d.token), User: u.name, Created: now, LastSeen: now, Device: stmt.DeviceID})
		}
		stmt.Sign(u.id.Sign)
		if err := st.AppendDevice(u.name, stmt.Seq, stmt.Append(nil)); err != nil {
			return nil, err
		}
	}
	return ss, nil
}

// signupUsers signs the users up on a running server, as any client would
// (each one costs the server a password hash).
func (r *run) signupUsers(ctx context.Context, t *target, n int) error {
	prefix := "b" + hex.EncodeToString(randBytes(3)) + "_"
	t.users = make([]*user, n)
	var mu sync.Mutex
	var firstErr error
	var done int
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				id, err := client.NewIdentity()
				u := &user{name: fmt.Sprintf("%s%d", prefix, i), id: id, password: t.password}
				var conn *client.Conn
				if err == nil {
					conn, err = t.dial(ctx, i, client.DialOptions{})
				}
				if err == nil {
					var ok *proto.LoginOK
					ok, err = conn.Signup(ctx, u.name, u.password, id.PublicKeys(u.name))
					if err == nil {
						u.token = append([]byte(nil), ok.Token...)
					}
					conn.Close()
				}
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("bench: signing up %s on %s: %w", u.name, t.addr, err)
				}
				t.users[i] = u
				done++
				if done%100 == 0 {
					r.progress("%s: signed up %d of %d users", r.cfg.Scenario, done, n)
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop || ctx.Err() != nil {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	var re *proto.RemoteError
	if errors.As(firstErr, &re) && re.Code == proto.CodeRateLimited {
		firstErr = fmt.Errorf("%w (the server limits sign-ups per address; bench a server on this machine, or use --embedded)", firstErr)
	}
	return firstErr
}

// sources are the loopback addresses load connections come from, so that
// per-address limits see many clients, as they would in production.
var sources = func() []net.IP {
	var ips []net.IP
	for i := 2; i < 255; i++ {
		ips = append(ips, net.IPv4(127, 0, 0, byte(i)))
	}
	return ips
}()

// dial connects load connection i (which picks its source address) and
// runs the handshake, pinning the server's key.
func (t *target) dial(ctx context.Context, i int, opts client.DialOptions) (*client.Conn, error) {
	opts.ServerKey = t.key
	if t.loopback {
		src := &net.TCPAddr{IP: sources[i%len(sources)]}
		opts.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: src}
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	return client.Dial(ctx, t.addr, opts)
}

// login dials and resumes user u's session.
func (t *target) login(ctx context.Context, i int, u *user, opts client.DialOptions) (*client.Conn, error) {
	c, err := t.dial(ctx, i, opts)
	if err != nil {
		return nil, err
	}
	if _, err := c.Resume(ctx, u.name, u.token); err != nil {
		c.Close()
		return nil, fmt.Errorf("bench: resuming %s: %w", u.name, err)
	}
	return c, nil
}

// readLog follows the embedded server's JSON log: the listening address,
// stats lines, and a tail for error messages.
func (t *target) readLog(r io.Reader, addr chan<- string, copyTo io.Writer) {
	defer close(t.exited)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if copyTo != nil {
			fmt.Fprintf(copyTo, "%s\n", line)
		}
		var m map[string]any
		if json.Unmarshal(line, &m) != nil {
			continue
		}
		switch m["msg"] {
		case "serving":
			if a, ok := m["addr"].(string); ok {
				select {
				case addr <- a:
				default:
				}
			}
		case "stats":
			select {
			case t.stats <- m:
			default:
			}
		}
		t.logMu.Lock()
		t.logTail = append(t.logTail, string(line))
		if len(t.logTail) > 20 {
			t.logTail = t.logTail[1:]
		}
		t.logMu.Unlock()
	}
}

func (t *target) tail() string {
	t.logMu.Lock()
	defer t.logMu.Unlock()
	return strings.Join(t.logTail, "\n")
}

// serverStats asks the embedded server for its counters (SIGUSR1); nil if
// they cannot be had.
func (t *target) serverStats() map[string]any {
	if t.cmd == nil {
		return nil
	}
	select {
	case <-t.stats: // a stale one
	default:
	}
	if t.cmd.Process.Signal(syscall.SIGUSR1) != nil {
		return nil
	}
	select {
	case m := <-t.stats:
		return m
	case <-time.After(5 * time.Second):
		return nil
	}
}

func statInts(m map[string]any, key string) []int64 {
	v, _ := m[key].([]any)
	var out []int64
	for _, x := range v {
		f, _ := x.(float64)
		out = append(out, int64(f))
	}
	return out
}

func statInt(m map[string]any, key string) int64 {
	f, _ := m[key].(float64)
	return int64(f)
}

// cpu returns the server's CPU seconds so far, or -1 if unknown.
func (t *target) cpu() float64 {
	if t.pid == 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", t.pid))
	if err != nil {
		return -1
	}
	// Fields after the command name (which may hold spaces): utime is the
	// 14th field of the line, stime the 15th.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return -1
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	k, _ := strconv.ParseFloat(f[12], 64)
	return (u + k) / 100 // USER_HZ is 100 on Linux
}

// rss returns the server's resident memory in bytes, or -1 if unknown.
func (t *target) rss() int64 {
	if t.pid == 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", t.pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return -1
}

// window measures the server around a scenario's measured window.
type window struct {
	t     *target
	start time.Time
	cpu0  float64
	msgs0 []int64
}

func (t *target) begin() *window {
	w := &window{t: t, cpu0: t.cpu()}
	if m := t.serverStats(); m != nil {
		w.msgs0 = statInts(m, "shard_msgs")
	}
	w.start = time.Now()
	return w
}

// end closes the window and fills res's per-shard and CPU fields.
func (w *window) end(res *Result) {
	res.Seconds = time.Since(w.start).Seconds()
	if c := w.t.cpu(); c >= 0 && w.cpu0 >= 0 {
		res.CPUSeconds = c - w.cpu0
	}
	if m := w.t.serverStats(); m != nil {
		res.ShardConns = statInts(m, "shard_conns")
		msgs := statInts(m, "shard_msgs")
		if len(msgs) == len(w.msgs0) {
			for i := range msgs {
				msgs[i] -= w.msgs0[i]
			}
		}
		res.ShardMsgs = msgs
	}
}

// close stops the embedded server and removes its data.
func (t *target) close() {
	if t.cmd != nil && t.cmd.Process != nil {
		_ = t.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-t.exited: // the log ends when the process does
		case <-time.After(30 * time.Second):
			_ = t.cmd.Process.Kill()
			<-t.exited
		}
		_ = t.cmd.Wait()
	}
	if t.dir != "" {
		os.RemoveAll(t.dir)
	}
}
