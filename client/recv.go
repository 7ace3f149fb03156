package client

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"securefastchat/proto"
)

// Message is a received, decrypted and verified message.
type Message struct {
	ServerID   uint64
	MsgID      [proto.MsgIDLen]byte
	From       string // canonical sender
	To         string
	Kind       uint8 // proto.KindText or proto.KindFile
	Text       string
	File       *ReceivedFile
	SentAt     time.Time // the sender's clock
	ServerTime time.Time // when the server accepted it
	// PeerKeyChanged: the sender's keys differ from the ones pinned
	// before this message.
	PeerKeyChanged bool
}

// ReceivedFile is a file that arrived whole.
type ReceivedFile struct {
	Name string // as the sender named it
	Path string // where it was saved
	Size int64
}

// seenMax bounds the message ids remembered for de-duplication.
const seenMax = 100_000

// maxOpenFiles bounds files being received at once; the oldest is dropped.
const maxOpenFiles = 32

// receiver opens deliveries, checks them, drops repeats, assembles files
// and hands messages to the application.
type receiver struct {
	c *Client

	mu    sync.Mutex
	seen  map[string]struct{} // sender NUL msg_id
	order []string
	files map[[proto.MsgIDLen]byte]*incomingFile
}

func newReceiver(c *Client) *receiver {
	return &receiver{c: c, seen: map[string]struct{}{}, files: map[[proto.MsgIDLen]byte]*incomingFile{}}
}

// run serves one connection's deliveries until it ends or the client stops.
// Each delivery is acknowledged once it has been handed to the application
// (or rejected for good), never before; the acks of a burst go in one frame.
func (r *receiver) run(conn *Conn) {
	ch := conn.Deliveries()
	acks := make([]uint64, 0, proto.MaxAckIDs)
	for d := range ch {
		msg, err := r.open(d)
		if err != nil {
			if r.c.cfg.OnReject != nil {
				r.c.cfg.OnReject(string(d.From), err)
			}
		} else if msg != nil {
			select {
			case r.c.msgs <- msg:
			case <-r.c.stop:
				return
			}
		}
		acks = append(acks, d.ServerID)
		if len(ch) == 0 || len(acks) == proto.MaxAckIDs {
			_ = conn.Ack(acks...)
			acks = acks[:0]
		}
	}
}

func (r *receiver) open(d *proto.Deliver) (*Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	from := string(d.From)
	pk, err := r.c.PeerKeys(ctx, from)
	if err != nil {
		return nil, fmt.Errorf("%w: sender keys: %v", ErrRejected, err)
	}
	plain, err := proto.OpenBody(nil, d.Body, pk.shared)
	if err != nil && !pk.Changed {
		// The sender may have new keys since they were cached: fetch once more.
		r.c.contacts.forget(from)
		if pk, err = r.c.PeerKeys(ctx, from); err == nil {
			plain, err = proto.OpenBody(nil, d.Body, pk.shared)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: does not open with %s's key", ErrRejected, from)
	}
	var in proto.Inner
	if err := in.Parse(plain); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRejected, err)
	}
	// The envelope is the server's word; the inner fields are the sender's.
	if string(in.From) != from || string(in.To) != r.c.user || !bytes.Equal(in.MsgID, d.MsgID) || in.Kind != d.Kind {
		return nil, fmt.Errorf("%w: sealed sender, receiver, id or kind do not match the envelope", ErrRejected)
	}
	if r.isDup(from + "\x00" + string(in.MsgID)) {
		return nil, nil
	}
	msg := &Message{
		ServerID: d.ServerID, From: from, To: r.c.user, Kind: in.Kind,
		SentAt: time.Unix(0, in.SentAt), ServerTime: time.UnixMilli(d.Time), PeerKeyChanged: pk.Changed,
	}
	copy(msg.MsgID[:], in.MsgID)
	switch in.Kind {
	case proto.KindText:
		msg.Text = string(in.Body)
		return msg, nil
	case proto.KindFile:
		f, err := r.fileChunk(from, in.Body)
		if err != nil || f == nil {
			return nil, err
		}
		msg.File = f
		return msg, nil
	}
	return nil, fmt.Errorf("%w: unknown kind %d", ErrRejected, in.Kind)
}

func (r *receiver) isDup(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.seen[key]; ok {
		return true
	}
	r.seen[key] = struct{}{}
	r.order = append(r.order, key)
	if len(r.order) > seenMax {
		delete(r.seen, r.order[0])
		r.order = r.order[1:]
	}
	return false
}

