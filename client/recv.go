package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"securefastchat/proto"
	"securefastchat/termtext"
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
	Group      string    // set for a group message
	Epoch      uint32    // the group key epoch it was sealed under
	// PeerKeyChanged: the sender's keys differ from the ones pinned
	// before this message.
	PeerKeyChanged bool
	// BeforeChange: a group message from someone who has since left or
	// been removed, sent under the roster before that change and arriving
	// within the grace period after this client learned of it.
	BeforeChange bool
	// Request: a direct message from someone this user has not accepted
	// (see Client.Accept); nothing is sent back for it.
	Request bool
	// Mine: a message this user sent from another of their devices: a
	// direct message (From is the user, To its receiver), or a group
	// message (From is the user, Group the group).
	Mine bool
	// FromRemovedDevice names the sender's device that sent this message
	// (direct or in a group) when it has been removed from the sender's
	// list since: sent before its removal (by its own clock) and arriving
	// within RemovedDeviceGrace of it. Empty otherwise.
	FromRemovedDevice string
}

// ReceivedFile is a file that arrived whole.
type ReceivedFile struct {
	ID   [proto.MsgIDLen]byte // the sender's file id (FileReceipt.ID)
	Name string               // as the sender named it
	Path string               // where it was saved
	Size int64
}

// maxOpenFiles bounds files being received at once; the oldest is dropped.
const maxOpenFiles = 32

// receiver opens deliveries, checks them, drops repeats, assembles files
// and hands messages to the application.
type receiver struct {
	c    *Client
	seen *seenLog
	dups atomic.Int64 // repeats dropped before the application saw them

	// running is held by the run of one connection at a time: a new
	// connection's deliveries wait until the old one's run has handed
	// over (and recorded as seen) what it held, so a message the server
	// delivers again on the new connection is known as a repeat.
	running sync.Mutex

	mu       sync.Mutex
	files    map[[proto.MsgIDLen]byte]*incomingFile // open, at most maxOpenFiles
	partials *partials                              // every unfinished transfer, open or not
	refused  map[[proto.MsgIDLen]byte]bool          // files refused in this run: their other chunks are dropped
	// refetched: when each sender's keys were last fetched again after a
	// message from it did not open.
	refetched map[string]time.Time
	// groupsTold: the groups whose messages a linked device was told it
	// cannot open (once each per run; the rest are acknowledged quietly).
	groupsTold map[string]bool
}

// maxRefused bounds the refused file ids remembered.
const maxRefused = 1024

func newReceiver(c *Client, seen *seenLog) *receiver {
	return &receiver{c: c, seen: seen, files: map[[proto.MsgIDLen]byte]*incomingFile{}, partials: loadPartials(c.cfg.Downloads, time.Now(), c.LocalKey("partials")),
		refused: map[[proto.MsgIDLen]byte]bool{}, refetched: map[string]time.Time{}, groupsTold: map[string]bool{}}
}

// run serves one connection's deliveries until it ends or the client stops.
// Each delivery is acknowledged once it has been handed to the application
// (or rejected for good) and recorded in the seen log on disk, never
// before; the acks of a burst go in one frame, after one fsync.
func (r *receiver) run(conn *Conn) {
	r.running.Lock()
	defer r.running.Unlock()
	ch := conn.Deliveries()
	acks := make([]uint64, 0, proto.MaxAckIDs)
	for dl := range ch {
		var msg *Message
		var seen bool
		var err error
		var from string
		var msgID []byte
		switch {
		case dl.Group != nil:
			from, msgID = string(dl.Group.From), dl.Group.MsgID
			msg, seen, err = r.openGroup(dl.Group)
		case dl.Devices != nil:
			from, msgID = string(dl.Devices.From), dl.Devices.MsgID
			msg, seen, err = r.openDevices(dl.Devices)
		default:
			from, msgID = string(dl.DM.From), dl.DM.MsgID
			msg, seen, err = r.open(dl.DM)
		}
		if err != nil && transient(err) {
			// Not the message's fault (a lookup refused for now, the
			// connection going): acknowledge what came before it, not it,
			// and come back for it on a fresh connection.
			if serr := errors.Join(r.syncFiles(), r.seen.sync()); serr == nil && len(acks) > 0 {
				_ = conn.Ack(acks...)
			}
			conn.fail(fmt.Errorf("%w: a message from %s could not be opened for now (%v); it stays queued and comes again", ErrConnectionLost, from, err))
			return
		}
		if err != nil {
			r.c.post(Event{Kind: EventRejected, User: from, Err: err})
		} else if msg != nil {
			if !r.c.events.hand(Event{Kind: EventMessage, User: msg.From, Group: msg.Group, Time: msg.SentAt, Message: msg}) {
				return // not handed over: not seen, not acknowledged
			}
			r.c.delivered(msg)
		}
		// Only now is it the application's: remember it, so a redelivery
		// or a resend is dropped.
		if seen {
			r.seen.add(from, msgID)
		}
		acks = append(acks, dl.ServerID)
		if len(ch) == 0 || len(acks) == proto.MaxAckIDs {
			if err := errors.Join(r.syncFiles(), r.seen.sync()); err != nil {
				conn.fail(err) // not durable: do not ack; it comes again
				return
			}
			_ = conn.Ack(acks...)
			acks = acks[:0]
		}
	}
}

