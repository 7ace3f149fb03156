package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Queued is one message waiting in a receiver's queue: ciphertext and the
// envelope the server needs to deliver it.
type Queued struct {
	// ServerID is the message's number in its receiver's own delivery
	// sequence (assigned at commit): it orders the receiver's queue and
	// says nothing about anyone else's traffic.
	ServerID uint64
	// SentID is the number its sender was given for it (in the sender's
	// own sequence), kept with the de-duplication record so a repeat gets
	// the same one.
	SentID uint64
	To     string // canonical receiver
	// Device is the receiving device: the message waits in the inbox
	// {To, Device}.
	Device uint64
	From   string // canonical sender
	MsgID  [16]byte
	Kind   uint8
	Time   int64     // the server's stamp, unix ms
	Stored time.Time // when it entered the queue; expiry counts from here
	Body   []byte
	// A group message also carries its group, epoch and the sender's
	// signature, and (from protocol version 5) the sending device, if not
	// the sender's first (FromDevice; 0: signed by the account key).
	Group string
	Epoch uint32
	Sig   []byte
	// A direct message sealed for devices (protocol version 4) also
	// carries the sending device, the device's wrap of the message key,
	// and, on a copy of what its user sent from another device, the one
	// it was sent to (Peer; empty on a copy for the receiver). Wrap is
	// nil on every other message.
	FromDevice uint64
	Peer       string
	Wrap       []byte
}

// size is what a record counts against its receiver's byte limit.
func (q *Queued) size() int64 {
	return int64(len(q.Body) + len(q.From) + len(q.Group) + len(q.Sig) + len(q.Peer) + len(q.Wrap) + 64)
}

// queued record: version u8 (1: direct, 2: group, 3: sealed for devices,
// 4: group, from a device)
// | time i64 | stored i64 | from str8 | msg_id 16 | kind u8
// | [2, 4: group str8 | epoch u32 | sig 64] | [4: from_device u64]
// | [3: from_device u64 | peer str8 | wrap str8]
// | body (to the end)
func (q *Queued) marshal() []byte {
	b := make([]byte, 0, 1+8+8+1+len(q.From)+16+1+len(q.Body)+1+len(q.Group)+4+len(q.Sig)+8+2+len(q.Peer)+len(q.Wrap))
	switch {
	case q.Group != "" && q.FromDevice != 0:
		b = append(b, 4)
	case q.Group != "":
		b = append(b, 2)
	case q.Wrap != nil:
		b = append(b, 3)
	default:
		b = append(b, 1)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(q.Time))
	b = binary.BigEndian.AppendUint64(b, uint64(q.Stored.UnixNano()))
	b = append(b, byte(len(q.From)))
	b = append(b, q.From...)
	b = append(b, q.MsgID[:]...)
	b = append(b, q.Kind)
	if q.Group != "" {
		b = append(append(b, byte(len(q.Group))), q.Group...)
		b = binary.BigEndian.AppendUint32(b, q.Epoch)
		b = append(b, q.Sig...)
		if q.FromDevice != 0 {
			b = binary.BigEndian.AppendUint64(b, q.FromDevice)
		}
	} else if q.Wrap != nil {
		b = binary.BigEndian.AppendUint64(b, q.FromDevice)
		b = append(append(b, byte(len(q.Peer))), q.Peer...)
		b = append(append(b, byte(len(q.Wrap))), q.Wrap...)
	}
	return append(b, q.Body...)
}

// inbox is the queue the message is in.
func (q *Queued) inbox() Inbox { return Inbox{User: q.To, Device: q.Device} }

func unmarshalQueued(in Inbox, key, v []byte) (*Queued, error) {
	bad := fmt.Errorf("%w: queued record for %s", ErrCorrupt, in)
	if len(key) != 8 || len(v) < 18 || v[0] < 1 || v[0] > 4 || len(v) < 18+int(v[17])+17 {
		return nil, bad
	}
	n := int(v[17])
	q := &Queued{
		ServerID: binary.BigEndian.Uint64(key),
		To:       in.User,
		Device:   in.Device,
		Time:     int64(binary.BigEndian.Uint64(v[1:])),
		Stored:   time.Unix(0, int64(binary.BigEndian.Uint64(v[9:]))),
		From:     string(v[18 : 18+n]),
	}
	copy(q.MsgID[:], v[18+n:])
	q.Kind = v[18+n+16]
	rest := v[18+n+17:]
	if v[0] == 2 || v[0] == 4 {
		if len(rest) < 1 || len(rest) < 1+int(rest[0])+4+64 || rest[0] == 0 {
			return nil, bad
		}
		g := int(rest[0])
		q.Group = string(rest[1 : 1+g])
		q.Epoch = binary.BigEndian.Uint32(rest[1+g:])
		q.Sig = copyBytes(rest[1+g+4 : 1+g+4+64])
		rest = rest[1+g+4+64:]
		if v[0] == 4 {
			if len(rest) < 8 || binary.BigEndian.Uint64(rest) == 0 {
				return nil, bad
			}
			q.FromDevice, rest = binary.BigEndian.Uint64(rest), rest[8:]
		}
	}
	if v[0] == 3 {
		if len(rest) < 8+1 || len(rest) < 8+1+int(rest[8])+1 {
			return nil, bad
		}
		q.FromDevice = binary.BigEndian.Uint64(rest)
		p := int(rest[8])
		q.Peer = string(rest[9 : 9+p])
		rest = rest[9+p:]
		w := int(rest[0])
		if w == 0 || len(rest) < 1+w {
			return nil, bad
		}
		q.Wrap = copyBytes(rest[1 : 1+w])
		rest = rest[1+w:]
	}
	q.Body = copyBytes(rest)
	return q, nil
}

