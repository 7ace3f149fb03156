package client_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

// newDevice makes a device's keys and the statement that adds it after
// list, signed by master.
func newDevice(t *testing.T, user string, list *proto.DeviceList, name string, master ed25519.PrivateKey) *proto.DeviceStatement {
	t.Helper()
	box, err := proto.NewKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sign, _, _ := ed25519.GenerateKey(rand.Reader)
	st := &proto.DeviceStatement{User: []byte(user), Seq: list.Seq + 1, Prev: list.Last, Op: proto.DeviceAdd, Name: []byte(name),
		BoxKey: box.Public.Bytes(), SignKey: sign, Time: time.Now().Unix()}
	st.DeviceID = proto.KeyRecordID(&proto.Keys{BoxKey: st.BoxKey, SignKey: st.SignKey})
	st.Sign(master)
	return st
}

// appendDevice sends a DeviceAppend on c's connection.
func appendDevice(t *testing.T, c *client.Client, st *proto.DeviceStatement) error {
	t.Helper()
	return testserver.AppendDevice(ctxT(t), c, st)
}

func remoteCode(err error) proto.ErrorCode {
	var re *proto.RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	return 0
}

// TestDeviceChains: each account has a device list signed by its master
// key, made by its first client; others check it against the key they
// pinned. An ordinary account cannot change another's list, nor its own
// without its master key, past the rules or past MaxDevices.
func TestDeviceChains(t *testing.T) {
	s := testserver.Start(t, nil)
	alice := testserver.Signup(t, s, "alice")
	bob := testserver.Signup(t, s, "bob")
	mallory := testserver.Signup(t, s, "mallory")

	mine, err := alice.Devices(ctxT(t), "alice")
	if err != nil || len(mine.Devices) != 1 || mine.Devices[0].Name != client.DefaultDeviceName {
		t.Fatalf("alice's own devices: %+v %v", mine, err)
	}
	keys := alice.Identity().PublicKeys("alice")
	if mine.Devices[0].ID != proto.KeyRecordID(&keys) {
		t.Fatal("alice's first device is not her identity")
	}
	seen, err := bob.Devices(ctxT(t), "alice")
	if err != nil || seen.Last != mine.Last {
		t.Fatalf("alice's devices as bob sees them: %+v %v", seen, err)
	}

	// mallory, an ordinary account, against bob's list and her own.
	bobList, err := bob.Devices(ctxT(t), "bob")
	if err != nil {
		t.Fatal(err)
	}
	_, malKey, _ := ed25519.GenerateKey(rand.Reader)
	if err := appendDevice(t, mallory, newDevice(t, "bob", bobList, "mallory's phone", malKey)); remoteCode(err) != proto.CodeForbidden {
		t.Fatalf("mallory adding a device to bob: %v", err)
	}
	malList, err := mallory.Devices(ctxT(t), "mallory")
	if err != nil {
		t.Fatal(err)
	}
	if err := appendDevice(t, mallory, newDevice(t, "mallory", malList, "unsigned", malKey)); remoteCode(err) != proto.CodeInvalidKey {
		t.Fatalf("a device signed by another key than the master: %v", err)
	}
	master := mallory.Identity().Sign
	stale := newDevice(t, "mallory", malList, "stale", master)
	stale.Seq, stale.Prev = 0, [32]byte{}
	stale.Sign(master)
	if err := appendDevice(t, mallory, stale); remoteCode(err) != proto.CodeStaleDevices {
		t.Fatalf("a statement in a taken place: %v", err)
	}
	list := malList
	for i := 1; i < proto.MaxDevices; i++ {
		st := newDevice(t, "mallory", list, fmt.Sprint("device ", i), master)
		if err := appendDevice(t, mallory, st); err != nil {
			t.Fatalf("device %d: %v", i+1, err)
		}
		if list, err = list.Apply(st, master.Public().(ed25519.PublicKey)); err != nil {
			t.Fatal(err)
		}
	}
	err = appendDevice(t, mallory, newDevice(t, "mallory", list, "one too many", master))
	if remoteCode(err) != proto.CodeTooManyDevices {
		t.Fatalf("device %d: %v", proto.MaxDevices+1, err)
	}
	if got, err := bob.Devices(ctxT(t), "mallory"); err != nil || len(got.Devices) != proto.MaxDevices {
		t.Fatalf("mallory's devices as bob sees them: %d %v", len(got.Devices), err)
	}
	if got, err := alice.Devices(ctxT(t), "bob"); err != nil || len(got.Devices) != 1 {
		t.Fatalf("bob's list after mallory's attempts: %+v %v", got, err)
	}
}