// open opens and checks a delivery. seen reports that it was opened and
// must be remembered once handed over (a file chunk is handed over when it
// is written).
func (r *receiver) open(d *proto.Deliver) (_ *Message, seen bool, _ error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	from := string(d.From)
	pk, err := r.c.PeerKeys(ctx, from)
	if err != nil {
		return nil, false, fmt.Errorf("%w: sender keys: %w", ErrRejected, err)
	}
	plain, err := proto.OpenBody(nil, d.Body, pk.shared)
	if err != nil && !pk.Changed && r.mayRefetch(from) {
		// The sender may have new keys since they were cached (a push
		// missed): fetch once more, at most once a while per sender, so
		// junk from one sender costs little.
		r.c.contacts.forget(from)
		if pk, err = r.c.PeerKeys(ctx, from); err == nil {
			plain, err = proto.OpenBody(nil, d.Body, pk.shared)
		} else if transient(err) {
			return nil, false, fmt.Errorf("%w: sender keys: %w", ErrRejected, err)
		}
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w: it does not open with %s's current key and yours: it was sealed for another key of yours "+
			"(sent to an earlier account named %s, before it was made again?) or it is not from %s", ErrRejected, from, r.c.user, from)
	}
	var in proto.Inner
	if err := in.Parse(plain); err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrRejected, err)
	}
	// The envelope is the server's word; the inner fields are the sender's.
	if string(in.From) != from || string(in.To) != r.c.user || !bytes.Equal(in.MsgID, d.MsgID) || !envelopeHolds(d.Kind, in.Kind) {
		return nil, false, fmt.Errorf("%w: sealed sender, receiver, id or kind do not match the envelope", ErrRejected)
	}
	return r.accept(&in, d.ServerID, d.Time, d.Request, pk.Changed)
}

// accept hands on a direct message opened and checked against its
// envelope: a text or a whole file becomes a Message, a receipt an event.
// A message this user sent from another device (from is the user) is
// shown as sent to its receiver.
func (r *receiver) accept(in *proto.Inner, serverID uint64, at int64, request, keyChanged bool) (_ *Message, seen bool, _ error) {
	from := string(in.From)
	mine := from == r.c.user && string(in.To) != r.c.user
	if r.seen.has(from, in.MsgID) {
		r.dups.Add(1)
		return nil, false, nil // a redelivery or a resend: shown once already
	}
	msg := &Message{
		ServerID: serverID, From: from, To: string(in.To), Kind: in.Kind,
		SentAt: time.Unix(0, in.SentAt), ServerTime: time.UnixMilli(at), PeerKeyChanged: keyChanged,
		Request: request, Mine: mine,
	}
	copy(msg.MsgID[:], in.MsgID)
	if in.Kind != proto.KindReceipt && !mine {
		r.c.noteRequest(from, request)
	}
	switch in.Kind {
	case proto.KindText:
		msg.Text = string(in.Body)
		return msg, true, nil
	case proto.KindReceipt:
		if request || mine {
			// A receipt from someone not accepted is for nothing this user
			// sent; one this user sent from another device is that
			// device's.
			return nil, true, nil
		}
		var rc proto.Receipt
		if err := rc.Parse(in.Body); err != nil {
			return nil, false, fmt.Errorf("%w: receipt: %v", ErrRejected, err)
		}
		ev := Event{Kind: EventReceipt, User: from, Receipt: rc.Type, Group: string(rc.Group), Time: msg.SentAt}
		for _, id := range rc.MsgIDs {
			ev.MsgIDs = append(ev.MsgIDs, [proto.MsgIDLen]byte(id))
		}
		r.c.post(ev)
		return nil, true, nil
	case proto.KindFile:
		f, err := r.fileChunk(from, in.Body)
		if err != nil {
			return nil, false, err
		}
		if f == nil {
			return nil, true, nil // more chunks to come; this one is written
		}
		msg.File = f
		return msg, true, nil
	}
	return nil, false, fmt.Errorf("%w: unknown kind %d", ErrRejected, in.Kind)
}

