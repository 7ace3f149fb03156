// Package store keeps securefastchat's durable state in one bbolt file:
// accounts with their password hashes and public end-to-end keys, session
// tokens, the queues of ciphertext waiting for offline receivers, and
// groups: their signed roster statements and members' wrapped keys. Its API speaks in its own types; no bbolt type leaks out,
// so another backend can be added behind the same methods.
//
// Every write goes through a bbolt read-write transaction with fsync on
// (NoSync is never set): when a method returns nil, the data is on disk.
// Byte slices read from bbolt are copied before the transaction ends.
package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Bucket names, all in one place.
var (
	bucketUsers    = []byte("users")    // canonical name -> user record
	bucketSessions = []byte("sessions") // SHA-256(token) -> session record
	bucketMeta     = []byte("meta")     // settings: "schema" -> version; "max_server_id"
	// bucketUserSessions indexes sessions by user: user 0x00 SHA-256(token) -> nil.
	bucketUserSessions = []byte("usersessions")
	// bucketInvites holds single-use sign-up codes: SHA-256(code) ->
	// expires i64 (unix ns). A code is deleted when it is used.
	bucketInvites = []byte("invites")

	// The queues are per device: an inbox (inbox.go) is user ":" device.
	bucketQueue    = []byte("queue")    // inbox -> bucket of server_id (u64 BE) -> queued record
	bucketQStats   = []byte("qstats")   // inbox -> count u64 | bytes u64
	bucketQSenders = []byte("qsenders") // inbox NUL sender -> count u64 | bytes u64: what each sender holds of a queue
	bucketMsgIDs   = []byte("msgids")   // sender NUL inbox NUL msg_id -> server_id u64 | stored i64 | 0xFF sent_id u64 | inbox

	// bucketContacts records who are contacts: user NUL peer -> empty,
	// written both ways once each has written to the other (a message to
	// someone who has not written back is a request: it makes no
	// contact). Presence uses it.
	bucketContacts = []byte("contacts")
	// bucketWrote records who wrote to whom: writer NUL peer -> empty. A
	// sender the receiver has written to is its contact for the
	// receiver's queue shares, and no longer a stranger's request.
	bucketWrote = []byte("wrote")
	// bucketBlocked records blocks: blocker NUL blocked -> empty. What a
	// blocked user sends the blocker (direct or in a group) is dropped
	// at enqueue; the pair are no contacts.
	bucketBlocked = []byte("blocked")

	bucketGroups     = []byte("groups")  // group -> state record
	bucketGroupChain = []byte("gchain")  // group -> bucket of seq (u32 BE) -> signed statement
	bucketGroupKeys  = []byte("gkeys")   // group -> bucket of epoch (u32 BE) | member -> wrapped key; epoch | 0 -> epoch header
	bucketUserGroups = []byte("ugroups") // user -> bucket of group -> empty
	// bucketGroupInvites records group invitations: group NUL member ->
	// the member who added them (invites.go).
	bucketGroupInvites = []byte("ginvites")

	// bucketDevices holds each account's device chain: user -> bucket of
	// seq (u32 BE) -> signed device statement (devices.go).
	bucketDevices = []byte("devices")
	// bucketDeviceSeen records when each device last logged in: inbox ->
	// unix ns (inbox.go).
	bucketDeviceSeen = []byte("devseen")

	allBuckets = [][]byte{bucketUsers, bucketSessions, bucketMeta, bucketQueue, bucketQStats, bucketMsgIDs,
		bucketGroups, bucketGroupChain, bucketGroupKeys, bucketUserGroups, bucketContacts, bucketInvites,
		bucketQSenders, bucketWrote, bucketUserSessions, bucketBlocked, bucketGroupInvites, bucketDevices, bucketDeviceSeen}

	keyMaxID = []byte("max_server_id") // in bucketMeta
)