// incomingFile is a file being assembled in a temporary file in OutDir.
type incomingFile struct {
	from   string
	name   string
	size   uint64
	count  uint32
	got    []bool
	n      uint32
	f      *os.File
	start  time.Time
	closed bool
}

func (r *receiver) fileChunk(from string, body []byte) (*ReceivedFile, error) {
	var ch proto.FileChunk
	if err := ch.Parse(body); err != nil {
		return nil, fmt.Errorf("%w: file chunk: %v", ErrRejected, err)
	}
	max := uint64(r.c.cfg.MaxFileSize)
	want := uint32((ch.Size + proto.FileChunkData - 1) / proto.FileChunkData)
	if ch.Size == 0 {
		want = 1
	}
	if ch.Size > max {
		return nil, fmt.Errorf("%w: %s offers %d bytes, limit %d", ErrFileTooLarge, from, ch.Size, max)
	}
	name := safeFileName(string(ch.Name))
	if ch.Count != want || name == "" {
		return nil, fmt.Errorf("%w: inconsistent file header", ErrRejected)
	}
	last := uint64(ch.Index)*proto.FileChunkData + uint64(len(ch.Data))
	if (ch.Index+1 < ch.Count && len(ch.Data) != proto.FileChunkData) || (ch.Index+1 == ch.Count && last != ch.Size) {
		return nil, fmt.Errorf("%w: chunk %d has %d bytes", ErrRejected, ch.Index, len(ch.Data))
	}
	var id [proto.MsgIDLen]byte
	copy(id[:], ch.FileID)
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.files[id]
	if f == nil {
		if len(r.files) >= maxOpenFiles {
			r.dropOldestLocked()
		}
		tmp, err := os.CreateTemp(r.c.cfg.OutDir, ".incoming-*.part")
		if err != nil {
			return nil, fmt.Errorf("client: receiving file: %w", err)
		}
		f = &incomingFile{from: from, name: name, size: ch.Size, count: ch.Count, got: make([]bool, ch.Count), f: tmp, start: time.Now()}
		r.files[id] = f
	}
	if f.from != from || f.name != name || f.size != ch.Size || f.count != ch.Count {
		return nil, fmt.Errorf("%w: file chunk does not match its file", ErrRejected)
	}
	if f.got[ch.Index] {
		return nil, nil
	}
	if _, err := f.f.WriteAt(ch.Data, int64(ch.Index)*proto.FileChunkData); err != nil {
		return nil, fmt.Errorf("client: receiving file: %w", err)
	}
	f.got[ch.Index] = true
	f.n++
	if f.n < f.count {
		return nil, nil
	}
	delete(r.files, id)
	return f.finish(r.c.cfg.OutDir)
}

func (f *incomingFile) finish(dir string) (*ReceivedFile, error) {
	tmp := f.f.Name()
	if err := f.f.Truncate(int64(f.size)); err != nil {
		f.abort()
		return nil, err
	}
	if err := f.f.Sync(); err != nil {
		f.abort()
		return nil, err
	}
	f.f.Close()
	path, err := uniquePath(dir, f.name)
	if err == nil {
		err = os.Link(tmp, path)
	}
	os.Remove(tmp)
	if err != nil {
		return nil, fmt.Errorf("client: saving file: %w", err)
	}
	return &ReceivedFile{Name: f.name, Path: path, Size: int64(f.size)}, nil
}

func (f *incomingFile) abort() {
	f.f.Close()
	os.Remove(f.f.Name())
}

func (r *receiver) dropOldestLocked() {
	var oldest [proto.MsgIDLen]byte
	var t time.Time
	for id, f := range r.files {
		if t.IsZero() || f.start.Before(t) {
			oldest, t = id, f.start
		}
	}
	if f := r.files[oldest]; f != nil {
		f.abort()
		delete(r.files, oldest)
	}
}

// close removes partial files.
func (r *receiver) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, f := range r.files {
		f.abort()
		delete(r.files, id)
	}
}

// safeFileName keeps the base name and drops anything that could escape
// the output directory or confuse a terminal.
func safeFileName(name string) string {
	name = filepath.Base(strings.ReplaceAll(name, "\\", "/"))
	name = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '/' || r == 0 || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			return '_'
		}
		return r
	}, name)
	name = strings.TrimLeft(name, ".")
	if name == "" || len(name) > 255 {
		return ""
	}
	return name
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
