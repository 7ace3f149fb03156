package shard_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

// ackingReceiver reads a raw connection, opens each frame and acks every
// delivery in batches, counting them.
func ackingReceiver(r *raw, count *atomic.Int64, stop <-chan struct{}) {
	var ids []uint64
	plain := make([]byte, 0, proto.MaxFrameLen)
	for {
		select {
		case <-stop:
			return
		default:
		}
		_ = r.nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		p, err := r.fr.Next()
		if err != nil {
			if len(ids) > 0 {
				r.send((&proto.Ack{ServerIDs: ids}).Append(nil, 0))
				ids = ids[:0]
			}
			if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
				continue
			}
			return
		}
		msg, err := r.sess.Open(plain[:0], p)
		if err != nil {
			return
		}
		t, _, body, _ := proto.ParseHeader(msg)
		if t != proto.TDeliverGroup {
			continue
		}
		var d proto.DeliverGroup
		if d.ParseAs(t, body) == nil {
			ids = append(ids, d.ServerID)
			count.Add(1)
		}
		if len(ids) == proto.MaxAckIDs || r.fr.Pending() == 0 {
			r.send((&proto.Ack{ServerIDs: ids}).Append(nil, 0))
			ids = ids[:0]
		}
	}
}

func benchFanout(b *testing.B, members int) {
	s := testserver.Start(b, func(c *server.Config) {
		c.Limits.SignupBurst = 1 << 20
		c.Limits.LookupBurst = 1 << 20
		c.Shard.HandshakeBurst = 1 << 20
		c.Groups.ChangeBurst = 1 << 20
		c.Shard.MsgEvery = -1
	})
	ctx := context.Background()
	alice := testserver.Signup(b, s, "alice")
	var raws []*raw
	for i := 1; i < members; i++ {
		r := dialRaw(b, s)
		r.signup(fmt.Sprint("m", i))
		raws = append(raws, r)
	}
	if err := alice.CreateGroup(ctx, "big"); err != nil {
		b.Fatal(err)
	}
	for i := 1; i < members; i++ {
		if err := alice.AddMember(ctx, "big", fmt.Sprint("m", i)); err != nil {
			b.Fatal(err)
		}
	}
	// Alice is a stranger to them: each accepts the invitation.
	for _, r := range raws {
		r.send((&proto.GroupJoin{Group: []byte("big")}).Append(nil, r.nextID()))
		typ, _, _, err := r.recv()
		for err == nil && typ == proto.TGroupChanged {
			typ, _, _, err = r.recv() // (pushed as the roster grew)
		}
		if err != nil || typ != proto.TOK {
			b.Fatalf("joining: %#x %v", typ, err)
		}
	}
	var delivered atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, r := range raws {
		wg.Add(1)
		go func() { defer wg.Done(); ackingReceiver(r, &delivered, stop) }()
	}
	b.ResetTimer()
	sem := make(chan struct{}, 16)
	var sends sync.WaitGroup
	for i := 0; i < b.N; i++ {
		sem <- struct{}{}
		sends.Add(1)
		go func() {
			defer sends.Done()
			defer func() { <-sem }()
			if _, err := alice.SendGroupText(ctx, "big", "fan-out benchmark message of a realistic length for chat"); err != nil {
				b.Error(err)
			}
		}()
	}
	sends.Wait()
	b.StopTimer()
	b.ReportMetric(float64(delivered.Load())/b.Elapsed().Seconds(), "deliveries/s")
	close(stop)
	wg.Wait()
	if got, want := delivered.Load(), int64(b.N*(members-1)); got < want {
		b.Fatalf("%d deliveries, want %d", got, want)
	}
}

// BenchmarkFanout100 and BenchmarkFanout1000: one sender, a group of 100
// or 1,000 members; each message is sealed and signed once, fanned out per
// shard, and acknowledged to the sender once every member has acked it.
func BenchmarkFanout100(b *testing.B)  { benchFanout(b, 100) }
func BenchmarkFanout1000(b *testing.B) { benchFanout(b, 1000) }
