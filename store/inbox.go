package store

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"securefastchat/proto"
)

// Inbox names one device's queue: the account and the device's id (the
// proto.KeyRecordID of the device's keys, as its account's device list
// names it). Each device has its own queue, counts and delivery sequence,
// so one device's backlog never holds back or fills another's.
type Inbox struct {
	User   string // canonical
	Device uint64
}

// inboxKeyLen is what an inbox adds to its user's name in a key.
const inboxKeyLen = 1 + 16

// key is the inbox's name in the queue buckets: user ":" device as 16 hex
// digits. A user name has no ':' (proto.ValidUsername), so an account's
// inboxes are the keys under the prefix user ":".
func (in Inbox) key() []byte {
	k := make([]byte, 0, len(in.User)+inboxKeyLen)
	k = append(append(k, in.User...), ':')
	return hex.AppendEncode(k, binary.BigEndian.AppendUint64(nil, in.Device))
}

func (in Inbox) String() string { return string(in.key()) }

// inboxPrefix is the prefix of every inbox key of user.
func inboxPrefix(user string) []byte { return append([]byte(user), ':') }

// parseInbox reads an inbox key.
func parseInbox(k []byte) (Inbox, error) {
	i := bytes.IndexByte(k, ':')
	if i <= 0 || len(k)-i != inboxKeyLen {
		return Inbox{}, fmt.Errorf("%w: inbox key %q", ErrCorrupt, k)
	}
	var dev [8]byte
	if _, err := hex.Decode(dev[:], k[i+1:]); err != nil {
		return Inbox{}, fmt.Errorf("%w: inbox key %q", ErrCorrupt, k)
	}
	return Inbox{User: string(k[:i]), Device: binary.BigEndian.Uint64(dev[:])}, nil
}

// FirstDevice returns the device id an account's own keys name: the
// device it signed up with, whose keys became its master key. Queues,
// sessions and logins from before device lists belong to it.
func FirstDevice(u *User) uint64 {
	return proto.KeyRecordID(&proto.Keys{BoxKey: u.BoxKey, SignKey: u.SignKey})
}

// inboxesOf returns user's inboxes that hold something, in key order.
func inboxesOf(tx *bolt.Tx, user string) ([]Inbox, error) {
	var out []Inbox
	prefix := inboxPrefix(user)
	c := tx.Bucket(bucketQueue).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if v != nil {
			continue // not a bucket
		}
		in, err := parseInbox(k)
		if err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	return out, nil
}

// Inboxes returns the inboxes of user's devices that hold messages.
func (s *Store) Inboxes(user string) ([]Inbox, error) {
	var out []Inbox
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		out, err = inboxesOf(tx, user)
		return err
	})
	return out, err
}

// AllInboxes returns every inbox that holds messages.
func (s *Store) AllInboxes() ([]Inbox, error) {
	var out []Inbox
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketQueue).ForEachBucket(func(k []byte) error {
			in, err := parseInbox(k)
			out = append(out, in)
			return err
		})
	})
	return out, err
}

// InboxLen returns how many messages and bytes wait for one device.
func (s *Store) InboxLen(in Inbox) (count, bytes int64, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		st := getStatsKey(tx.Bucket(bucketQStats), in.key())
		count, bytes = st.count, st.bytes
		return nil
	})
	return
}

// DeleteInbox drops a device's queue with its counts, as when the device
// leaves its account's list. It returns how many messages it dropped.
func (s *Store) DeleteInbox(in Inbox) (int64, error) {
	var n int64
	err := s.update(func(tx *bolt.Tx) error {
		var err error
		n, err = deleteInbox(tx, in.key())
		return err
	})
	return n, err
}

func deleteInbox(tx *bolt.Tx, k []byte) (int64, error) {
	st := getStatsKey(tx.Bucket(bucketQStats), k)
	qb := tx.Bucket(bucketQueue)
	if qb.Bucket(k) != nil {
		if err := qb.DeleteBucket(k); err != nil {
			return 0, err
		}
	}
	if err := tx.Bucket(bucketQStats).Delete(k); err != nil {
		return 0, err
	}
	if err := tx.Bucket(bucketDeviceSeen).Delete(k); err != nil {
		return 0, err
	}
	return st.count, deletePrefix(tx.Bucket(bucketQSenders), append(copyBytes(k), 0))
}

// putDeviceSeen records that a device was seen at at: a session of its
// was made or touched (sessions keep it; DevicesSeen reads it).
func putDeviceSeen(tx *bolt.Tx, in Inbox, at time.Time) error {
	return tx.Bucket(bucketDeviceSeen).Put(in.key(), binary.BigEndian.AppendUint64(nil, uint64(at.UnixNano())))
}

