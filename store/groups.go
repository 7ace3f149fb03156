package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"
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
	EpochBad bool     // a member reported the current epoch bad: no sends under it
	// DevGen counts changes to the members' device lists (a device added
	// or removed, an account recovered); EpochDevGen is the count the
	// current epoch was made at. While they differ, a member device may
	// lack the current key (or a removed one hold it): no sends under it.
	DevGen, EpochDevGen uint32
	Created             time.Time
	Members             []GroupMember // join order
	// Pending are the members only invited (member -> who added them;
	// invites.go), as Group reads them; not part of the record.
	Pending map[string]string
}

// DevicesStale reports whether a member's devices changed since the
// current epoch was made.
func (g *GroupState) DevicesStale() bool { return g.DevGen != g.EpochDevGen }

// Member reports whether name is a member and whether an admin.
func (g *GroupState) Member(name string) (member, admin bool) {
	for _, m := range g.Members {
		if m.Name == name {
			return true, m.Admin
		}
	}
	return false, false
}

// Epoch is one group key epoch: the key wrapped for each member device
// of the roster at statement RosterSeq, by WrapperDevice of Wrapper.
type Epoch struct {
	N             uint32
	RosterSeq     uint32
	Created       time.Time
	Wrapper       string
	WrapperDevice uint64 // 0: the wrapper's account keys (before devices)
	Stmt          []byte // the signed epoch statement (none before statements existed)
	Keys          map[WrapFor][]byte
}

// WrapFor names whom a wrapped key is for: a member's device, or, with
// Device 0, the member's account keys (the form before devices, which the
// account's first device opens).
type WrapFor struct {
	Member string
	Device uint64
}

// EpochKey is one member device's wrapped key of one epoch.
type EpochKey struct {
	Epoch         uint32
	RosterSeq     uint32
	Created       time.Time
	Wrapper       string
	WrapperDevice uint64
	Device        uint64 // the device it is wrapped for; 0: the account keys
	Wrapped       []byte
	Stmt          []byte
	BadBy         string // a member who reported the epoch bad, its device and its signature
	BadDevice     uint64
	BadSig        []byte
}

