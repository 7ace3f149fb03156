package shard_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
	"securefastchat/shard"
)

const pw = "correct horse battery"

// raw speaks the protocol by hand, so a test can send what no client would.
type raw struct {
	t    testing.TB
	nc   net.Conn
	sess *proto.Session
	fr   *proto.FrameReader
	id   uint32
}

func dialTCP(t testing.TB, addr, from string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// dialRaw connects and completes the handshake.
func dialRaw(t testing.TB, s *server.Server) *raw {
	t.Helper()
	return dialRawWith(t, s, proto.ClientConfig{})
}

// dialRawWith is dialRaw with a client configuration (versions); the
// server's key is filled in.
func dialRawWith(t testing.TB, s *server.Server, cfg proto.ClientConfig) *raw {
	t.Helper()
	nc := dialTCP(t, s.Addr(), "")
	cfg.ServerKey = &s.Key.Public
	hs, err := proto.NewClientHandshake(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.WriteFrame(nc, hs.Hello()); err != nil {
		t.Fatal(err)
	}
	var buf [proto.MaxHelloLen]byte
	reply, err := proto.ReadSmallFrame(nc, buf[:])
	if err != nil {
		t.Fatal(err)
	}
	sess, _, err := hs.Finish(reply)
	if err != nil {
		t.Fatal(err)
	}
	return &raw{t: t, nc: nc, sess: sess, fr: proto.NewFrameReader(nc, 0)}
}

// seal returns the frame for msg, advancing the send counter.
func (r *raw) seal(msg []byte) []byte {
	f, err := r.sess.Seal(nil, msg)
	if err != nil {
		r.t.Fatal(err)
	}
	return f
}

func (r *raw) send(msg []byte) {
	if _, err := r.nc.Write(r.seal(msg)); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// recv returns the next message, skipping live pushes (presence).
func (r *raw) recv() (proto.MsgType, uint32, []byte, error) {
	for {
		_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		p, err := r.fr.Next()
		if err != nil {
			return 0, 0, nil, err
		}
		msg, err := r.sess.Open(nil, p)
		if err != nil {
			return 0, 0, nil, err
		}
		t, id, body, err := proto.ParseHeader(msg)
		if err == nil && (t == proto.TPresence || t == proto.TSignalMsg || t == proto.TBroadcastMsg) {
			continue
		}
		return t, id, body, err
	}
}

func (r *raw) nextID() uint32 { r.id++; return r.id }

func (r *raw) signup(user string) {
	id, err := client.NewIdentity()
	if err != nil {
		r.t.Fatal(err)
	}
	r.send((&proto.Signup{User: []byte(user), Password: []byte(pw), Keys: id.PublicKeys(strings.ToLower(user))}).Append(nil, r.nextID()))
	if typ, _, body, err := r.recv(); err != nil || typ != proto.TLoginOK {
		var e proto.Error
		e.Parse(body)
		r.t.Fatalf("signup %s: type %#x %v %s", user, typ, err, e.Message)
	}
}

func (r *raw) ping() error {
	r.send((&proto.Ping{Data: []byte("p")}).Append(nil, proto.TPing, r.nextID()))
	typ, _, _, err := r.recv()
	if err == nil && typ != proto.TPong {
		err = fmt.Errorf("got type %#x", typ)
	}
	return err
}

// expectClosed reads until the server closes the connection, within d.
func expectClosed(t *testing.T, nc net.Conn, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = nc.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, nc)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection still open after %v", d)
	}
	return time.Since(start)
}

// T1, T3, T4, T5, T6: bad frames before and after the handshake close the
// connection, nothing is stored, and other connections keep working.
func TestBadFramesClose(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Limits.SignupBurst = 100 })
	alice := testserver.Signup(t, s, "alice")
	bob := testserver.Signup(t, s, "bob")
	before := s.Set.Stats.LoginsOK.Load()
	preHandshake := map[string][]byte{
		"http get":         []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"tls client hello": {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03},
		"zero length":      {0, 0},
		"2 GB prefix":      {0x7f, 0xff, 0xff, 0xff, 1, 2, 3},
		"u32 max prefix":   {0xff, 0xff, 0xff, 0xff},
		"truncated":        append([]byte{0, 100}, make([]byte, 50)...),
	}
	random := make([]byte, 300)
	rand.Read(random)
	preHandshake["random"] = random
	for name, b := range preHandshake {
		nc := dialTCP(t, s.Addr(), "")
		nc.Write(b)
		if name == "truncated" {
			nc.(*net.TCPConn).CloseWrite()
		}
		if d := expectClosed(t, nc, 6*time.Second); d > 5500*time.Millisecond {
			t.Errorf("%s: closed after %v", name, d)
		}
	}
	postHandshake := map[string]func(r *raw) []byte{
		"zero length":       func(*raw) []byte { return []byte{0, 0} },
		"below the minimum": func(*raw) []byte { return []byte{0, 5, 1, 2, 3, 4, 5} },
		"0xFFFF garbage": func(*raw) []byte {
			b := make([]byte, 2+0xffff)
			binary.BigEndian.PutUint16(b, 0xffff)
			rand.Read(b[2:])
			return b
		},
		"truncated then EOF": func(r *raw) []byte { return r.seal([]byte("ping"))[:10] },
	}
	for name, f := range postHandshake {
		r := dialRaw(t, s)
		r.signup("u" + fmt.Sprint(len(name)))
		r.nc.Write(f(r))
		if name == "truncated then EOF" {
			r.nc.(*net.TCPConn).CloseWrite()
		}
		if d := expectClosed(t, r.nc, 2*time.Second); d > time.Second {
			t.Errorf("%s: closed after %v", name, d)
		}
	}
	// Others were not disturbed.
	if _, err := alice.SendText(context.Background(), "bob", "still fine"); err != nil {
		t.Fatal(err)
	}
	if m := <-testserver.Messages(bob); m.Text != "still fine" {
		t.Fatal("wrong message")
	}
	if got := s.Set.Stats.LoginsOK.Load() - before; got != int64(len(postHandshake)) {
		t.Fatalf("%d logins, want %d", got, len(postHandshake))
	}
	t.Logf("bad-input: %d pre-handshake and %d post-handshake variants closed; protocol errors %d, handshake failures %d",
		len(preHandshake), len(postHandshake), s.Set.Stats.ProtocolErrors.Load(), s.Set.Stats.HandshakeFailed.Load())
}