// DevicesSeen returns when each of user's devices last logged in: when a
// session of its was last made or touched (since schema 5).
func (s *Store) DevicesSeen(user string) (map[uint64]time.Time, error) {
	out := map[uint64]time.Time{}
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := inboxPrefix(user)
		c := tx.Bucket(bucketDeviceSeen).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			in, err := parseInbox(k)
			if err != nil || len(v) != 8 {
				return fmt.Errorf("%w: device seen record %q", ErrCorrupt, k)
			}
			out[in.Device] = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
		}
		return nil
	})
	return out, err
}

// migrate4to5 moves each user's queue (schema 4 and before: one per
// user) to the inbox of the account's first device, with its counts, its
// senders' shares and its repeat records, and binds each session to that
// device. A queue whose account is gone is dropped with it.
func migrate4to5(tx *bolt.Tx) error {
	devs := map[string]uint64{} // user -> first device; absent: no account
	first := func(user []byte) (uint64, bool) {
		if d, ok := devs[string(user)]; ok {
			return d, true
		}
		v := tx.Bucket(bucketUsers).Get(user)
		if v == nil {
			return 0, false
		}
		u, err := unmarshalUser(string(user), v)
		if err != nil {
			return 0, false
		}
		devs[string(user)] = FirstDevice(u)
		return devs[string(user)], true
	}
	inboxOf := func(user []byte) ([]byte, bool) {
		d, ok := first(user)
		return Inbox{User: string(user), Device: d}.key(), ok
	}

	// The queues.
	qb := tx.Bucket(bucketQueue)
	var old [][]byte
	if err := qb.ForEachBucket(func(k []byte) error {
		if bytes.IndexByte(k, ':') < 0 {
			old = append(old, copyBytes(k))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, user := range old {
		if in, ok := inboxOf(user); ok {
			nb, err := qb.CreateBucketIfNotExists(in)
			if err != nil {
				return err
			}
			if err := qb.Bucket(user).ForEach(func(k, v []byte) error { return nb.Put(copyBytes(k), copyBytes(v)) }); err != nil {
				return err
			}
		}
		if err := qb.DeleteBucket(user); err != nil {
			return err
		}
	}

	// Keys that name the receiver: counts (user), shares (user NUL
	// sender), repeat records (sender NUL user NUL msg_id, and the value
	// ends with the user).
	rekey := func(b *bolt.Bucket, fn func(k, v []byte) (nk, nv []byte, keep bool)) error {
		type kv struct{ k, nk, nv []byte }
		var moves []kv
		if err := b.ForEach(func(k, v []byte) error {
			nk, nv, keep := fn(k, v)
			if nk == nil && keep {
				return nil // already an inbox's
			}
			moves = append(moves, kv{copyBytes(k), nk, nv})
			return nil
		}); err != nil {
			return err
		}
		for _, m := range moves {
			if err := b.Delete(m.k); err != nil {
				return err
			}
			if m.nk != nil {
				if err := b.Put(m.nk, m.nv); err != nil {
					return err
				}
			}
		}
		return nil
	}
	err := rekey(tx.Bucket(bucketQStats), func(k, v []byte) ([]byte, []byte, bool) {
		if bytes.IndexByte(k, ':') >= 0 {
			return nil, nil, true
		}
		in, ok := inboxOf(k)
		return in, copyBytes(v), ok
	})
	if err != nil {
		return err
	}
	err = rekey(tx.Bucket(bucketQSenders), func(k, v []byte) ([]byte, []byte, bool) {
		i := bytes.IndexByte(k, 0)
		if i < 0 || bytes.IndexByte(k[:i], ':') >= 0 {
			return nil, nil, true
		}
		in, ok := inboxOf(k[:i])
		return append(in, k[i:]...), copyBytes(v), ok
	})
	if err != nil {
		return err
	}
	err = rekey(tx.Bucket(bucketMsgIDs), func(k, v []byte) ([]byte, []byte, bool) {
		i := bytes.IndexByte(k, 0)
		if i < 0 || len(k) < i+1+1+1+16 || len(v) < 16 {
			return nil, nil, false // unreadable: a repeat record only
		}
		to := k[i+1 : len(k)-17]
		if bytes.IndexByte(to, ':') >= 0 {
			return nil, nil, true
		}
		in, ok := inboxOf(to)
		nk := append(append(append(copyBytes(k[:i+1]), in...), 0), k[len(k)-16:]...)
		head := 16
		if len(v) >= 25 && v[16] == 0xFF {
			head = 25
		}
		return nk, append(copyBytes(v[:head]), in...), ok
	})
	if err != nil {
		return err
	}

	// Sessions: each to its account's first device.
	return rekey(tx.Bucket(bucketSessions), func(k, v []byte) ([]byte, []byte, bool) {
		var h [32]byte
		copy(h[:], k)
		ss, err := unmarshalSession(h, v)
		if err != nil || v[0] != 1 {
			return nil, nil, true // leave what is not a version 1 record as it is
		}
		ss.Device, _ = first([]byte(ss.User)) // an account gone: its session fails at resume
		return copyBytes(k), ss.marshal(), true
	})
}
