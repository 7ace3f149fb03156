package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Group buckets.
var (
	bucketGroups     = []byte("groups")  // group -> state record
	bucketGroupChain = []byte("gchain")  // group -> bucket of seq (u32 BE) -> signed statement
	bucketGroupKeys  = []byte("gkeys")   // group -> bucket of epoch (u32 BE) | member -> wrapped key; epoch | 0 -> epoch header
	bucketUserGroups = []byte("ugroups") // user -> bucket of group -> empty
)

// Group errors.
var (
	// ErrGroupExists: a group with that name exists.
	ErrGroupExists = errors.New("store: group exists")
	// ErrConflict: the group changed since the caller read it (another
	// admin's change won); read it again.
	ErrConflict = errors.New("store: group changed concurrently")
)

// GroupMember is one member in the server's view of a roster.
type GroupMember struct {
	Name  string
	Admin bool
}

// GroupState is the server's cached view of a group: the roster its
// statement chain proves, and the current key epoch. Clients never take
// it on trust; they replay the chain.
type GroupState struct {
	Name     string
	Seq      uint32   // the last statement
	Last     [32]byte // its hash
	Epoch    uint32   // the current key epoch (0: none yet)
	EpochSeq uint32   // the roster statement the current epoch was wrapped for
	Created  time.Time
	Members  []GroupMember // join order
}

// Member reports whether name is a member and whether an admin.
func (g *GroupState) Member(name string) (member, admin bool) {
	for _, m := range g.Members {
		if m.Name == name {
			return true, m.Admin
		}
	}
	return false, false
}

// Epoch is one group key epoch: the key wrapped for each member of the
// roster at statement RosterSeq, by Wrapper.
type Epoch struct {
	N         uint32
	RosterSeq uint32
	Created   time.Time
	Wrapper   string
	Keys      map[string][]byte // member -> wrapped key
}

// EpochKey is one member's wrapped key of one epoch.
type EpochKey struct {
	Epoch     uint32
	RosterSeq uint32
	Created   time.Time
	Wrapper   string
	Wrapped   []byte
}

// state record: version u8 (1) | seq u32 | last 32 | epoch u32 | epoch_seq u32
// | created i64 | count u32 | (name str8 | admin u8) x count
func (g *GroupState) marshal() []byte {
	b := []byte{1}
	b = binary.BigEndian.AppendUint32(b, g.Seq)
	b = append(b, g.Last[:]...)
	b = binary.BigEndian.AppendUint32(b, g.Epoch)
	b = binary.BigEndian.AppendUint32(b, g.EpochSeq)
	b = binary.BigEndian.AppendUint64(b, uint64(g.Created.UnixNano()))
	b = binary.BigEndian.AppendUint32(b, uint32(len(g.Members)))
	for _, m := range g.Members {
		b = append(append(b, byte(len(m.Name))), m.Name...)
		if m.Admin {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	}
	return b
}

func unmarshalGroup(name string, v []byte) (*GroupState, error) {
	bad := fmt.Errorf("%w: group record %q", ErrCorrupt, name)
	const head = 1 + 4 + 32 + 4 + 4 + 8 + 4
	if len(v) < head || v[0] != 1 {
		return nil, bad
	}
	g := &GroupState{Name: name, Seq: binary.BigEndian.Uint32(v[1:])}
	copy(g.Last[:], v[5:37])
	g.Epoch = binary.BigEndian.Uint32(v[37:])
	g.EpochSeq = binary.BigEndian.Uint32(v[41:])
	g.Created = time.Unix(0, int64(binary.BigEndian.Uint64(v[45:])))
	n := int(binary.BigEndian.Uint32(v[53:]))
	v = v[head:]
	if n > len(v)/2 {
		return nil, bad
	}
	for i := 0; i < n; i++ {
		if len(v) < 1 || len(v) < 2+int(v[0]) {
			return nil, bad
		}
		l := int(v[0])
		if v[1+l] > 1 {
			return nil, bad
		}
		g.Members = append(g.Members, GroupMember{Name: string(v[1 : 1+l]), Admin: v[1+l] == 1})
		v = v[2+l:]
	}
	if len(v) != 0 {
		return nil, bad
	}
	return g, nil
}

func seqKey(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

// putEpoch stores an epoch's wrapped keys.
func putEpoch(tx *bolt.Tx, group string, e *Epoch) error {
	kb, err := tx.Bucket(bucketGroupKeys).CreateBucketIfNotExists([]byte(group))
	if err != nil {
		return err
	}
	// epoch header: roster_seq u32 | created i64 | wrapper str8
	hdr := binary.BigEndian.AppendUint32(nil, e.RosterSeq)
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(e.Created.UnixNano()))
	hdr = append(append(hdr, byte(len(e.Wrapper))), e.Wrapper...)
	if err := kb.Put(append(seqKey(e.N), 0), hdr); err != nil {
		return err
	}
	for m, w := range e.Keys {
		if err := kb.Put(append(seqKey(e.N), m...), w); err != nil {
			return err
		}
	}
	return nil
}

// setMembership updates the user -> groups index from old to next.
func setMembership(tx *bolt.Tx, group string, old, next []GroupMember) error {
	ug := tx.Bucket(bucketUserGroups)
	in := map[string]bool{}
	for _, m := range next {
		in[m.Name] = true
		b, err := ug.CreateBucketIfNotExists([]byte(m.Name))
		if err != nil {
			return err
		}
		if err := b.Put([]byte(group), nil); err != nil {
			return err
		}
	}
	for _, m := range old {
		if !in[m.Name] {
			if b := ug.Bucket([]byte(m.Name)); b != nil {
				if err := b.Delete([]byte(group)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// CreateGroup stores a new group: its state, its create statement and its
// first epoch. It fails with ErrGroupExists if the name is taken.
func (s *Store) CreateGroup(g *GroupState, statement []byte, first *Epoch) error {
	return s.update(func(tx *bolt.Tx) error {
		gb := tx.Bucket(bucketGroups)
		if gb.Get([]byte(g.Name)) != nil {
			return ErrGroupExists
		}
		if err := gb.Put([]byte(g.Name), g.marshal()); err != nil {
			return err
		}
		cb, err := tx.Bucket(bucketGroupChain).CreateBucketIfNotExists([]byte(g.Name))
		if err != nil {
			return err
		}
		if err := cb.Put(seqKey(g.Seq), statement); err != nil {
			return err
		}
		if first != nil {
			if err := putEpoch(tx, g.Name, first); err != nil {
				return err
			}
		}
		return setMembership(tx, g.Name, nil, g.Members)
	})
}

// ChangeGroup applies a roster change atomically: the statement, the new
// state and, if not nil, a new epoch. It fails with ErrConflict unless the
// stored state still has seq expectSeq and epoch expectEpoch.
func (s *Store) ChangeGroup(next *GroupState, expectSeq, expectEpoch uint32, statement []byte, epoch *Epoch) error {
	return s.update(func(tx *bolt.Tx) error {
		gb := tx.Bucket(bucketGroups)
		v := gb.Get([]byte(next.Name))
		if v == nil {
			return ErrNotFound
		}
		cur, err := unmarshalGroup(next.Name, v)
		if err != nil {
			return err
		}
		if cur.Seq != expectSeq || cur.Epoch != expectEpoch {
			return ErrConflict
		}
		if statement != nil {
			if err := tx.Bucket(bucketGroupChain).Bucket([]byte(next.Name)).Put(seqKey(next.Seq), statement); err != nil {
				return err
			}
		}
		if epoch != nil {
			if err := putEpoch(tx, next.Name, epoch); err != nil {
				return err
			}
		}
		if err := gb.Put([]byte(next.Name), next.marshal()); err != nil {
			return err
		}
		return setMembership(tx, next.Name, cur.Members, next.Members)
	})
}

// Group returns a group's state, or ErrNotFound.
func (s *Store) Group(name string) (*GroupState, error) {
	var g *GroupState
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketGroups).Get([]byte(name))
		if v == nil {
			return ErrNotFound
		}
		var err error
		g, err = unmarshalGroup(name, v)
		return err
	})
	return g, err
}

// GroupExists reports whether a group name is taken.
func (s *Store) GroupExists(name string) (bool, error) {
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketGroups).Get([]byte(name)) != nil
		return nil
	})
	return ok, err
}