// T7: no common version gets the plaintext error, then the close.
func TestUnsupportedVersion(t *testing.T) {
	s := testserver.Start(t, nil)
	for _, hello := range [][]byte{
		func() []byte {
			h, _ := proto.NewClientHandshake(proto.ClientConfig{MinVersion: 7, MaxVersion: 9})
			return h.Hello()
		}(),
		append([]byte("SCH9"), make([]byte, 124)...),
	} {
		nc := dialTCP(t, s.Addr(), "")
		proto.WriteFrame(nc, hello)
		var buf [proto.MaxHelloLen]byte
		reply, err := proto.ReadSmallFrame(nc, buf[:])
		if err != nil || string(reply) != proto.VersionErrorReply {
			t.Fatalf("got %q %v", reply, err)
		}
		expectClosed(t, nc, time.Second)
	}
	// The client library reports it clearly and does not fall back.
	_, err := client.Dial(context.Background(), s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatalf("a normal client: %v", err)
	}
}

// T12, T13, T14: replayed, swapped, dropped and corrupted frames on a live
// connection close it; none is applied; other connections keep working.
func TestTamperedFramesClose(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Limits.SignupBurst = 100 })
	alice := testserver.Signup(t, s, "alice")
	bob := testserver.Signup(t, s, "bob")
	dm := func(r *raw, text string) []byte {
		return (&proto.SendDM{To: []byte("bob"), KeyID: bob.Identity().KeyID("bob"), MsgID: make([]byte, 16), Kind: proto.KindText, Body: []byte(text)}).Append(nil, r.nextID())
	}
	cases := map[string]func(r *raw) [][]byte{
		"replay": func(r *raw) [][]byte {
			f := r.seal((&proto.Ping{}).Append(nil, proto.TPing, r.nextID()))
			return [][]byte{f, f}
		},
		"swap": func(r *raw) [][]byte {
			a, b := r.seal(dm(r, "one")), r.seal(dm(r, "two"))
			return [][]byte{b, a}
		},
		"drop": func(r *raw) [][]byte {
			r.seal(dm(r, "dropped"))
			return [][]byte{r.seal(dm(r, "after the gap"))}
		},
		"flip ciphertext": func(r *raw) [][]byte { f := r.seal(dm(r, "flip")); f[len(f)-1] ^= 1; return [][]byte{f} },
		"flip tag":        func(r *raw) [][]byte { f := r.seal(dm(r, "flip")); f[3] ^= 0x80; return [][]byte{f} },
		"flip length": func(r *raw) [][]byte {
			f := r.seal(dm(r, "flip"))
			f[1]--
			return [][]byte{f}
		},
	}
	routed := s.Set.Stats.Routed.Load()
	for name, frames := range cases {
		r := dialRaw(t, s)
		r.signup("m" + strings.ReplaceAll(name, " ", "_"))
		if name == "replay" {
			f := frames(r)
			r.nc.Write(f[0])
			if typ, _, _, err := r.recv(); err != nil || typ != proto.TPong {
				t.Fatalf("first ping: %v", err)
			}
			r.nc.Write(f[1])
		} else {
			for _, f := range frames(r) {
				r.nc.Write(f)
			}
		}
		expectClosed(t, r.nc, 2*time.Second)
	}
	if got := s.Set.Stats.Routed.Load() - routed; got != 0 {
		t.Fatalf("%d tampered messages routed", got)
	}
	select {
	case m := <-testserver.Messages(bob):
		t.Fatalf("bob received %+v", m)
	default:
	}
	if _, err := alice.SendText(context.Background(), "bob", "fine"); err != nil {
		t.Fatal(err)
	}
}