func idKey(id uint64) []byte { return binary.BigEndian.AppendUint64(nil, id) }

// msgIDKey is the de-duplication key: a repeat is the same message id from
// the same sender to the same inbox (a message is stored once per
// receiving device, and a group message once per member's device).
func msgIDKey(from string, inbox []byte, id [16]byte) []byte {
	k := append(append(append([]byte(from), 0), inbox...), 0)
	return append(k, id[:]...)
}

// QueueLimits cap one device's queue. Zero fields mean no limit.
type QueueLimits struct {
	Count int64
	Bytes int64
	// ContactShare and StrangerShare are the fractions of Count and Bytes
	// one sender may hold of a receiver's queue: a sender the receiver
	// has written to, or shares a group with, and any other sender. Zero
	// means no per-sender limit.
	ContactShare, StrangerShare float64
}

// share returns the count and bytes one sender may hold, 0 for no limit.
func (l QueueLimits) share(contact bool) (count, bytes int64) {
	f := l.StrangerShare
	if contact {
		f = l.ContactShare
	}
	if f <= 0 {
		return 0, 0
	}
	return max(1, int64(float64(l.Count)*f)), max(1, int64(float64(l.Bytes)*f))
}

type qstats struct{ count, bytes int64 }

func getStatsKey(b *bolt.Bucket, k []byte) qstats {
	v := b.Get(k)
	if len(v) != 16 {
		return qstats{}
	}
	return qstats{int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:]))}
}

func putStatsKey(b *bolt.Bucket, k []byte, st qstats) error {
	if st.count <= 0 {
		return b.Delete(k)
	}
	v := binary.BigEndian.AppendUint64(nil, uint64(st.count))
	return b.Put(k, binary.BigEndian.AppendUint64(v, uint64(max(st.bytes, 0))))
}

// wtx batches the bookkeeping of one write transaction: queue stats and
// the highest server id are written once at the end, not per message.
type wtx struct {
	tx       *bolt.Tx
	stats    map[string]*qstats      // inbox -> its counts
	senders  map[string]*qstats      // inbox NUL sender -> what the sender holds of the queue
	contacts map[string]bool         // receiver NUL sender -> the sender is the receiver's contact
	buckets  map[string]*bolt.Bucket // inbox -> its queue
	maxID    uint64
}

func newWtx(tx *bolt.Tx) *wtx {
	return &wtx{tx: tx, stats: map[string]*qstats{}, senders: map[string]*qstats{}, contacts: map[string]bool{},
		buckets: map[string]*bolt.Bucket{}}
}

// senderKey is the key of what from holds of an inbox.
func senderKey(inbox []byte, from string) []byte {
	return append(append(inbox[:len(inbox):len(inbox)], 0), from...)
}

// sender returns what from holds of an inbox.
func (w *wtx) sender(inbox []byte, from string) *qstats {
	k := string(senderKey(inbox, from))
	st := w.senders[k]
	if st == nil {
		v := getStatsKey(w.tx.Bucket(bucketQSenders), []byte(k))
		st = &v
		w.senders[k] = st
	}
	return st
}

// contact reports whether from is to's contact: to has written to from, or
// they share a group.
func (w *wtx) contact(to, from string) bool {
	k := string(contactKey(to, from))
	if c, ok := w.contacts[k]; ok {
		return c
	}
	c := w.tx.Bucket(bucketWrote).Get([]byte(k)) != nil || shareGroup(w.tx, to, from, true)
	w.contacts[k] = c
	return c
}

func (w *wtx) stat(inbox []byte) *qstats {
	st := w.stats[string(inbox)]
	if st == nil {
		v := getStatsKey(w.tx.Bucket(bucketQStats), inbox)
		st = &v
		w.stats[string(inbox)] = st
	}
	return st
}

