package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"securefastchat/client"
	"securefastchat/proto"
)

// phases of a run: deliveries count toward the figures only while
// measuring.
const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseDrain
)

// pair is a sender and its receiver, each on its own connection.
type pair struct {
	from, to *user
	sc, rc   *client.Conn
	others   []*client.Conn // the receiver's other devices (--devices)
	key      *[32]byte      // box key between them (the same from either side)
	keyID    uint64         // the receiver's key record, named in each send
	slots    chan struct{}
	phase    *atomic.Int32

	sent, delivered, queued, errs, received, inWindow atomic.Int64
	othersReceived                                    atomic.Int64 // by the receiver's other devices

	mu      sync.Mutex // guards firstErr
	firstEr error

	hmu  sync.Mutex
	hist hist

	// The sender's buffers (one goroutine sends on a pair).
	plain, sealed []byte
	msgID         [proto.MsgIDLen]byte
	copies        []proto.DeviceCopy // with --devices: one per device of the receiver
	rbuf          []byte             // the receiver's
}

func (p *pair) fail(err error) {
	p.errs.Add(1)
	p.mu.Lock()
	if p.firstEr == nil {
		p.firstEr = err
	}
	p.mu.Unlock()
}

// onDelivery opens a direct message as a real client does: the box, then
// the inner envelope's checks; the latency is from the send time sealed
// inside.
func (p *pair) onDelivery(d *client.Delivery) bool {
	if d.DM == nil && d.Devices == nil {
		return true
	}
	in, ok := p.open(d, &p.rbuf)
	if !ok {
		return true
	}
	p.received.Add(1)
	if p.phase.Load() == phaseMeasure {
		p.inWindow.Add(1)
		p.hmu.Lock()
		p.hist.add(time.Duration(time.Now().UnixNano() - in.SentAt))
		p.hmu.Unlock()
	}
	return true
}

// onOtherDelivery opens a message on one of the receiver's other devices
// (each has its buffer, since their connections deliver at once).
func (p *pair) onOtherDelivery() func(*client.Delivery) bool {
	var buf []byte
	return func(d *client.Delivery) bool {
		// (What the receiver's first device sent, the greeting, comes to
		// its other devices too: not counted.)
		if d.DM != nil || d.Devices != nil && string(d.Devices.From) != p.to.name {
			if _, ok := p.open(d, &buf); ok {
				p.othersReceived.Add(1)
			}
		}
		return true
	}
}

// open opens a delivered direct message into buf and checks its inner
// envelope: a message sealed for devices (--devices) through the device's
// wrap of its key.
func (p *pair) open(d *client.Delivery, buf *[]byte) (*proto.Inner, bool) {
	var plain, from, msgID []byte
	var err error
	if d.Devices != nil {
		from, msgID = d.Devices.From, d.Devices.MsgID
		var k *proto.MessageKey
		if k, err = proto.OpenWrap(d.Devices.Wrap, d.Devices.Payload, p.key); err == nil {
			plain, err = proto.OpenPayload((*buf)[:0], d.Devices.Payload, k)
		}
	} else {
		from, msgID = d.DM.From, d.DM.MsgID
		plain, err = proto.OpenBody((*buf)[:0], d.DM.Body, p.key)
	}
	*buf = plain[:0]
	var in proto.Inner
	if err == nil {
		err = in.Parse(plain)
	}
	if err == nil && (!bytes.Equal(in.From, from) || !bytes.Equal(in.MsgID, msgID) || string(in.To) != p.to.name) {
		err = fmt.Errorf("bench: sealed envelope does not match")
	}
	if err != nil {
		p.fail(fmt.Errorf("bench: opening a message for %s: %w", p.to.name, err))
		return nil, false
	}
	return &in, true
}