// T17: after Close the server reads nothing more; unknown types get an
// error but leave the connection usable.
func TestCloseAndUnknownTypes(t *testing.T) {
	s := testserver.Start(t, nil)
	r := dialRaw(t, s)
	r.signup("alice")
	r.send(proto.AppendHeader(nil, 0x7e, r.nextID()))
	typ, _, body, err := r.recv()
	var e proto.Error
	if err != nil || typ != proto.TError || e.Parse(body) != nil || e.Code != proto.CodeUnsupported {
		t.Fatalf("unknown type: %#x %v %+v", typ, err, e)
	}
	if err := r.ping(); err != nil {
		t.Fatalf("connection unusable after an unknown type: %v", err)
	}
	r.send((&proto.Close{}).Append(nil, 0))
	r.send((&proto.Ping{}).Append(nil, proto.TPing, r.nextID()))
	for {
		typ, _, _, err := r.recv()
		if err != nil {
			break
		}
		if typ == proto.TPong {
			t.Fatal("answered a frame sent after Close")
		}
	}
}

// T2, T20: deadlines are absolute; trickling bytes does not extend them.
func TestDeadlines(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) {
		c.Limits.SignupBurst = 100
		c.Shard.HandshakeTimeout = 600 * time.Millisecond
		c.Shard.LoginTimeout = 1200 * time.Millisecond
		c.Shard.FrameTimeout = 600 * time.Millisecond
		c.Shard.IdleTimeout = 2 * time.Second
	})
	trickle := func(nc net.Conn, b []byte, every time.Duration, stop <-chan struct{}) {
		for _, c := range b {
			select {
			case <-stop:
				return
			case <-time.After(every):
			}
			if _, err := nc.Write([]byte{c}); err != nil {
				return
			}
		}
	}
	check := func(name string, nc net.Conn, start time.Time, deadline time.Duration, b []byte) {
		stop := make(chan struct{})
		go trickle(nc, b, 150*time.Millisecond, stop)
		expectClosed(t, nc, deadline+3*time.Second)
		close(stop)
		if d := time.Since(start); d < deadline-100*time.Millisecond || d > deadline+1500*time.Millisecond {
			t.Errorf("%s: closed after %v, deadline %v", name, d, deadline)
		}
	}
	// Slowloris in the handshake.
	h, _ := proto.NewClientHandshake(proto.ClientConfig{ServerKey: &s.Key.Public})
	hello, _ := proto.AppendFrame(nil, h.Hello())
	start := time.Now()
	check("handshake", dialTCP(t, s.Addr(), ""), start, 600*time.Millisecond, hello)
	// Slowloris after the handshake, before login.
	start = time.Now()
	r := dialRaw(t, s)
	check("login", r.nc, start, 1200*time.Millisecond, r.seal((&proto.Login{User: []byte("x"), Password: []byte("yyyyyyyy")}).Append(nil, 1)))
	// After login: a frame trickled byte by byte, and a truncated frame then silence.
	for _, name := range []string{"frame trickle", "truncated then silence"} {
		r := dialRaw(t, s)
		r.signup("u" + fmt.Sprint(len(name)))
		f := r.seal((&proto.Ping{Data: bytes.Repeat([]byte{1}, 60)}).Append(nil, proto.TPing, 9))
		start = time.Now()
		if name == "truncated then silence" {
			r.nc.Write(f[:20])
			f = nil
		}
		check(name, r.nc, start, 600*time.Millisecond, f)
	}
	// Idle after login: closed at the idle timeout.
	r = dialRaw(t, s)
	r.signup("idle")
	start = time.Now()
	expectClosed(t, r.nc, 5*time.Second)
	if d := time.Since(start); d < 1800*time.Millisecond {
		t.Errorf("idle connection closed after %v, idle timeout 2s", d)
	}
}

