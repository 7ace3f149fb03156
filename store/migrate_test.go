package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// openCopy opens a copy of a testdata store file.
func openCopy(t *testing.T, name string) (*Store, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "securefastchat.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, nil)
	if err != nil {
		t.Fatalf("opening %s: %v", name, err)
	}
	return s, path
}

// A schema 1 store (testdata/schema1.db, written by the build before
// schema 2) opens and is migrated in place: its users, queues and groups
// are all there, each sender's share of a queue is counted from what it
// holds, and a contact pair counts as written both ways. A store of a
// newer schema is refused and left as it was.
func TestMigrateSchema1(t *testing.T) {
	s, path := openCopy(t, "schema1.db")
	for _, u := range []string{"alice", "bob", "carol"} {
		if _, err := s.GetUser(u); err != nil {
			t.Fatalf("user %s: %v", u, err)
		}
	}
	if n, b, err := s.QueueLen("bob"); err != nil || n != 9 || b == 0 {
		t.Fatalf("bob's queue: %d messages, %d bytes, %v", n, b, err)
	}
	bobs := firstInbox(t, s, "bob")
	items, err := s.Peek(bobs, 0, 100)
	if err != nil || len(items) != 9 || items[8].Group != "team" {
		t.Fatalf("bob's queue after the migration: %d items, %v", len(items), err)
	}
	if g, err := s.Group("team"); err != nil || len(g.Members) != 2 || g.EpochBad {
		t.Fatalf("group: %+v %v", g, err)
	}
	// An epoch from before epoch statements reads with none.
	if ks, err := s.MemberKeys("team", "bob", 0, true, 0, 0); err != nil || len(ks) != 1 || ks[0].Stmt != nil || string(ks[0].Wrapped) != "wrapped for bob" {
		t.Fatalf("an epoch from before statements: %+v %v", ks, err)
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get([]byte("schema")); len(v) != 1 || v[0] != schemaVersion {
			t.Errorf("schema after opening: %v", v)
		}
		q := tx.Bucket(bucketQSenders)
		if st := getStatsKey(q, senderKey(bobs.key(), "alice")); st.count != 6 {
			t.Errorf("alice holds %d of bob's queue, want 6 (5 direct, 1 group)", st.count)
		}
		if st := getStatsKey(q, senderKey(bobs.key(), "carol")); st.count != 3 {
			t.Errorf("carol holds %d of bob's queue, want 3", st.count)
		}
		w := tx.Bucket(bucketWrote)
		if w.Get(contactKey("bob", "alice")) == nil || w.Get(contactKey("alice", "bob")) == nil || w.Get(contactKey("bob", "carol")) != nil {
			t.Error("contacts were not carried into who wrote to whom")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Dequeuing keeps the counts right.
	if err := s.Dequeue(bobs, []uint64{items[0].ServerID, items[5].ServerID}); err != nil {
		t.Fatal(err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		if st := getStatsKey(tx.Bucket(bucketQSenders), senderKey(bobs.key(), "alice")); st.count != 5 {
			t.Errorf("after dequeues alice holds %d, want 5", st.count)
		}
		return nil
	})
	// A newer schema is refused, untouched.
	s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put([]byte("schema"), []byte{schemaVersion + 1}) })
	s.Close()
	before, _ := os.ReadFile(path)
	if _, err := Open(path, nil); !errors.Is(err, ErrNewer) {
		t.Fatalf("opening a newer store: %v", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("a newer store was changed")
	}
}

// No sender holds more than its share of one receiver's queue: a contact
// (someone the receiver wrote to) a quarter, a stranger a tenth; others
// still get through, and a delivered message frees its sender's share.
func TestSenderShares(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "s.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lim := QueueLimits{Count: 100, Bytes: 1 << 20, ContactShare: 0.25, StrangerShare: 0.1}
	if err := s.AddContact("bob", "alice"); err != nil { // bob wrote to alice
		t.Fatal(err)
	}
	put := func(from string, n int, id *uint64) (ok int, last error) {
		for i := 0; i < n; i++ {
			*id++
			q := &Queued{ServerID: *id, To: "bob", From: from, Kind: 1, Body: make([]byte, 10)}
			q.MsgID[0], q.MsgID[1] = byte(*id), byte(*id>>8)
			errs, err := s.Enqueue([]*Queued{q}, lim)
			if err != nil {
				t.Fatal(err)
			}
			if errs[0] == nil {
				ok++
			} else {
				last = errs[0]
			}
		}
		return ok, last
	}
	var id uint64
	ok, err := put("mallory", 50, &id)
	var sf *ShareFullError
	if ok != 10 || !errors.As(err, &sf) || sf.Contact || sf.Count != 10 {
		t.Fatalf("a stranger queued %d (%v), want 10 then a refusal", ok, err)
	}
	if ok, err := put("alice", 50, &id); ok != 25 || !errors.Is(err, ErrShareFull) {
		t.Fatalf("a contact queued %d (%v), want 25", ok, err)
	}
	if ok, err := put("carol", 5, &id); ok != 5 || err != nil {
		t.Fatalf("another sender after the flood: %d (%v)", ok, err)
	}
	items, _ := s.Peek(Inbox{User: "bob"}, 0, 1)
	if err := s.Dequeue(Inbox{User: "bob"}, []uint64{items[0].ServerID}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := put("mallory", 2, &id); ok != 1 {
		t.Fatalf("after one of mallory's was delivered, %d more went in, want 1", ok)
	}
}

// A schema 1 store written by a running server of that build
// (testdata/schema1-sessions.db: alice and bob signed up, bob sent alice
// two messages, logging in for each) has its sessions indexed by user
// when it is migrated, so the cap per account counts them.
func TestMigrateSchema1Sessions(t *testing.T) {
	s, _ := openCopy(t, "schema1-sessions.db")
	if n, _, err := s.QueueLen("alice"); err != nil || n != 2 {
		t.Fatalf("alice's queue: %d %v", n, err)
	}
	for u, want := range map[string]int{"alice": 1, "bob": 3} {
		if n, err := s.SessionCount(u); err != nil || n != want {
			t.Errorf("%s: %d sessions indexed (%v), want %d", u, n, err, want)
		}
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		// Every session is indexed by its user.
		perUser := map[string]int{}
		tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
			var h [32]byte
			copy(h[:], k)
			if ss, err := unmarshalSession(h, v); err == nil {
				perUser[ss.User]++
			}
			return nil
		})
		if len(perUser) == 0 {
			t.Error("the schema 1 store holds no sessions: the index migration is not tested")
		}
		for u, n := range perUser {
			all, err := sessionsOf(tx, u)
			if err != nil || len(all) != n {
				t.Errorf("%s: %d sessions indexed of %d (%v)", u, len(all), n, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Revoking a user's sessions finds them all through the index.
	if n, err := s.DeleteUserSessions("bob"); err != nil || n != 3 {
		t.Fatalf("deleting bob's sessions: %d %v", n, err)
	}
}

// firstInbox is the inbox of user's first device, where a store from
// before schema 5 keeps what was queued for the account.
func firstInbox(t *testing.T, s *Store, user string) Inbox {
	t.Helper()
	u, err := s.GetUser(user)
	if err != nil {
		t.Fatal(err)
	}
	return Inbox{User: user, Device: FirstDevice(u)}
}

// A schema 4 store (testdata/schema4.db, written by a running server of
// that build: alice and bob signed up with their device lists, and bob
// queued two messages for alice while she was away) opens as schema 5:
// alice's queue is her first device's inbox, with its counts and bob's
// share of it; a repeat of a message queued before is still known as one;
// and the sessions belong to each account's first device.
func TestMigrateSchema4(t *testing.T) {
	s, _ := openCopy(t, "schema4.db")
	defer s.Close()
	alices := firstInbox(t, s, "alice")
	items, err := s.Peek(alices, 0, 10)
	if err != nil || len(items) != 2 || items[0].From != "bob" || items[0].To != "alice" || items[0].Device != alices.Device {
		t.Fatalf("alice's first device's inbox: %+v %v", items, err)
	}
	if in, err := s.Inboxes("alice"); err != nil || len(in) != 1 || in[0] != alices {
		t.Fatalf("alice's inboxes: %v %v", in, err)
	}
	if n, _, err := s.InboxLen(alices); err != nil || n != 2 {
		t.Fatalf("the inbox's count: %d %v", n, err)
	}
	if n, _, err := s.QueueLen("alice"); err != nil || n != 2 {
		t.Fatalf("alice's count: %d %v", n, err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get([]byte("schema")); len(v) != 1 || v[0] != schemaVersion {
			t.Errorf("schema after opening: %v", v)
		}
		if st := getStatsKey(tx.Bucket(bucketQSenders), senderKey(alices.key(), "bob")); st.count != 2 {
			t.Errorf("bob holds %d of alice's inbox, want 2", st.count)
		}
		return tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
			var h [32]byte
			copy(h[:], k)
			ss, err := unmarshalSession(h, v)
			if err != nil || ss.Device != firstInbox(t, s, ss.User).Device {
				t.Errorf("a session after the migration: %+v %v", ss, err)
			}
			return nil
		})
	})
	repeat := *items[0]
	repeat.ServerID, repeat.Body = 1<<62, []byte("again")
	if errs, err := s.Enqueue([]*Queued{&repeat}, QueueLimits{}); err != nil || errs[0] != nil {
		t.Fatal(err, errs)
	}
	if n, _, _ := s.InboxLen(alices); n != 2 {
		t.Fatalf("a repeat of a message queued before the migration was stored again: %d", n)
	}
	if err := s.Dequeue(alices, []uint64{items[0].ServerID, items[1].ServerID}); err != nil {
		t.Fatal(err)
	}
	if n, b, _ := s.QueueLen("alice"); n != 0 || b != 0 {
		t.Fatalf("after both were acknowledged: %d messages, %d bytes", n, b)
	}
}

// A schema 5 store (testdata/schema5.db, written by a running server of
// that build: alice and bob signed up, and bob queued two messages for
// alice while she was away) opens as schema 6 with nothing rewritten:
// alice's two messages wait in her first device's inbox, and a message
// sealed for devices is queued beside them.
func TestMigrateSchema5(t *testing.T) {
	s, _ := openCopy(t, "schema5.db")
	defer s.Close()
	alices := firstInbox(t, s, "alice")
	items, err := s.Peek(alices, 0, 10)
	if err != nil || len(items) != 2 || items[0].From != "bob" || items[0].Wrap != nil || items[1].Wrap != nil {
		t.Fatalf("alice's inbox: %+v %v", items, err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get([]byte("schema")); len(v) != 1 || v[0] != schemaVersion {
			t.Errorf("schema after opening: %v", v)
		}
		return nil
	})
	q := *items[1]
	q.ServerID, q.MsgID, q.FromDevice, q.Wrap = items[1].ServerID+1, [16]byte{9}, 5, make([]byte, 104)
	if errs, err := s.Enqueue([]*Queued{&q}, QueueLimits{}); err != nil || errs[0] != nil {
		t.Fatal(err, errs)
	}
	items, err = s.Peek(alices, 0, 10)
	if err != nil || len(items) != 3 || items[2].FromDevice != 5 || len(items[2].Wrap) != 104 {
		t.Fatalf("alice's inbox with a message sealed for devices: %+v %v", items, err)
	}
}

// A schema 6 store (testdata/schema6.db, written by a running server of
// that build: alice made team with bob and carol made pair with dave, a
// message was sent in each, then alice added a laptop) opens as schema 7:
// team, whose member alice has had a second device, needs a new epoch
// before the next message; pair does not; and the keys wrapped before
// devices are served to each member's first device.
func TestMigrateSchema6(t *testing.T) {
	s, _ := openCopy(t, "schema6.db")
	defer s.Close()
	s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get([]byte("schema")); len(v) != 1 || v[0] != schemaVersion {
			t.Errorf("schema after opening: %v", v)
		}
		return nil
	})
	team, err := s.Group("team")
	if err != nil || !team.DevicesStale() || team.Epoch == 0 {
		t.Fatalf("team: %+v %v", team, err)
	}
	pair, err := s.Group("pair")
	if err != nil || pair.DevicesStale() || pair.Epoch == 0 {
		t.Fatalf("pair: %+v %v", pair, err)
	}
	bobs := firstInbox(t, s, "bob")
	ks, err := s.MemberKeys("team", "bob", bobs.Device, true, 0, 0)
	if err != nil || len(ks) == 0 || ks[len(ks)-1].Epoch != team.Epoch || ks[0].Device != 0 || ks[0].WrapperDevice != 0 || ks[0].Wrapper != "alice" || len(ks[0].Stmt) == 0 {
		t.Fatalf("bob's keys of team: %+v %v", ks, err)
	}
	if ks, _ := s.MemberKeys("team", "bob", bobs.Device, false, 0, 0); len(ks) != 0 {
		t.Fatalf("keys from before devices served to a device that is not the first: %+v", ks)
	}
}