// TestLyingServerDevices: a device the server adds to bob's list by itself
// is caught by alice's client, and so is a server that shows an older
// list than alice saw (restored from a backup, it drops bob's second
// device's statement and shows another in its place).
func TestLyingServerDevices(t *testing.T) {
	dir := t.TempDir()
	cfg := testserver.Config(t, dir)
	s, err := server.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { testserver.Stop(t, s) }()
	acfg := testserver.ClientConfig(t, s)
	alice, err := client.Signup(ctxT(t), acfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob := testserver.Signup(t, s, "bob")
	bobList, err := bob.Devices(ctxT(t), "bob")
	if err != nil {
		t.Fatal(err)
	}

	// The server appends a device of its own to bob's list.
	_, serverKey, _ := ed25519.GenerateKey(rand.Reader)
	forged := newDevice(t, "bob", bobList, "the server's", serverKey)
	if err := s.Store.AppendDevice("bob", forged.Seq, forged.Append(nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Devices(ctxT(t), "bob"); !errors.Is(err, client.ErrDeviceChain) {
		t.Fatalf("a device the server added: %v, want ErrDeviceChain", err)
	}

	// Another server (another store): bob adds a laptop, alice sees it;
	// then the server shows the list without it.
	testserver.Stop(t, s)
	db := filepath.Join(dir, "securefastchat.db")
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}
	if s, err = server.Start(cfg); err != nil {
		t.Fatal(err)
	}
	acfg.Addr = s.Addr()
	alice2, err := client.Signup(ctxT(t), acfg, "alice2", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer alice2.Close()
	bob2 := testserver.Signup(t, s, "bob2")
	l0, err := bob2.Devices(ctxT(t), "bob2")
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(db) // the "backup": bob2's list has one device
	if err != nil {
		t.Fatal(err)
	}
	laptop := newDevice(t, "bob2", l0, "laptop", bob2.Identity().Sign)
	if err := appendDevice(t, bob2, laptop); err != nil {
		t.Fatal(err)
	}
	if got, err := alice2.Devices(ctxT(t), "bob2"); err != nil || len(got.Devices) != 2 {
		t.Fatalf("bob2's two devices: %+v %v", got, err)
	}
	testserver.Stop(t, s)
	if err := os.WriteFile(db, before, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err = server.Start(cfg); err != nil {
		t.Fatal(err)
	}
	alice2.Close()
	acfg.Addr = s.Addr()
	alice2, err = client.Open(ctxT(t), acfg, "alice2", pw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice2.Devices(ctxT(t), "bob2"); !errors.Is(err, client.ErrDeviceChainForked) {
		t.Fatalf("a list without the statement alice saw: %v, want ErrDeviceChainForked", err)
	}
}

// TestDevicesUpgrade: an account from before device lists (a store and
// homes made by the previous version, in testdata/upgrade-v2) opens on
// this version: alice's identity becomes her master key and first device
// when her client first connects, what was queued for her arrives, and
// bob, from his old home, checks her list.
func TestDevicesUpgrade(t *testing.T) {
	_, cfg := upgradeFrom(t, "testdata/upgrade-v2")
	alice, err := client.Open(ctxT(t), cfg, "alice", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	if m := recvOne(t, alice); m.Text != "queued before the upgrade" || m.From != "bob" {
		t.Fatalf("alice got %+v", m)
	}
	bob, err := client.Open(ctxT(t), cfg, "bob", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	// Alice's client made her list when it connected; bob checks it.
	var list *proto.DeviceList
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if list, err = bob.Devices(ctxT(t), "alice"); err == nil || !errors.Is(err, client.ErrNoDeviceChain) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || len(list.Devices) != 1 {
		t.Fatalf("alice's list as bob sees it: %+v %v", list, err)
	}
	keys := alice.Identity().PublicKeys("alice")
	if list.Devices[0].ID != proto.KeyRecordID(&keys) {
		t.Fatal("alice's first device is not her old identity")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if own, err := alice.Devices(ctx, "alice"); err != nil || own.Last != list.Last {
		t.Fatalf("alice's own list: %+v %v", own, err)
	}
}

// upgradeFrom starts a server on a copy of the data directory a previous
// build left in dir (dir/data), and returns it with a client
// configuration for the homes that build left (dir/home).
func upgradeFrom(t *testing.T, dir string) (*server.Server, client.Config) {
	t.Helper()
	root := t.TempDir()
	if err := os.CopyFS(root, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	// Files copied keep their modes but not 0700 folders; the home is the
	// user's alone.
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	s, err := server.Start(testserver.Config(t, filepath.Join(root, "data")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testserver.Stop(t, s) })
	cfg := testserver.ClientConfig(t, s)
	cfg.Home = filepath.Join(root, "home")
	cfg.KDF = client.KDFParams{}
	return s, cfg
}

// TestDeviceLogin: a device in its account's list logs in with its own
// key when its session is gone, and the password does not reach the
// server (here the server's password hash is another password's, so a
// password login would fail). mallory, speaking the protocol, cannot log
// in as alice's device: neither with her own key nor with a login signed
// for another connection.
func TestDeviceLogin(t *testing.T) {
	s := testserver.Start(t, nil)
	cfg := testserver.ClientConfig(t, s)
	alice, err := client.Signup(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	keys := alice.Identity().PublicKeys("alice")
	aliceKey := alice.Identity().Sign
	alice.Close()
	if err := s.Store.SetPasswordHash("alice", "$argon2id$v=19$m=64,t=1,p=1$c29tZSBzYWx0IGhlcmU$YW5vdGhlciBwYXNzd29yZCdzIGhhc2ggaGVyZSEh"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store.DeleteUserSessions("alice"); err != nil {
		t.Fatal(err)
	}
	alice, err = client.Open(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatalf("alice's device logging in with its key: %v", err)
	}
	defer alice.Close()
	bob := testserver.Signup(t, s, "bob")
	testserver.Acquaint(t, alice, bob)

	conn, err := client.Dial(ctxT(t), s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, malKey, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := conn.LoginDevice(ctxT(t), "alice", proto.KeyRecordID(&keys), malKey, 0); remoteCode(err) != proto.CodeInvalidCredentials {
		t.Fatalf("alice's device id with mallory's key: %v", err)
	}
	replay := proto.LoginDevice{User: []byte("alice"), DeviceID: proto.KeyRecordID(&keys)}
	replay.Sign(aliceKey, [32]byte{1, 2, 3}) // another connection's binding
	typ, _, err := conn.Request(ctxT(t), func(b []byte, id uint32) []byte { return replay.Append(b, id) })
	if remoteCode(err) != proto.CodeInvalidCredentials {
		t.Fatalf("a login signed for another connection: %#x %v", uint8(typ), err)
	}
}

// TestDeviceNews: when bob's device list grows, his contacts online are
// told at once: their clients check the new list and say which device
// was added. Someone who is not his contact is not told.
func TestDeviceNews(t *testing.T) {
	s := testserver.Start(t, nil)
	alice := testserver.Signup(t, s, "alice")
	bob := testserver.Signup(t, s, "bob")
	eve := testserver.Signup(t, s, "eve")
	testserver.Acquaint(t, alice, bob)
	testserver.Acquaint(t, bob, alice)
	news := func(c *client.Client) <-chan client.Event {
		ch := make(chan client.Event, 8)
		testserver.OnEvent(c, func(ev client.Event) {
			if ev.Kind == client.EventDevice {
				ch <- ev
			}
		})
		return ch
	}
	aliceNews, eveNews := news(alice), news(eve)
	list, err := bob.Devices(ctxT(t), "bob")
	if err != nil {
		t.Fatal(err)
	}
	if err := appendDevice(t, bob, newDevice(t, "bob", list, "laptop", bob.Identity().Sign)); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-aliceNews:
		if ev.User != "bob" || ev.Op != proto.DeviceAdd || ev.Text != "laptop" {
			t.Fatalf("alice was told %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("alice was not told that bob added a device")
	}
	if got, err := alice.Devices(ctxT(t), "bob"); err != nil || len(got.Devices) != 2 {
		t.Fatalf("bob's list as alice sees it: %+v %v", got, err)
	}
	select {
	case ev := <-eveNews:
		t.Fatalf("eve, a stranger to bob, was told %+v", ev)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestDeviceLoginFollowsTheList: a device logs in while it is on its
// account's list and not after it was removed; an account deleted and made
// again under the same keys starts a new list, and only that list counts.
func TestDeviceLoginFollowsTheList(t *testing.T) {
	s := testserver.Start(t, nil)
	alice := testserver.Signup(t, s, "alice")
	master := alice.Identity().Sign
	list, err := alice.Devices(ctxT(t), "alice")
	if err != nil {
		t.Fatal(err)
	}
	box, _ := proto.NewKeyPair(rand.Reader)
	_, laptopKey, _ := ed25519.GenerateKey(rand.Reader)
	add := &proto.DeviceStatement{User: []byte("alice"), Seq: list.Seq + 1, Prev: list.Last, Op: proto.DeviceAdd, Name: []byte("laptop"),
		BoxKey: box.Public.Bytes(), SignKey: laptopKey.Public().(ed25519.PublicKey), Time: time.Now().Unix()}
	add.DeviceID = proto.KeyRecordID(&proto.Keys{BoxKey: add.BoxKey, SignKey: add.SignKey})
	add.Sign(master)
	if err := appendDevice(t, alice, add); err != nil {
		t.Fatal(err)
	}
	login := func() error {
		conn, err := client.Dial(ctxT(t), s.Addr(), client.DialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = conn.LoginDevice(ctxT(t), "alice", add.DeviceID, laptopKey, proto.LoginNoDeliveries)
		return err
	}
	if err := login(); err != nil {
		t.Fatalf("the laptop on the list: %v", err)
	}
	withLaptop, err := list.Apply(add, master.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	rm := *add
	rm.Seq, rm.Prev, rm.Op = withLaptop.Seq+1, withLaptop.Last, proto.DeviceRemove
	rm.Sign(master)
	if err := appendDevice(t, alice, &rm); err != nil {
		t.Fatal(err)
	}
	if err := login(); remoteCode(err) != proto.CodeInvalidCredentials {
		t.Fatalf("the laptop after its removal: %v", err)
	}

	// The account deleted and made again with the same keys: its new list
	// starts at statement 0, and the old laptop is on neither.
	keys := alice.Identity().PublicKeys("alice")
	alice.Close()
	if err := s.Store.DeleteUser("alice"); err != nil {
		t.Fatal(err)
	}
	s.Set.Kick("alice")
	conn, err := client.Dial(ctxT(t), s.Addr(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Signup(ctxT(t), "alice", pw, keys); err != nil {
		t.Fatal(err)
	}
	first := &proto.DeviceStatement{User: []byte("alice"), Op: proto.DeviceAdd, DeviceID: proto.KeyRecordID(&keys), Name: []byte("again"),
		BoxKey: keys.BoxKey, SignKey: keys.SignKey, Time: time.Now().Unix()}
	first.Sign(master)
	m := proto.DeviceAppend{Statement: first.Append(nil)}
	if typ, _, err := conn.Request(ctxT(t), func(b []byte, id uint32) []byte { return m.Append(b, id) }); err != nil || typ != proto.TOK {
		t.Fatalf("the new list's first statement: %#x %v", uint8(typ), err)
	}
	if err := login(); remoteCode(err) != proto.CodeInvalidCredentials {
		t.Fatalf("the old laptop on the new account: %v", err)
	}
}
