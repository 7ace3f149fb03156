package bench

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"securefastchat/client"
	"securefastchat/proto"
)

// member is one receiving member of the fan-out group.
type member struct {
	u        *user
	c        *client.Conn
	others   []*member // the member's other devices (--devices)
	g        *fanGroup
	n        int64 // deliveries seen, on the reader goroutine only
	received atomic.Int64
	inWindow atomic.Int64
}

// fanGroup is what the members share: the group, its sender's signing key
// and the epoch keys.
type fanGroup struct {
	name    string
	owner   *client.Client
	signKey ed25519.PublicKey
	phase   atomic.Int32

	mu   sync.Mutex
	keys map[uint32]*[proto.GroupKeyLen]byte
	errs atomic.Int64
	err  error
}

// verifyEvery: members check the sender's signature on one delivery in
// this many. Every delivery is decrypted and its envelope checked; the
// signatures are left mostly unchecked so that the load's two cores go to
// the server rather than to Ed25519 (a real member checks each one).
const verifyEvery = 64

func (g *fanGroup) fail(err error) {
	g.errs.Add(1)
	g.mu.Lock()
	if g.err == nil {
		g.err = err
	}
	g.mu.Unlock()
}

// key returns an epoch's key. Members take it from the sender's client,
// which made it; a real member unwraps its own copy once per epoch.
func (g *fanGroup) key(epoch uint32) (*[proto.GroupKeyLen]byte, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if k := g.keys[epoch]; k != nil {
		return k, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k, err := g.owner.GroupKey(ctx, g.name, epoch)
	if err != nil {
		return nil, err
	}
	g.keys[epoch] = k
	return k, nil
}

func (m *member) onDelivery(d *client.Delivery) bool {
	dg := d.Group
	if dg == nil {
		return true
	}
	g := m.g
	m.n++
	err := func() error {
		if m.n%verifyEvery == 1 && !ed25519.Verify(g.signKey, proto.GroupMsgSigned(dg.Group, dg.Epoch, dg.MsgID, dg.Body), dg.Sig) {
			return fmt.Errorf("bad signature")
		}
		k, err := g.key(dg.Epoch)
		if err != nil {
			return err
		}
		plain, err := proto.OpenGroup(dg.Body, k)
		if err != nil {
			return err
		}
		var in proto.Inner
		if err := in.Parse(plain); err != nil {
			return err
		}
		if string(in.To) != g.name || string(in.From) != string(dg.From) {
			return fmt.Errorf("sealed envelope does not match")
		}
		return nil
	}()
	if err != nil {
		g.fail(fmt.Errorf("bench: %s opening a group message: %w", m.u.name, err))
		return true
	}
	m.received.Add(1)
	if g.phase.Load() == phaseMeasure {
		m.inWindow.Add(1)
	}
	return true
}

// repeat runs fn on a goroutine of wg until stop or fn's first error,
// which goes to fail.
func repeat(wg *sync.WaitGroup, stop <-chan struct{}, fail func(error), fn func() error) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := fn(); err != nil {
				fail(err)
				return
			}
		}
	}()
}

// ownerClient signs up the group's owner with a throwaway home directory.
func (r *run) ownerClient(ctx context.Context, name string) (*client.Client, func(), error) {
	home, err := os.MkdirTemp("", "securefastchat-bench-home-")
	if err != nil {
		return nil, nil, err
	}
	cfg := client.Config{Addr: r.t.addr, Home: home, OutDir: home, ServerKey: r.t.key, PingInterval: -1,
		KDF: client.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}}
	c, err := client.Signup(ctx, cfg, name, r.t.password)
	if err != nil {
		os.RemoveAll(home)
		return nil, nil, fmt.Errorf("bench: signing up the group owner: %w", err)
	}
	return c, func() { c.Close(); os.RemoveAll(home) }, nil
}

