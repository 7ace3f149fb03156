package client

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// seenKeep is how long a received message id is remembered: longer than
// the server keeps a queued message (7 days), so no redelivery or resend
// can outlive the memory of it.
const seenKeep = 8 * 24 * time.Hour

// seenLog remembers the (sender, msg_id) of received messages across
// restarts, so a message redelivered after a crash or resent by its sender
// is shown once. It is an append-only file, one line per message:
//
//	<unix seconds> <sender> <msg_id hex>
//
// compacted when it grows.
type seenLog struct {
	path string

	mu    sync.Mutex
	seen  map[string]int64 // key -> unix seconds
	f     *os.File
	w     *bufio.Writer
	lines int
}

func seenKey(from string, msgID []byte) string { return from + "\x00" + string(msgID) }

func openSeenLog(path string) (*seenLog, error) {
	l := &seenLog{path: path, seen: map[string]int64{}}
	cutoff := time.Now().Add(-seenKeep).Unix()
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
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
		f.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("client: reading %s: %w", path, err)
	}
	if err := l.rewrite(); err != nil {
		return nil, err
	}
	return l, nil
}

// rewrite writes the live entries to a fresh file and appends from there.
func (l *seenLog) rewrite() error {
	var b strings.Builder
	for k, ts := range l.seen {
		from, id, _ := strings.Cut(k, "\x00")
		fmt.Fprintf(&b, "%d %s %x\n", ts, from, id)
	}
	if err := writeFileAtomic(l.path, []byte(b.String())); err != nil {
		return err
	}
	if l.f != nil {
		l.f.Close()
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	l.f, l.w, l.lines = f, bufio.NewWriter(f), len(l.seen)
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
	fmt.Fprintf(l.w, "%d %s %x\n", now, from, msgID)
	l.lines++
}

// sync flushes and fsyncs what add wrote, compacting the file when it has
// grown to twice the live entries.
func (l *seenLog) sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lines > 2*len(l.seen)+1000 {
		cutoff := time.Now().Add(-seenKeep).Unix()
		for k, ts := range l.seen {
			if ts < cutoff {
				delete(l.seen, k)
			}
		}
		return l.rewrite()
	}
	if err := l.w.Flush(); err != nil {
		return fmt.Errorf("client: writing the seen log: %w", err)
	}
	return l.f.Sync()
}

func (l *seenLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.w.Flush()
		l.f.Sync()
		l.f.Close()
		l.f = nil
	}
}