// localAddrs are loopback source addresses for load from several "hosts".
func localAddrs(n int) []string {
	var a []string
	for i := 0; i < n; i++ {
		a = append(a, fmt.Sprintf("127.0.0.%d", 2+i))
	}
	return a
}

// T19 and T11: 10,000 connections that never send a byte (from 40 loopback
// addresses), and a ClientHello replayed many times, are capped and reaped
// by the handshake deadline; a legitimate client logs in quickly meanwhile.
func TestIdleFlood(t *testing.T) {
	const perIP, ips = 250, 40
	s := testserver.Start(t, func(c *server.Config) {
		// Long enough that none is reaped before all 10,000 are dialled,
		// even on a loaded machine: this test counts those closed at the cap.
		c.Shard.HandshakeTimeout = 4 * time.Second
		c.Shard.LoginTimeout = 5 * time.Second
		c.Shard.HandshakeBurst = 100000 // this test is about the caps
		c.Limits.SignupBurst = 100
	})
	startRSS := rssKiB()
	var conns []net.Conn
	for _, ip := range localAddrs(ips) {
		for i := 0; i < perIP; i++ {
			conns = append(conns, dialTCP(t, s.Addr(), ip))
		}
	}
	// A recorded ClientHello, replayed: it gets a ServerHello but no session.
	h, _ := proto.NewClientHandshake(proto.ClientConfig{ServerKey: &s.Key.Public})
	const replays = 100
	for i := 0; i < replays; i++ {
		nc := dialTCP(t, s.Addr(), "127.0.0.250")
		proto.WriteFrame(nc, h.Hello())
		conns = append(conns, nc)
	}
	peakRSS := rssKiB()
	// Legitimate logins during the attack.
	var lat []time.Duration
	for i := 0; i < 20; i++ {
		start := time.Now()
		cfg := testserver.ClientConfig(t, s)
		cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.251")}}
			return d.DialContext(ctx, "tcp", addr)
		}
		c, err := client.Signup(context.Background(), cfg, fmt.Sprintf("legit%d", i), pw)
		if err != nil {
			t.Fatalf("legitimate signup during the attack: %v", err)
		}
		lat = append(lat, time.Since(start))
		c.Close()
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if lat[len(lat)-1] > time.Second {
		t.Errorf("legitimate login took %v during the attack", lat[len(lat)-1])
	}
	refused := s.Set.Stats.Refused.Load() + s.Set.Stats.Evicted.Load()
	if refused < int64(perIP*ips-4096) {
		t.Errorf("only %d connections closed at the cap of 4096", refused)
	}
	start := time.Now()
	var wg sync.WaitGroup
	var open atomic.Int64
	for _, nc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = nc.SetReadDeadline(time.Now().Add(8 * time.Second))
			if _, err := io.Copy(io.Discard, nc); errors.Is(err, os.ErrDeadlineExceeded) {
				open.Add(1)
			}
		}()
	}
	wg.Wait()
	if open.Load() != 0 {
		t.Fatalf("%d idle connections were not reaped", open.Load())
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Set.Unauthenticated() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := s.Set.Unauthenticated(); n != 0 {
		t.Fatalf("%d connections still counted as unauthenticated", n)
	}
	if s.Set.Stats.LoginsOK.Load() != 20 {
		t.Fatalf("%d logins, want 20 (replayed hellos must not log in)", s.Set.Stats.LoginsOK.Load())
	}
	t.Logf("dos: %d idle conns + %d replayed hellos -> %d closed at the cap, the rest reaped within %v of the check; legit login p50 %v p99 %v; test process RSS %d -> %d MiB (clients and server together)",
		perIP*ips, replays, refused, time.Since(start).Round(10*time.Millisecond), lat[len(lat)/2], lat[len(lat)-1], startRSS>>10, peakRSS>>10)
}