// schemaVersion is the store's format.
//
// Changelog:
//
//	1: accounts, sessions, queues, groups, contacts, invites.
//	2: per-sender queue counts (qsenders) and who wrote to whom (wrote),
//	   for each sender's share of a receiver's queue; sessions indexed by
//	   user (usersessions), for a cap per account. A schema 1 file is
//	   migrated in place: the counts are rebuilt from the queues, every
//	   contact pair counts as written both ways, and the sessions are
//	   indexed.
//	3: blocks (blocked) and group invitations (ginvites). A schema 2
//	   file needs only the new buckets; the version says an older build
//	   must not serve it (it would let what blocked users send through).
//	4: device chains (devices). A schema 3 file needs only the new bucket;
//	   its accounts have no chain until their client makes one. The version
//	   says an older build must not serve it (it would keep a deleted
//	   account's chain for the next account of that name).
//	5: a queue per device (inboxes, user ":" device), and when each device
//	   last logged in (devseen). A schema 4 file is migrated in place: each
//	   user's queue, its counts, its senders' shares and its repeat records
//	   move to the inbox of the account's first device (the one its keys
//	   name), and each session is bound to that device.
//	6: direct messages sealed for devices (queued record version 3: the
//	   sending device, the device's wrap of the message key, and the
//	   message's receiver on a copy of what its user sent). A schema 5 file
//	   needs nothing rewritten; the version says an older build must not
//	   serve it (it could not read those records).
//	7: group keys per device: an epoch's keys are kept per member device
//	   (epoch | member | 0 | device; those before stay, for the member's
//	   first device), its header names the devices that made it and
//	   reported it bad, and a group's state counts its members' device
//	   changes (state record version 3). A schema 6 file is migrated in
//	   place: the groups of every account that has had a device besides
//	   its first are counted as changed once, so the next message to
//	   them waits for a key that reaches every device.
const schemaVersion = 7

// DefaultLockTimeout is how long Open waits for another process to release
// the file lock.
const DefaultLockTimeout = 2 * time.Second

// Options configures Open. The zero value works.
type Options struct {
	// LockTimeout bounds the wait for the file lock. If zero,
	// DefaultLockTimeout is used.
	LockTimeout time.Duration
	// Now is the clock. If nil, time.Now is used.
	Now func() time.Time
}

// Store is the durable state of one server. It is safe for concurrent use.
type Store struct {
	db     *bolt.DB
	now    func() time.Time
	path   string
	groups groupCache
}

// Open opens or creates the store file at path (its directory is created
// with mode 0700). It fails with ErrLocked if another process holds the
// file, and with ErrCorrupt if the file cannot be read as a store; it
// never deletes or rewrites an unreadable file.
func Open(path string, opts *Options) (s *Store, err error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: creating data directory: %w", err)
	}
	// bbolt panics on some corrupt pages; a corrupt file must give an error.
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, r)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.LockTimeout})
	if err != nil {
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return nil, fmt.Errorf("%w: %s", ErrLocked, path)
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
			return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
		}
		return nil, fmt.Errorf("store: opening %s: %w", path, err)
	}
	s = &Store{db: db, now: o.Now, path: path}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) init() error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		v := meta.Get([]byte("schema"))
		switch {
		case v == nil:
			// A new file, or one from before the version was kept: an
			// empty queue bucket says new.
		case len(v) != 1:
			return fmt.Errorf("%w: schema %v", ErrCorrupt, v)
		case v[0] > schemaVersion:
			return fmt.Errorf("%w (schema %d; this build reads up to %d): upgrade securefastchat to serve it", ErrNewer, v[0], schemaVersion)
		case v[0] == schemaVersion:
			return nil
		case v[0] == 1:
			if err := migrate1to2(tx); err != nil {
				return fmt.Errorf("migrating schema 1 to 2: %w", err)
			}
		case v[0] == 2, v[0] == 3, v[0] == 4, v[0] == 5:
			// Schemas 3 and 4 add buckets, created above; 6 adds a record
			// version.
		}
		if v == nil || v[0] < 5 {
			if err := migrate4to5(tx); err != nil {
				return fmt.Errorf("migrating schema 4 to 5: %w", err)
			}
		}
		if v != nil && v[0] < 7 {
			if err := migrate6to7(tx); err != nil {
				return fmt.Errorf("migrating schema 6 to 7: %w", err)
			}
		}
		return meta.Put([]byte("schema"), []byte{schemaVersion})
	})
	if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNewer) {
		return fmt.Errorf("store: initialising: %w", err)
	}
	return err
}

