package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"
)

// What the operator does: list, delete and revoke users, invite codes,
// queue totals and hot backups.

// UserInfo is a user as the operator sees it.
type UserInfo struct {
	Name, Display string
	Created       time.Time
	Disabled      bool
	Queued        int64 // messages waiting for them
	QueuedBytes   int64
}

// ListUsers returns every user, in name order.
func (s *Store) ListUsers() ([]UserInfo, error) {
	var out []UserInfo
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			u, err := unmarshalUser(string(k), v)
			if err != nil {
				return err
			}
			st := userStats(tx, u.Name)
			out = append(out, UserInfo{Name: u.Name, Display: u.Display, Created: u.Created, Disabled: u.Disabled, Queued: st.count, QueuedBytes: st.bytes})
			return nil
		})
	})
	return out, err
}

// DeleteUser removes a user with their sessions, their queue and their
// direct-message contacts, in one transaction. Their group memberships
// stay in the groups' signed rosters (an admin of each group removes
// them); messages to them are no longer stored.
func (s *Store) DeleteUser(name string) error {
	return s.update(func(tx *bolt.Tx) error {
		ub := tx.Bucket(bucketUsers)
		if ub.Get([]byte(name)) == nil {
			return ErrNotFound
		}
		if err := ub.Delete([]byte(name)); err != nil {
			return err
		}
		if err := dropDevices(tx, name); err != nil {
			return err
		}
		prefix := contactKey(name, "")
		// Contacts and who wrote to whom, both ways: a new account under
		// this name starts as a stranger to everyone.
		for _, bn := range [][]byte{bucketContacts, bucketWrote} {
			b := tx.Bucket(bn)
			var peers []string
			c := b.Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				peers = append(peers, string(k[len(prefix):]))
			}
			for _, p := range peers {
				if err := b.Delete(contactKey(name, p)); err != nil {
					return err
				}
				if err := b.Delete(contactKey(p, name)); err != nil {
					return err
				}
			}
		}
		// The blocks the user made go; those of others on the name stay (a
		// new account under it may be the same person).
		return deletePrefix(tx.Bucket(bucketBlocked), prefix)
	})
}

// dropDevices deletes what an account keeps of its devices: its sessions,
// its device chain, every device's inbox with its counts and senders'
// shares, and when each device last logged in.
func dropDevices(tx *bolt.Tx, name string) error {
	if _, err := deleteSessionsOf(tx, name); err != nil {
		return err
	}
	if err := deleteDevices(tx, name); err != nil {
		return err
	}
	inboxes, err := inboxesOf(tx, name)
	if err != nil {
		return err
	}
	for _, in := range inboxes {
		if _, err := deleteInbox(tx, in.key()); err != nil {
			return err
		}
	}
	// Counts of inboxes already empty.
	for _, b := range [][]byte{bucketQStats, bucketQSenders, bucketDeviceSeen} {
		if err := deletePrefix(tx.Bucket(b), inboxPrefix(name)); err != nil {
			return err
		}
	}
	return nil
}

// deleteSessionsOf deletes a user's sessions and returns how many.
func deleteSessionsOf(tx *bolt.Tx, user string) (int, error) {
	return deleteSessionsBut(tx, user, [32]byte{})
}

// deleteSessionsBut deletes user's sessions but the one of keep, and
// returns how many.
func deleteSessionsBut(tx *bolt.Tx, user string, keep [32]byte) (int, error) {
	all, err := sessionsOf(tx, user)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, ss := range all {
		if ss.TokenHash == keep {
			continue
		}
		if err := deleteSession(tx, ss.TokenHash); err != nil {
			return 0, err
		}
		n++
	}
	return n, nil
}

func inviteKey(code string) []byte { h := sha256.Sum256([]byte(code)); return h[:] }

// AddInvite stores a single-use invite code valid until expires. Only its
// hash is kept.
func (s *Store) AddInvite(code string, expires time.Time) error {
	return s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketInvites).Put(inviteKey(code), binary.BigEndian.AppendUint64(nil, uint64(expires.UnixNano())))
	})
}

