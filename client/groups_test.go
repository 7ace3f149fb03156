package client_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
	"securefastchat/store"
)

func members(t *testing.T, c *client.Client, group string) []string {
	t.Helper()
	ms, err := c.GroupMembers(ctxT(t), group)
	if err != nil {
		t.Fatalf("%s: members of %s: %v", c.User(), group, err)
	}
	var out []string
	for _, m := range ms {
		n := m.Name
		if m.Admin {
			n += "*"
		}
		out = append(out, n)
	}
	return out
}

func epochs(t *testing.T, c *client.Client, group string) []uint32 {
	t.Helper()
	es, _, err := c.GroupEpochs(ctxT(t), group)
	if err != nil {
		t.Fatalf("%s: epochs of %s: %v", c.User(), group, err)
	}
	slices.Sort(es)
	return es
}

func TestGroupMembership(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Limits.SignupBurst = 100 })
	alice := testserver.Signup(t, s, "alice")
	bob := testserver.Signup(t, s, "bob")
	carol := testserver.Signup(t, s, "carol")
	testserver.Signup(t, s, "dave").Close()
	ctx := ctxT(t)
	if err := alice.CreateGroup(ctx, "Team"); err != nil {
		t.Fatal(err)
	}
	if err := bob.CreateGroup(ctx, "team"); !errors.Is(err, proto.CodeGroupTaken) {
		t.Fatalf("taken name: %v", err)
	}
	if err := alice.AddMember(ctx, "team", "bob"); err != nil {
		t.Fatal(err)
	}
	testserver.Join(t, bob, "team")
	// bob's client looks at the group now (a fresh view fetches the
	// current epoch only; older ones come when a message under one does).
	if e := epochs(t, bob, "team"); !slices.Equal(e, []uint32{2}) {
		t.Fatalf("bob's epochs on joining %v", e)
	}
	if err := alice.AddMember(ctx, "team", "carol"); err != nil {
		t.Fatal(err)
	}
	testserver.Join(t, carol, "team")
	want := []string{"alice*", "bob", "carol"}
	for _, c := range []*client.Client{alice, bob, carol} {
		if got := members(t, c, "team"); !slices.Equal(got, want) {
			t.Fatalf("%s sees %v", c.User(), got)
		}
	}
	// Each epoch is wrapped for the members of its roster only: a new
	// member cannot read what came before.
	if e := epochs(t, alice, "team"); !slices.Equal(e, []uint32{1, 2, 3}) {
		t.Fatalf("alice's epochs %v", e)
	}
	if e := epochs(t, bob, "team"); !slices.Equal(e, []uint32{2, 3}) {
		t.Fatalf("bob's epochs %v", e)
	}
	if e := epochs(t, carol, "team"); !slices.Equal(e, []uint32{3}) {
		t.Fatalf("carol's epochs %v", e)
	}
	k3a, _ := alice.GroupKey(ctx, "team", 3)
	k3c, _ := carol.GroupKey(ctx, "team", 3)
	if *k3a != *k3c {
		t.Fatal("members hold different keys for one epoch")
	}

	// T40: a non-admin's add is refused by the client and by the server.
	if err := bob.AddMember(ctx, "team", "dave"); !errors.Is(err, proto.ErrNotAllowed) {
		t.Fatalf("bob's add (client): %v", err)
	}
	if err := rawChange(t, bob, "team", proto.OpAdd, "dave"); !errors.Is(err, proto.CodeForbidden) {
		t.Fatalf("bob's add (server): %v", err)
	}
	// T42: adding a user who does not exist; removing the last admin.
	if err := alice.AddMember(ctx, "team", "nobody"); err == nil {
		t.Fatal("added a user who does not exist")
	}
	if err := rawChange(t, alice, "team", proto.OpRemove, "alice"); !errors.Is(err, proto.CodeForbidden) {
		t.Fatalf("removing the last admin: %v", err)
	}

	// Remove carol: the next epoch is wrapped for alice and bob only, and
	// carol can no longer read the group.
	if err := alice.RemoveMember(ctx, "team", "carol"); err != nil {
		t.Fatal(err)
	}
	if e := epochs(t, bob, "team"); !slices.Equal(e, []uint32{2, 3, 4}) {
		t.Fatalf("bob's epochs after the removal %v", e)
	}
	if _, err := carol.GroupMembers(ctx, "team"); !errors.Is(err, proto.CodeNoSuchGroup) {
		t.Fatalf("removed member reads the group: %v", err)
	}
	// bob leaves; the key is behind the roster until someone rekeys.
	if err := bob.LeaveGroup(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	if g, _ := s.Store.Group("team"); g.EpochSeq == g.Seq {
		t.Fatal("a leave must leave the epoch behind the roster")
	}
	if err := alice.Rekey(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	if e := epochs(t, alice, "team"); !slices.Equal(e, []uint32{1, 2, 3, 4, 5}) {
		t.Fatalf("alice's epochs after the rekey %v", e)
	}
	if gs, _ := bob.Groups(ctx); len(gs) != 0 {
		t.Fatalf("bob still lists %v", gs)
	}
	if gs, _ := alice.Groups(ctx); !slices.Equal(gs, []string{"team"}) {
		t.Fatalf("alice lists %v", gs)
	}
	// The store holds no plaintext group key.
	db, _ := os.ReadFile(s.Store.Path())
	for e := uint32(1); e <= 5; e++ {
		k, _ := alice.GroupKey(ctx, "team", e)
		if bytes.Contains(db, k[:]) {
			t.Fatalf("epoch %d's key is in the store in the clear", e)
		}
	}
}

// rawChange sends a signed statement with no epoch, bypassing the
// client's own checks, to test the server's.
func rawChange(t *testing.T, c *client.Client, group string, op uint8, target string) error {
	chain, err := c.GroupChain(ctxT(t), group)
	if err != nil {
		return err
	}
	last := chain[len(chain)-1]
	s := &proto.Statement{Group: []byte(group), Seq: last.Seq + 1, Prev: last.Hash(), Op: op, Target: []byte(target), Signer: []byte(c.User())}
	s.Sign(c.Identity().Sign)
	m := proto.GroupChange{Group: []byte(group), Statement: s.Append(nil), Part: 1, Parts: 1}
	_, _, err = c.Conn().Request(ctxT(t), func(b []byte, id uint32) []byte { return m.Append(b, id) })
	return err
}

// A malicious server that slips a member into the chain is caught: the
// client does not trust the member list.
func TestServerCannotSlipAMemberIn(t *testing.T) {
	s := testserver.Start(t, nil)
	alice := testserver.Signup(t, s, "alice")
	mallory := testserver.Signup(t, s, "mallory")
	ctx := ctxT(t)
	if err := alice.CreateGroup(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.GroupMembers(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	// The server appends "mallory adds mallory", signed by mallory (the
	// only key it can get a signature from), and puts her in its state.
	g, _ := s.Store.Group("team")
	forged := &proto.Statement{Group: []byte("team"), Seq: g.Seq + 1, Prev: g.Last, Op: proto.OpAdd, Target: []byte("mallory"), Signer: []byte("mallory")}
	forged.Sign(mallory.Identity().Sign)
	next := *g
	next.Seq, next.Last = forged.Seq, forged.Hash()
	next.Members = append(append([]store.GroupMember(nil), g.Members...), store.GroupMember{Name: "mallory"})
	if err := s.Store.ChangeGroup(&next, g.Seq, g.Epoch, forged.Append(nil), nil, "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.GroupMembers(ctx, "team"); !errors.Is(err, client.ErrGroupChain) {
		t.Fatalf("alice accepted a server-forged member: %v", err)
	}
	// And she will not wrap a key for the forged roster.
	if err := alice.Rekey(ctx, "team"); !errors.Is(err, client.ErrGroupChain) {
		t.Fatalf("rekey over a forged roster: %v", err)
	}
}

func recvGroup(t *testing.T, c *client.Client) *client.Message {
	t.Helper()
	m := recvOne(t, c)
	if m.Group == "" {
		t.Fatalf("%s got a direct message %+v", c.User(), m)
	}
	return m
}

// The end-to-end test: two members on different shards get a
// group message once; a removed member cannot read what follows, with
// every key it ever had; a member offline gets it at login; after a leave
// the next sender rekeys.
func TestGroupMessages(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Limits.SignupBurst = 100; c.Shard.MsgEvery = -1 })
	alice := testserver.Signup(t, s, "alice") // shard 0
	bob := testserver.Signup(t, s, "bob")     // shard 1
	carol := testserver.Signup(t, s, "carol") // shard 0
	daveCfg := testserver.ClientConfig(t, s)
	signup(t, daveCfg, "dave").Close() // offline
	ctx := ctxT(t)
	if err := alice.CreateGroup(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob", "carol", "dave"} {
		if err := alice.AddMember(ctx, "team", u); err != nil {
			t.Fatal(err)
		}
	}
	testserver.Join(t, bob, "team")
	testserver.Join(t, carol, "team")
	joinAs(t, daveCfg, "dave", "team")
	r, err := alice.SendGroupText(ctx, "team", "hello team")
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != proto.StatusQueued { // dave is offline
		t.Fatalf("receipt %+v", r)
	}
	for _, c := range []*client.Client{bob, carol} {
		m := recvGroup(t, c)
		if m.Text != "hello team" || m.From != "alice" || m.Group != "team" {
			t.Fatalf("%s got %+v", c.User(), m)
		}
	}
	// Bob answers; alice gets it once.
	if _, err := bob.SendGroupText(ctx, "team", "hi alice"); err != nil {
		t.Fatal(err)
	}
	if m := recvGroup(t, alice); m.Text != "hi alice" || m.From != "bob" {
		t.Fatalf("alice got %+v", m)
	}
	recvGroup(t, carol)
	carolEpochs := epochs(t, carol, "team")

	// Remove carol, then send: dave (offline) keeps the ciphertext in the
	// store, and carol can open it with none of her keys.
	if err := alice.RemoveMember(ctx, "team", "carol"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendGroupText(ctx, "team", "after carol left"); err != nil {
		t.Fatal(err)
	}
	if m := recvGroup(t, bob); m.Text != "after carol left" {
		t.Fatalf("bob got %q", m.Text)
	}
	daves, _ := s.Store.Inboxes("dave")
	if len(daves) != 1 {
		t.Fatalf("dave's inboxes: %v", daves)
	}
	queued, _ := s.Store.Peek(daves[0], 0, 10)
	var after *store.Queued
	for _, q := range queued {
		if q.Group == "team" && q.Epoch > carolEpochs[len(carolEpochs)-1] {
			after = q
		}
	}
	if after == nil {
		t.Fatal("no message under the new epoch in dave's queue")
	}
	for _, e := range carolEpochs {
		k, err := carol.GroupKey(ctx, "team", e)
		if err == nil {
			if _, err := proto.OpenGroup(after.Body, k); err == nil {
				t.Fatalf("carol's epoch %d key opens the message sent after her removal", e)
			}
		}
	}
	select {
	case m := <-testserver.Messages(carol):
		t.Fatalf("carol received %q after her removal", m.Text)
	default:
	}
	// dave comes online: he gets everything sent while he was away, once.
	dave := login(t, daveCfg, "dave")
	var got []string
	for len(got) < 3 {
		got = append(got, recvGroup(t, dave).Text)
	}
	if !slices.Equal(got, []string{"hello team", "hi alice", "after carol left"}) {
		t.Fatalf("dave got %v", got)
	}
	// bob leaves; alice's next send makes the new key for alice and dave.
	if err := bob.LeaveGroup(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	before := epochs(t, alice, "team")
	if _, err := alice.SendGroupText(ctx, "team", "after bob left"); err != nil {
		t.Fatal(err)
	}
	if m := recvGroup(t, dave); m.Text != "after bob left" || m.Epoch <= before[len(before)-1] {
		t.Fatalf("dave got %+v, epochs before %v", m, before)
	}
	// bob is no member: he cannot even fetch his keys.
	if _, _, err := bob.GroupEpochs(ctx, "team"); !errors.Is(err, proto.CodeNoSuchGroup) {
		t.Fatalf("bob still reads the group's keys: %v", err)
	}
	// Non-members cannot send.
	m := proto.SendGroup{Group: []byte("team"), Epoch: 1, MsgID: make([]byte, 16), Body: []byte("x"), Sig: make([]byte, 64)}
	if _, _, err := carol.Conn().Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) }); !errors.Is(err, proto.CodeNoSuchGroup) {
		t.Fatalf("a non-member's send: %v", err)
	}
}

