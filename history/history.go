// Package history keeps a chat client's conversations on disk, each record
// sealed (XSalsa20-Poly1305) with a key derived from the user's identity,
// so a restart shows past conversations while the server keeps only what
// is not yet delivered. It also keeps the client's small settings (which
// contacts were verified, unaccepted key changes) sealed the same way.
// When the user asks, a link copies the history to a new device of the
// account (link.go: ToLink on the existing device, FromLink on the new).
package history

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/crypto/nacl/secretbox"
)

// Errors.
var (
	// ErrInUse: another client holds the history open.
	ErrInUse = errors.New("history: in use by another client of this user")
	// ErrNewer: the file was written by a newer build, in a format this
	// one does not read. Nothing was changed.
	ErrNewer = errors.New("history: written by a newer securefastchat")
	// ErrDamaged: the file is not a readable history (torn, overwritten,
	// or not a history at all). Nothing in it was changed.
	ErrDamaged = errors.New("history: the file is damaged")
	// ErrCorrupt: a record does not open with the key or does not decode.
	ErrCorrupt = errors.New("history: record does not open")
)

var (
	bucketEntries = []byte("entries") // seq u64 BE -> sealed Entry
	bucketMeta    = []byte("meta")    // HMAC(key, name)[:16] -> sealed value
	bucketFormat  = []byte("format")  // "version" -> u32: the file's format (plaintext: it says nothing of the user)
)

// Status is where an outgoing message is.
type Status uint8

// Statuses, in the order a message goes through them.
const (
	Received  Status = iota // not an outgoing message
	Sending                 // typed; the server has not accepted it yet
	Queued                  // stored by the server for a receiver who is away
	Sent                    // accepted by the server (a group: some members have it)
	Delivered               // the receiver's client has it
	Read                    // the receiver has seen it
	Failed                  // refused for good (Error says why)
	Held                    // the receiver's key changed: waits for the user to accept it
)

func (s Status) String() string {
	switch s {
	case Sending:
		return "sending"
	case Queued:
		return "queued"
	case Sent:
		return "sent"
	case Delivered:
		return "delivered"
	case Read:
		return "read"
	case Failed:
		return "failed"
	case Held:
		return "held: key changed"
	}
	return ""
}

// Entry is one line of a conversation.
type Entry struct {
	Seq    uint64    `json:"-"`
	Conv   string    `json:"c"`           // "@user", "#group" or "!broadcast"
	ID     [16]byte  `json:"i"`           // the message (or file) id
	From   string    `json:"f"`           // canonical sender
	Mine   bool      `json:"m,omitempty"` // sent by this user
	Text   string    `json:"t,omitempty"`
	File   string    `json:"p,omitempty"` // a file: where it is on this machine
	Size   int64     `json:"z,omitempty"`
	Time   time.Time `json:"w"`
	Status Status    `json:"s,omitempty"`
	Error  string    `json:"e,omitempty"` // why it failed
	// ReadBy lists the group members who have seen it (a group message).
	ReadBy []string `json:"r,omitempty"`
	// Plain marks a broadcast: it was NOT end-to-end encrypted.
	Plain bool `json:"b,omitempty"`
	// Notice is a line from the client itself (a key change warning).
	Notice bool `json:"n,omitempty"`
	// Event is a line of the conversation's timeline (a group's roster
	// changes), not a message.
	Event bool `json:"v,omitempty"`
	// Before marks a group message from someone who has since left, sent
	// before the change and arriving just after it.
	Before bool `json:"o,omitempty"`
	// Unread: received and not seen yet.
	Unread bool `json:"u,omitempty"`
}

// Format is the history file's format version.
//
//	0: entries and settings (files from before the version was kept)
//	1: entries may be timeline events (Entry.Event); the version is kept
const Format = 1

// History is an open history file. Its methods are safe for concurrent
// use.
type History struct {
	db  *bolt.DB
	key [32]byte

	mu  sync.Mutex
	seq uint64
}