// state record: version u8 (3) | seq u32 | last 32 | epoch u32 | epoch_seq u32
// | created i64 | flags u8 (bit 0: epoch bad) | dev_gen u32 | epoch_dev_gen u32
// | count u32 | (name str8 | admin u8) x count
// Version 2 has no device counts (read as 0 and 0); version 1 no flags
// byte either (read as flags 0).
func (g *GroupState) marshal() []byte {
	b := []byte{3}
	b = binary.BigEndian.AppendUint32(b, g.Seq)
	b = append(b, g.Last[:]...)
	b = binary.BigEndian.AppendUint32(b, g.Epoch)
	b = binary.BigEndian.AppendUint32(b, g.EpochSeq)
	b = binary.BigEndian.AppendUint64(b, uint64(g.Created.UnixNano()))
	var flags byte
	if g.EpochBad {
		flags |= 1
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint32(b, g.DevGen)
	b = binary.BigEndian.AppendUint32(b, g.EpochDevGen)
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
	head := 1 + 4 + 32 + 4 + 4 + 8 + 4
	switch {
	case len(v) < 1:
		return nil, bad
	case v[0] == 2:
		head++ // the flags byte
	case v[0] == 3:
		head += 1 + 8 // and the device counts
	}
	if len(v) < head || v[0] < 1 || v[0] > 3 {
		return nil, bad
	}
	g := &GroupState{Name: name, Seq: binary.BigEndian.Uint32(v[1:])}
	copy(g.Last[:], v[5:37])
	g.Epoch = binary.BigEndian.Uint32(v[37:])
	g.EpochSeq = binary.BigEndian.Uint32(v[41:])
	g.Created = time.Unix(0, int64(binary.BigEndian.Uint64(v[45:])))
	if v[0] >= 2 {
		if v[53]&^1 != 0 {
			return nil, bad // flags this build does not know
		}
		g.EpochBad = v[53]&1 != 0
	}
	if v[0] == 3 {
		g.DevGen, g.EpochDevGen = binary.BigEndian.Uint32(v[54:]), binary.BigEndian.Uint32(v[58:])
	}
	n := int(binary.BigEndian.Uint32(v[head-4:]))
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
	hdr := (&epochHeader{rosterSeq: e.RosterSeq, created: e.Created, wrapper: e.Wrapper, wrapperDevice: e.WrapperDevice, stmt: e.Stmt}).marshal()
	if err := kb.Put(append(seqKey(e.N), 0), hdr); err != nil {
		return err
	}
	for f, w := range e.Keys {
		if err := kb.Put(wrapKey(e.N, f), w); err != nil {
			return err
		}
	}
	return nil
}

// wrapKey is where an epoch's key wrapped for f is kept:
//
//	epoch u32 | member            (device 0: for the account keys)
//	epoch u32 | member | 0 | device u64
//
// Names never hold a 0 byte, and an epoch's header (epoch u32 | 0) sorts
// before its keys.
func wrapKey(epoch uint32, f WrapFor) []byte {
	k := append(seqKey(epoch), f.Member...)
	if f.Device != 0 {
		k = binary.BigEndian.AppendUint64(append(k, 0), f.Device)
	}
	return k
}

// epochHeader is what is stored of an epoch besides its wrapped keys:
//
//	roster_seq u32 | created i64 | wrapper str8 [ | stmt str16 | bad_by str8 | bad_sig str8
//	[ | wrapper_device u64 | bad_device u64 ] ]
//
// Headers written before epoch statements end after wrapper; those
// written before devices (schema 7), after bad_sig.
type epochHeader struct {
	rosterSeq     uint32
	created       time.Time
	wrapper       string
	wrapperDevice uint64
	stmt          []byte
	badBy         string
	badDevice     uint64
	badSig        []byte
	withStatement bool // the long form
}

func (h *epochHeader) marshal() []byte {
	b := binary.BigEndian.AppendUint32(nil, h.rosterSeq)
	b = binary.BigEndian.AppendUint64(b, uint64(h.created.UnixNano()))
	b = append(append(b, byte(len(h.wrapper))), h.wrapper...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.stmt)))
	b = append(b, h.stmt...)
	b = append(append(b, byte(len(h.badBy))), h.badBy...)
	b = append(append(b, byte(len(h.badSig))), h.badSig...)
	b = binary.BigEndian.AppendUint64(b, h.wrapperDevice)
	return binary.BigEndian.AppendUint64(b, h.badDevice)
}

func parseEpochHeader(v []byte) (*epochHeader, bool) {
	if len(v) < 13 || len(v) < 13+int(v[12]) {
		return nil, false
	}
	h := &epochHeader{rosterSeq: binary.BigEndian.Uint32(v), created: time.Unix(0, int64(binary.BigEndian.Uint64(v[4:]))),
		wrapper: string(v[13 : 13+int(v[12])])}
	rest := v[13+int(v[12]):]
	if len(rest) == 0 {
		return h, true // from before epoch statements
	}
	h.withStatement = true
	if len(rest) < 2 || len(rest) < 2+int(binary.BigEndian.Uint16(rest)) {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(rest))
	h.stmt, rest = copyBytes(rest[2:2+n]), rest[2+n:]
	if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
		return nil, false
	}
	h.badBy, rest = string(rest[1:1+int(rest[0])]), rest[1+int(rest[0]):]
	if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
		return nil, false
	}
	h.badSig, rest = copyBytes(rest[1:1+int(rest[0])]), rest[1+int(rest[0]):]
	switch len(rest) {
	case 0: // from before devices
	case 16:
		h.wrapperDevice, h.badDevice = binary.BigEndian.Uint64(rest), binary.BigEndian.Uint64(rest[8:])
	default:
		return nil, false
	}
	return h, true
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
	defer s.groups.drop(g.Name)
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
// stored state still has seq expectSeq and epoch expectEpoch, and, with a
// new epoch, the members' devices have not changed since next.EpochDevGen
// (the count the epoch was planned at). The stored DevGen stays.
//
// If invite is set, that member (added by this change, by by) is only
// invited (invites.go); members who are gone lose their invitations.
func (s *Store) ChangeGroup(next *GroupState, expectSeq, expectEpoch uint32, statement []byte, epoch *Epoch, invite, by string) error {
	defer s.groups.drop(next.Name)
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
		if cur.Seq != expectSeq || cur.Epoch != expectEpoch || epoch != nil && cur.DevGen != next.EpochDevGen {
			return ErrConflict
		}
		next.DevGen = cur.DevGen
		if epoch == nil {
			next.EpochDevGen = cur.EpochDevGen
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
		if err := setInvites(tx, next.Name, next.Members, invite, by); err != nil {
			return err
		}
		return setMembership(tx, next.Name, cur.Members, next.Members)
	})
}