// send seals one message of size bytes and sends it without waiting; a
// window slot must be held, and is given back when the server answers.
func (p *pair) send(size int, body []byte) error {
	if _, err := rand.Read(p.msgID[:]); err != nil {
		return err
	}
	in := proto.Inner{Kind: proto.KindText, From: []byte(p.from.name), To: []byte(p.to.name), MsgID: p.msgID[:],
		SentAt: time.Now().UnixNano(), Body: body[:size]}
	var err error
	if p.plain, err = in.Append(p.plain[:0]); err != nil {
		return err
	}
	var build func(b []byte, id uint32) []byte
	if p.copies != nil {
		// Sealed for the receiver's devices: the payload once, its key
		// wrapped for each.
		payload, k, err := proto.SealPayload(p.plain, nil)
		if err != nil {
			return err
		}
		hash := proto.PayloadHash(payload)
		for i := range p.copies {
			if p.copies[i].Wrap, err = proto.WrapKey(p.copies[i].Wrap[:0], k, &hash, p.key, nil); err != nil {
				return err
			}
		}
		m := proto.SendDMDevices{To: []byte(p.to.name), MsgID: p.msgID[:], Kind: proto.KindText, Copies: p.copies, Payload: payload}
		build = func(b []byte, id uint32) []byte { return m.Append(b, id) }
	} else {
		if p.sealed, err = proto.SealBody(p.sealed[:0], p.plain, p.key, nil); err != nil {
			return err
		}
		m := proto.SendDM{To: []byte(p.to.name), KeyID: p.keyID, MsgID: p.msgID[:], Kind: proto.KindText, Body: p.sealed}
		build = func(b []byte, id uint32) []byte { return m.Append(b, id) }
	}
	p.sent.Add(1)
	err = p.sc.Go(build, p.onSent)
	if err != nil {
		<-p.slots
		p.fail(err)
	}
	return err
}

func (p *pair) onSent(t proto.MsgType, body []byte, err error) {
	<-p.slots
	if err == nil && t != proto.TSent {
		err = fmt.Errorf("bench: answer %#x to a message", uint8(t))
	}
	var s proto.Sent
	if err == nil {
		err = s.Parse(body)
	}
	if err != nil {
		p.fail(fmt.Errorf("bench: sending from %s: %w", p.from.name, err))
		return
	}
	if s.Status == proto.StatusQueued {
		p.queued.Add(1)
	} else {
		p.delivered.Add(1)
	}
}

// openPairs connects users[2i] to users[2i+1], sender and receiver each on
// its own connection.
func (r *run) openPairs(ctx context.Context, users []*user, window int, phase *atomic.Int32) ([]*pair, error) {
	return r.openPairsAt(ctx, users, 0, window, phase, true)
}

// openPairsAt is openPairs for users that start at index first of the
// run's users (for source addresses); receivers stay offline unless
// online.
func (r *run) openPairsAt(ctx context.Context, users []*user, first, window int, phase *atomic.Int32, online bool) ([]*pair, error) {
	ps := make([]*pair, len(users)/2)
	for i := range ps {
		from, to := users[2*i], users[2*i+1]
		ps[i] = &pair{from: from, to: to, key: proto.SharedKey(&from.id.Box.Private, to.id.Box.Public),
			keyID: to.id.KeyID(to.name), slots: make(chan struct{}, window), phase: phase}
		if len(to.devices) > 0 {
			ps[i].copies = append(ps[i].copies, proto.DeviceCopy{Device: to.dev})
			for _, d := range to.devices {
				ps[i].copies = append(ps[i].copies, proto.DeviceCopy{Device: d.dev})
			}
		}
	}
	err := parallel(ctx, len(ps), 32, func(i int) error {
		p := ps[i]
		var err error
		if online {
			if p.rc, err = r.t.login(ctx, first+2*i+1, p.to, client.DialOptions{OnDelivery: p.onDelivery}); err != nil {
				return err
			}
			for _, d := range p.to.devices {
				oc, err := r.t.login(ctx, first+2*i+1, d, client.DialOptions{OnDelivery: p.onOtherDelivery()})
				if err != nil {
					return err
				}
				p.others = append(p.others, oc)
			}
		}
		p.sc, err = r.t.login(ctx, first+2*i, p.from, client.DialOptions{OnDelivery: func(*client.Delivery) bool { return true }})
		if err == nil && online {
			err = p.greet(ctx)
		}
		return err
	}, func(done int) { r.progress("%s: connected %d of %d pairs", r.cfg.Scenario, done, len(ps)) })
	if err != nil {
		closePairs(ps)
		return nil, err
	}
	return ps, nil
}