// Open opens (or creates) the history at path, sealed with key. A file
// another client holds open gives ErrInUse after a second; a file that
// is not a readable history gives ErrDamaged (bbolt may panic on damaged
// pages: that is caught here), and is left as it is.
func Open(path string, key *[32]byte) (_ *History, err error) {
	var db *bolt.DB
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			}
			err = fmt.Errorf("%w: %s (%v)", ErrDamaged, path, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w (%s)", ErrInUse, path)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, fmt.Errorf("%w: %s (%v)", ErrDamaged, path, err)
	case err != nil:
		return nil, fmt.Errorf("history: opening %s: %w", path, err)
	}
	if err := db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() { // read to the end: Check's goroutine sends them all
			if first == nil {
				first = err
			}
		}
		return first
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("%w: %s (%v)", ErrDamaged, path, err)
	}
	h := &History{db: db, key: *key}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketEntries, bucketMeta, bucketFormat} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		// Format 0 (no format bucket) is format 1 without timeline events,
		// which it reads as it is: only the number is written.
		fb := tx.Bucket(bucketFormat)
		if v := fb.Get([]byte("version")); len(v) == 4 && binary.BigEndian.Uint32(v) > Format {
			return fmt.Errorf("%w: %s is format %d, this build reads up to %d; upgrade securefastchat", ErrNewer, path, binary.BigEndian.Uint32(v), Format)
		} else if len(v) != 4 || binary.BigEndian.Uint32(v) < Format {
			if err := fb.Put([]byte("version"), binary.BigEndian.AppendUint32(nil, Format)); err != nil {
				return err
			}
		}
		if k, _ := tx.Bucket(bucketEntries).Cursor().Last(); k != nil {
			h.seq = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("history: %w", err)
	}
	return h, nil
}

// Close closes the file.
func (h *History) Close() error { return h.db.Close() }

func (h *History) seal(v []byte) []byte {
	var nonce [24]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		panic("history: no randomness: " + err.Error())
	}
	return secretbox.Seal(nonce[:], v, &nonce, &h.key)
}

func (h *History) open(sealed []byte) ([]byte, error) {
	if len(sealed) < 24+secretbox.Overhead {
		return nil, ErrCorrupt
	}
	var nonce [24]byte
	copy(nonce[:], sealed)
	v, ok := secretbox.Open(nil, sealed[24:], &nonce, &h.key)
	if !ok {
		return nil, ErrCorrupt
	}
	return v, nil
}

// decodeEntry opens and decodes one stored record.
func (h *History) decodeEntry(seq uint64, sealed []byte) (*Entry, error) {
	v, err := h.open(sealed)
	if err != nil {
		return nil, err
	}
	e := new(Entry)
	if err := json.Unmarshal(v, e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	e.Seq = seq
	return e, nil
}

// sealJSON encodes and seals an entry.
func (h *History) sealJSON(e *Entry) ([]byte, error) {
	v, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	return h.seal(v), nil
}

func seqKey(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// Add stores new entries in one transaction (one fsync) and sets their
// Seq.
func (h *History) Add(es ...*Entry) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	sealed := make([][]byte, len(es))
	for i, e := range es {
		var err error
		if sealed[i], err = h.sealJSON(e); err != nil {
			return err
		}
	}
	err := h.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEntries)
		for i := range es {
			if err := b.Put(seqKey(h.seq+1+uint64(i)), sealed[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	for _, e := range es {
		h.seq++
		e.Seq = h.seq
	}
	return nil
}

// Update rewrites stored entries (their status changed, say), in one
// transaction.
func (h *History) Update(es ...*Entry) error {
	sealed := make([][]byte, len(es))
	for i, e := range es {
		if e.Seq == 0 {
			return errors.New("history: updating an entry never added")
		}
		var err error
		if sealed[i], err = h.sealJSON(e); err != nil {
			return err
		}
	}
	err := h.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEntries)
		for i, e := range es {
			if err := b.Put(seqKey(e.Seq), sealed[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	return nil
}

// All returns every entry, oldest first. A record that does not open is
// skipped and counted.
func (h *History) All() (entries []*Entry, bad int, err error) {
	err = h.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEntries).ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				bad++
				return nil
			}
			e, err := h.decodeEntry(binary.BigEndian.Uint64(k), v)
			if err != nil {
				bad++
				return nil
			}
			entries = append(entries, e)
			return nil
		})
	})
	return entries, bad, err
}

// DeleteConv deletes every entry of one conversation, in one transaction,
// and returns how many there were. Records that do not open are left.
func (h *History) DeleteConv(conv string) (int, error) {
	n := 0
	err := h.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEntries)
		var keys [][]byte
		err := b.ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return nil
			}
			if e, err := h.decodeEntry(binary.BigEndian.Uint64(k), v); err == nil && e.Conv == conv {
				keys = append(keys, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(keys)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("history: %w", err)
	}
	return n, nil
}

// metaKey hides a setting's name (which may name a contact).
func (h *History) metaKey(name string) []byte {
	m := hmac.New(sha256.New, h.key[:])
	m.Write([]byte(name))
	return m.Sum(nil)[:16]
}

// SetMeta stores a setting; a nil value deletes it.
func (h *History) SetMeta(name string, value []byte) error {
	err := h.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		if value == nil {
			return b.Delete(h.metaKey(name))
		}
		return b.Put(h.metaKey(name), h.seal(value))
	})
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	return nil
}

// Meta returns a setting, or nil.
func (h *History) Meta(name string) ([]byte, error) {
	var out []byte
	err := h.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(h.metaKey(name))
		if v == nil {
			return nil
		}
		var err error
		out, err = h.open(v)
		return err
	})
	return out, err
}
