// Package backup writes and restores a server's hot backup: a tar archive
// of the server key, a consistent copy of the store taken in one read
// transaction while the server runs, and a manifest with their SHA-256
// sums, last. Restoring it into an empty data directory brings the server
// back with the same identity: clients see no key change.
package backup

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"time"

	"securefastchat/internal/server"
	"securefastchat/store"
)

// ManifestName is the archive's last member.
const ManifestName = "MANIFEST.json"

// Format is the archive format's version.
const Format = 1

// maxKeyFile bounds the key file read from an archive.
const maxKeyFile = 4096

// Errors.
var (
	// ErrNotEmpty: restore refuses a data directory that holds anything.
	ErrNotEmpty = errors.New("backup: the data directory is not empty")
	// ErrTooLarge: a member of the archive is larger than the restore
	// allows, or than the room left on the target's file system; nothing
	// of it was written.
	ErrTooLarge = errors.New("backup: a member of the archive is too large")
	// ErrDamaged: the archive is truncated, altered or not a backup.
	ErrDamaged = errors.New("backup: the archive is damaged or not a securefastchat backup")
)

// Manifest describes an archive.
type Manifest struct {
	Format      int               `json:"format"`
	Created     time.Time         `json:"created"`
	Fingerprint string            `json:"fingerprint"` // the server key's
	Files       map[string]string `json:"files"`       // name -> hex SHA-256
	Sizes       map[string]int64  `json:"sizes"`
}

// Write streams a backup of a running server to w.
func Write(w io.Writer, srv *server.Server) (*Manifest, error) {
	tw := tar.NewWriter(w)
	now := time.Now().UTC()
	m := &Manifest{Format: Format, Created: now, Fingerprint: srv.Key.Public.Fingerprint(), Files: map[string]string{}, Sizes: map[string]int64{}}
	key, err := os.ReadFile(filepath.Join(srv.DataDir(), server.KeyFileName))
	if err != nil {
		return nil, fmt.Errorf("backup: reading the server key: %w", err)
	}
	if err := addFile(tw, m, server.KeyFileName, key, now); err != nil {
		return nil, err
	}
	h := sha256.New()
	n, err := srv.Store.Backup(func(size int64) (io.Writer, error) {
		m.Sizes[server.DBFileName] = size
		if err := tw.WriteHeader(&tar.Header{Name: server.DBFileName, Mode: 0o600, Size: size, ModTime: now, Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		return io.MultiWriter(tw, h), nil
	})
	if err != nil {
		return nil, fmt.Errorf("backup: copying the store: %w", err)
	}
	if n != m.Sizes[server.DBFileName] {
		return nil, fmt.Errorf("backup: the store copy is %d bytes, announced %d", n, m.Sizes[server.DBFileName])
	}
	m.Files[server.DBFileName] = hex.EncodeToString(h.Sum(nil))
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	hdr := &tar.Header{Name: ManifestName, Mode: 0o600, Size: int64(len(mj)), ModTime: now, Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(mj); err != nil {
		return nil, err
	}
	return m, tw.Close()
}

func addFile(tw *tar.Writer, m *Manifest, name string, b []byte, now time.Time) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(b)), ModTime: now, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := tw.Write(b); err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	m.Files[name] = hex.EncodeToString(sum[:])
	m.Sizes[name] = int64(len(b))
	return nil
}

// Limits bound what a restore writes.
type Limits struct {
	// MaxStore is the largest store member accepted, in bytes; if zero,
	// any that fits on the target's file system with spaceReserve to spare.
	MaxStore int64
}

// spaceReserve is room a restore leaves free on the target's file system.
const spaceReserve = 64 << 20

// Extract reads an archive into dir (which must exist), checking every
// member against the manifest and lim before writing a byte of it. A
// damaged archive leaves nothing behind.
func Extract(r io.Reader, dir string, lim Limits) (_ *Manifest, err error) {
	tr := tar.NewReader(r)
	sums := map[string]string{}
	var m *Manifest
	var written []string
	defer func() {
		if err != nil {
			for _, p := range written {
				os.Remove(p)
			}
		}
	}()
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDamaged, err)
		}
		if m != nil {
			return nil, fmt.Errorf("%w: %s after the manifest", ErrDamaged, hdr.Name)
		}
		switch hdr.Name {
		case ManifestName:
			b, err := io.ReadAll(io.LimitReader(tr, 1<<20))
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrDamaged, err)
			}
			m = new(Manifest)
			if err := json.Unmarshal(b, m); err != nil {
				return nil, fmt.Errorf("%w: manifest: %v", ErrDamaged, err)
			}
		case server.KeyFileName, server.DBFileName:
			if _, dup := sums[hdr.Name]; dup || hdr.Typeflag != tar.TypeReg || hdr.Size < 0 ||
				hdr.Name == server.KeyFileName && hdr.Size > maxKeyFile {
				return nil, fmt.Errorf("%w: member %s", ErrDamaged, hdr.Name)
			}
			if hdr.Name == server.DBFileName {
				if lim.MaxStore > 0 && hdr.Size > lim.MaxStore {
					return nil, fmt.Errorf("%w: its store is %d bytes, more than the %d allowed (--max-store-size)", ErrTooLarge, hdr.Size, lim.MaxStore)
				}
				if free := freeSpace(dir); free >= 0 && hdr.Size > free-spaceReserve {
					return nil, fmt.Errorf("%w: its store is %d bytes, and %s has %d bytes free (a restore leaves %d MiB to spare)", ErrTooLarge, hdr.Size, dir, free, spaceReserve>>20)
				}
			}
			path := filepath.Join(dir, hdr.Name)
			written = append(written, path)
			sum, err := copyOut(path, tr, hdr.Size)
			if err != nil {
				return nil, err
			}
			sums[hdr.Name] = sum
		default:
			return nil, fmt.Errorf("%w: unexpected member %q", ErrDamaged, hdr.Name)
		}
	}
	if m == nil || m.Format != Format {
		return nil, fmt.Errorf("%w: no manifest of format %d", ErrDamaged, Format)
	}
	for _, name := range []string{server.KeyFileName, server.DBFileName} {
		if sums[name] == "" || sums[name] != m.Files[name] {
			return nil, fmt.Errorf("%w: %s is missing or does not match its checksum", ErrDamaged, name)
		}
	}
	return m, syncDir(dir)
}

