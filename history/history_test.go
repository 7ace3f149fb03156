package history

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestHistory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.db")
	key := &[32]byte{1, 2, 3}
	h, err := Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	e1 := &Entry{Conv: "@bob", ID: [16]byte{1}, From: "ann", Mine: true, Text: "secret words ✓", Time: time.Unix(1700000000, 0), Status: Sending}
	e2 := &Entry{Conv: "#team", ID: [16]byte{2}, From: "bob", Text: "group words", Time: time.Unix(1700000001, 0), Unread: true}
	for _, e := range []*Entry{e1, e2} {
		if err := h.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	e1.Status = Read
	if err := h.Update(e1); err != nil {
		t.Fatal(err)
	}
	if err := h.SetMeta("verified:bob", []byte("fingerprint")); err != nil {
		t.Fatal(err)
	}
	// A second client of the same user is refused while this one runs.
	if _, err := Open(path, key); !errors.Is(err, ErrInUse) {
		t.Fatalf("second open: %v", err)
	}
	h.Close()

	// Nothing readable on disk.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"secret words", "group words", "bob", "team", "verified", "fingerprint"} {
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("%q is readable in the history file", s)
		}
	}

	h, err = Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	all, bad, err := h.All()
	if err != nil || bad != 0 || len(all) != 2 {
		t.Fatalf("reopened: %d entries, %d bad, %v", len(all), bad, err)
	}
	if all[0].Text != e1.Text || all[0].Status != Read || all[0].Seq != 1 || all[1].Conv != "#team" || !all[1].Unread || !all[1].Time.Equal(e2.Time) {
		t.Fatalf("got %+v %+v", all[0], all[1])
	}
	e3 := &Entry{Conv: "@bob", Text: "after reopen"}
	if err := h.Add(e3); err != nil || e3.Seq != 3 {
		t.Fatalf("seq after reopen: %d %v", e3.Seq, err)
	}
	e4, e5 := &Entry{Conv: "@bob", Text: "four"}, &Entry{Conv: "@bob", Text: "five"}
	if err := h.Add(e4, e5); err != nil || e4.Seq != 4 || e5.Seq != 5 {
		t.Fatalf("a batch: %d %d %v", e4.Seq, e5.Seq, err)
	}
	if all, _, _ := h.All(); len(all) != 5 || all[4].Text != "five" {
		t.Fatalf("after a batch: %d entries", len(all))
	}
	if v, err := h.Meta("verified:bob"); err != nil || string(v) != "fingerprint" {
		t.Fatalf("meta: %q %v", v, err)
	}
	if v, err := h.Meta("verified:eve"); err != nil || v != nil {
		t.Fatalf("missing meta: %q %v", v, err)
	}
	if err := h.SetMeta("verified:bob", nil); err != nil {
		t.Fatal(err)
	}
	if v, _ := h.Meta("verified:bob"); v != nil {
		t.Fatal("meta not deleted")
	}
}

func TestWrongKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.db")
	h, err := Open(path, &[32]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	h.Add(&Entry{Conv: "@bob", Text: "x"})
	h.Close()
	h, err = Open(path, &[32]byte{2})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	all, bad, err := h.All()
	if err != nil || len(all) != 0 || bad != 1 {
		t.Fatalf("with the wrong key: %d entries, %d bad, %v", len(all), bad, err)
	}
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the fuzz seed corpus in testdata/fuzz")

// FuzzDecodeEntry: a stored record, whatever its bytes, decodes or fails
// cleanly; one that decodes encodes to an entry that decodes the same.
func FuzzDecodeEntry(f *testing.F) {
	h := &History{key: [32]byte{9}}
	if *updateCorpus {
		seed, _ := h.sealJSON(&Entry{Conv: "@bob", Text: "hi", Time: time.Unix(1, 0)})
		seeds := [][]byte{seed, h.seal([]byte(`{"c":"#g","t":"x","s":200,"r":["a"]}`)), h.seal([]byte(`not json`)), []byte("short")}
		dir := filepath.Join("testdata", "fuzz", "FuzzDecodeEntry")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			f.Fatal(err)
		}
		for i, s := range seeds {
			content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(content), 0o644); err != nil {
				f.Fatal(err)
			}
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		e, err := h.decodeEntry(1, in)
		if err != nil {
			return
		}
		again, err := h.sealJSON(e)
		if err != nil {
			t.Fatal(err)
		}
		e2, err := h.decodeEntry(1, again)
		if err != nil || e2.Conv != e.Conv || e2.Text != e.Text || e2.Status != e.Status {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// A history written before the format was kept (format 0, in testdata)
// opens, keeps its entries and settings, and is marked with the current
// format; a history of a newer format is refused and left as it was.
func TestFormatUpgrade(t *testing.T) {
	var key [32]byte
	for i := range key {
		key[i] = byte(i)
	}
	old, err := os.ReadFile("testdata/format0-history.db")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "history.db")
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := Open(path, &key)
	if err != nil {
		t.Fatalf("opening a format 0 history: %v", err)
	}
	all, bad, err := h.All()
	if err != nil || bad != 0 || len(all) != 2 || all[0].Text != "hello from before" || !all[0].Unread || all[1].Status != Read {
		t.Fatalf("format 0 entries: %+v (bad %d, %v)", all, bad, err)
	}
	if v, err := h.Meta("verified"); err != nil || string(v) != `{"bob":"SHA256:x"}` {
		t.Fatalf("format 0 settings: %q %v", v, err)
	}
	if err := h.Add(&Entry{Conv: "#team", From: "ann", Text: "ann added you", Event: true, Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	h.Close()
	// Marked as the current format; made "newer", it is refused.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketFormat).Get([]byte("version"))
		if binary.BigEndian.Uint32(v) != Format {
			t.Errorf("format after opening: %x", v)
		}
		return tx.Bucket(bucketFormat).Put([]byte("version"), binary.BigEndian.AppendUint32(nil, Format+1))
	})
	db.Close()
	if _, err := Open(path, &key); !errors.Is(err, ErrNewer) {
		t.Fatalf("a newer history: %v", err)
	}
}

// A file that is not a readable history is refused as damaged, and left
// as it was.
func TestDamagedRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.db")
	junk := bytes.Repeat([]byte("not a history "), 3000)
	if err := os.WriteFile(path, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, &[32]byte{}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("opening junk: %v", err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, junk) {
		t.Fatal("the damaged file was changed")
	}
}

// DeleteConv deletes one conversation's entries and no other.
func TestDeleteConv(t *testing.T) {
	h, err := Open(filepath.Join(t.TempDir(), "history.db"), &[32]byte{9})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for i, conv := range []string{"@mallory", "@bob", "@mallory", "#team"} {
		if err := h.Add(&Entry{Conv: conv, ID: [16]byte{byte(i)}, From: conv[1:], Text: "x", Time: time.Unix(1700000000, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := h.DeleteConv("@mallory"); err != nil || n != 2 {
		t.Fatalf("deleted %d, %v", n, err)
	}
	all, _, _ := h.All()
	if len(all) != 2 || all[0].Conv != "@bob" || all[1].Conv != "#team" {
		t.Fatalf("left %+v", all)
	}
}
