package client

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The client core reaches what it keeps between runs through two small
// interfaces, so that it runs where there is no file system (a browser):
//
//   - Storage: the home, small named records read and replaced whole (the
//     seen log also grows by appends). The client seals what is secret
//     before it hands it over.
//   - Downloads: where received files are assembled (a part and a sealed
//     state per transfer) and saved.
//
// Dir and DownloadDir, on the file system, are the defaults. Names are
// slash-separated and relative: "known_servers", "users/USER/identity",
// "users/USER/contacts", "users/USER/contacts.changed",
// "users/USER/session", "users/USER/seen".

// Storage keeps a client's home. Every write is durable when it returns.
type Storage interface {
	// Read returns a record, or an error matching fs.ErrNotExist.
	Read(name string) ([]byte, error)
	// Create writes a new record; one that exists fails with fs.ErrExist.
	Create(name string, data []byte) error
	// Replace replaces a record (or makes it) all at once: a crash leaves
	// the old one or the new one.
	Replace(name string, data []byte) error
	// Append adds data at the end of a record, making it if missing.
	Append(name string, data []byte) error
}

// Downloads is where received files are assembled and saved. The names it
// is given are its own entries (".incoming-ID.part", ".incoming-ID.state").
type Downloads interface {
	// List returns the entries earlier runs left, with when each last
	// changed.
	List() ([]DownloadEntry, error)
	// Read, Replace and Remove act on an entry as Storage does on a record;
	// removing a missing entry is not an error.
	Read(name string) ([]byte, error)
	Replace(name string, data []byte) error
	Remove(name string) error
	// OpenPart opens the part an entry holds, making it if missing.
	OpenPart(name string) (Part, error)
	// Save keeps a finished, synced part as a file named after name (made
	// unique) and returns where it went; the part entry is gone after it.
	Save(part, name string) (string, error)
}

// DownloadEntry is one entry of a Downloads.
type DownloadEntry struct {
	Name     string
	Modified time.Time
}

// Part is a file being received.
type Part interface {
	io.WriterAt
	Truncate(size int64) error
	Sync() error
	Close() error
}

// Dir is the Storage of a home folder: each record is a file (0600) in a
// folder only the user may enter (0700), replaced by a rename after it is
// synced.
type Dir string

func (d Dir) path(name string) string { return filepath.Join(string(d), filepath.FromSlash(name)) }

// Where returns the file that holds a record, for messages.
func (d Dir) Where(name string) string { return d.path(name) }

func (d Dir) Read(name string) ([]byte, error) { return os.ReadFile(d.path(name)) }

func (d Dir) Create(name string, data []byte) error {
	p := d.path(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(p)
		return err
	}
	return nil
}

func (d Dir) Replace(name string, data []byte) error {
	p := d.path(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return writeFileAtomic(p, data)
}

func (d Dir) Append(name string, data []byte) error {
	p := d.path(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	return errors.Join(werr, f.Sync(), f.Close())
}

// writeFileAtomic replaces path with data: a temporary file beside it,
// synced, then renamed over it.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("client: %w", err)
	}
	_, werr := tmp.Write(data)
	if err := errors.Join(werr, tmp.Sync(), tmp.Close()); err != nil {
		return fmt.Errorf("client: writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("client: writing %s: %w", path, err)
	}
	return nil
}

// where names a record for a message: its file, when the storage has one.
func where(st Storage, name string) string {
	if w, ok := st.(interface{ Where(string) string }); ok {
		return w.Where(name)
	}
	return name
}

// DownloadDir is the Downloads of a folder: parts and states are hidden
// files in it, and a finished file is linked in under its own name.
type DownloadDir string

func (d DownloadDir) path(name string) string { return filepath.Join(string(d), filepath.Base(name)) }

func (d DownloadDir) List() ([]DownloadEntry, error) {
	entries, err := os.ReadDir(string(d))
	if err != nil {
		return nil, err
	}
	out := make([]DownloadEntry, 0, len(entries))
	for _, e := range entries {
		if info, err := e.Info(); err == nil && !e.IsDir() {
			out = append(out, DownloadEntry{Name: e.Name(), Modified: info.ModTime()})
		}
	}
	return out, nil
}

func (d DownloadDir) Read(name string) ([]byte, error) { return os.ReadFile(d.path(name)) }
func (d DownloadDir) Replace(name string, data []byte) error {
	return writeFileAtomic(d.path(name), data)
}

func (d DownloadDir) Remove(name string) error {
	if err := os.Remove(d.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (d DownloadDir) OpenPart(name string) (Part, error) {
	return os.OpenFile(d.path(name), os.O_RDWR|os.O_CREATE, 0o600)
}

func (d DownloadDir) Save(part, name string) (string, error) {
	p, err := uniquePath(string(d), name)
	if err != nil {
		return "", err
	}
	if err := os.Link(d.path(part), p); err != nil {
		return "", err
	}
	os.Remove(d.path(part))
	return p, nil
}

// uniquePath returns dir/name, or dir/name (n) if that exists.
func uniquePath(dir, name string) (string, error) {
	ext := filepath.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	for i := 0; i < 1000; i++ {
		p := filepath.Join(dir, name)
		if i > 0 {
			p = filepath.Join(dir, fmt.Sprintf("%s (%d)%s", stem, i, ext))
		}
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			return p, nil
		}
	}
	return "", fmt.Errorf("client: no free name for %s in %s", name, dir)
}