// refetchEvery bounds how often a sender's keys are fetched again because
// a message from it did not open.
const refetchEvery = 10 * time.Minute

// mayRefetch reports whether from's keys may be fetched again now.
func (r *receiver) mayRefetch(from string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if t, ok := r.refetched[from]; ok && now.Sub(t) < refetchEvery {
		return false
	}
	if len(r.refetched) >= maxRefused {
		clear(r.refetched)
	}
	r.refetched[from] = now
	return true
}

// transient reports a failure to open a message that is not the message's
// fault and may pass: it must not be acknowledged (it would be lost).
func transient(err error) bool {
	for _, e := range []error{proto.CodeRateLimited, proto.CodeStorageUnavailable, proto.CodeInternal, proto.CodeServerShuttingDown,
		ErrConnectionLost, ErrConnect, ErrClosed, ErrNotConnected, context.DeadlineExceeded, context.Canceled} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// envelopeHolds says which inner kinds an envelope kind may carry: a
// receipt travels as text, so the server cannot tell it apart.
func envelopeHolds(envelope, inner uint8) bool {
	return envelope == inner || envelope == proto.KindText && inner == proto.KindReceipt
}

// openGroup checks a group message: the sender was a member of the roster
// the epoch was made for, the signature is the sender's, and the body opens
// with the epoch key and names the same sender, group and id.
func (r *receiver) openGroup(d *proto.DeliverGroup) (_ *Message, seen bool, _ error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	from, group := string(d.From), string(d.Group)
	if r.seen.has(from, d.MsgID) {
		r.dups.Add(1)
		return nil, false, nil
	}
	if err := r.c.groupsHere(r.c.s.Conn()); err != nil {
		r.mu.Lock()
		told := r.groupsTold[group]
		if !told && len(r.groupsTold) < maxRefused {
			r.groupsTold[group] = true
		}
		r.mu.Unlock()
		if told {
			return nil, false, nil // said once for the group
		}
		return nil, false, fmt.Errorf("%w: messages in %s reach this device, but only your first device opens them: %w", ErrRejected, termtext.Line(group), err)
	}
	if _, err := r.c.groups.group(ctx, group); err != nil {
		return nil, false, fmt.Errorf("%w: group %s: %w", ErrRejected, group, err)
	}
	key, seq, ok, why, err := r.c.groups.epochKey(ctx, group, d.Epoch)
	if err != nil {
		return nil, false, fmt.Errorf("%w: group %s: %w", ErrRejected, group, err)
	}
	if key == nil || !ok {
		if why != "" {
			return nil, false, fmt.Errorf("%w: epoch %d of %s: %s", ErrRejected, d.Epoch, group, why)
		}
		return nil, false, fmt.Errorf("%w: no key for epoch %d of %s", ErrRejected, d.Epoch, group)
	}
	// Signed by the sending device (named by the server, and on the
	// sender's checked list), or, from the sender's first device or before
	// devices, by the account key.
	signKey := r.c.groups.signKeyFunc(ctx)(from)
	var removed *proto.RemovedDevice // the device that sent it, removed since
	if d.FromDevice != 0 {
		dev, err := r.c.groups.deviceOf(ctx, from, d.FromDevice)
		if err != nil {
			if list, lerr := r.c.listOf(ctx, from, false); lerr == nil {
				removed = list.RemovedDevice(d.FromDevice)
			}
			if removed == nil {
				return nil, false, fmt.Errorf("%w: from a device that is not on %s's list (never there, or removed long ago): %v", ErrRejected, from, err)
			}
			dev = &removed.Device
		}
		signKey = dev.SignKey
	}
	if len(signKey) != ed25519.PublicKeySize || !ed25519.Verify(signKey, proto.GroupMsgSigned(d.Group, d.Epoch, d.MsgID, d.Body), d.Sig) {
		return nil, false, fmt.Errorf("%w: the signature is not %s's", ErrRejected, from)
	}
	plain, err := proto.OpenGroup(d.Body, key)
	if err != nil {
		return nil, false, fmt.Errorf("%w: does not open with epoch %d's key", ErrRejected, d.Epoch)
	}
	var in proto.Inner
	if err := in.Parse(plain); err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrRejected, err)
	}
	if string(in.From) != from || string(in.To) != group || !bytes.Equal(in.MsgID, d.MsgID) || in.Kind != proto.KindText && in.Kind != proto.KindFile {
		return nil, false, fmt.Errorf("%w: sealed sender, group, id or kind do not match", ErrRejected)
	}
	if removed != nil {
		if err := fromRemoved(removed, time.Unix(0, in.SentAt), time.Now()); err != nil {
			return nil, false, fmt.Errorf("%w: in %s, it comes from %s's device %q, %v", ErrRejected, termtext.Line(group), from, termtext.Line(removed.Name), err)
		}
	}
	before, err := r.c.groups.checkPosition(ctx, group, from, seq, in.Roster, time.Unix(0, in.SentAt))
	if err != nil {
		return nil, false, err
	}
	msg := &Message{ServerID: d.ServerID, From: from, To: r.c.user, Group: group, Epoch: d.Epoch, Kind: in.Kind,
		SentAt: time.Unix(0, in.SentAt), ServerTime: time.UnixMilli(d.Time), BeforeChange: before, Mine: from == r.c.user}
	if removed != nil {
		msg.FromRemovedDevice = removed.Name
	}
	copy(msg.MsgID[:], in.MsgID)
	if in.Kind == proto.KindFile {
		f, err := r.fileChunk(from, in.Body)
		if err != nil || f == nil {
			return nil, err == nil, err // more chunks to come, or a bad one
		}
		msg.File = f
		return msg, true, nil
	}
	msg.Text = string(in.Body)
	return msg, true, nil
}

