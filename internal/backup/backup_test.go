package backup

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"securefastchat/internal/server"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the fuzz seed corpus in testdata/fuzz")

// archive builds an archive of the given members with a manifest that
// matches them.
func archive(files map[string][]byte, order []string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	m := Manifest{Format: Format, Created: time.Unix(1700000000, 0).UTC(), Fingerprint: "SHA256:x", Files: map[string]string{}, Sizes: map[string]int64{}}
	for _, name := range order {
		b := files[name]
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
		sum := sha256.Sum256(b)
		m.Files[name], m.Sizes[name] = hex.EncodeToString(sum[:]), int64(len(b))
	}
	mj, _ := json.Marshal(m)
	tw.WriteHeader(&tar.Header{Name: ManifestName, Mode: 0o600, Size: int64(len(mj)), Typeflag: tar.TypeReg})
	tw.Write(mj)
	tw.Close()
	return buf.Bytes()
}

func seeds() [][]byte {
	good := archive(map[string][]byte{server.KeyFileName: []byte("key"), server.DBFileName: []byte("db")}, []string{server.KeyFileName, server.DBFileName})
	noDB := archive(map[string][]byte{server.KeyFileName: []byte("key")}, []string{server.KeyFileName})
	extra := archive(map[string][]byte{server.KeyFileName: []byte("k"), server.DBFileName: []byte("d"), "../evil": []byte("x")}, []string{"../evil", server.KeyFileName, server.DBFileName})
	return [][]byte{good, noDB, extra, good[:len(good)/2], []byte("not a tar")}
}

func TestExtract(t *testing.T) {
	s := seeds()
	dir := t.TempDir()
	if _, err := Extract(bytes.NewReader(s[0]), dir, Limits{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, server.DBFileName)); string(b) != "db" {
		t.Fatalf("db %q", b)
	}
	for i, bad := range s[1:] {
		d := t.TempDir()
		if _, err := Extract(bytes.NewReader(bad), d, Limits{}); !errors.Is(err, ErrDamaged) {
			t.Errorf("seed %d: %v", i+1, err)
		}
		if entries, _ := os.ReadDir(d); len(entries) != 0 {
			t.Errorf("seed %d left %d files", i+1, len(entries))
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "evil")); err == nil {
		t.Fatal("a member escaped the directory")
	}
}

// FuzzExtract: any archive either extracts with matching checksums or is
// refused as damaged, leaving nothing behind; nothing is written outside
// the directory.
func FuzzExtract(f *testing.F) {
	if *updateCorpus {
		dir := filepath.Join("testdata", "fuzz", "FuzzExtract")
		os.MkdirAll(dir, 0o755)
		for i, s := range seeds() {
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)), 0o644)
		}
	}
	for _, s := range seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		outer := t.TempDir()
		dir := filepath.Join(outer, "data")
		os.Mkdir(dir, 0o700)
		_, err := Extract(bytes.NewReader(in), dir, Limits{})
		entries, _ := os.ReadDir(dir)
		if err != nil {
			if !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error not marked damaged or too large: %v", err)
			}
			if len(entries) != 0 {
				t.Fatalf("a refused archive left %d files", len(entries))
			}
		} else if len(entries) != 2 {
			t.Fatalf("extracted %d files", len(entries))
		}
		if all, _ := os.ReadDir(outer); len(all) != 1 {
			t.Fatal("something was written outside the directory")
		}
	})
}

// bigHeader is an archive whose store member claims size bytes and holds
// a few: a hostile or damaged archive.
func bigHeader(size int64) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: server.KeyFileName, Mode: 0o600, Size: 3, Typeflag: tar.TypeReg})
	tw.Write([]byte("key"))
	tw.WriteHeader(&tar.Header{Name: server.DBFileName, Mode: 0o600, Size: size, Typeflag: tar.TypeReg})
	tw.Write(make([]byte, 4096))
	tw.Flush()
	return buf.Bytes()
}

// TestMemberCaps: a store member larger than the restore allows, or than
// the target's file system has room for, is refused before a byte of it is
// written, and the restore leaves nothing behind.
func TestMemberCaps(t *testing.T) {
	for _, c := range []struct {
		size int64
		lim  Limits
		want string
	}{
		{600 << 20, Limits{MaxStore: 1 << 20}, "more than the 1048576 allowed"},
		{1 << 50, Limits{}, "bytes free"},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		_, err := Restore(bytes.NewReader(bigHeader(c.size)), dir, c.lim)
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("a store of %d bytes: %v", c.size, err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a refused restore left %s: %v", dir, err)
		}
	}
	// Within the cap, a whole archive restores as before.
	dir := t.TempDir()
	if _, err := Extract(bytes.NewReader(seeds()[0]), dir, Limits{MaxStore: 2}); err != nil {
		t.Fatalf("a store within the cap: %v", err)
	}
}