// rssKiB returns this process's resident set size in KiB.
func rssKiB() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			var n int64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:")), "%d", &n)
			return n
		}
	}
	return 0
}

// T21: a handshake flood from one address engages its token bucket; other
// addresses are unaffected.
func TestHandshakeRateLimit(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) {
		c.Shard.HandshakeBurst = 20
		c.Shard.HandshakeEvery = 50 * time.Millisecond
	})
	for i := 0; i < 300; i++ {
		nc := dialTCP(t, s.Addr(), "127.0.0.2")
		nc.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Set.Stats.Accepted.Load() < 300 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if r := s.Set.Stats.Refused.Load(); r < 200 {
		t.Fatalf("only %d of 300 refused", r)
	}
	cfg := testserver.ClientConfig(t, s)
	cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}
		return d.DialContext(ctx, "tcp", addr)
	}
	c, err := client.Signup(context.Background(), cfg, "other", pw)
	if err != nil {
		t.Fatalf("another address was limited too: %v", err)
	}
	c.Close()
	t.Logf("handshake flood: %d of 300 refused", s.Set.Stats.Refused.Load())
}

// T22: 200 parallel wrong-password logins run at most H hashes at once;
// the per-address limit answers the excess with rate_limited.
func TestLoginStorm(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) {
		c.HashConcurrency = 4
		c.Argon2.MemoryKiB = 8 * 1024 // enough work to overlap
		c.Shard.HandshakeBurst = 1000
	})
	testserver.Signup(t, s, "alice").Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[string]int{}
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := client.Dial(context.Background(), s.Addr(), client.DialOptions{})
			if err != nil {
				mu.Lock()
				codes["dial: "+err.Error()]++
				mu.Unlock()
				return
			}
			defer conn.Close()
			m := proto.Login{User: []byte("alice"), Password: []byte("wrong password")}
			_, _, err = conn.Request(context.Background(), func(b []byte, id uint32) []byte { return m.Append(b, id) })
			var re *proto.RemoteError
			mu.Lock()
			if errors.As(err, &re) {
				codes[re.Code.String()]++
			} else {
				codes[fmt.Sprint(err)]++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if m := s.Accounts.Hasher().MaxActive(); m > 4 {
		t.Fatalf("%d hashes ran at once, bound 4", m)
	}
	if codes["rate_limited"] < 150 || codes["invalid_credentials"] == 0 {
		t.Fatalf("outcomes: %v", codes)
	}
	t.Logf("auth: 200 parallel wrong logins -> %v; max concurrent hashes %d; process RSS %d MiB", codes, s.Accounts.Hasher().MaxActive(), rssKiB()>>10)
}

