package store

import (
	"bytes"
	"sort"

	bolt "go.etcd.io/bbolt"
)

func contactKey(user, peer string) []byte {
	k := make([]byte, 0, len(user)+1+len(peer))
	return append(append(append(k, user...), 0), peer...)
}

// putContact records that a wrote to b, and makes them contacts of each
// other if b had written to a.
func putContact(tx *bolt.Tx, a, b string) error {
	wb := tx.Bucket(bucketWrote)
	if err := wb.Put(contactKey(a, b), nil); err != nil {
		return err
	}
	if wb.Get(contactKey(b, a)) == nil || blocked(tx, a, b) || blocked(tx, b, a) {
		return nil
	}
	cb := tx.Bucket(bucketContacts)
	if err := cb.Put(contactKey(a, b), nil); err != nil {
		return err
	}
	return cb.Put(contactKey(b, a), nil)
}

// AddContact records that a wrote to b (outside a batch), as putContact.
func (s *Store) AddContact(a, b string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return putContact(tx, a, b) })
}

// Wrote reports whether writer has written to peer.
func (s *Store) Wrote(writer, peer string) (bool, error) {
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketWrote).Get(contactKey(writer, peer)) != nil
		return nil
	})
	return ok, err
}

// Contacts returns the users user has exchanged direct messages with or
// shares a group with, sorted, without user itself and without anyone in
// a block with user (either way).
func (s *Store) Contacts(user string) ([]string, error) {
	set := map[string]struct{}{}
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := contactKey(user, "")
		c := tx.Bucket(bucketContacts).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			set[string(k[len(prefix):])] = struct{}{}
		}
		defer func() {
			// Nobody in a block with user, either way, is a contact.
			for n := range set {
				if blocked(tx, user, n) || blocked(tx, n, user) {
					delete(set, n)
				}
			}
		}()
		gb := tx.Bucket(bucketGroups)
		for _, name := range joinedGroups(tx, user) {
			v := gb.Get([]byte(name))
			if v == nil {
				continue
			}
			g, err := unmarshalGroup(name, v)
			if err != nil {
				return err
			}
			pending := pendingOf(tx, name)
			for _, m := range g.Members {
				if _, invited := pending[m.Name]; !invited {
					set[m.Name] = struct{}{}
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	delete(set, user)
	out := make([]string, 0, len(set))
	for u := range set {
		out = append(out, u)
	}
	sort.Strings(out)
	return out, nil
}
