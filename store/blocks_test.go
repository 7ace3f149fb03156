package store

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Blocking drops what the blocked user has queued for the blocker (and
// nothing else), refuses what they send after, ends the contact (also
// for members of a shared group, for presence), and is undone by
// Unblock; an account blocks at most max users.
func TestBlock(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "s.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lim := QueueLimits{Count: 100, Bytes: 1 << 20}
	var id uint64
	put := func(from, to string) error {
		id++
		q := &Queued{ServerID: id, To: to, From: from, Kind: 1, Stored: time.Now(), Body: []byte("sealed")}
		q.MsgID[0] = byte(id)
		errs, err := s.Enqueue([]*Queued{q}, lim)
		if err != nil {
			t.Fatal(err)
		}
		return errs[0]
	}
	for _, from := range []string{"mallory", "alice", "mallory", "carol"} {
		if err := put(from, "bob"); err != nil {
			t.Fatal(err)
		}
	}
	s.AddContact("bob", "mallory")
	s.AddContact("mallory", "bob")
	if c, _ := s.Contacts("bob"); !slices.Contains(c, "mallory") {
		t.Fatalf("contacts before: %v", c)
	}
	dropped, err := s.Block("bob", "mallory", 10)
	if err != nil || dropped != 2 {
		t.Fatalf("block: %d dropped, %v", dropped, err)
	}
	items, _ := s.Peek(Inbox{User: "bob"}, 0, 10)
	if len(items) != 2 || items[0].From != "alice" || items[1].From != "carol" {
		t.Fatalf("bob's queue after the block: %+v", items)
	}
	if n, _, _ := s.QueueLen("bob"); n != 2 {
		t.Fatalf("queue count %d", n)
	}
	s.db.View(func(tx *bolt.Tx) error {
		if st := getStatsKey(tx.Bucket(bucketQSenders), senderKey(Inbox{User: "bob"}.key(), "mallory")); st.count != 0 {
			t.Errorf("mallory still holds %d of bob's queue", st.count)
		}
		return nil
	})
	if err := put("mallory", "bob"); !errors.Is(err, ErrBlocked) {
		t.Fatalf("a send after the block: %v", err)
	}
	if err := put("bob", "mallory"); err != nil {
		t.Fatalf("the blocker can still send: %v", err)
	}
	if c, _ := s.Contacts("bob"); slices.Contains(c, "mallory") {
		t.Fatalf("still contacts: %v", c)
	}
	if c, _ := s.Contacts("mallory"); slices.Contains(c, "bob") {
		t.Fatalf("still contacts, seen from mallory: %v", c)
	}
	if w, _ := s.Wrote("bob", "mallory"); w {
		t.Fatal("bob still counts as having written to mallory")
	}
	// Writing both ways makes no contact while the block stands.
	s.AddContact("mallory", "bob")
	s.AddContact("bob", "mallory")
	if c, _ := s.Contacts("bob"); slices.Contains(c, "mallory") {
		t.Fatalf("contacts again while blocked: %v", c)
	}
	if b, _ := s.Blocks("bob", "mallory"); !b {
		t.Fatal("Blocks says no")
	}
	if l, _ := s.BlockedBy("bob"); !slices.Equal(l, []string{"mallory"}) {
		t.Fatalf("BlockedBy %v", l)
	}
	// The cap.
	if _, err := s.Block("bob", "spam1", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Block("bob", "spam2", 2); !errors.Is(err, ErrTooManyBlocked) {
		t.Fatalf("past the cap: %v", err)
	}
	if _, err := s.Block("bob", "spam1", 2); err != nil {
		t.Fatalf("blocking again someone blocked: %v", err)
	}
	if err := s.Unblock("bob", "mallory"); err != nil {
		t.Fatal(err)
	}
	if err := put("mallory", "bob"); err != nil {
		t.Fatalf("after unblock: %v", err)
	}
	// A blocked batcher put is reported as dropped, not as an error.
	if _, err := s.Block("bob", "mallory", 10); err != nil {
		t.Fatal(err)
	}
	b := s.NewBatcher(BatcherOptions{Limits: lim})
	defer b.Close()
	done := make(chan Result, 1)
	q := &Queued{ServerID: 999, SentID: 7, To: "bob", From: "mallory", Kind: 1, Stored: time.Now(), Body: []byte("x")}
	if err := b.Submit(&Op{Put: q, Done: func(r Result) { done <- r }}); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.Err != nil || !r.Dropped || r.SentID != 7 {
		t.Fatalf("batched put from a blocked sender: %+v", r)
	}
}

// A schema 2 store (testdata/schema2.db, written by a running server of
// that build: alice, bob and mallory signed up; mallory sent bob two
// messages, alice one; bob wrote to alice) opens as schema 3 with
// everything there, and blocks work on it.
func TestMigrateSchema2(t *testing.T) {
	s, _ := openCopy(t, "schema2.db")
	defer s.Close()
	if n, _, err := s.QueueLen("bob"); err != nil || n != 3 {
		t.Fatalf("bob's queue: %d %v", n, err)
	}
	if c, _ := s.Contacts("bob"); !slices.Equal(c, []string{"alice"}) {
		t.Fatalf("bob's contacts: %v", c)
	}
	if w, _ := s.Wrote("mallory", "bob"); !w {
		t.Fatal("mallory's writing to bob was lost")
	}
	s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get([]byte("schema")); len(v) != 1 || v[0] != schemaVersion {
			t.Errorf("schema after opening: %v", v)
		}
		return nil
	})
	if n, err := s.Block("bob", "mallory", 10); err != nil || n != 2 {
		t.Fatalf("block on a migrated store: %d %v", n, err)
	}
	if items, _ := s.Peek(firstInbox(t, s, "bob"), 0, 10); len(items) != 1 || items[0].From != "alice" {
		t.Fatalf("bob's queue: %+v", items)
	}
}