// migrate6to7 counts a device change in the groups of every account whose
// device chain holds more than its first statement: a device was added
// (or removed) before group keys reached every device, so the groups'
// current epochs may miss one.
func migrate6to7(tx *bolt.Tx) error {
	var users []string
	err := tx.Bucket(bucketDevices).ForEachBucket(func(user []byte) error {
		c := tx.Bucket(bucketDevices).Bucket(user).Cursor()
		if k, _ := c.First(); k != nil {
			if k, _ := c.Next(); k != nil {
				users = append(users, string(user))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, u := range users {
		if _, err := devicesChanged(tx, u); err != nil {
			return err
		}
	}
	return nil
}

// migrate1to2 rebuilds the per-sender queue counts from the queues, and
// records every contact pair as written both ways (who wrote first is not
// known, so no relation loses its share).
func migrate1to2(tx *bolt.Tx) error {
	qs := tx.Bucket(bucketQSenders)
	err := tx.Bucket(bucketQueue).ForEachBucket(func(to []byte) error {
		counts := map[string]*qstats{}
		err := tx.Bucket(bucketQueue).Bucket(to).ForEach(func(k, v []byte) error {
			q, err := unmarshalQueued(Inbox{User: string(to)}, k, v) // schema 1: a queue per user
			if err != nil {
				return err
			}
			st := counts[q.From]
			if st == nil {
				st = &qstats{}
				counts[q.From] = st
			}
			st.count++
			st.bytes += q.size()
			return nil
		})
		if err != nil {
			return err
		}
		for from, st := range counts {
			if err := putStatsKey(qs, contactKey(string(to), from), *st); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	wrote := tx.Bucket(bucketWrote)
	if err := tx.Bucket(bucketContacts).ForEach(func(k, _ []byte) error { return wrote.Put(copyBytes(k), nil) }); err != nil {
		return err
	}
	idx := tx.Bucket(bucketUserSessions)
	return tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
		var h [32]byte
		copy(h[:], k)
		ss, err := unmarshalSession(h, v)
		if err != nil {
			return err
		}
		return idx.Put(sessionIndexKey(ss.User, h), nil)
	})
}

// Path returns the file the store lives in.
func (s *Store) Path() string { return s.path }

// Close closes the file. Writes that returned nil are already on disk.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: closing: %w", err)
	}
	return nil
}

// Check verifies the file's page structure, as `bbolt check` does.
func (s *Store) Check() error {
	return s.db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			return fmt.Errorf("%w: %v", ErrCorrupt, errors.Join(errs...))
		}
		return nil
	})
}

// update runs fn in a read-write transaction and maps storage failures to
// ErrUnavailable so callers can tell a retryable fault from a refusal.
func (s *Store) update(fn func(tx *bolt.Tx) error) error {
	err := s.db.Update(fn)
	if err == nil || isRefusal(err) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

func isRefusal(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrUserExists) || errors.Is(err, ErrCorrupt) ||
		errors.Is(err, ErrQueueFull) || errors.Is(err, ErrShareFull) || errors.Is(err, ErrGroupExists) || errors.Is(err, ErrConflict) ||
		errors.Is(err, ErrInvalidInvite) || errors.Is(err, ErrTooManyBlocked) || errors.Is(err, ErrBlocked)
}

// copyBytes copies a slice read from bbolt, which is valid only inside the
// transaction.
func copyBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}
