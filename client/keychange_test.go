package client_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

// A running client learns that a contact's keys changed (the account was
// deleted and made again) before it seals anything more to the old keys:
// the server pushes the new record to contacts online, and refuses a send
// sealed for the old record, online or offline, with the current one.
// Nothing sealed for the old keys reaches the new account.
func TestKeyChangeReachesRunningClient(t *testing.T) {
	s := testserver.Start(t, nil)
	changed := make(chan string, 4)
	cfg := testserver.ClientConfig(t, s)
	alice, err := client.Signup(ctxT(t), cfg, "alice", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	testserver.OnEvent(alice, func(ev client.Event) {
		if ev.Kind == client.EventKeyChange {
			changed <- ev.User
		}
	})
	defer alice.Close()
	dave := testserver.Signup(t, s, "dave")
	if _, err := alice.SendText(ctxT(t), "dave", "hi dave"); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, dave); m.Text != "hi dave" {
		t.Fatalf("dave got %q", m.Text)
	}
	stale, err := alice.Prepare(ctxT(t), "dave", proto.KindText, []byte("sealed for the old dave"))
	if err != nil {
		t.Fatal(err)
	}
	dave.Close()
	if err := s.Store.DeleteUser("dave"); err != nil {
		t.Fatal(err)
	}
	s.Set.Kick("dave")

	rejected := make(chan error, 4)
	dcfg := testserver.ClientConfig(t, s)
	newDave, err := client.Signup(ctxT(t), dcfg, "dave", "another battery staple")
	if err != nil {
		t.Fatal(err)
	}
	testserver.OnEvent(newDave, func(ev client.Event) {
		if ev.Kind == client.EventRejected {
			rejected <- ev.Err
		}
	})
	defer newDave.Close()
	select {
	case u := <-changed:
		if u != "dave" {
			t.Fatalf("key change reported for %q", u)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("alice's running client was not told that dave's keys changed")
	}

	// Online: the server refuses the message sealed for the old keys.
	_, err = alice.Send(ctxT(t), stale)
	var kc *client.KeysChangedError
	if !errors.As(err, &kc) || !errors.Is(err, client.ErrPeerKeysChanged) || kc.User != "dave" {
		t.Fatalf("send sealed for the old keys, dave online: %v", err)
	}
	// Offline: the same, from the stored record.
	newDave.Close()
	if _, err = alice.Send(ctxT(t), stale); !errors.As(err, &kc) {
		t.Fatalf("send sealed for the old keys, dave offline: %v", err)
	}
	// Sealed again, it goes to the new keys and opens.
	fresh, err := alice.Prepare(ctxT(t), "dave", proto.KindText, []byte("sealed for the new dave"))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := alice.Send(ctxT(t), fresh); err != nil || r.Status != proto.StatusQueued {
		t.Fatalf("send to the new keys: %+v %v", r, err)
	}
	again, err := client.Login(ctxT(t), dcfg, "dave", "another battery staple")
	if err != nil {
		t.Fatal(err)
	}
	testserver.OnEvent(again, func(ev client.Event) {
		if ev.Kind == client.EventRejected {
			rejected <- ev.Err
		}
	})
	defer again.Close()
	if m := recvOne(t, again); m.Text != "sealed for the new dave" {
		t.Fatalf("new dave got %q", m.Text)
	}

	// A message sealed for the old keys that slips past the check (an
	// unchecked version 1 send) is rejected with its real cause.
	conn := alice.Conn()
	m := proto.SendDM{To: []byte("dave"), MsgID: stale.MsgID, Kind: proto.KindText}
	m.Body = client.SealedBodyForTest(stale)
	if _, _, err := conn.Request(ctxT(t), func(b []byte, id uint32) []byte { return m.AppendV1(b, id) }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-rejected:
		if !errors.Is(err, client.ErrRejected) || !strings.Contains(err.Error(), "sealed for another key of yours") {
			t.Fatalf("rejection names the wrong cause: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the message sealed for the old keys was not reported")
	}
}
