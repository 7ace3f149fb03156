package store

import (
	"encoding/binary"

	bolt "go.etcd.io/bbolt"
)

// An account's device chain: the signed statements that add and remove its
// devices (proto.DeviceStatement), in order. The store keeps them as they
// come; the account service checks each against the chain and the
// account's master key before it appends it, and clients check them again.

// DeviceChain returns the statements of user's device chain from seq from
// on, at most maxBytes of them (at least one if any), and whether more
// follow. An account without a chain (made before devices) has none.
func (s *Store) DeviceChain(user string, from uint32, maxBytes int) ([][]byte, bool, error) {
	var out [][]byte
	more := false
	err := s.db.View(func(tx *bolt.Tx) error {
		if db := tx.Bucket(bucketDevices).Bucket([]byte(user)); db != nil {
			out, more = chainPage(db, from, maxBytes)
		}
		return nil
	})
	return out, more, err
}

// AppendDevice appends statement seq to user's device chain, if the chain
// has exactly seq statements (compare-and-set on its length): ErrConflict
// if another statement took that place first, ErrNotFound if the user
// does not exist. A statement after the first (which names the device the
// account already had) changes the user's devices: each of the user's
// groups needs a new key epoch (GroupState.DevicesStale).
func (s *Store) AppendDevice(user string, seq uint32, statement []byte) error {
	var changed []string
	defer func() {
		for _, g := range changed {
			s.groups.drop(g)
		}
	}()
	return s.update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketUsers).Get([]byte(user)) == nil {
			return ErrNotFound
		}
		db, err := tx.Bucket(bucketDevices).CreateBucketIfNotExists([]byte(user))
		if err != nil {
			return err
		}
		var n uint32
		if k, _ := db.Cursor().Last(); k != nil {
			n = binary.BigEndian.Uint32(k) + 1
		}
		if n != seq {
			return ErrConflict
		}
		if err := db.Put(seqKey(seq), statement); err != nil {
			return err
		}
		if seq > 0 {
			changed, err = devicesChanged(tx, user)
		}
		return err
	})
}

// deleteDevices removes a user's device chain (DeleteUser).
func deleteDevices(tx *bolt.Tx, user string) error {
	if tx.Bucket(bucketDevices).Bucket([]byte(user)) == nil {
		return nil
	}
	return tx.Bucket(bucketDevices).DeleteBucket([]byte(user))
}
