package shard_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

// flood sends n one-byte "file chunks" (junk the server cannot tell from a
// real chunk) from c to an offline user, as fast as the connection goes,
// and counts the answers by type and error code.
func flood(t *testing.T, c *client.Client, to string, keyID uint64, n int) (sent int64, codes map[proto.ErrorCode]int64, lastErr error) {
	t.Helper()
	var mu sync.Mutex
	codes = map[proto.ErrorCode]int64{}
	var ok atomic.Int64
	var wg sync.WaitGroup
	conn := c.Conn()
	wg.Add(n)
	err := conn.Batch(func() {
		for i := 0; i < n; i++ {
			id := client.NewMsgID()
			m := proto.SendDM{To: []byte(to), KeyID: keyID, MsgID: id[:], Kind: proto.KindFile, Body: []byte{byte(i)}}
			err := conn.Go(func(b []byte, rid uint32) []byte { return m.Append(b, rid) }, func(typ proto.MsgType, _ []byte, err error) {
				defer wg.Done()
				var re *proto.RemoteError
				switch {
				case err == nil && typ == proto.TSent:
					ok.Add(1)
				case errors.As(err, &re):
					mu.Lock()
					codes[re.Code]++
					lastErr = err
					mu.Unlock()
				default:
					t.Errorf("answer %#x %v", typ, err)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	return ok.Load(), codes, lastErr
}

// Every message counts against its sender's message limit, a file chunk
// as one message: a stranger's flood of one-byte chunks is cut at the
// burst, with when to retry.
func TestFileChunksCountAsMessages(t *testing.T) {
	s := testserver.Start(t, nil)
	bob := testserver.Signup(t, s, "bob")
	bob.Close()
	mallory := testserver.Signup(t, s, "mallory")
	sent, codes, last := flood(t, mallory, "bob", bob.Identity().KeyID("bob"), 200)
	if sent > 60 || codes[proto.CodeRateLimited] < 140 || !strings.Contains(last.Error(), "retry in") {
		t.Fatalf("a flood of 200 one-byte chunks: %d queued, refusals %v (%v)", sent, codes, last)
	}
}

// T37 with the message limits off: no sender takes more than its share of
// one receiver's queue (a stranger a tenth, 1,000 of 10,000), its
// refusal says so, and other senders (a contact, another stranger) still
// get their messages queued.
func TestQueueShareFlood(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Shard.MsgEvery = -1; c.Limits.SignupBurst = 100 })
	bobC := testserver.Signup(t, s, "bob")
	alice := testserver.Signup(t, s, "alice")
	if _, err := bobC.SendText(ctxT(t), "alice", "hi alice"); err != nil { // bob writes to alice: she is his contact
		t.Fatal(err)
	}
	bobC.Close()
	bobKey := bobC.Identity().KeyID("bob")
	mallory := testserver.Signup(t, s, "mallory")
	sent, codes, last := flood(t, mallory, "bob", bobKey, 1100)
	if sent != 1000 || codes[proto.CodeShareFull] != 100 || !strings.Contains(last.Error(), "1000 messages") {
		t.Fatalf("a stranger's flood: %d queued, refusals %v (%v)", sent, codes, last)
	}
	if r, err := alice.SendText(ctxT(t), "bob", "from a contact, after the flood"); err != nil || r.Status != proto.StatusQueued {
		t.Fatalf("a contact after the flood: %+v %v", r, err)
	}
	carol := testserver.Signup(t, s, "carol")
	if sent, codes, _ := flood(t, carol, "bob", bobKey, 10); sent != 10 {
		t.Fatalf("another stranger after the flood: %d queued, refusals %v", sent, codes)
	}
	if n, _, _ := s.Store.QueueLen("bob"); n != 1011 {
		t.Fatalf("bob's queue holds %d, want 1011", n)
	}
}

// bogusAcks is an Ack of 255 ids nothing is pending for.
func bogusAcks() []byte {
	ids := make([]uint64, proto.MaxAckIDs)
	for i := range ids {
		ids[i] = uint64(1<<62 + i)
	}
	return (&proto.Ack{ServerIDs: ids}).Append(nil, 0)
}

// Acks of deliveries that are not pending are dropped by the connection's
// reader (they never reach the shard loop that bystanders share), and a
// connection that keeps sending them is closed.
func TestAckFloodClosed(t *testing.T) {
	s := testserver.Start(t, nil)
	mallory := testserver.Signup(t, s, "mallory")
	token := mallory.Token()
	mallory.Close()
	r := dialRaw(t, s)
	r.resume("mallory", token)
	before := s.Set.Stats.ProtocolErrors.Load()
	for i := 0; i < 2; i++ {
		r.send(bogusAcks())
	}
	for {
		typ, _, body, err := r.recv()
		if err != nil {
			t.Fatalf("the flooder was not told why it was closed: %v", err)
		}
		var cl proto.Close
		if typ == proto.TClose && cl.Parse(body) == nil {
			if cl.Reason != proto.CloseProtocol {
				t.Fatalf("close reason %d", cl.Reason)
			}
			break
		}
	}
	if s.Set.Stats.ProtocolErrors.Load() != before+1 {
		t.Fatal("the flood was not counted")
	}
}

// BenchmarkAckFlood measures a bystander's direct-message latency (send
// to Sent(delivered), through the receiver's ack) while two accounts
// flood acks of nothing pending, reconnecting each time they are closed,
// against the same latency with no flood. Run:
//
//	go test -run XXX -bench AckFlood -benchtime 2000x ./shard
func BenchmarkAckFlood(b *testing.B) {
	for _, flooding := range []bool{false, true} {
		name := "quiet"
		if flooding {
			name = "flood"
		}
		b.Run(name, func(b *testing.B) {
			// The server's own limits on handshakes and resumes stand: the
			// flooders reconnect as fast as those let them.
			s := testserver.Start(b, func(c *server.Config) { c.Shard.MsgEvery = -1 })
			alice := testserver.Signup(b, s, "alice")
			bob := testserver.Signup(b, s, "bob")
			stop := make(chan struct{})
			var wg sync.WaitGroup
			if flooding {
				for _, name := range []string{"mal1", "mal2"} {
					token := testserver.Signup(b, s, name).Token()
					wg.Add(1)
					go func() {
						defer wg.Done()
						frame := bogusAcks()
						for {
							select {
							case <-stop:
								return
							default:
							}
							ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
							conn, err := client.Dial(ctx, s.Addr(), client.DialOptions{})
							if err == nil {
								if _, err = conn.Resume(ctx, name, token); err == nil {
									// Flood until the server closes the connection
									// (or the benchmark ends).
									for conn.SendRaw(frame) == nil {
										select {
										case <-stop:
										case <-conn.Done():
										default:
											continue
										}
										break
									}
								}
								conn.Abort()
							}
							cancel()
						}
					}()
				}
			}
			go func() {
				for range testserver.Messages(bob) {
				}
			}()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if _, err := alice.SendText(ctxT(&testing.T{}), "bob", "hello"); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			close(stop)
			wg.Wait()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}