// An invited member is on the roster and lists the group, but the group
// makes them nobody's contact (presence, queue shares) until they accept;
// leaving drops the invitation.
func TestGroupInvites(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "s.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	g := &GroupState{Name: "prize", Members: []GroupMember{{Name: "mallory", Admin: true}}}
	if err := s.CreateGroup(g, []byte("s0"), nil); err != nil {
		t.Fatal(err)
	}
	next := *g
	next.Seq = 1
	next.Members = append(next.Members, GroupMember{Name: "bob"})
	if err := s.ChangeGroup(&next, 0, 0, []byte("s1"), nil, "bob", "mallory"); err != nil {
		t.Fatal(err)
	}
	if inv, _ := s.GroupInvites("bob"); len(inv) != 1 || inv[0] != (GroupInvite{Group: "prize", By: "mallory"}) {
		t.Fatalf("invites %+v", inv)
	}
	if gs, _ := s.UserGroups("bob"); !slices.Equal(gs, []string{"prize"}) {
		t.Fatalf("an invited member lists %v", gs)
	}
	if gs, _ := s.JoinedGroups("bob"); len(gs) != 0 {
		t.Fatalf("joined %v", gs)
	}
	if in, _ := s.ShareGroup("bob", "mallory", false); !in {
		t.Fatal("an invited member shares no group with the admin")
	}
	if joined, _ := s.ShareGroup("bob", "mallory", true); joined {
		t.Fatal("an invited member shares a joined group with the admin")
	}
	if got, _ := s.Group("prize"); got.Pending["bob"] != "mallory" {
		t.Fatalf("pending %v", got.Pending)
	}
	for _, u := range []string{"bob", "mallory"} {
		if c, _ := s.Contacts(u); len(c) != 0 {
			t.Fatalf("%s's contacts while invited: %v", u, c)
		}
	}
	if err := s.AcceptGroupInvite("prize", "bob"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Group("prize"); len(got.Pending) != 0 {
		t.Fatalf("the cached state outlived the change: pending %v", got.Pending)
	}
	if err := s.AcceptGroupInvite("prize", "bob"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("accepting twice: %v", err)
	}
	if c, _ := s.Contacts("bob"); !slices.Equal(c, []string{"mallory"}) {
		t.Fatalf("contacts once joined: %v", c)
	}
	if joined, _ := s.ShareGroup("mallory", "bob", true); !joined {
		t.Fatal("no joined group in common once bob accepted")
	}
	// Invited again after a leave: the invitation goes with the member.
	left := next
	left.Seq = 2
	left.Members = left.Members[:1]
	if err := s.ChangeGroup(&left, 1, 0, []byte("s2"), nil, "", ""); err != nil {
		t.Fatal(err)
	}
	again := left
	again.Seq = 3
	again.Members = append(again.Members, GroupMember{Name: "bob"})
	if err := s.ChangeGroup(&again, 2, 0, []byte("s3"), nil, "bob", "mallory"); err != nil {
		t.Fatal(err)
	}
	out := again
	out.Seq = 4
	out.Members = out.Members[:1]
	if err := s.ChangeGroup(&out, 3, 0, []byte("s4"), nil, "", ""); err != nil {
		t.Fatal(err)
	}
	if inv, _ := s.GroupInvites("bob"); len(inv) != 0 {
		t.Fatalf("an invitation outlived the membership: %+v", inv)
	}
	if p := pendingOfStore(s, "prize"); len(p) != 0 {
		t.Fatalf("pending records left: %v", p)
	}
}

func pendingOfStore(s *Store, group string) map[string]string {
	var p map[string]string
	s.db.View(func(tx *bolt.Tx) error { p = pendingOf(tx, group); return nil })
	return p
}