func copyOut(path string, r io.Reader, size int64) (string, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	var h hash.Hash = sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, size))
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, tar.ErrHeader) {
		return "", fmt.Errorf("%w: %s is truncated", ErrDamaged, filepath.Base(path))
	}
	if err != nil {
		return "", fmt.Errorf("backup: writing %s: %w", filepath.Base(path), err)
	}
	if n != size {
		return "", fmt.Errorf("%w: %s is truncated", ErrDamaged, filepath.Base(path))
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// stagingName is the folder inside the target where a restore is laid out
// and checked before anything takes its final name.
const stagingName = ".restoring"

// Restore lays an archive into dir, which must be empty or not exist, and
// makes it 0700. Everything is extracted into a staging folder inside dir
// and checked there (the members against the manifest, the key against
// the manifest's fingerprint, the store's consistency) before anything
// takes its final name; on any failure nothing is left, not even dir if
// Restore made it. Members larger than lim allows, or than the room on
// dir's file system, are refused before a byte of them is written.
func Restore(r io.Reader, dir string, lim Limits) (_ *Manifest, err error) {
	made := false
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotEmpty, dir)
	} else if errors.Is(err, os.ErrNotExist) {
		made = true
	} else if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	staging := filepath.Join(dir, stagingName)
	defer func() {
		os.RemoveAll(staging)
		if err != nil && made {
			os.Remove(dir)
		}
	}()
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := os.Mkdir(staging, 0o700); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	m, err := Extract(r, staging, lim)
	if err != nil {
		return nil, err
	}
	if err := Check(staging, m); err != nil {
		return nil, err
	}
	for _, name := range []string{server.KeyFileName, server.DBFileName} {
		if err := os.Rename(filepath.Join(staging, name), filepath.Join(dir, name)); err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
	}
	return m, syncDir(dir)
}

// Check opens a restored data directory read-only and checks it.
func Check(dir string, m *Manifest) error {
	key, err := server.LoadKey(dir)
	if err != nil {
		return fmt.Errorf("%w: server key: %v", ErrDamaged, err)
	}
	if fp := key.Public.Fingerprint(); fp != m.Fingerprint {
		return fmt.Errorf("%w: the key's fingerprint is %s, the manifest says %s", ErrDamaged, fp, m.Fingerprint)
	}
	st, err := store.Open(filepath.Join(dir, server.DBFileName), nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	defer st.Close()
	if err := st.Check(); err != nil {
		return fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	return nil
}