// greet has the receiver write to the sender once, so that the two are
// contacts, as people who talk are: the sender's messages are then no
// longer a stranger's requests (which the server always stores first).
func (p *pair) greet(ctx context.Context) error {
	var id [proto.MsgIDLen]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	in := proto.Inner{Kind: proto.KindText, From: []byte(p.to.name), To: []byte(p.from.name), MsgID: id[:], SentAt: time.Now().UnixNano(), Body: []byte("hello")}
	plain, err := in.Append(nil)
	if err != nil {
		return err
	}
	var build func(b []byte, id uint32) []byte
	if len(p.to.devices) > 0 {
		// The receiver has other devices: they get what it sends too.
		payload, k, err := proto.SealPayload(plain, nil)
		if err != nil {
			return err
		}
		hash := proto.PayloadHash(payload)
		m := proto.SendDMDevices{To: []byte(p.from.name), MsgID: id[:], Kind: proto.KindText, Payload: payload}
		w, err := proto.WrapKey(nil, k, &hash, p.key, nil)
		if err != nil {
			return err
		}
		m.Copies = []proto.DeviceCopy{{Device: p.from.id.KeyID(p.from.name), Wrap: w}}
		self := proto.SharedKey(&p.to.id.Box.Private, p.to.id.Box.Public)
		for _, d := range p.to.devices {
			if w, err = proto.WrapKey(nil, k, &hash, self, nil); err != nil {
				return err
			}
			m.Own = append(m.Own, proto.DeviceCopy{Device: d.dev, Wrap: w})
		}
		build = func(b []byte, rid uint32) []byte { return m.Append(b, rid) }
	} else {
		sealed, err := proto.SealBody(nil, plain, p.key, nil)
		if err != nil {
			return err
		}
		m := proto.SendDM{To: []byte(p.from.name), KeyID: p.from.id.KeyID(p.from.name), MsgID: id[:], Kind: proto.KindText, Body: sealed}
		build = func(b []byte, rid uint32) []byte { return m.Append(b, rid) }
	}
	t, _, err := p.rc.Request(ctx, build)
	if err == nil && t != proto.TSent {
		err = fmt.Errorf("answer %#x", uint8(t))
	}
	if err != nil {
		return fmt.Errorf("bench: %s greeting %s: %w", p.to.name, p.from.name, err)
	}
	return nil
}

func closePairs(ps []*pair) {
	var wg sync.WaitGroup
	for _, p := range ps {
		for _, c := range append([]*client.Conn{p.sc, p.rc}, p.others...) {
			if c != nil {
				wg.Add(1)
				go func() { defer wg.Done(); c.Close() }()
			}
		}
	}
	wg.Wait()
}

// parallel runs fn(0..n-1) on at most width goroutines, stopping at the
// first error, and reports progress every 100.
func parallel(ctx context.Context, n, width int, fn func(i int) error, progress func(done int)) error {
	var next, done atomic.Int64
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for w := 0; w < min(width, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				mu.Lock()
				stop := first != nil
				mu.Unlock()
				if i >= n || stop || ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
				if d := done.Add(1); progress != nil && d%100 == 0 {
					progress(int(d))
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// dm runs the dm scenario (every sender keeps its window full) or, if
// paced, the latency one (a fixed total rate, spread over the pairs).
func (r *run) dm(ctx context.Context, res *Result, paced bool) error {
	cfg := r.cfg
	var phase atomic.Int32
	ps, err := r.openPairs(ctx, r.t.users, cfg.Window, &phase)
	if err != nil {
		return err
	}
	defer closePairs(ps)
	res.Unit = "msgs/s"
	body := make([]byte, cfg.Size)
	copy(body, "securefastchat bench ")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if paced {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Second / time.Duration(cfg.Rate))
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				p := ps[i%len(ps)]
				select {
				case p.slots <- struct{}{}:
					_ = p.send(cfg.Size, body)
				default: // the pair's window is full: a missed tick
					p.fail(fmt.Errorf("bench: %s's window is full at a light rate", p.from.name))
				}
			}
		}()
	} else {
		for _, p := range ps {
			wg.Add(1)
			go func() { defer wg.Done(); p.keepSending(stop, cfg.Size, body, 0) }()
		}
	}
	r.measure(ctx, res, func() int64 { return receivedOf(ps) }, phase.Store)
	close(stop)
	wg.Wait()
	r.drain(ps)
	var h hist
	var others int64
	for _, p := range ps {
		p.hmu.Lock()
		h.merge(&p.hist)
		p.hmu.Unlock()
		res.Count += p.inWindow.Load()
		res.Sent += p.sent.Load()
		res.Delivered += p.delivered.Load()
		res.Queued += p.queued.Load()
		res.Received += p.received.Load()
		res.Errors += p.errs.Load()
		others += p.othersReceived.Load()
	}
	res.Latency = h.latency()
	if cfg.Devices > 1 {
		// Each message goes to every device; the figures above count its
		// first device's.
		res.Devices, res.OtherDevicesReceived = cfg.Devices, others
		res.Notes = append(res.Notes, fmt.Sprintf("each receiver has %d devices online; the figures count the first's, and the others received %d in all (%.2f per message received by the first)",
			cfg.Devices, others, float64(others)/float64(max(1, res.Received))))
	}
	return pairsErr(ps, res)
}

