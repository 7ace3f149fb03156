package client

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/nacl/secretbox"
)

// seenKeep is how long a received message id is remembered: longer than
// the server keeps a queued message (7 days), so no redelivery or resend
// can outlive the memory of it.
const seenKeep = 8 * 24 * time.Hour

// seenLog remembers the (sender, msg_id) of received messages across
// restarts, so a message redelivered after a crash or resent by its sender
// is shown once. It is an append-only file: a first line "SFCSEEN1", then
// one line per message, each sealed on its own (so a torn last line after
// a crash loses only itself):
//
//	hex(nonce 24 | secretbox("<unix seconds> <sender> <msg_id hex>", key))
//
// compacted when it grows. A file from before sealing holds the records in
// plain text with no first line; it is read and written again sealed.
type seenLog struct {
	st   Storage
	name string
	key  *[32]byte

	mu      sync.Mutex
	seen    map[string]int64 // key -> unix seconds
	pending []byte           // lines added since the last sync
	lines   int              // in the record, with pending
}

func seenKey(from string, msgID []byte) string { return from + "\x00" + string(msgID) }

// seenMagic is the seen log's first line; its last character is the
// format's version.
const seenMagic = "SFCSEEN1"

func openSeenLog(st Storage, name string, key *[32]byte) (*seenLog, error) {
	l := &seenLog{st: st, name: name, key: key, seen: map[string]int64{}}
	cutoff := time.Now().Add(-seenKeep).Unix()
	if b, err := st.Read(name); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		sealed := false
		for n := 0; sc.Scan(); n++ {
			line := sc.Text()
			if n == 0 && strings.HasPrefix(line, seenMagic[:len(seenMagic)-1]) {
				if line != seenMagic {
					return nil, fmt.Errorf("%w: %s", ErrNewerFile, where(st, name))
				}
				sealed = true
				continue
			}
			if sealed {
				line = l.openLine(line)
			}
			fields := strings.Fields(line)
			if len(fields) != 3 {
				continue // a torn last line after a crash
			}
			ts, err1 := strconv.ParseInt(fields[0], 10, 64)
			id, err2 := hex.DecodeString(fields[2])
			if err1 != nil || err2 != nil || ts < cutoff {
				continue
			}
			l.seen[seenKey(fields[1], id)] = ts
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("client: reading %s: %w", where(st, name), err)
	}
	if err := l.rewrite(); err != nil {
		return nil, err
	}
	return l, nil
}

// sealLine seals one record as a line (without its newline).
func (l *seenLog) sealLine(record string) string {
	var nonce [24]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		panic("client: no randomness: " + err.Error())
	}
	return hex.EncodeToString(secretbox.Seal(nonce[:], []byte(record), &nonce, l.key))
}

// openLine opens a sealed line, or returns "" for a damaged one.
func (l *seenLog) openLine(line string) string {
	b, err := hex.DecodeString(line)
	if err != nil || len(b) < 24 {
		return ""
	}
	var nonce [24]byte
	copy(nonce[:], b)
	plain, ok := secretbox.Open(nil, b[24:], &nonce, l.key)
	if !ok {
		return ""
	}
	return string(plain)
}

// rewrite replaces the record with the live entries; later ones are
// appended.
func (l *seenLog) rewrite() error {
	var b strings.Builder
	b.WriteString(seenMagic + "\n")
	for k, ts := range l.seen {
		from, id, _ := strings.Cut(k, "\x00")
		b.WriteString(l.sealLine(fmt.Sprintf("%d %s %x", ts, from, id)) + "\n")
	}
	if err := l.st.Replace(l.name, []byte(b.String())); err != nil {
		return err
	}
	l.pending, l.lines = nil, len(l.seen)
	return nil
}

// has reports whether a message was seen.
func (l *seenLog) has(from string, msgID []byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.seen[seenKey(from, msgID)]
	return ok
}

// add records a message; sync makes the records durable.
func (l *seenLog) add(from string, msgID []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now().Unix()
	l.seen[seenKey(from, msgID)] = now
	l.pending = append(l.pending, l.sealLine(fmt.Sprintf("%d %s %x", now, from, msgID))+"\n"...)
	l.lines++
}

// sync makes what add recorded durable, compacting the record when it has
// grown to twice the live entries.
func (l *seenLog) sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.syncLocked()
}

func (l *seenLog) syncLocked() error {
	if l.lines > 2*len(l.seen)+1000 {
		cutoff := time.Now().Add(-seenKeep).Unix()
		for k, ts := range l.seen {
			if ts < cutoff {
				delete(l.seen, k)
			}
		}
		return l.rewrite()
	}
	if len(l.pending) == 0 {
		return nil
	}
	if err := l.st.Append(l.name, l.pending); err != nil {
		return fmt.Errorf("client: writing the seen log: %w", err)
	}
	l.pending = nil
	return nil
}

// close keeps what was recorded since the last sync.
func (l *seenLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	_ = l.syncLocked()
}
