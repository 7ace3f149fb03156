package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// User is one account. Name is the canonical (lower-case) name, the key
// of the record; Display is the form the user signed up with.
type User struct {
	Name         string
	Display      string
	PasswordHash string // argon2id PHC string
	BoxKey       []byte // X25519, 32 bytes
	SignKey      []byte // Ed25519, 32 bytes
	KeySig       []byte // Ed25519 signature over the box key, 64 bytes
	Created      time.Time
	Disabled     bool
}

// user record: version u8 (1) | display str8 | phc str16 | box 32 | sign 32
// | sig 64 | created i64 (unix ns) | flags u8 (bit 0 disabled)
const userRecordVersion = 1

func (u *User) marshal() []byte {
	b := make([]byte, 0, 1+1+len(u.Display)+2+len(u.PasswordHash)+32+32+64+8+1)
	b = append(b, userRecordVersion, byte(len(u.Display)))
	b = append(b, u.Display...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(u.PasswordHash)))
	b = append(b, u.PasswordHash...)
	b = append(b, u.BoxKey...)
	b = append(b, u.SignKey...)
	b = append(b, u.KeySig...)
	b = binary.BigEndian.AppendUint64(b, uint64(u.Created.UnixNano()))
	var flags byte
	if u.Disabled {
		flags |= 1
	}
	return append(b, flags)
}

func unmarshalUser(name string, b []byte) (*User, error) {
	bad := fmt.Errorf("%w: user record %q", ErrCorrupt, name)
	take := func(n int) []byte {
		if n > len(b) {
			b = nil
			return nil
		}
		v := append([]byte(nil), b[:n]...)
		b = b[n:]
		return v
	}
	if len(b) < 2 || b[0] != userRecordVersion {
		return nil, bad
	}
	n8 := int(b[1])
	b = b[2:]
	display := take(n8)
	l := take(2)
	if l == nil {
		return nil, bad
	}
	phc := take(int(binary.BigEndian.Uint16(l)))
	box, sign, sig, created, flags := take(32), take(32), take(64), take(8), take(1)
	if flags == nil || len(b) != 0 || flags[0]&^1 != 0 {
		return nil, bad // unknown flags: not a record this build wrote
	}
	return &User{
		Name: name, Display: string(display), PasswordHash: string(phc),
		BoxKey: box, SignKey: sign, KeySig: sig,
		Created: time.Unix(0, int64(binary.BigEndian.Uint64(created))), Disabled: flags[0]&1 != 0,
	}, nil
}

// CreateUser stores a new user. It fails with ErrUserExists if the
// canonical name is taken; concurrent calls for one name let exactly one
// succeed.
func (s *Store) CreateUser(u *User) error { return s.CreateUsers([]*User{u}, nil) }

// CreateUsers stores new users and, if given, sessions for them, in one
// transaction: all of them or, if any name is taken (ErrUserExists),
// none. It is for imports and load tests that make many accounts.
func (s *Store) CreateUsers(us []*User, sessions []*Session) error {
	recs := make([][]byte, len(us))
	for i, u := range us {
		if u.Created.IsZero() {
			u.Created = s.now()
		}
		recs[i] = u.marshal()
	}
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		for i, u := range us {
			if b.Get([]byte(u.Name)) != nil {
				return fmt.Errorf("%w: %s", ErrUserExists, u.Name)
			}
			if err := b.Put([]byte(u.Name), recs[i]); err != nil {
				return err
			}
		}
		for _, ss := range sessions {
			if err := putSession(tx, ss); err != nil {
				return err
			}
		}
		return nil
	})
}

// GetUser returns the user with that canonical name, or ErrNotFound.
func (s *Store) GetUser(name string) (*User, error) {
	var u *User
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketUsers).Get([]byte(name))
		if v == nil {
			return ErrNotFound
		}
		var err error
		u, err = unmarshalUser(name, v) // copies every field
		return err
	})
	return u, err
}

// UserExists reports whether a canonical name is taken.
func (s *Store) UserExists(name string) (bool, error) {
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketUsers).Get([]byte(name)) != nil
		return nil
	})
	return ok, err
}

// SetPasswordHash replaces a user's password hash (a rehash with new
// parameters, or a password change).
func (s *Store) SetPasswordHash(name, phc string) error {
	return s.updateUser(name, func(u *User) { u.PasswordHash = phc })
}

