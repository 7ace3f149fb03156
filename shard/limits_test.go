package shard_test

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

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