// incomingFile is a file being assembled in OutDir as
// .incoming-<file id>.part, with its header and the chunks received so far
// in .incoming-<file id>.state. Both are synced before the chunks are
// acknowledged, so a file resumes after the client restarts.
type incomingFile struct {
	id    [proto.MsgIDLen]byte
	key   *[32]byte // seals the state file
	from  string
	name  string
	size  uint64
	count uint32
	got   []bool
	n     uint32
	f     Part
	dirty bool
}

// incomingName names a transfer's entry in Downloads: its part or state.
func incomingName(id [proto.MsgIDLen]byte, ext string) string {
	return fmt.Sprintf(".incoming-%x.%s", id, ext)
}

// state (sealed, stateMagic): from \n name \n size \n count \n one character per chunk (0 or 1)
func (f *incomingFile) state() []byte {
	b := []byte(fmt.Sprintf("%s\n%s\n%d\n%d\n", f.from, f.name, f.size, f.count))
	for _, g := range f.got {
		if g {
			b = append(b, '1')
		} else {
			b = append(b, '0')
		}
	}
	return append(b, '\n')
}

// openIncoming reopens a partial file left by an earlier run, or starts one.
func openIncoming(dl Downloads, key *[32]byte, id [proto.MsgIDLen]byte, from, name string, size uint64, count uint32) (*incomingFile, error) {
	f := &incomingFile{id: id, key: key, from: from, name: name, size: size, count: count, got: make([]bool, count)}
	if st, err := readState(dl, key, incomingName(id, "state")); err == nil {
		lines := strings.Split(string(st), "\n")
		if len(lines) >= 5 && lines[0] == from && lines[1] == name && lines[2] == fmt.Sprint(size) && lines[3] == fmt.Sprint(count) && len(lines[4]) == int(count) {
			for i, c := range lines[4] {
				if c == '1' {
					f.got[i] = true
					f.n++
				}
			}
		}
	}
	pf, err := dl.OpenPart(incomingName(id, "part"))
	if err != nil {
		return nil, fmt.Errorf("client: receiving file: %w", err)
	}
	f.f = pf
	return f, nil
}