// ChangePassword replaces a user's password hash and revokes every
// session of the user but keep (the one that made the change), in one
// transaction, and returns how many it revoked.
func (s *Store) ChangePassword(name, phc string, keep [32]byte) (int, error) {
	n := 0
	err := s.update(func(tx *bolt.Tx) error {
		if err := updateUserTx(tx, name, func(u *User) { u.PasswordHash = phc }); err != nil {
			return err
		}
		var err error
		n, err = deleteSessionsBut(tx, name, keep)
		return err
	})
	return n, err
}

// SetDisabled disables or enables a user.
func (s *Store) SetDisabled(name string, disabled bool) error {
	return s.updateUser(name, func(u *User) { u.Disabled = disabled })
}

func (s *Store) updateUser(name string, fn func(*User)) error {
	return s.update(func(tx *bolt.Tx) error { return updateUserTx(tx, name, fn) })
}

// updateUserTx applies fn to the user name in tx.
func updateUserTx(tx *bolt.Tx, name string, fn func(*User)) error {
	b := tx.Bucket(bucketUsers)
	v := b.Get([]byte(name))
	if v == nil {
		return ErrNotFound
	}
	u, err := unmarshalUser(name, v)
	if err != nil {
		return err
	}
	fn(u)
	return b.Put([]byte(name), u.marshal())
}

// Session is a login session, found by the SHA-256 of its token. The
// token itself is never stored.
type Session struct {
	TokenHash [32]byte
	User      string
	Created   time.Time
	LastSeen  time.Time
	// Device is the device the session logged in as (its id in the
	// account's device list): what it receives comes from that device's
	// inbox.
	Device uint64
}

// HashToken returns the key a token is stored under.
func HashToken(token []byte) [32]byte { return sha256.Sum256(token) }

// session record: version u8 (2) | user str8 | created i64 | last_seen i64
// | device u64. Version 1 (schema 4 and before) had no device: the
// schema 5 migration gives those sessions the account's first device.
func (ss *Session) marshal() []byte {
	b := append(make([]byte, 0, 2+len(ss.User)+24), 2, byte(len(ss.User)))
	b = append(b, ss.User...)
	b = binary.BigEndian.AppendUint64(b, uint64(ss.Created.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, uint64(ss.LastSeen.UnixNano()))
	return binary.BigEndian.AppendUint64(b, ss.Device)
}

func unmarshalSession(h [32]byte, b []byte) (*Session, error) {
	if len(b) < 2 || (b[0] != 1 || len(b) != 2+int(b[1])+16) && (b[0] != 2 || len(b) != 2+int(b[1])+24) {
		return nil, fmt.Errorf("%w: session record", ErrCorrupt)
	}
	n := int(b[1])
	ss := &Session{
		TokenHash: h,
		User:      string(b[2 : 2+n]),
		Created:   time.Unix(0, int64(binary.BigEndian.Uint64(b[2+n:]))),
		LastSeen:  time.Unix(0, int64(binary.BigEndian.Uint64(b[2+n+8:]))),
	}
	if b[0] == 2 {
		ss.Device = binary.BigEndian.Uint64(b[2+n+16:])
	}
	return ss, nil
}

// PutSession stores a session.
func (s *Store) PutSession(ss *Session) error {
	return s.update(func(tx *bolt.Tx) error { return putSession(tx, ss) })
}

// PutSessionCapped stores a session and, if the user then has more than
// max, revokes the least recently used of the others. It returns how
// many it revoked.
func (s *Store) PutSessionCapped(ss *Session, max int) (revoked int, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		revoked = 0
		if err := putSession(tx, ss); err != nil {
			return err
		}
		all, err := sessionsOf(tx, ss.User)
		if err != nil || len(all) <= max {
			return err
		}
		sort.Slice(all, func(i, j int) bool { return all[i].LastSeen.Before(all[j].LastSeen) })
		for _, old := range all {
			if len(all)-revoked <= max {
				break
			}
			if old.TokenHash == ss.TokenHash {
				continue
			}
			if err := deleteSession(tx, old.TokenHash); err != nil {
				return err
			}
			revoked++
		}
		return nil
	})
	return revoked, err
}