// Group returns a group's state, or ErrNotFound. The state is shared (it
// is cached until the group changes): read it, never change it.
func (s *Store) Group(name string) (*GroupState, error) {
	g, gen := s.groups.get(name)
	if g != nil {
		return g, nil
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketGroups).Get([]byte(name))
		if v == nil {
			return ErrNotFound
		}
		var err error
		if g, err = unmarshalGroup(name, v); err != nil {
			return err
		}
		g.Pending = pendingOf(tx, name)
		return nil
	})
	if err == nil {
		s.groups.put(g, gen)
	}
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
		out, more = chainPage(cb, from, maxBytes)
		return nil
	})
	return out, more, err
}

// chainPage reads a chain (a bucket of seq -> statement) from seq from
// on, at most maxBytes of it (at least one statement if any), and whether
// more follow.
func chainPage(b *bolt.Bucket, from uint32, maxBytes int) (out [][]byte, more bool) {
	c := b.Cursor()
	size := 0
	for k, v := c.Seek(seqKey(from)); k != nil; k, v = c.Next() {
		if len(out) > 0 && size+len(v) > maxBytes {
			return out, true
		}
		out = append(out, copyBytes(v))
		size += len(v)
	}
	return out, false
}

// MemberKeys returns a member device's wrapped keys of the epochs from
// fromEpoch on, at most max of them (0: no limit): those wrapped for the
// device, and, for the account's first device (first), those wrapped for
// the member's account keys before devices. It visits one header per
// epoch (seeking past each epoch's member keys), so its cost grows with
// the epochs returned, not with the group's history or size.
func (s *Store) MemberKeys(name, member string, device uint64, first bool, fromEpoch uint32, max int) ([]EpochKey, error) {
	var out []EpochKey
	err := s.db.View(func(tx *bolt.Tx) error {
		kb := tx.Bucket(bucketGroupKeys).Bucket([]byte(name))
		if kb == nil {
			return nil
		}
		eachEpoch(kb, fromEpoch, func(n uint32, v []byte) bool {
			h, ok := parseEpochHeader(v)
			dev := device
			w := kb.Get(wrapKey(n, WrapFor{member, device}))
			if w == nil && first {
				w, dev = kb.Get(wrapKey(n, WrapFor{Member: member})), 0
			}
			if w != nil && ok {
				out = append(out, EpochKey{Epoch: n, RosterSeq: h.rosterSeq, Created: h.created, Wrapper: h.wrapper, WrapperDevice: h.wrapperDevice,
					Device: dev, Wrapped: copyBytes(w), Stmt: h.stmt, BadBy: h.badBy, BadDevice: h.badDevice, BadSig: h.badSig})
			}
			return max == 0 || len(out) < max
		})
		return nil
	})
	return out, err
}