// sync makes the chunks written so far durable, with the state that
// lists them.
func (f *incomingFile) sync(dl Downloads) error {
	if !f.dirty {
		return nil
	}
	if err := f.f.Sync(); err != nil {
		return err
	}
	if err := writeSealed(dl, f.key, stateMagic, incomingName(f.id, "state"), f.state()); err != nil {
		return err
	}
	f.dirty = false
	return nil
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
	dl := r.c.cfg.Downloads
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	f := r.files[id]
	if f == nil {
		for _, gone := range r.partials.expire(now) {
			if g := r.files[gone]; g != nil {
				g.f.Close()
				delete(r.files, gone)
			}
		}
		if r.refused[id] {
			return nil, nil // refused already, and said so: the rest is dropped quietly
		}
		if err := r.partials.admit(id, from, ch.Size, now); err != nil {
			if len(r.refused) >= maxRefused {
				clear(r.refused)
			}
			r.refused[id] = true
			return nil, fmt.Errorf("%w: %w", ErrRejected, err)
		}
		if len(r.files) >= maxOpenFiles {
			r.closeOldestLocked()
		}
		var err error
		if f, err = openIncoming(dl, r.partials.key, id, from, name, ch.Size, ch.Count); err != nil {
			r.partials.done(id)
			return nil, err
		}
		r.files[id] = f
	}
	r.partials.touch(id, now)
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
	f.dirty = true
	r.c.post(Event{Kind: EventFileProgress, User: from, File: &ReceivedFile{ID: id, Name: f.name, Size: int64(f.size)},
		Got: int64(min(uint64(f.n)*proto.FileChunkData, f.size))})
	if f.n < f.count {
		return nil, nil
	}
	delete(r.files, id)
	r.partials.done(id)
	return f.finish(dl)
}

// syncFiles makes every partial file touched since the last call durable.
func (r *receiver) syncFiles() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.files {
		if err := f.sync(r.c.cfg.Downloads); err != nil {
			return fmt.Errorf("client: receiving file: %w", err)
		}
	}
	return nil
}

func (f *incomingFile) finish(dl Downloads) (*ReceivedFile, error) {
	err := f.f.Truncate(int64(f.size))
	if err == nil {
		err = f.f.Sync()
	}
	f.f.Close()
	var path string
	if err == nil {
		path, err = dl.Save(incomingName(f.id, "part"), f.name)
	}
	if err != nil {
		return nil, fmt.Errorf("client: saving file: %w", err)
	}
	dl.Remove(incomingName(f.id, "state"))
	return &ReceivedFile{ID: f.id, Name: f.name, Path: path, Size: int64(f.size)}, nil
}

// closeOldestLocked closes (but keeps on disk) one partial file to bound
// open files; it is reopened if more of it arrives.
func (r *receiver) closeOldestLocked() {
	for id, f := range r.files {
		_ = f.sync(r.c.cfg.Downloads)
		f.f.Close()
		delete(r.files, id)
		return
	}
}

// close closes the seen log and the partial files, which stay on disk to
// be resumed.
func (r *receiver) close() {
	r.seen.close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, f := range r.files {
		_ = f.sync(r.c.cfg.Downloads)
		f.f.Close()
		delete(r.files, id)
	}
}

// maxFileName is the longest name a received file is saved under, in
// bytes: room is left for " (999)" under the usual 255-byte limit.
const maxFileName = 240

// safeFileName keeps the base name and drops anything that could escape
// the folder, hide the file, or act on a terminal that shows the name
// (control characters, C1 included, and bidirectional controls become
// "_"); a long name is shortened, keeping its extension, so that a
// second file of the same name still fits with " (1)".
func safeFileName(name string) string {
	name = filepath.Base(strings.ReplaceAll(strings.ToValidUTF8(name, "_"), "\\", "/"))
	name = strings.Map(func(r rune) rune {
		if r == '/' || termtext.Unsafe(r) {
			return '_'
		}
		return r
	}, name)
	name = strings.TrimLeft(name, ".")
	if name == "" {
		return ""
	}
	if len(name) > maxFileName {
		ext := filepath.Ext(name)
		if len(ext) > 16 {
			ext = ""
		}
		stem := strings.TrimSuffix(name, ext)
		cut := maxFileName - len(ext)
		for cut > 0 && !utf8.RuneStart(stem[cut]) {
			cut--
		}
		name = stem[:cut] + ext
	}
	return name
}
