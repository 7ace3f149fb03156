package client_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

// BenchmarkQueuedEndToEnd measures durable queueing through the whole
// server: 32 senders, each with 8 messages in flight, to offline
// receivers; every message is sealed end to end by the client, committed
// with fsync (group commit) and acknowledged as queued.
func BenchmarkQueuedEndToEnd(b *testing.B) {
	s := testserver.Start(b, func(c *server.Config) {
		c.Shard.MsgEvery = -1
		c.Limits.SignupBurst = 1000
		c.Shard.QueueLimits.Count = 1 << 40
		c.Shard.QueueLimits.Bytes = 1 << 50
	})
	const senders, window, receivers = 32, 8, 8
	for i := 0; i < receivers; i++ {
		testserver.Signup(b, s, fmt.Sprint("r", i)).Close()
	}
	var cs []*client.Client
	for i := 0; i < senders; i++ {
		cs = append(cs, testserver.Signup(b, s, fmt.Sprint("s", i)))
	}
	body := make([]byte, 256)
	// Seal before timing: the benchmark is about the server's queueing.
	outs := make([][]*client.Outgoing, senders)
	per := b.N/senders + 1
	for i, c := range cs {
		for j := 0; j < per; j++ {
			o, err := c.Prepare(context.Background(), fmt.Sprint("r", (i+j)%receivers), proto.KindText, body)
			if err != nil {
				b.Fatal(err)
			}
			outs[i] = append(outs[i], o)
		}
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() { // each sender keeps `window` messages in flight
			defer wg.Done()
			sem := make(chan struct{}, window)
			var inflight sync.WaitGroup
			for _, o := range outs[i] {
				sem <- struct{}{}
				inflight.Add(1)
				go func() {
					defer inflight.Done()
					defer func() { <-sem }()
					r, err := c.Send(context.Background(), o)
					if err != nil || r.Status != proto.StatusQueued {
						b.Errorf("send: %v", err)
					}
				}()
			}
			inflight.Wait()
		}()
	}
	wg.Wait()
	b.StopTimer()
	n := senders * per
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "queued-msgs/s")
	commits, ops, _ := s.Set.Batcher().Stats()
	b.ReportMetric(float64(ops)/float64(max(commits, 1)), "msgs/commit")
}
