package client

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"securefastchat/proto"
)

// copyTree copies testdata into a temporary directory.
func copyTree(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return to
}

// TestHomeFormat0: a home written before its files were sealed
// (testdata/home-format0) is read whole, and its contacts and seen log
// are sealed in place at once; a partial transfer's state is read, and
// sealed at its next write. A file of a later format is refused with a
// message that says so.
func TestHomeFormat0(t *testing.T) {
	home := copyTree(t, "testdata/home-format0")
	dir := filepath.Join(home, "users", "alice")
	id, err := LoadIdentity(filepath.Join(dir, "identity"), []byte("a long enough password"))
	if err != nil {
		t.Fatal(err)
	}
	ct, err := loadContacts(Dir(home), "users/alice/contacts", localKey(id, "alice", "contacts"))
	if err != nil {
		t.Fatal(err)
	}
	bob := ct.pinned["bob"]
	if bob == nil || bob.Fingerprint() == "" {
		t.Fatalf("bob's pinned keys were not read: %+v", ct.pinned)
	}
	seen, err := openSeenLog(Dir(home), "users/alice/seen", localKey(id, "alice", "seen"))
	if err != nil {
		t.Fatal(err)
	}
	msgID, _ := hex.DecodeString("d0ff4dc738a8094e9d2e914ad796a9b4")
	if !seen.has("bob", msgID) {
		t.Fatal("the seen log lost bob's message")
	}
	seen.close()
	for _, name := range []string{"contacts", "seen"} {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		if bytes.Contains(b, []byte("bob")) || bytes.Contains(b, []byte("x25519")) {
			t.Fatalf("%s still plain after opening:\n%s", name, b)
		}
	}
	// Opened again: the same.
	ct2, err := loadContacts(Dir(home), "users/alice/contacts", localKey(id, "alice", "contacts"))
	if err != nil || ct2.pinned["bob"] == nil || ct2.pinned["bob"].Fingerprint() != bob.Fingerprint() {
		t.Fatalf("sealed contacts: %v %+v", err, ct2.pinned)
	}
	seen, err = openSeenLog(Dir(home), "users/alice/seen", localKey(id, "alice", "seen"))
	if err != nil || !seen.has("bob", msgID) {
		t.Fatalf("sealed seen log: %v", err)
	}
	seen.add("carol", []byte("0123456789abcdef"))
	if err := seen.sync(); err != nil {
		t.Fatal(err)
	}
	seen.close()
	if b, _ := os.ReadFile(filepath.Join(dir, "seen")); bytes.Contains(b, []byte("carol")) {
		t.Fatal("an appended record is plain")
	}

	// The partial transfer from before: known, then sealed at its next write.
	downloadDir := filepath.Join(home, "downloads")
	downloads := DownloadDir(downloadDir)
	var fid [proto.MsgIDLen]byte
	copy(fid[:], mustHex("00112233445566778899aabbccddeeff"))
	key := localKey(id, "alice", "partials")
	p := loadPartials(downloads, time.Now(), key)
	if q := p.m[fid]; q == nil || q.from != "bob" || q.size != 100000 {
		t.Fatalf("the partial transfer: %+v", p.m)
	}
	f, err := openIncoming(downloads, key, fid, "bob", "report.pdf", 100000, 4)
	if err != nil || f.n != 1 || !f.got[0] {
		t.Fatalf("resumed: %v %+v", err, f)
	}
	f.dirty = true
	if err := f.sync(downloads); err != nil {
		t.Fatal(err)
	}
	f.f.Close()
	if b, _ := os.ReadFile(filepath.Join(downloadDir, incomingName(fid, "state"))); bytes.Contains(b, []byte("bob")) || bytes.Contains(b, []byte("report")) {
		t.Fatal("the state is still plain after a write")
	}
	if p := loadPartials(downloads, time.Now(), key); p.m[fid] == nil {
		t.Fatal("the sealed state is not read back")
	}
	// Another user sharing the folder cannot read it, and leaves it be.
	other := [32]byte{9}
	if p := loadPartials(downloads, time.Now(), &other); len(p.m) != 0 {
		t.Fatal("another key read the state")
	}
	if _, err := os.Stat(filepath.Join(downloadDir, incomingName(fid, "part"))); err != nil {
		t.Fatalf("another user's start removed the transfer: %v", err)
	}

	// Files of a later format.
	os.WriteFile(filepath.Join(dir, "contacts"), []byte("SFCCON2\nwhatever"), 0o600)
	if _, err := loadContacts(Dir(home), "users/alice/contacts", localKey(id, "alice", "contacts")); !errors.Is(err, ErrNewerFile) || !strings.Contains(err.Error(), "newer securefastchat") {
		t.Fatalf("a newer contacts file: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "seen"), []byte("SFCSEEN2\n"), 0o600)
	if _, err := openSeenLog(Dir(home), "users/alice/seen", localKey(id, "alice", "seen")); !errors.Is(err, ErrNewerFile) {
		t.Fatalf("a newer seen log: %v", err)
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// TestAccountRecordVersions: a linked device's account record is version
// 1 without the master key and version 2 with it, both read back; a
// version 2 record whose key is not the account's master key is refused,
// and a newer version is refused saying so.
func TestAccountRecordVersions(t *testing.T) {
	first, dev := fuzzID(), fuzzID()
	dev.Sign = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))
	keys := first.PublicKeys("alice")
	for _, master := range []ed25519.PrivateKey{nil, first.Sign} {
		st := memStorage{}
		if err := saveAccount(st, "alice", dev, &keys, master); err != nil {
			t.Fatal(err)
		}
		b := st[userRecord("alice", "account")]
		if want := map[bool]string{false: accountMagic, true: accountMagicV2}[master != nil]; !bytes.HasPrefix(b, []byte(want)) {
			t.Fatalf("master %v: the record starts %q", master != nil, b[:7])
		}
		a, err := loadAccount(st, "alice", dev)
		if err != nil || !a.linked || !a.masterKey.Equal(master) && (a.masterKey != nil || master != nil) {
			t.Fatalf("master %v: loaded %+v %v", master != nil, a, err)
		}
	}
	st := memStorage{}
	if err := saveAccount(st, "alice", dev, &keys, dev.Sign); err != nil {
		t.Fatal(err)
	}
	if _, err := loadAccount(st, "alice", dev); err == nil {
		t.Fatal("a record with another key than the master key loaded")
	}
	st[userRecord("alice", "account")] = []byte("SFCACC3\nwhatever comes after")
	if _, err := loadAccount(st, "alice", dev); !errors.Is(err, ErrNewerFile) {
		t.Fatalf("a newer record: %v", err)
	}
}