// A receiver that stops reading, or never acks, is cut off, and what was
// sent to it is queued: senders get Sent(queued), never a false
// "delivered", and are never blocked; the shard keeps serving everyone else.
func TestSlowConsumer(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) {
		c.Limits.SignupBurst = 100
		c.Shard.MaxPending = 256 << 10
		c.Shard.WriteTimeout = time.Second
		c.Shard.AckTimeout = 2 * time.Second
		c.Shard.MsgEvery = -1
	})
	alice := testserver.Signup(t, s, "alice")
	carol := testserver.Signup(t, s, "carol")
	for _, mode := range []string{"never reads", "reads but never acks"} {
		r := dialRaw(t, s)
		stuck := "stuck" + fmt.Sprint(len(mode))
		r.signup(stuck)
		if mode == "reads but never acks" {
			go io.Copy(io.Discard, r.nc)
		}
		n, size := 40, 50000 // overflows the output cap at once
		if mode == "reads but never acks" {
			n, size = 5, 1000 // fits every cap: only the ack timeout catches it
		}
		var wg sync.WaitGroup
		var delivered, queued atomic.Int64
		start := time.Now()
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				rc, err := alice.SendText(ctx, stuck, strings.Repeat("z", size))
				switch {
				case err != nil:
					t.Errorf("%s: %v", mode, err)
				case rc.Status == proto.StatusQueued:
					queued.Add(1)
				default:
					delivered.Add(1)
				}
			}()
		}
		// Meanwhile the shard serves others.
		if _, err := alice.SendText(context.Background(), "carol", "not stalled"); err != nil {
			t.Fatalf("%s: other traffic stalled: %v", mode, err)
		}
		<-testserver.Messages(carol)
		wg.Wait()
		if delivered.Load() != 0 || queued.Load() != int64(n) {
			t.Fatalf("%s: delivered %d queued %d", mode, delivered.Load(), queued.Load())
		}
		expectClosed(t, r.nc, 5*time.Second)
		if c, _, _ := s.Store.QueueLen(stuck); c != int64(n) {
			t.Fatalf("%s: %d messages in the queue, want %d", mode, c, n)
		}
		t.Logf("%s: %d sends queued within %v", mode, n, time.Since(start).Round(time.Millisecond))
	}
	if s.Set.Stats.SlowConsumers.Load() < 2 {
		t.Fatalf("slow consumers counted: %d", s.Set.Stats.SlowConsumers.Load())
	}
}