func (w *wtx) queue(inbox []byte, create bool) (*bolt.Bucket, error) {
	if b := w.buckets[string(inbox)]; b != nil {
		return b, nil
	}
	var b *bolt.Bucket
	var err error
	if create {
		b, err = w.tx.Bucket(bucketQueue).CreateBucketIfNotExists(inbox)
	} else {
		b = w.tx.Bucket(bucketQueue).Bucket(inbox)
	}
	if b != nil {
		w.buckets[string(inbox)] = b
	}
	return b, err
}

// finish writes the aggregated bookkeeping.
func (w *wtx) finish() error {
	stats := w.tx.Bucket(bucketQStats)
	for in, st := range w.stats {
		if err := putStatsKey(stats, []byte(in), *st); err != nil {
			return err
		}
	}
	senders := w.tx.Bucket(bucketQSenders)
	for k, st := range w.senders {
		if err := putStatsKey(senders, []byte(k), *st); err != nil {
			return err
		}
	}
	meta := w.tx.Bucket(bucketMeta)
	if v := meta.Get(keyMaxID); w.maxID > 0 && (len(v) != 8 || binary.BigEndian.Uint64(v) < w.maxID) {
		return meta.Put(keyMaxID, idKey(w.maxID))
	}
	return nil
}

// enqueue adds q to its inbox. A (sender, msg_id) already stored there
// returns its ids and dup; a full queue returns ErrQueueFull, and a sender past its share of
// the queue a *ShareFullError; either changes nothing.
func (w *wtx) enqueue(q *Queued, lim QueueLimits) (id, sentID uint64, dup bool, err error) {
	ids := w.tx.Bucket(bucketMsgIDs)
	inbox := q.inbox().key()
	mk := msgIDKey(q.From, inbox, q.MsgID)
	if v := ids.Get(mk); len(v) >= 8 {
		sentID = q.SentID // a record from before sent ids: the new one
		if len(v) >= 25 && v[16] == 0xFF {
			sentID = binary.BigEndian.Uint64(v[17:])
		}
		return binary.BigEndian.Uint64(v), sentID, true, nil
	}
	if q.From != q.To && blocked(w.tx, q.To, q.From) {
		return 0, q.SentID, false, ErrBlocked
	}
	st := w.stat(inbox)
	if lim.Count > 0 && st.count+1 > lim.Count || lim.Bytes > 0 && st.bytes+q.size() > lim.Bytes {
		return 0, 0, false, ErrQueueFull
	}
	ss := w.sender(inbox, q.From)
	if q.From != q.To {
		contact := w.contact(q.To, q.From)
		if n, b := lim.share(contact); n > 0 && (ss.count+1 > n || ss.bytes+q.size() > b) {
			return 0, 0, false, &ShareFullError{Count: n, Bytes: b, Contact: contact}
		}
	}
	qb, err := w.queue(inbox, true)
	if err != nil {
		return 0, 0, false, err
	}
	if err := qb.Put(idKey(q.ServerID), q.marshal()); err != nil {
		return 0, 0, false, err
	}
	rec := binary.BigEndian.AppendUint64(nil, q.ServerID)
	rec = binary.BigEndian.AppendUint64(rec, uint64(q.Stored.UnixNano()))
	rec = binary.BigEndian.AppendUint64(append(rec, 0xFF), q.SentID)
	if err := ids.Put(mk, append(rec, inbox...)); err != nil {
		return 0, 0, false, err
	}
	st.count++
	st.bytes += q.size()
	ss.count++
	ss.bytes += q.size()
	w.maxID = max(w.maxID, q.ServerID)
	return q.ServerID, q.SentID, false, nil
}

// dequeue deletes delivered messages; missing ones are skipped.
func (w *wtx) dequeue(in Inbox, ids []uint64) (int, error) {
	inbox := in.key()
	qb, _ := w.queue(inbox, false)
	if qb == nil {
		return 0, nil
	}
	st := w.stat(inbox)
	n := 0
	for _, id := range ids {
		k := idKey(id)
		v := qb.Get(k)
		if v == nil {
			continue
		}
		q, err := unmarshalQueued(in, k, v)
		if err != nil {
			return n, err
		}
		if err := qb.Delete(k); err != nil {
			return n, err
		}
		st.count--
		st.bytes -= q.size()
		ss := w.sender(inbox, q.From)
		ss.count--
		ss.bytes -= q.size()
		n++
	}
	return n, nil
}

