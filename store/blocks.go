package store

import (
	"bytes"
	"errors"

	bolt "go.etcd.io/bbolt"
)

// ErrTooManyBlocked: the account blocks as many users as it may.
var ErrTooManyBlocked = errors.New("store: too many users blocked")

func blocked(tx *bolt.Tx, blocker, sender string) bool {
	return tx.Bucket(bucketBlocked).Get(contactKey(blocker, sender)) != nil
}

// Block makes blocker block user, at most max users in all: what user sends
// blocker from now on is dropped, and so is what of user's waits in
// blocker's queue; blocker no longer counts as having written to user, and
// the pair are no contacts (no presence). It returns the number of queued
// messages dropped.
func (s *Store) Block(blocker, user string, max int) (dropped int, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		bb := tx.Bucket(bucketBlocked)
		k := contactKey(blocker, user)
		if bb.Get(k) == nil {
			if n := len(blockedBy(tx, blocker)); n >= max {
				return ErrTooManyBlocked
			}
			if err := bb.Put(k, nil); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketWrote).Delete(k); err != nil {
			return err
		}
		cb := tx.Bucket(bucketContacts)
		if err := cb.Delete(k); err != nil {
			return err
		}
		if err := cb.Delete(contactKey(user, blocker)); err != nil {
			return err
		}
		w := newWtx(tx)
		inboxes, err := inboxesOf(tx, blocker)
		if err != nil {
			return err
		}
		for _, in := range inboxes {
			qb, _ := w.queue(in.key(), false)
			var ids []uint64
			err := qb.ForEach(func(k, v []byte) error {
				q, err := unmarshalQueued(in, k, v)
				if err != nil {
					return err
				}
				if q.From == user {
					ids = append(ids, q.ServerID)
				}
				return nil
			})
			if err != nil {
				return err
			}
			n, err := w.dequeue(in, ids)
			if err != nil {
				return err
			}
			dropped += n
		}
		return w.finish()
	})
	return dropped, err
}

// Unblock undoes Block. It does not make user a contact again.
func (s *Store) Unblock(blocker, user string) error {
	return s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBlocked).Delete(contactKey(blocker, user))
	})
}

// Blocks reports whether blocker blocks user.
func (s *Store) Blocks(blocker, user string) (bool, error) {
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		ok = blocked(tx, blocker, user)
		return nil
	})
	return ok, err
}

// BlockedBy returns the users blocker blocks, sorted.
func (s *Store) BlockedBy(blocker string) ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		out = blockedBy(tx, blocker)
		return nil
	})
	return out, err
}

func blockedBy(tx *bolt.Tx, blocker string) []string {
	var out []string
	prefix := contactKey(blocker, "")
	c := tx.Bucket(bucketBlocked).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		out = append(out, string(k[len(prefix):]))
	}
	return out
}