// Shutdown closes every client with a Close frame that says so.
func TestShutdownSaysSo(t *testing.T) {
	dir := t.TempDir()
	s, err := server.Start(testserver.Config(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	cfg := client.Config{Addr: s.Addr(), Home: t.TempDir(), KDF: client.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}, PingInterval: -1}
	c, err := client.Signup(context.Background(), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testserver.Stop(t, s)
	<-c.Conn().Done()
	var ce *client.ClosedError
	if !errors.As(c.Conn().Err(), &ce) || ce.Reason != proto.CloseShutdown {
		t.Fatalf("client saw %v", c.Conn().Err())
	}
}

// (r *raw) login resumes a session with a token.
func (r *raw) resume(user string, token []byte) {
	r.send((&proto.Resume{User: []byte(user), Token: token}).Append(nil, r.nextID()))
	if typ, _, _, err := r.recv(); err != nil || typ != proto.TLoginOK {
		r.t.Fatalf("resume: %#x %v", typ, err)
	}
}

// F6: a sender that disconnects at any byte of a message frame leaves
// nothing stored; one that disconnects after the commit but before the ack
// arrives resends with the same msg_id, and the message is stored once.
func TestSenderCutMidFrame(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) {
		c.Limits.SignupBurst = 100
		c.Limits.ResumeBurst = 1000
		c.Shard.HandshakeBurst = 1000
	})
	bob := testserver.Signup(t, s, "bob")
	bob.Close()
	r := dialRaw(t, s)
	id, _ := client.NewIdentity()
	r.send((&proto.Signup{User: []byte("alice"), Password: []byte(pw), Keys: id.PublicKeys("alice")}).Append(nil, r.nextID()))
	_, _, body, err := r.recv()
	var ok proto.LoginOK
	if err != nil || ok.Parse(body) != nil {
		t.Fatal(err)
	}
	token := append([]byte(nil), ok.Token...)
	msgID := bytes.Repeat([]byte{0x42}, 16)
	dm := (&proto.SendDM{To: []byte("bob"), KeyID: bob.Identity().KeyID("bob"), MsgID: msgID, Kind: proto.KindText, Body: bytes.Repeat([]byte{9}, 120)}).Append(nil, 1)
	frameLen := len(r.seal(dm))
	r.nc.Close()
	cuts := 0
	for k := 1; k < frameLen; k++ {
		c := dialRaw(t, s)
		c.resume("alice", token)
		c.nc.Write(c.seal(dm)[:k])
		c.nc.Close()
		cuts++
	}
	// The server has seen every cut connection end.
	deadline := time.Now().Add(5 * time.Second)
	for s.Set.Shard(0).Conns()+s.Set.Shard(1).Conns() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n, _, _ := s.Store.QueueLen("bob"); n != 0 {
		t.Fatalf("a partial frame was stored: %d queued", n)
	}
	// Whole frame, then the connection is cut before the ack is read.
	c := dialRaw(t, s)
	c.resume("alice", token)
	c.nc.Write(c.seal(dm))
	c.nc.Close()
	for n, _, _ := s.Store.QueueLen("bob"); n != 1 && time.Now().Before(deadline); n, _, _ = s.Store.QueueLen("bob") {
		time.Sleep(5 * time.Millisecond)
	}
	// The retry with the same msg_id is stored once and answered with the
	// same id.
	var ids []uint64
	for i := 0; i < 2; i++ {
		c := dialRaw(t, s)
		c.resume("alice", token)
		c.send(dm)
		typ, _, body, err := c.recv()
		var sent proto.Sent
		if err != nil || typ != proto.TSent || sent.Parse(body) != nil || sent.Status != proto.StatusQueued {
			t.Fatalf("retry %d: %#x %v", i, typ, err)
		}
		ids = append(ids, sent.ServerID)
	}
	if n, _, _ := s.Store.QueueLen("bob"); n != 1 || ids[0] != ids[1] {
		t.Fatalf("%d stored, ids %v", n, ids)
	}
	t.Logf("faults: F6 sender cut at %d byte offsets of one frame: 0 stored; cut after the commit then retried twice: stored once (id %d)", cuts, ids[0])
}

