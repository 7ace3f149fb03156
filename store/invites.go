package store

import (
	"bytes"

	bolt "go.etcd.io/bbolt"
)

// A user added to a group by someone they had not accepted (see the
// shard's message requests) is invited, not joined (bucketGroupInvites):
// nothing of the group's messages reaches or is queued for them, and the
// group makes them nobody's contact, until they accept
// (AcceptGroupInvite). They are on the signed roster all the same (the
// roster is the clients' to check), and may leave it to decline.

// GroupInvite is a pending invitation.
type GroupInvite struct {
	Group string
	By    string // who added the member
}

// pendingOf returns a group's invited members (member -> who added them).
func pendingOf(tx *bolt.Tx, group string) map[string]string {
	var out map[string]string
	prefix := contactKey(group, "")
	c := tx.Bucket(bucketGroupInvites).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if out == nil {
			out = map[string]string{}
		}
		out[string(k[len(prefix):])] = string(v)
	}
	return out
}

// setInvites records invite (added by by) as invited in group, and drops
// the invitations of those no longer members.
func setInvites(tx *bolt.Tx, group string, members []GroupMember, invite, by string) error {
	b := tx.Bucket(bucketGroupInvites)
	in := map[string]bool{}
	for _, m := range members {
		in[m.Name] = true
	}
	for m := range pendingOf(tx, group) {
		if !in[m] {
			if err := b.Delete(contactKey(group, m)); err != nil {
				return err
			}
		}
	}
	if invite != "" && in[invite] {
		return b.Put(contactKey(group, invite), []byte(by))
	}
	return nil
}

// AcceptGroupInvite makes an invited member a joined one. It returns
// ErrNotFound if member has no invitation to group.
func (s *Store) AcceptGroupInvite(group, member string) error {
	defer s.groups.drop(group)
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketGroupInvites)
		k := contactKey(group, member)
		if b.Get(k) == nil {
			return ErrNotFound
		}
		return b.Delete(k)
	})
}

// GroupInvites returns user's pending invitations, in group order.
func (s *Store) GroupInvites(user string) ([]GroupInvite, error) {
	var out []GroupInvite
	err := s.db.View(func(tx *bolt.Tx) error {
		ug := tx.Bucket(bucketUserGroups).Bucket([]byte(user))
		if ug == nil {
			return nil
		}
		b := tx.Bucket(bucketGroupInvites)
		return ug.ForEach(func(g, _ []byte) error {
			if by := b.Get(contactKey(string(g), user)); by != nil {
				out = append(out, GroupInvite{Group: string(g), By: string(by)})
			}
			return nil
		})
	})
	return out, err
}

// joinedGroups returns the groups user is a member of and not only
// invited to.
func joinedGroups(tx *bolt.Tx, user string) []string {
	ug := tx.Bucket(bucketUserGroups).Bucket([]byte(user))
	if ug == nil {
		return nil
	}
	b := tx.Bucket(bucketGroupInvites)
	var out []string
	_ = ug.ForEach(func(g, _ []byte) error {
		if b.Get(contactKey(string(g), user)) == nil {
			out = append(out, string(g))
		}
		return nil
	})
	return out
}

// shareGroup reports whether a and b are members of a common group; with
// joined, a group both have joined (not only been invited to).
func shareGroup(tx *bolt.Tx, a, b string, joined bool) bool {
	ug := tx.Bucket(bucketUserGroups)
	ba, bb := ug.Bucket([]byte(a)), ug.Bucket([]byte(b))
	if ba == nil || bb == nil {
		return false
	}
	inv := tx.Bucket(bucketGroupInvites)
	found := false
	_ = ba.ForEach(func(g, _ []byte) error {
		if found || bb.Get(g) == nil {
			return nil
		}
		if !joined || inv.Get(contactKey(string(g), a)) == nil && inv.Get(contactKey(string(g), b)) == nil {
			found = true
		}
		return nil
	})
	return found
}

// ShareGroup reports whether a and b are members of a common group; with
// joined, one both have joined (which makes them each other's contacts),
// not only been invited to.
func (s *Store) ShareGroup(a, b string, joined bool) (bool, error) {
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		ok = shareGroup(tx, a, b, joined)
		return nil
	})
	return ok, err
}

// JoinedGroups returns the groups user is a member of and not only
// invited to: those that make its members each other's contacts.
func (s *Store) JoinedGroups(user string) ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		out = joinedGroups(tx, user)
		return nil
	})
	return out, err
}