// makeGroup creates a group owned by owner with users as members and
// connects each member.
func (r *run) makeGroup(ctx context.Context, owner *client.Client, name string, users []*user, first int) (*fanGroup, []*member, error) {
	g := &fanGroup{name: name, owner: owner, signKey: owner.Identity().Sign.Public().(ed25519.PublicKey),
		keys: map[uint32]*[proto.GroupKeyLen]byte{}}
	if err := owner.CreateGroup(ctx, name); err != nil {
		return nil, nil, fmt.Errorf("bench: creating group %s: %w", name, err)
	}
	for i, u := range users {
		if err := owner.AddMember(ctx, name, u.name); err != nil {
			return nil, nil, fmt.Errorf("bench: adding %s to %s: %w", u.name, name, err)
		}
		if (i+1)%50 == 0 {
			r.progress("%s: group %s has %d of %d members", r.cfg.Scenario, name, i+2, len(users)+1)
		}
	}
	ms := make([]*member, len(users))
	err := parallel(ctx, len(users), 32, func(i int) error {
		m := &member{u: users[i], g: g}
		c, err := r.t.login(ctx, first+i, m.u, client.DialOptions{OnDelivery: m.onDelivery})
		m.c = c
		ms[i] = m
		if err != nil {
			return err
		}
		// The member's other devices (--devices), each on a connection
		// of its own, opening what it gets as the first does.
		for _, d := range m.u.devices {
			o := &member{u: d, g: g}
			if o.c, err = r.t.login(ctx, first+i, d, client.DialOptions{OnDelivery: o.onDelivery}); err != nil {
				return err
			}
			m.others = append(m.others, o)
		}
		// The owner is a stranger to the members: each accepts the
		// invitation, as people joining a group do.
		j := proto.GroupJoin{Group: []byte(name)}
		t, _, err := c.Request(ctx, func(b []byte, id uint32) []byte { return j.Append(b, id) })
		if err == nil && t != proto.TOK {
			err = fmt.Errorf("answer %#x", uint8(t))
		}
		if err != nil && !errors.Is(err, proto.CodeNoSuchGroup) {
			return fmt.Errorf("bench: %s joining %s: %w", m.u.name, name, err)
		}
		return nil
	}, func(done int) { r.progress("%s: connected %d of %d members", r.cfg.Scenario, done, len(users)) })
	if err != nil {
		closeMembers(ms)
		return nil, nil, err
	}
	return g, ms, nil
}

func closeMembers(ms []*member) {
	for _, m := range ms {
		if m != nil && m.c != nil {
			m.c.Close()
		}
		if m != nil {
			closeMembers(m.others)
		}
	}
}

// fanout runs the fanout scenario: one sender keeps a window of group
// messages in flight to a group of every other client.
func (r *run) fanout(ctx context.Context, res *Result) error {
	cfg := r.cfg
	owner, done, err := r.ownerClient(ctx, "bowner"+fmt.Sprint(time.Now().UnixNano()%1e6))
	if err != nil {
		return err
	}
	defer done()
	g, ms, err := r.makeGroup(ctx, owner, "bgroup", r.t.users, 0)
	if err != nil {
		return err
	}
	defer closeMembers(ms)
	res.Unit = "deliveries/s"
	text := strings.Repeat("x", cfg.Size)
	var sent, delivered, queued atomic.Int64
	var h hist
	var hmu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < cfg.Window; w++ {
		repeat(&wg, stop, g.fail, func() error {
			t0 := time.Now()
			sent.Add(1)
			rc, err := owner.SendGroupText(ctx, g.name, text)
			if err != nil {
				return fmt.Errorf("bench: sending to the group: %w", err)
			}
			if rc.Status == proto.StatusQueued {
				queued.Add(1)
			} else {
				delivered.Add(1)
			}
			if g.phase.Load() == phaseMeasure {
				hmu.Lock()
				h.add(time.Since(t0))
				hmu.Unlock()
			}
			return nil
		})
	}
	total := func() (n int64) {
		for _, m := range ms {
			n += m.received.Load()
		}
		return n
	}
	r.measure(ctx, res, total, g.phase.Store)
	close(stop)
	wg.Wait()
	var others int64
	for _, m := range ms {
		res.Count += m.inWindow.Load()
		for _, o := range m.others {
			others += o.received.Load()
		}
	}
	res.Sent, res.Delivered, res.Queued, res.Received, res.Errors = sent.Load(), delivered.Load(), queued.Load(), total(), g.errs.Load()
	if cfg.Devices > 1 {
		res.Devices, res.OtherDevicesReceived = cfg.Devices, others
		res.Notes = append(res.Notes, fmt.Sprintf("each member has %d devices online, and the group's keys are wrapped for each; the figures count the first's, and the others received %d in all (%.2f per delivery to a first device)",
			cfg.Devices, others, float64(others)/float64(max(1, res.Received))))
	}
	hmu.Lock()
	res.Latency = h.latency()
	hmu.Unlock()
	res.Notes = append(res.Notes, fmt.Sprintf("group of %d; latency is until the last member's client has it (the sender's Sent)", len(ms)+1),
		fmt.Sprintf("members check the signature of 1 delivery in %d", verifyEvery))
	g.mu.Lock()
	err = g.err
	g.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%d errors; first: %w", res.Errors, err)
	}
	if want := res.Delivered * int64(len(ms)); res.Received < want {
		return fmt.Errorf("bench: %d group messages acknowledged as delivered to %d members, but %d deliveries received", res.Delivered, len(ms), res.Received)
	}
	return nil
}