// eachEpoch calls fn with each epoch's number and header from epoch from
// on, seeking past the epochs' member keys (a header sorts first in its
// epoch); fn returns false to stop.
func eachEpoch(kb *bolt.Bucket, from uint32, fn func(n uint32, header []byte) bool) {
	c := kb.Cursor()
	k, v := c.Seek(append(seqKey(from), 0))
	for len(k) >= 4 {
		n := binary.BigEndian.Uint32(k)
		if len(k) == 5 && k[4] == 0 && !fn(n, v) {
			return
		}
		if n == math.MaxUint32 {
			return
		}
		k, v = c.Seek(append(seqKey(n+1), 0))
	}
}

// MarkEpochBad records a member's report (signed by its device; 0: by
// its account key) that an epoch is bad (the first report stands); if it
// is the current epoch, sends under it stop until a new one is made.
func (s *Store) MarkEpochBad(name string, epoch uint32, reporter string, device uint64, sig []byte) error {
	defer s.groups.drop(name)
	return s.update(func(tx *bolt.Tx) error {
		kb := tx.Bucket(bucketGroupKeys).Bucket([]byte(name))
		gb := tx.Bucket(bucketGroups)
		v := gb.Get([]byte(name))
		if kb == nil || v == nil {
			return ErrNotFound
		}
		hk := append(seqKey(epoch), 0)
		h, ok := parseEpochHeader(kb.Get(hk))
		if !ok {
			return ErrNotFound
		}
		if h.badBy == "" {
			h.badBy, h.badDevice, h.badSig = reporter, device, copyBytes(sig)
			if err := kb.Put(hk, h.marshal()); err != nil {
				return err
			}
		}
		g, err := unmarshalGroup(name, v)
		if err != nil {
			return err
		}
		if g.Epoch == epoch && !g.EpochBad {
			g.EpochBad = true
			return gb.Put([]byte(name), g.marshal())
		}
		return nil
	})
}

// PruneEpochs deletes, in every group, the keys of epochs that nothing can
// need any more: an epoch whose next one was made before cutoff (the
// retention) carried only messages older than that, which have expired.
// The current epoch is always kept. It returns how many epochs went.
func (s *Store) PruneEpochs(cutoff time.Time) (int, error) {
	var groups []string
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketGroupKeys).ForEachBucket(func(k []byte) error {
			groups = append(groups, string(k))
			return nil
		})
	}); err != nil {
		return 0, err
	}
	total := 0
	for _, g := range groups {
		err := s.update(func(tx *bolt.Tx) error {
			kb := tx.Bucket(bucketGroupKeys).Bucket([]byte(g))
			if kb == nil {
				return nil
			}
			var epochs []uint32
			var made []time.Time
			eachEpoch(kb, 0, func(n uint32, v []byte) bool {
				if h, ok := parseEpochHeader(v); ok {
					epochs = append(epochs, n)
					made = append(made, h.created)
				}
				return true
			})
			for i := 0; i+1 < len(epochs); i++ {
				if !made[i+1].Before(cutoff) {
					break
				}
				if err := deletePrefix(kb, seqKey(epochs[i])); err != nil {
					return err
				}
				total++
			}
			return nil
		})
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// devicesChanged counts a change of user's devices in each group the user
// is in (GroupState.DevGen) and returns those groups, whose cached states
// the caller drops once the transaction commits.
func devicesChanged(tx *bolt.Tx, user string) ([]string, error) {
	b := tx.Bucket(bucketUserGroups).Bucket([]byte(user))
	if b == nil {
		return nil, nil
	}
	var names []string
	if err := b.ForEach(func(k, _ []byte) error {
		names = append(names, string(k))
		return nil
	}); err != nil {
		return nil, err
	}
	gb := tx.Bucket(bucketGroups)
	for _, name := range names {
		v := gb.Get([]byte(name))
		if v == nil {
			continue
		}
		g, err := unmarshalGroup(name, v)
		if err != nil {
			return nil, err
		}
		g.DevGen++
		if err := gb.Put([]byte(name), g.marshal()); err != nil {
			return nil, err
		}
	}
	return names, nil
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