// TestSendsCannotListNames: a stranger's first message to a name costs a
// key lookup whether the name exists (online or away) or not, so once
// the budget is spent every name answers the same: sends cannot tell who
// has an account. Messages to someone one has written to cost nothing.
func TestSendsCannotListNames(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Limits.LookupBurst = 4; c.Limits.SignupBurst = 100 })
	mallory := testserver.Signup(t, s, "mallory")
	testserver.Signup(t, s, "online") // stays online
	testserver.Signup(t, s, "away").Close()
	friend := testserver.Signup(t, s, "friend")
	if _, err := friend.SendText(ctxT(t), "mallory", "hi mallory"); err != nil {
		t.Fatal(err)
	}
	send := func(to string) error {
		id := client.NewMsgID()
		m := proto.SendDM{To: []byte(to), MsgID: id[:], Kind: proto.KindText, Body: make([]byte, 64)}
		_, _, err := mallory.Conn().Request(ctxT(t), func(b []byte, rid uint32) []byte { return m.AppendV1(b, rid) }) // (no key id: the server cannot refuse it as sealed for other keys)
		return err
	}
	// The budget of 4: one existing name online, one away, two that do
	// not exist.
	if err := send("online"); err != nil {
		t.Fatalf("to online: %v", err)
	}
	if err := send("away"); err != nil {
		t.Fatalf("to away: %v", err)
	}
	for _, n := range []string{"ghost1", "ghost2"} {
		if err := send(n); !errors.Is(err, proto.CodeNoSuchRecipient) {
			t.Fatalf("to %s: %v", n, err)
		}
	}
	// Spent: every new name answers the same.
	var answers []string
	for _, n := range []string{"friend2", "ghost3", "away2"} {
		err := send(n)
		if !errors.Is(err, proto.CodeRateLimited) {
			t.Fatalf("to %s after the budget: %v", n, err)
		}
		answers = append(answers, strings.Split(err.Error(), "retry in")[0])
	}
	testserver.Signup(t, s, "friend2").Close()
	if err := send("friend2"); !errors.Is(err, proto.CodeRateLimited) {
		t.Fatalf("to an existing name after the budget: %v", err)
	}
	if answers[0] != answers[1] || answers[1] != answers[2] {
		t.Fatalf("answers differ: %q", answers)
	}
	// Those already written to, or who wrote, cost nothing.
	for _, n := range []string{"online", "away", "friend"} {
		if err := send(n); err != nil {
			t.Fatalf("to %s, a known relation, after the budget: %v", n, err)
		}
	}
}

// TestRequestsRevealNoPresence: a stranger's message (to someone who has
// not written to the stranger, nor shares a group) is stored first and
// answered "queued" whether the receiver is online or not, so sends are no
// presence oracle, even with presence off; the receiver online still gets
// it at once. Once the receiver writes back, messages go live and answer
// "delivered".
func TestRequestsRevealNoPresence(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Shard.Presence = shard.PresenceOff; c.Limits.SignupBurst = 100 })
	mallory := testserver.Signup(t, s, "mallory")
	online := testserver.Signup(t, s, "online")
	testserver.Signup(t, s, "away").Close()
	for _, to := range []string{"online", "away", "online"} {
		r, err := mallory.SendText(ctxT(t), to, "hello")
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != proto.StatusQueued {
			t.Fatalf("a stranger's message to %s answered %d, want queued (%d)", to, r.Status, proto.StatusQueued)
		}
	}
	for i := 0; i < 2; i++ {
		if m := recvOne(t, online); m.From != "mallory" {
			t.Fatalf("online got %+v", m)
		}
	}
	// online answers: mallory is no longer a stranger to them.
	if _, err := online.SendText(ctxT(t), "mallory", "who is this?"); err != nil {
		t.Fatal(err)
	}
	recvOne(t, mallory)
	r, err := mallory.SendText(ctxT(t), "online", "a friend")
	if err != nil || r.Status != proto.StatusDelivered {
		t.Fatalf("after the reply: %+v %v", r, err)
	}
}
