package shard

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"securefastchat/internal/account"
	"securefastchat/internal/passwd"
	"securefastchat/proto"
	"securefastchat/store"
)

// discardConn is a net.Conn whose writes succeed at once and whose reads
// block until Close, so the benchmark measures the server's work alone.
type discardConn struct{ closed chan struct{} }

func (c discardConn) Read([]byte) (int, error)         { <-c.closed; return 0, io.EOF }
func (c discardConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c discardConn) Close() error                     { return nil }
func (c discardConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c discardConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (c discardConn) SetDeadline(time.Time) error      { return nil }
func (c discardConn) SetReadDeadline(time.Time) error  { return nil }
func (c discardConn) SetWriteDeadline(time.Time) error { return nil }

// benchSet builds a set of two shards on a fresh store, with no message
// limits, and returns it with its store and static key.
func benchSet(b *testing.B) (*Set, *store.Store, proto.KeyPair) {
	st, err := store.Open(filepath.Join(b.TempDir(), "db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	h, err := passwd.NewHasher(passwd.Weak, 1, true)
	if err != nil {
		b.Fatal(err)
	}
	static, _ := proto.NewKeyPair(rand.Reader)
	s, err := New(Options{Shards: 2, Static: &static, Accounts: benchAccounts{account.New(st, account.Options{Hasher: h})}, Store: st,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Limits: Limits{MsgEvery: -1}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Shutdown(context.Background()) })
	return s, st, static
}

// benchUser makes an account with fresh keys and returns it with its sign
// key.
func benchUser(b *testing.B, st *store.Store, name string) (*store.User, ed25519.PrivateKey) {
	keys, _ := proto.NewKeyPair(rand.Reader)
	_, sign, _ := ed25519.GenerateKey(rand.Reader)
	u := &store.User{Name: name, Display: name, BoxKey: keys.Public.Bytes(), SignKey: sign.Public().(ed25519.PublicKey), KeySig: make([]byte, 64)}
	if err := st.CreateUser(u); err != nil {
		b.Fatal(err)
	}
	return u, sign
}

// benchLogin makes a connection of user's device dev on a shard of s,
// logged in with an empty queue, speaking version v (0: the newest), and
// returns it with the client side of its session.
func benchLogin(b *testing.B, s *Set, static *proto.KeyPair, shard int, user string, dev uint64, v uint8) (*conn, *proto.Session) {
	ch, _ := proto.NewClientHandshake(proto.ClientConfig{ServerKey: &static.Public, MaxVersion: v})
	reply, ss, err := proto.ServerHandshake(proto.ServerConfig{Static: static}, ch.Hello())
	if err != nil {
		b.Fatal(err)
	}
	cs, _, err := ch.Finish(reply)
	if err != nil {
		b.Fatal(err)
	}
	c := newConn(s.shards[shard], discardConn{closed: make(chan struct{})}, "127.0.0.1")
	c.sess, c.authed, c.user, c.dev = ss, true, user, dev
	c.seq = s.seqs.of(c.box())
	c.backlog, c.barrier = false, false // logged in with an empty queue
	s.dir.register(c)
	return c, cs
}

// benchPair builds a set with two logged-in connections on different
// shards, each with the client side of its session.
func benchPair(b *testing.B) (s *Set, sender, receiver *conn, sendC, recvC *proto.Session) {
	s, st, static := benchSet(b)
	mk := func(shard int, user string) (*conn, *proto.Session) {
		u, _ := benchUser(b, st, user)
		return benchLogin(b, s, &static, shard, user, store.FirstDevice(u), 0)
	}
	sender, sendC = mk(0, "alice")
	receiver, recvC = mk(1, "bob")
	// They have written to each other before, and logged in since: they
	// are contacts (a stranger's message would be stored first).
	for _, pair := range [][2]string{{"bob", "alice"}, {"alice", "bob"}} {
		if err := st.AddContact(pair[0], pair[1]); err != nil {
			b.Fatal(err)
		}
	}
	sender.loadContacts()
	receiver.loadContacts()
	return
}

// BenchmarkDMPath measures one direct message through the server: open
// the sender's frame, parse, stamp, route to the receiver's shard, seal it
// for the receiver and write it; then open the receiver's ack, match it
// and seal the Sent for the sender. The client-side sealing of the two
// frames is included (it is what a client does per message).
func BenchmarkDMPath(b *testing.B) {
	s, sender, receiver, sendC, recvC := benchPair(b)
	body := make([]byte, 256+proto.SealedOverhead)
	msgID := make([]byte, 16)
	dm := proto.SendDM{To: []byte("bob"), KeyID: receiver.dev, MsgID: msgID, Kind: proto.KindText, Body: body}
	var msg, frame, plain []byte
	var ids [1]uint64
	// A client acks a delivery once it has it: the ack of a message goes
	// after window more are sent, by which time it is pending, as on a
	// busy connection.
	const window = 16
	var sent [window]uint64
	n := 0 // messages sent
	plain = make([]byte, 0, proto.MaxFrameLen)
	run := func(c *conn, cs *proto.Session) {
		frame, _ = cs.Seal(frame[:0], msg)
		p, err := c.sess.Open(plain[:0], frame[proto.FrameHeaderLen:])
		if err != nil {
			b.Fatal(err)
		}
		c.handle(p)
	}
	ack := func(id uint64) {
		for receiver.acks.waiting.Load() == 0 { // a client acks only what it got
			runtime.Gosched()
		}
		ids[0] = id
		msg = (&proto.Ack{ServerIDs: ids[:]}).Append(msg[:0], 0)
		run(receiver, recvC)
	}
	one := func() {
		if n >= window {
			ack(sent[n%window])
		}
		msg = dm.Append(msg[:0], uint32(n))
		run(sender, sendC)
		sent[n%window] = receiver.seq.Load() // the receiver's number for it
		n++
	}
	for i := 0; i < 1000; i++ { // warm the pools
		one()
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		one()
	}
	b.StopTimer()
	for k := n - window; k < n; k++ {
		ack(sent[k%window])
	}
	waitDelivered(b, s, int64(n))
}

func waitDelivered(b *testing.B, s *Set, n int64) {
	for s.Stats.Delivered.Load() < n {
		time.Sleep(10 * time.Microsecond)
	}
}

// TestDMPathAllocs keeps the steady-state path allocation-free.
func TestDMPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop buffers on purpose; .ci/run checks this without it")
	}
	res := testing.Benchmark(BenchmarkDMPath)
	if res.N == 0 {
		t.Fatal("benchmark did not run")
	}
	t.Logf("DM path: %s, %d allocs/op, %d B/op", res.T/time.Duration(res.N), res.AllocsPerOp(), res.AllocedBytesPerOp())
	if res.AllocsPerOp() != 0 {
		t.Fatalf("%d allocations per message on the steady-state path", res.AllocsPerOp())
	}
}

// benchAccounts gives the benchmark's set the account service, as
// internal/server does.
type benchAccounts struct{ *account.Service }

func benchSession(r *account.Result, err error) (*Session, error) {
	if err != nil {
		return nil, err
	}
	return &Session{User: r.User, Display: r.Display, Token: r.Token, Expires: r.Expires, Device: r.Device}, nil
}

func (a benchAccounts) Devices(canon string) (*DeviceSet, error) {
	key, all, ids, ok, err := a.Service.Devices(canon)
	if err != nil || !ok {
		return nil, err
	}
	return &DeviceSet{Key: key, All: all, IDs: ids}, nil
}

func (a benchAccounts) Signup(ctx context.Context, addr string, user, password []byte, keys *proto.Keys, invite []byte, checked bool) (*Session, error) {
	return benchSession(a.Service.Signup(ctx, addr, user, password, keys, invite, checked))
}

func (a benchAccounts) Login(ctx context.Context, addr string, user, password []byte) (*Session, error) {
	return benchSession(a.Service.Login(ctx, addr, user, password))
}

func (a benchAccounts) Resume(addr string, user, token []byte) (*Session, error) {
	return benchSession(a.Service.Resume(addr, user, token))
}

func (a benchAccounts) Recover(ctx context.Context, addr string, user, password []byte, keys *proto.Keys, statement []byte) (*Session, error) {
	return benchSession(a.Service.Recover(ctx, addr, user, password, keys, statement))
}

func (a benchAccounts) LoginDevice(addr string, user []byte, deviceID uint64, verify func(ed25519.PublicKey) bool) (*Session, error) {
	return benchSession(a.Service.LoginDevice(addr, user, deviceID, verify))
}