// SweepSessions deletes the sessions unused for idle or older than max at
// now, in transactions of a bounded size, and returns how many.
func (s *Store) SweepSessions(now time.Time, idle, max time.Duration) (int, error) {
	total := 0
	var from []byte
	for {
		var doomed [][32]byte
		var next []byte
		err := s.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketSessions).Cursor()
			n := 0
			for k, v := c.Seek(from); k != nil; k, v = c.Next() {
				if n == sweepBatch {
					next = copyBytes(k)
					return nil
				}
				n++
				var h [32]byte
				copy(h[:], k)
				ss, err := unmarshalSession(h, v)
				if err != nil || now.Sub(ss.LastSeen) > idle || now.Sub(ss.Created) > max {
					doomed = append(doomed, h)
				}
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		if len(doomed) > 0 {
			err = s.update(func(tx *bolt.Tx) error {
				for _, h := range doomed {
					if err := deleteSession(tx, h); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return total, err
			}
			total += len(doomed)
		}
		if next == nil {
			return total, nil
		}
		from = next
	}
}

// sweepBatch bounds the sessions one sweep transaction looks at.
const sweepBatch = 1000

// SessionCount returns how many sessions user has.
func (s *Store) SessionCount(user string) (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketUserSessions).Cursor()
		prefix := append([]byte(user), 0)
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			n++
		}
		return nil
	})
	return n, err
}

func sessionIndexKey(user string, h [32]byte) []byte {
	return append(append([]byte(user), 0), h[:]...)
}

func putSession(tx *bolt.Tx, ss *Session) error {
	if err := tx.Bucket(bucketSessions).Put(ss.TokenHash[:], ss.marshal()); err != nil {
		return err
	}
	if err := putDeviceSeen(tx, Inbox{User: ss.User, Device: ss.Device}, ss.LastSeen); err != nil {
		return err
	}
	return tx.Bucket(bucketUserSessions).Put(sessionIndexKey(ss.User, ss.TokenHash), nil)
}

// deleteSession deletes a session and its index entry (a missing one is
// not an error).
func deleteSession(tx *bolt.Tx, h [32]byte) error {
	b := tx.Bucket(bucketSessions)
	if v := b.Get(h[:]); v != nil {
		if ss, err := unmarshalSession(h, v); err == nil {
			if err := tx.Bucket(bucketUserSessions).Delete(sessionIndexKey(ss.User, h)); err != nil {
				return err
			}
		}
	}
	return b.Delete(h[:])
}

// sessionsOf returns a user's sessions, through the index.
func sessionsOf(tx *bolt.Tx, user string) ([]*Session, error) {
	var out []*Session
	c := tx.Bucket(bucketUserSessions).Cursor()
	prefix := append([]byte(user), 0)
	sb := tx.Bucket(bucketSessions)
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		var h [32]byte
		copy(h[:], k[len(prefix):])
		v := sb.Get(h[:])
		if v == nil {
			continue
		}
		ss, err := unmarshalSession(h, v)
		if err != nil {
			return nil, err
		}
		out = append(out, ss)
	}
	return out, nil
}

// GetSession returns the session stored under a token hash, or ErrNotFound.
func (s *Store) GetSession(h [32]byte) (*Session, error) {
	var ss *Session
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSessions).Get(h[:])
		if v == nil {
			return ErrNotFound
		}
		var err error
		ss, err = unmarshalSession(h, v)
		return err
	})
	return ss, err
}

// TouchSession records a use of the session.
func (s *Store) TouchSession(h [32]byte, when time.Time) error {
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSessions)
		v := b.Get(h[:])
		if v == nil {
			return ErrNotFound
		}
		ss, err := unmarshalSession(h, v)
		if err != nil {
			return err
		}
		ss.LastSeen = when
		if err := putDeviceSeen(tx, Inbox{User: ss.User, Device: ss.Device}, when); err != nil {
			return err
		}
		return b.Put(h[:], ss.marshal())
	})
}

// DeleteSession revokes one session. Deleting a missing one is not an error.
func (s *Store) DeleteSession(h [32]byte) error {
	return s.update(func(tx *bolt.Tx) error { return deleteSession(tx, h) })
}

// DeleteUserSessions revokes every session of a user and returns how many.
func (s *Store) DeleteUserSessions(user string) (int, error) {
	n := 0
	err := s.update(func(tx *bolt.Tx) error {
		var err error
		n, err = deleteSessionsOf(tx, user)
		return err
	})
	return n, err
}

// DeleteDeviceSessions revokes the sessions of one device of an account
// (it left the account's list) and returns how many.
func (s *Store) DeleteDeviceSessions(in Inbox) (int, error) {
	n := 0
	err := s.update(func(tx *bolt.Tx) error {
		n = 0
		all, err := sessionsOf(tx, in.User)
		if err != nil {
			return err
		}
		for _, ss := range all {
			if ss.Device != in.Device {
				continue
			}
			if err := deleteSession(tx, ss.TokenHash); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}