// InviteValid reports whether a code is unused and unexpired.
func (s *Store) InviteValid(code string) (bool, error) {
	ok := false
	err := s.db.View(func(tx *bolt.Tx) error {
		ok = validInvite(tx, code, s.now())
		return nil
	})
	return ok, err
}

func validInvite(tx *bolt.Tx, code string, now time.Time) bool {
	v := tx.Bucket(bucketInvites).Get(inviteKey(code))
	return len(v) == 8 && now.Before(time.Unix(0, int64(binary.BigEndian.Uint64(v))))
}

// CreateUserWithInvite creates a user and uses up the invite code in the
// same transaction: two sign-ups with one code cannot both succeed.
func (s *Store) CreateUserWithInvite(u *User, code string) error {
	if u.Created.IsZero() {
		u.Created = s.now()
	}
	rec := u.marshal()
	return s.update(func(tx *bolt.Tx) error {
		if !validInvite(tx, code, s.now()) {
			return ErrInvalidInvite
		}
		b := tx.Bucket(bucketUsers)
		if b.Get([]byte(u.Name)) != nil {
			return ErrUserExists
		}
		if err := tx.Bucket(bucketInvites).Delete(inviteKey(code)); err != nil {
			return err
		}
		return b.Put([]byte(u.Name), rec)
	})
}

// QueueTotals returns the messages and bytes queued for all users.
func (s *Store) QueueTotals() (count, bytes int64, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketQStats).ForEach(func(k, v []byte) error {
			if len(v) == 16 {
				count += int64(binary.BigEndian.Uint64(v))
				bytes += int64(binary.BigEndian.Uint64(v[8:]))
			}
			return nil
		})
	})
	return
}

// Backup writes a consistent copy of the whole store while the server
// runs: one read transaction, so writers go on meanwhile. start is called
// first with the copy's size and returns where to write it. It returns the
// bytes written.
func (s *Store) Backup(start func(size int64) (io.Writer, error)) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		w, err := start(tx.Size())
		if err != nil {
			return err
		}
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// Ping reads the store's schema record: it answers whether the store can
// be read at all (for readiness checks).
func (s *Store) Ping() error {
	return s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta).Get([]byte("schema")) == nil {
			return ErrCorrupt
		}
		return nil
	})
}

// deletePrefix deletes every key of b that starts with prefix.
func deletePrefix(b *bolt.Bucket, prefix []byte) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, copyBytes(k))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// RecoverAccount starts an account again from a new first device, all its
// devices lost: in one transaction, its published keys become keys
// (box, sign and the signature over them: the sign key is the new master
// key), its device chain is only first (statement 0, for the new device),
// every session and every device's inbox (what was sealed for the devices
// that are gone) is dropped, and ss, the new device's session, is kept.
// The account's name, password, contacts, blocks and groups stay.
// ErrNotFound if there is no such user.
func (s *Store) RecoverAccount(name string, boxKey, signKey, keySig, first []byte, ss *Session) error {
	var changed []string
	defer func() {
		for _, g := range changed {
			s.groups.drop(g)
		}
	}()
	return s.update(func(tx *bolt.Tx) error {
		ub := tx.Bucket(bucketUsers)
		v := ub.Get([]byte(name))
		if v == nil {
			return ErrNotFound
		}
		u, err := unmarshalUser(name, v)
		if err != nil {
			return err
		}
		u.BoxKey, u.SignKey, u.KeySig = boxKey, signKey, keySig
		if err := ub.Put([]byte(name), u.marshal()); err != nil {
			return err
		}
		if err := dropDevices(tx, name); err != nil {
			return err
		}
		db, err := tx.Bucket(bucketDevices).CreateBucket([]byte(name))
		if err != nil {
			return err
		}
		if err := db.Put(seqKey(0), first); err != nil {
			return err
		}
		if changed, err = devicesChanged(tx, name); err != nil {
			return err
		}
		return putSession(tx, ss)
	})
}