// Looking up the keys of users one shares a group with is not limited: a
// fresh session of an admin looks up every member again to wrap a key.
func TestGroupKeyLookupsNotLimited(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) {
		c.Limits.SignupBurst = 100
		c.Limits.LookupBurst = 4
		c.Limits.LookupEvery = time.Hour
	})
	cfg := testserver.ClientConfig(t, s)
	alice := signup(t, cfg, "alice")
	ctx := ctxT(t)
	if err := alice.CreateGroup(ctx, "big"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ { // three lookups of new members: limited
		u := fmt.Sprint("u", i)
		testserver.Signup(t, s, u).Close()
		if err := alice.AddMember(ctx, "big", u); err != nil {
			t.Fatalf("add %s: %v", u, err)
		}
	}
	alice.Close()
	alice = login(t, cfg, "alice")
	// A new epoch needs all three members' keys again: only one lookup of
	// the limit is left, but co-members do not count.
	if err := alice.Rekey(ctx, "big"); err != nil {
		t.Fatalf("rekey from a fresh session: %v", err)
	}
	// Strangers still count.
	testserver.Signup(t, s, "x1").Close()
	testserver.Signup(t, s, "x2").Close()
	if _, err := alice.PeerKeys(ctx, "x1"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.PeerKeys(ctx, "x2"); !errors.Is(err, proto.CodeRateLimited) {
		t.Fatalf("a stranger's lookup past the limit: %v", err)
	}
}

// Keys rotate after 100 messages from a sender, as well as on every
// membership change.
func TestGroupKeyRotation(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Shard.MsgEvery = -1 })
	alice := testserver.Signup(t, s, "alice")
	bob := testserver.Signup(t, s, "bob")
	ctx := ctxT(t)
	alice.CreateGroup(ctx, "team")
	alice.AddMember(ctx, "team", "bob")
	testserver.Join(t, bob, "team")
	_, start, _ := alice.GroupEpochs(ctx, "team")
	for i := 0; i < client.RotateAfterMessages+1; i++ {
		if _, err := alice.SendGroupText(ctx, "team", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		recvGroup(t, bob)
	}
	_, now, _ := alice.GroupEpochs(ctx, "team")
	if now != start+1 {
		t.Fatalf("epoch %d after %d messages, started at %d", now, client.RotateAfterMessages+1, start)
	}
}