// Enqueue stores messages in one transaction (tests and tools; the server
// goes through a Batcher). It returns one error per message.
func (s *Store) Enqueue(msgs []*Queued, lim QueueLimits) ([]error, error) {
	errs := make([]error, len(msgs))
	err := s.update(func(tx *bolt.Tx) error {
		w := newWtx(tx)
		for i, q := range msgs {
			_, _, _, errs[i] = w.enqueue(q, lim)
			if errs[i] != nil && !errors.Is(errs[i], ErrQueueFull) && !errors.Is(errs[i], ErrShareFull) && !errors.Is(errs[i], ErrBlocked) {
				return errs[i]
			}
		}
		return w.finish()
	})
	return errs, err
}

// Dequeue deletes a device's delivered messages.
func (s *Store) Dequeue(in Inbox, ids []uint64) error {
	return s.update(func(tx *bolt.Tx) error {
		w := newWtx(tx)
		if _, err := w.dequeue(in, ids); err != nil {
			return err
		}
		return w.finish()
	})
}

// Peek returns up to n of a device's queued messages with server ids
// above after, in server id order (the order they were accepted).
func (s *Store) Peek(in Inbox, after uint64, n int) ([]*Queued, error) {
	var out []*Queued
	err := s.db.View(func(tx *bolt.Tx) error {
		qb := tx.Bucket(bucketQueue).Bucket(in.key())
		if qb == nil {
			return nil
		}
		c := qb.Cursor()
		for k, v := c.Seek(idKey(after + 1)); k != nil && len(out) < n; k, v = c.Next() {
			q, err := unmarshalQueued(in, k, v)
			if err != nil {
				return err
			}
			out = append(out, q)
		}
		return nil
	})
	return out, err
}

// QueueLen returns how many messages and bytes wait for user, over all
// its devices' inboxes.
func (s *Store) QueueLen(user string) (count, bytes int64, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		st := userStats(tx, user)
		count, bytes = st.count, st.bytes
		return nil
	})
	return
}

// userStats sums the counts of user's inboxes.
func userStats(tx *bolt.Tx, user string) qstats {
	var sum qstats
	prefix := inboxPrefix(user)
	c := tx.Bucket(bucketQStats).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		st := getStatsKey(tx.Bucket(bucketQStats), k)
		sum.count += st.count
		sum.bytes += st.bytes
	}
	return sum
}

// MaxServerID returns the highest server id ever queued, so ids stay
// increasing across restarts.
func (s *Store) MaxServerID() (uint64, error) {
	var id uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyMaxID); len(v) == 8 {
			id = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return id, err
}

// Sweep deletes queued messages stored before cutoff, and the
// de-duplication records of the same age, one inbox per transaction.
// It returns how many messages it deleted.
func (s *Store) Sweep(cutoff time.Time) (int, error) {
	var inboxes []Inbox
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketQueue).ForEachBucket(func(k []byte) error {
			in, err := parseInbox(k)
			inboxes = append(inboxes, in)
			return err
		})
	}); err != nil {
		return 0, err
	}
	total := 0
	for _, u := range inboxes {
		var expired []uint64
		if err := s.db.View(func(tx *bolt.Tx) error {
			qb := tx.Bucket(bucketQueue).Bucket(u.key())
			if qb == nil {
				return nil
			}
			return qb.ForEach(func(k, v []byte) error {
				if len(v) >= 17 && int64(binary.BigEndian.Uint64(v[9:])) < cutoff.UnixNano() {
					expired = append(expired, binary.BigEndian.Uint64(k))
				}
				return nil
			})
		}); err != nil {
			return total, err
		}
		if len(expired) == 0 {
			continue
		}
		var n int
		err := s.update(func(tx *bolt.Tx) error {
			// Re-check inside the write transaction: only what is still
			// expired goes.
			qb := tx.Bucket(bucketQueue).Bucket(u.key())
			if qb == nil {
				return nil
			}
			var still []uint64
			for _, id := range expired {
				if v := qb.Get(idKey(id)); len(v) >= 17 && int64(binary.BigEndian.Uint64(v[9:])) < cutoff.UnixNano() {
					still = append(still, id)
				}
			}
			w := newWtx(tx)
			var err error
			if n, err = w.dequeue(u, still); err != nil {
				return err
			}
			return w.finish()
		})
		if err != nil {
			return total, err
		}
		total += n
	}
	err := s.update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMsgIDs).Cursor()
		for k, v := c.First(); k != nil; {
			if len(v) >= 16 && int64(binary.BigEndian.Uint64(v[8:])) < cutoff.UnixNano() {
				next := append([]byte(nil), k...)
				if err := c.Delete(); err != nil {
					return err
				}
				k, v = c.Seek(next)
				continue
			}
			k, v = c.Next()
		}
		return nil
	})
	return total, err
}
