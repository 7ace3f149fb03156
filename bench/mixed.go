package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"securefastchat/client"
)

// mixed runs a blend of what a chat server sees: most clients in direct
// conversations (each sender a small window in flight), a fifth of them in
// groups of 20, messages to users who are offline (stored, then fetched
// when they log in after the window), and clients logging in and out.
func (r *run) mixed(ctx context.Context, res *Result) error {
	cfg := r.cfg
	users := r.t.users
	n := len(users)
	nOffline := max(2, n/10) &^ 1 // pairs: sender online, receiver away
	nChurn := max(1, n/20)
	groupSize := 20
	nGroup := n / 5 / groupSize * groupSize
	nDM := (n - nOffline - nChurn - nGroup) &^ 1
	if nDM < 2 {
		return fmt.Errorf("%w: mixed needs at least 40 clients", ErrBadConfig)
	}
	at := 0
	take := func(k int) ([]*user, int) { u, first := users[at:at+k], at; at += k; return u, first }
	dmUsers, dmFirst := take(nDM)
	offUsers, offFirst := take(nOffline)
	churnUsers, churnFirst := take(nChurn)
	groupUsers, groupFirst := take(nGroup)

	var phase atomic.Int32
	ps, err := r.openPairsAt(ctx, dmUsers, dmFirst, cfg.Window, &phase, true)
	if err != nil {
		return err
	}
	defer closePairs(ps)
	off, err := r.openPairsAt(ctx, offUsers, offFirst, 2, &phase, false)
	if err != nil {
		return err
	}
	defer closePairs(off)
	var groups []*fanGroup
	var members []*member
	var owner *client.Client
	if nGroup > 0 {
		var done func()
		owner, done, err = r.ownerClient(ctx, "bowner"+fmt.Sprint(time.Now().UnixNano()%1e6))
		if err != nil {
			return err
		}
		defer done()
		for gi := 0; gi*groupSize < nGroup; gi++ {
			g, ms, err := r.makeGroup(ctx, owner, fmt.Sprintf("bgroup%d", gi), groupUsers[gi*groupSize:(gi+1)*groupSize-1], groupFirst+gi*groupSize)
			if err != nil {
				return err
			}
			defer closeMembers(ms)
			groups = append(groups, g)
			members = append(members, ms...)
		}
	}
	body := make([]byte, cfg.Size)
	copy(body, "securefastchat bench ")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() { defer wg.Done(); p.keepSending(stop, cfg.Size, body, 0) }()
	}
	for _, p := range off {
		wg.Add(1)
		// At most 50 a second each: a queue, not a flood.
		go func() { defer wg.Done(); p.keepSending(stop, cfg.Size, body, 20*time.Millisecond) }()
	}
	var gSent, gErrs, logins atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}
	text := strings.Repeat("g", cfg.Size)
	for gi, g := range groups {
		repeat(&wg, stop, fail, func() error {
			if _, err := owner.SendGroupText(ctx, g.name, text); err != nil {
				gErrs.Add(1)
				return fmt.Errorf("bench: group %d: %w", gi, err)
			}
			gSent.Add(1)
			return nil
		})
	}
	for ci, u := range churnUsers {
		repeat(&wg, stop, fail, func() error {
			c, err := r.t.login(ctx, churnFirst+ci, u, client.DialOptions{})
			if err != nil {
				return err
			}
			logins.Add(1)
			time.Sleep(200 * time.Millisecond)
			return c.Close()
		})
	}
	delivered := func() (t int64) {
		for _, p := range ps {
			t += p.received.Load()
		}
		for _, m := range members {
			t += m.received.Load()
		}
		return t
	}
	var d0, q0, l0, d1, q1, l1 int64
	r.measure(ctx, res, delivered, func(ph int32) {
		if ph == phaseMeasure {
			d0, q0, l0 = delivered(), queuedAcks(off), logins.Load()
		} else {
			d1, q1, l1 = delivered(), queuedAcks(off), logins.Load()
		}
		phase.Store(ph)
		for _, g := range groups {
			g.phase.Store(ph)
		}
	})
	close(stop)
	wg.Wait()
	r.drain(ps)
	r.drain(off)
	res.Unit = "msgs/s"
	res.Count = (d1 - d0) + (q1 - q0)
	var h hist
	for _, p := range ps {
		p.hmu.Lock()
		h.merge(&p.hist)
		p.hmu.Unlock()
	}
	res.Latency = h.latency()
	for _, p := range append(append([]*pair(nil), ps...), off...) {
		res.Sent += p.sent.Load()
		res.Delivered += p.delivered.Load()
		res.Queued += p.queued.Load()
		res.Errors += p.errs.Load()
	}
	// The offline receivers log in and fetch what was stored for them.
	r.progress("mixed: %d offline receivers log in for their queues", len(off))
	err = parallel(ctx, len(off), 32, func(i int) error {
		p := off[i]
		var err error
		p.rc, err = r.t.login(ctx, offFirst+2*i+1, p.to, client.DialOptions{OnDelivery: p.onDelivery})
		return err
	}, nil)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && receivedOf(off) < queuedAcks(off) {
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range ps {
		res.Received += p.received.Load()
	}
	fetched := receivedOf(off)
	res.Received += fetched
	gDeliv := int64(0)
	for _, m := range members {
		gDeliv += m.received.Load()
	}
	res.Errors += gErrs.Load()
	res.Notes = append(res.Notes,
		fmt.Sprintf("%d DM pairs (window %d), %d groups of %d, %d senders to offline users, %d clients logging in and out", len(ps), cfg.Window, len(groups), groupSize, len(off), len(churnUsers)),
		fmt.Sprintf("window: %d deliveries (direct and group), %d stored for offline users, %d logins", d1-d0, q1-q0, l1-l0),
		fmt.Sprintf("after: %d group messages sent, %d group deliveries; offline users fetched %d of %d stored", gSent.Load(), gDeliv, fetched, queuedAcks(off)))
	errMu.Lock()
	err = firstErr
	errMu.Unlock()
	if err != nil {
		return err
	}
	for _, g := range groups {
		g.mu.Lock()
		err := g.err
		g.mu.Unlock()
		if err != nil {
			return err
		}
	}
	if err := pairsErr(ps, res); err != nil {
		return err
	}
	for _, p := range off {
		if got, want := p.received.Load(), p.queued.Load()+p.delivered.Load(); got < want {
			return fmt.Errorf("bench: %s fetched %d of the %d messages stored for it", p.to.name, got, want)
		}
	}
	return nil
}

func queuedAcks(ps []*pair) (n int64) {
	for _, p := range ps {
		n += p.queued.Load()
	}
	return n
}

func receivedOf(ps []*pair) (n int64) {
	for _, p := range ps {
		n += p.received.Load()
	}
	return n
}