// GroupChain returns a group's statements from seq from, at most maxBytes
// of them (at least one if any), and whether more follow.
func (s *Store) GroupChain(name string, from uint32, maxBytes int) ([][]byte, bool, error) {
	var out [][]byte
	more := false
	err := s.db.View(func(tx *bolt.Tx) error {
		cb := tx.Bucket(bucketGroupChain).Bucket([]byte(name))
		if cb == nil {
			return ErrNotFound
		}
		c := cb.Cursor()
		size := 0
		for k, v := c.Seek(seqKey(from)); k != nil; k, v = c.Next() {
			if len(out) > 0 && size+len(v) > maxBytes {
				more = true
				break
			}
			out = append(out, copyBytes(v))
			size += len(v)
		}
		return nil
	})
	return out, more, err
}

// MemberKeys returns member's wrapped keys of the epochs from fromEpoch on.
func (s *Store) MemberKeys(name, member string, fromEpoch uint32) ([]EpochKey, error) {
	var out []EpochKey
	err := s.db.View(func(tx *bolt.Tx) error {
		kb := tx.Bucket(bucketGroupKeys).Bucket([]byte(name))
		if kb == nil {
			return nil
		}
		c := kb.Cursor()
		for k, v := c.Seek(seqKey(fromEpoch)); k != nil; k, v = c.Next() {
			if len(k) != 5 || k[4] != 0 {
				continue
			}
			n := binary.BigEndian.Uint32(k)
			w := kb.Get(append(seqKey(n), member...))
			if w == nil || len(v) < 13 || len(v) != 13+int(v[12]) {
				continue
			}
			out = append(out, EpochKey{Epoch: n, RosterSeq: binary.BigEndian.Uint32(v),
				Created: time.Unix(0, int64(binary.BigEndian.Uint64(v[4:]))), Wrapper: string(v[13:]), Wrapped: copyBytes(w)})
		}
		return nil
	})
	return out, err
}

// UserGroups returns the groups a user is a member of.
func (s *Store) UserGroups(user string) ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUserGroups).Bucket([]byte(user))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	return out, err
}