// keepSending keeps the pair's window full until stop, pausing after each
// message if pause is set.
// Whatever the window has room for when a slot frees goes out in one
// write, as a client with several messages ready would send them.
func (p *pair) keepSending(stop <-chan struct{}, size int, body []byte, pause time.Duration) {
	for {
		select {
		case <-stop:
			return
		case p.slots <- struct{}{}:
		}
		var err error
		_ = p.sc.Batch(func() {
			err = p.send(size, body)
			for err == nil && pause == 0 {
				select {
				case p.slots <- struct{}{}:
					err = p.send(size, body)
					continue
				default:
				}
				break
			}
		})
		if err != nil {
			return
		}
		if pause > 0 {
			time.Sleep(pause)
		}
	}
}

// measure runs the warm-up and the measured window while the load runs,
// telling setPhase when each starts, and fills res's server figures.
func (r *run) measure(ctx context.Context, res *Result, count func() int64, setPhase func(int32)) {
	r.watch(ctx, r.cfg.Warmup, "warming up", count)
	w := r.t.begin()
	setPhase(phaseMeasure)
	r.watch(ctx, r.cfg.Duration, "measuring", count)
	setPhase(phaseDrain)
	w.end(res)
}

// watch waits d, printing the rate of count every second.
func (r *run) watch(ctx context.Context, d time.Duration, what string, count func() int64) {
	end := time.Now().Add(d)
	last, lastT := count(), time.Now()
	for time.Now().Before(end) && ctx.Err() == nil {
		time.Sleep(min(time.Second, time.Until(end)))
		n, now := count(), time.Now()
		r.progress("%s: %s, %.0f/s, %s left", r.cfg.Scenario, what, float64(n-last)/now.Sub(lastT).Seconds(),
			time.Until(end).Round(time.Second))
		last, lastT = n, now
	}
}

// drain waits (at most 30 s) for every message in flight to be answered.
func (r *run) drain(ps []*pair) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		busy := false
		for _, p := range ps {
			busy = busy || len(p.slots) > 0
		}
		if !busy {
			// Answered; a delivery acked by the receiver is already
			// counted, since Sent follows the receiver's ack.
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pairsErr checks the counts add up: every message the server said was
// delivered reached its receiver, and nothing failed.
func pairsErr(ps []*pair, res *Result) error {
	for _, p := range ps {
		p.mu.Lock()
		err := p.firstEr
		p.mu.Unlock()
		if err != nil {
			return fmt.Errorf("%d errors; first: %w", res.Errors, err)
		}
	}
	if res.Received < res.Delivered {
		return fmt.Errorf("bench: the server acknowledged %d messages as delivered, the receivers got %d", res.Delivered, res.Received)
	}
	if res.Sent != res.Delivered+res.Queued {
		return fmt.Errorf("bench: %d messages sent, %d acknowledged", res.Sent, res.Delivered+res.Queued)
	}
	return nil
}