// TestGroupFile: a file sent to a group arrives whole at every member,
// online or offline at the time, each saving its own copy; its chunks are
// sealed and signed like the group's messages.
func TestGroupFile(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Limits.SignupBurst = 100 })
	alice := testserver.Signup(t, s, "alice")
	bobCfg := testserver.ClientConfig(t, s)
	bob := signup(t, bobCfg, "bob")
	carolCfg := testserver.ClientConfig(t, s)
	signup(t, carolCfg, "carol").Close() // offline while it is sent
	ctx := ctxT(t)
	if err := alice.CreateGroup(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob", "carol"} {
		if err := alice.AddMember(ctx, "team", u); err != nil {
			t.Fatal(err)
		}
	}
	testserver.Join(t, bob, "team")
	joinAs(t, carolCfg, "carol", "team")
	data := make([]byte, 3*proto.FileChunkData+123) // four chunks
	rand.Read(data)
	path := filepath.Join(t.TempDir(), "plan.bin")
	os.WriteFile(path, data, 0o600)
	id := client.NewMsgID()
	var last int64
	r, err := alice.SendGroupFileAs(ctx, "team", path, id, func(done, total int64) { last = done })
	if err != nil {
		t.Fatal(err)
	}
	if r.Chunks != 4 || r.ID != id || last != int64(len(data)) {
		t.Fatalf("receipt %+v, progress %d", r, last)
	}
	carol := login(t, carolCfg, "carol")
	defer carol.Close()
	for _, c := range []*client.Client{bob, carol} {
		m := recvGroup(t, c)
		if m.File == nil || m.Group != "team" || m.From != "alice" || m.File.ID != id || m.File.Name != "plan.bin" {
			t.Fatalf("%s got %+v", c.User(), m)
		}
		got, err := os.ReadFile(m.File.Path)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s's copy differs: %v", c.User(), err)
		}
	}
	bob.Close()
}
