package client_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

// rawResume closes a signed-up client and returns a fresh connection
// resumed with its token.
func rawResume(t *testing.T, s *server.Server, c *client.Client, opts client.DialOptions) *client.Conn {
	t.Helper()
	user := c.User()
	keyIDs.Store(user, c.Identity().KeyID(user))
	token := c.Token()
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, s.Addr(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Resume(ctx, user, token); err != nil {
		t.Fatalf("resume %s: %v", user, err)
	}
	return conn
}

// keyIDs holds the key record id of each user rawResume resumed, for
// sends that name it.
var keyIDs sync.Map

func keyIDOf(user string) uint64 { v, _ := keyIDs.Load(user); return v.(uint64) }

// TestConnBatchGoOnDelivery: messages sent in one Batch with Go are each
// answered through their callback; the receiver's OnDelivery sees each
// one once and its batched acks reach the server (every Sent says
// delivered, which the server sends only after the receiver's ack).
func TestConnBatchGoOnDelivery(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Shard.MsgEvery = -1 })
	var got sync.Map
	var n atomic.Int64
	alice, bob := testserver.Signup(t, s, "alice"), testserver.Signup(t, s, "bob")
	testserver.Acquaint(t, alice, bob) // (alice's messages are not a stranger's requests, which are stored first)
	rawResume(t, s, bob, client.DialOptions{OnDelivery: func(d *client.Delivery) bool {
		if d.DM == nil || string(d.DM.From) != "alice" {
			t.Errorf("unexpected delivery %+v", d)
			return true
		}
		if d.DM.MsgID[0] == 0xff {
			return true // a probe
		}
		if _, dup := got.LoadOrStore(string(d.DM.MsgID), true); !dup {
			n.Add(1)
		}
		return true
	}})
	sc := rawResume(t, s, alice, client.DialOptions{})
	// Until bob's new connection has taken what the store held for him,
	// messages to him go through the store; a probe answered "delivered"
	// says it is live.
	for i := 0; ; i++ {
		id := make([]byte, proto.MsgIDLen)
		id[0], id[1] = 0xff, byte(i)
		m := proto.SendDM{To: []byte("bob"), KeyID: keyIDOf("bob"), MsgID: id, Kind: proto.KindText, Body: make([]byte, 10)}
		_, body, err := sc.Request(ctxT(t), func(b []byte, rid uint32) []byte { return m.Append(b, rid) })
		var sent proto.Sent
		if err != nil || sent.Parse(body) != nil {
			t.Fatalf("probe: %v", err)
		}
		if sent.Status == proto.StatusDelivered {
			break
		}
		if i == 200 {
			t.Fatal("bob's connection never took messages live")
		}
		time.Sleep(10 * time.Millisecond)
	}
	const count = 100 // under the 128 a receiver may hold unacknowledged
	var wg sync.WaitGroup
	var delivered, failed atomic.Int64
	wg.Add(count)
	err := sc.Batch(func() {
		for i := 0; i < count; i++ {
			id := make([]byte, proto.MsgIDLen)
			id[0], id[1] = byte(i), byte(i>>8)
			m := proto.SendDM{To: []byte("bob"), KeyID: keyIDOf("bob"), MsgID: id, Kind: proto.KindText, Body: make([]byte, 100)}
			err := sc.Go(func(b []byte, rid uint32) []byte { return m.Append(b, rid) }, func(typ proto.MsgType, body []byte, err error) {
				defer wg.Done()
				var sent proto.Sent
				if err != nil || typ != proto.TSent || sent.Parse(body) != nil {
					failed.Add(1)
					return
				}
				if sent.Status == proto.StatusDelivered {
					delivered.Add(1)
				}
			})
			if err != nil {
				t.Errorf("Go: %v", err)
				wg.Done()
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if failed.Load() != 0 || delivered.Load() != count || n.Load() != count {
		t.Fatalf("%d failed, %d delivered, receiver saw %d, want %d", failed.Load(), delivered.Load(), n.Load(), count)
	}

	// An Error answer reaches the callback as a RemoteError.
	done := make(chan error, 1)
	m := proto.SendDM{To: []byte("nobody"), MsgID: make([]byte, proto.MsgIDLen), Kind: proto.KindText, Body: make([]byte, 10)}
	if err := sc.Go(func(b []byte, rid uint32) []byte { return m.Append(b, rid) }, func(_ proto.MsgType, _ []byte, err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	var re *proto.RemoteError
	if err := <-done; !errors.As(err, &re) || re.Code != proto.CodeNoSuchRecipient {
		t.Fatalf("send to nobody: %v, want no_such_recipient", err)
	}

	// After the connection has ended, Go fails at once.
	sc.Close()
	if err := sc.Go(func(b []byte, rid uint32) []byte { return m.Append(b, rid) }, func(proto.MsgType, []byte, error) {
		t.Error("callback of a request that was never sent")
	}); err == nil {
		t.Fatal("Go on a closed connection succeeded")
	}
}
