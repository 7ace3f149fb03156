package account

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"securefastchat/proto"
	"securefastchat/ratelimit"
	"securefastchat/store"
)

// An account's devices are a chain of statements signed by its master key
// (the sign key of its key record). The service checks each statement
// against the chain and the master key before the store appends it
// (compare-and-set on the chain's length); clients check the chain again,
// so a server that added a device by itself would be caught.

// maxChainReply bounds the statements of one reply, in bytes.
const maxChainReply = 48 << 10

// DeviceChain returns user's device statements from seq from on, a reply's
// worth, and whether more follow. It costs requester a key lookup unless
// free (as Keys).
func (s *Service) DeviceChain(requester string, user []byte, from uint32, free bool) (string, [][]byte, bool, error) {
	u, err := s.Keys(requester, user, free)
	if err != nil {
		return "", nil, false, err
	}
	stmts, more, err := s.st.DeviceChain(u.Name, from, maxChainReply)
	if err != nil {
		return "", nil, false, fmt.Errorf("account: device chain: %w", err)
	}
	return u.Name, stmts, more, nil
}

// AppendDevice appends a statement to requester's own device chain once
// it follows the chain and is signed by the account's master key, and
// returns its seq.
func (s *Service) AppendDevice(requester string, raw []byte) (uint32, error) {
	var st proto.DeviceStatement
	if err := st.Parse(raw); err != nil {
		return 0, &proto.RemoteError{Code: proto.CodeBadRequest, Message: err.Error()}
	}
	if string(st.User) != requester {
		return 0, &proto.RemoteError{Code: proto.CodeForbidden, Message: "a device statement changes its signer's own account only"}
	}
	u, err := s.st.GetUser(requester)
	if err != nil {
		return 0, fmt.Errorf("account: device chain: %w", err)
	}
	if st.Seq >= proto.MaxDeviceStatements {
		return 0, &proto.RemoteError{Code: proto.CodeTooManyDevices, Message: fmt.Sprintf("the device chain is full (%d statements); reset the account to start a new one", proto.MaxDeviceStatements)}
	}
	list, err := s.deviceList(requester, u.SignKey)
	if err != nil {
		return 0, err
	}
	if _, err := list.Apply(&st, ed25519.PublicKey(u.SignKey)); err != nil {
		return 0, deviceRefusal(err)
	}
	switch err := s.st.AppendDevice(requester, st.Seq, raw); {
	case errors.Is(err, store.ErrConflict):
		return 0, &proto.RemoteError{Code: proto.CodeStaleDevices, Message: "another device statement came first; fetch the chain and sign again"}
	case err != nil:
		return 0, fmt.Errorf("account: device chain: %w", err)
	}
	if st.Op == proto.DeviceRemove {
		// The device is off the list: its sessions no longer resume
		// (Resume checks the list) and nothing more is queued for it.
		// What it had waiting goes now; if this fails, the retention
		// sweeps it.
		in := store.Inbox{User: requester, Device: st.DeviceID}
		if _, err := s.st.DeleteDeviceSessions(in); err != nil {
			s.log.Warn("ending a removed device's sessions", "user", requester, "err", err)
		}
		if _, err := s.st.DeleteInbox(in); err != nil {
			s.log.Warn("dropping a removed device's queue", "user", requester, "err", err)
		}
	}
	return st.Seq, nil
}

// deviceLists caches each account's device list as last replayed, under
// the master key it was checked with. Every use reads the store from the
// cached head on and goes on from there only if the statement at the head
// is still the one cached; otherwise (an account deleted and made again)
// it replays the chain from its start. So a statement appended since is
// always applied, and a list is never trusted past what the store holds.
type deviceLists struct {
	mu sync.Mutex
	m  map[string]cachedDevices
}

type cachedDevices struct {
	master string
	list   *proto.DeviceList
}

// maxCachedLists bounds the cache; past it, it starts over.
const maxCachedLists = 10000

func (d *deviceLists) get(user string, master []byte) *proto.DeviceList {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.m[user]; ok && c.master == string(master) {
		return c.list
	}
	return nil
}

func (d *deviceLists) put(user string, master []byte, l *proto.DeviceList) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil || len(d.m) >= maxCachedLists {
		d.m = map[string]cachedDevices{}
	}
	d.m[user] = cachedDevices{master: string(master), list: l}
}

// deviceList returns an account's device list as its stored chain proves
// it (nil if it has none), replaying only what is new since it was cached.
func (s *Service) deviceList(user string, master []byte) (*proto.DeviceList, error) {
	cached := s.devices.get(user, master)
	list, err := s.replayDevices(user, master, cached)
	if err == nil && cached != nil && list == nil {
		list, err = s.replayDevices(user, master, nil) // the chain is not the cached one's: from the start
	}
	if err == nil && list != nil {
		s.devices.put(user, master, list)
	}
	return list, err
}

// replayDevices applies the stored statements after from's head to from
// (nil: the whole chain). It returns nil, no error, if the statement at
// from's head is no longer the one from was made with.
func (s *Service) replayDevices(user string, master []byte, from *proto.DeviceList) (*proto.DeviceList, error) {
	list, next := from, uint32(0)
	if from != nil {
		next = from.Seq
	}
	for {
		stmts, more, err := s.st.DeviceChain(user, next, maxChainReply)
		if err != nil {
			return nil, fmt.Errorf("account: device chain: %w", err)
		}
		for _, raw := range stmts {
			var st proto.DeviceStatement
			if err := st.Parse(raw); err != nil {
				return nil, fmt.Errorf("account: %s's stored device chain: %w", user, err)
			}
			next = st.Seq + 1
			if from != nil && st.Seq == from.Seq {
				if st.Hash() != from.Last {
					return nil, nil
				}
				continue // the cached head
			}
			if list, err = list.Apply(&st, ed25519.PublicKey(master)); err != nil {
				return nil, fmt.Errorf("account: %s's stored device chain: %w", user, err)
			}
		}
		if from != nil && next <= from.Seq {
			return nil, nil // the cached head is gone
		}
		if !more {
			return list, nil
		}
	}
}

// deviceRefusal is the reply to a statement the chain does not take.
func deviceRefusal(err error) error {
	code := proto.CodeInvalidKey
	switch {
	case errors.Is(err, proto.ErrBadChain):
		code = proto.CodeStaleDevices
	case errors.Is(err, proto.ErrTooManyDevices):
		code = proto.CodeTooManyDevices
	case errors.Is(err, proto.ErrDeviceNotAllowed):
		code = proto.CodeForbidden
	}
	return &proto.RemoteError{Code: code, Message: err.Error()}
}

// LoginDevice logs a device in with its own key: the device must be in
// the account's device list, and verify must accept a signature by its
// sign key (the connection checks the login's signature over its
// binding). No password is hashed; each failure counts against the
// account as a wrong password does, and logins from one address are
// throttled as resumes are.
func (s *Service) LoginDevice(addr string, user []byte, deviceID uint64, verify func(signKey ed25519.PublicKey) bool) (*Result, error) {
	if err := ratelimit.Refuse(s.resumeIP.Take(addr), "too many logins from this address"); err != nil {
		return nil, err
	}
	canon, err := proto.AppendCanonicalUsername(nil, user)
	if err != nil {
		return nil, proto.CodeInvalidCredentials
	}
	name := string(canon)
	if s.failures.Throttled(name) {
		return nil, proto.CodeInvalidCredentials
	}
	u, err := s.st.GetUser(name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, proto.CodeInvalidCredentials
	} else if err != nil {
		return nil, fmt.Errorf("account: device login: %w", err)
	}
	list, err := s.deviceList(name, u.SignKey)
	if err != nil {
		return nil, err
	}
	i := -1
	if list != nil {
		i = list.Index(deviceID)
	}
	if i < 0 || u.Disabled || !verify(list.Devices[i].SignKey) {
		s.failures.Fail(name)
		return nil, proto.CodeInvalidCredentials
	}
	s.failures.Succeed(name)
	return s.newSession(u, deviceID)
}

// Devices returns the devices of a canonical name's account (all: those
// of its device list, or its first device if it has none yet) and those a
// message to it goes to (ids: all less those silent for
// proto.DeviceSilentAfter while another has logged in since); ok is false
// if there is no such account.
func (s *Service) Devices(canon string) (key uint64, all, ids []uint64, ok bool, err error) {
	u, err := s.st.GetUser(canon)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil, nil, false, nil
	} else if err != nil {
		return 0, nil, nil, false, fmt.Errorf("account: devices: %w", err)
	}
	list, err := s.deviceList(u.Name, u.SignKey)
	if err != nil {
		return 0, nil, nil, false, err
	}
	all = listIDs(u, list)
	if list == nil {
		return KeyID(u), all, all, true, nil
	}
	seen, err := s.devicesSeen(u.Name, list)
	if err != nil {
		return 0, nil, nil, false, err
	}
	cutoff := s.now().Add(-proto.DeviceSilentAfter)
	for _, id := range all {
		if seen[id].After(cutoff) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 { // every device silent: each keeps its queue
		ids = all
	}
	return KeyID(u), all, ids, true, nil
}

// DeviceIDs returns the devices on a canonical name's device list (or
// its first device, from its key record, if it has no list yet) and its
// first device's id; none if there is no such account (or it is
// disabled).
func (s *Service) DeviceIDs(canon string) (first uint64, all []uint64, err error) {
	u, list, err := s.enabledList(canon)
	if u == nil || err != nil {
		return 0, nil, err
	}
	return KeyID(u), listIDs(u, list), nil
}

// DeviceSignKey returns the sign key of one device of a canonical name's
// account as its device list proves it (the account's key for its first
// device when it has no list yet); nil if it is not on the list.
func (s *Service) DeviceSignKey(canon string, device uint64) (ed25519.PublicKey, error) {
	u, list, err := s.enabledList(canon)
	if u == nil || err != nil {
		return nil, err
	}
	if list == nil {
		if device == KeyID(u) {
			return u.SignKey, nil
		}
		return nil, nil
	}
	if i := list.Index(device); i >= 0 {
		return list.Devices[i].SignKey, nil
	}
	return nil, nil
}

// enabledList returns an enabled account and its device list (nil if it
// has none); no account if there is none or it is disabled.
func (s *Service) enabledList(canon string) (*store.User, *proto.DeviceList, error) {
	u, err := s.st.GetUser(canon)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil
	} else if err != nil {
		return nil, nil, fmt.Errorf("account: devices: %w", err)
	}
	if u.Disabled {
		return nil, nil, nil
	}
	list, err := s.deviceList(u.Name, u.SignKey)
	if err != nil {
		return nil, nil, err
	}
	return u, list, nil
}

// devicesSeen returns when each device of list last logged in (or was
// added, if it has not logged in since).
func (s *Service) devicesSeen(user string, list *proto.DeviceList) (map[uint64]time.Time, error) {
	seen, err := s.st.DevicesSeen(user)
	if err != nil {
		return nil, fmt.Errorf("account: devices seen: %w", err)
	}
	for _, d := range list.Devices {
		if added := time.Unix(d.Added, 0); seen[d.ID].Before(added) {
			seen[d.ID] = added
		}
	}
	return seen, nil
}

// deviceIDs returns the ids of u's devices.
func (s *Service) deviceIDs(u *store.User) ([]uint64, error) {
	list, err := s.deviceList(u.Name, u.SignKey)
	if err != nil {
		return nil, err
	}
	return listIDs(u, list), nil
}

// listIDs returns the ids of list's devices, or, for an account without a
// list (nil), its first device's.
func listIDs(u *store.User, list *proto.DeviceList) []uint64 {
	if list == nil {
		return []uint64{KeyID(u)}
	}
	ids := make([]uint64, len(list.Devices))
	for i, d := range list.Devices {
		ids[i] = d.ID
	}
	return ids
}

// onList reports whether dev is one of u's devices.
func (s *Service) onList(u *store.User, dev uint64) (bool, error) {
	ids, err := s.deviceIDs(u)
	return slices.Contains(ids, dev), err
}

// OwnDevicesSeen returns how long ago each device of user's list last
// logged in (or was added), in the list's order; none if it has no list.
func (s *Service) OwnDevicesSeen(user string) ([]proto.DeviceSeen, error) {
	u, err := s.st.GetUser(user)
	if err != nil {
		return nil, fmt.Errorf("account: devices seen: %w", err)
	}
	list, err := s.deviceList(u.Name, u.SignKey)
	if err != nil || list == nil {
		return nil, err
	}
	seen, err := s.devicesSeen(u.Name, list)
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := make([]proto.DeviceSeen, len(list.Devices))
	for i, d := range list.Devices {
		idle := min(max(now.Sub(seen[d.ID]), 0)/time.Second, math.MaxUint32)
		out[i] = proto.DeviceSeen{DeviceID: d.ID, Idle: uint32(idle)}
	}
	return out, nil
}

// DropRemovedInboxes deletes the inboxes of devices no longer on their
// account's list: what reached a device's connection as it was removed
// and was stored when the connection went. It returns how many messages
// it dropped.
func (s *Service) DropRemovedInboxes() (int64, error) {
	all, err := s.st.AllInboxes()
	if err != nil {
		return 0, fmt.Errorf("account: inboxes: %w", err)
	}
	var dropped int64
	lists := map[string][]uint64{}
	for _, in := range all {
		ids, ok := lists[in.User]
		if !ok {
			u, err := s.st.GetUser(in.User)
			if errors.Is(err, store.ErrNotFound) {
				continue // the account's deletion takes its inboxes
			} else if err != nil {
				return dropped, fmt.Errorf("account: inboxes: %w", err)
			}
			if ids, err = s.deviceIDs(u); err != nil {
				return dropped, err
			}
			lists[in.User] = ids
		}
		if !slices.Contains(ids, in.Device) {
			n, err := s.st.DeleteInbox(in)
			if err != nil {
				return dropped, fmt.Errorf("account: dropping a removed device's inbox: %w", err)
			}
			dropped += n
		}
	}
	return dropped, nil
}

// Recover starts user's account again from a new first device, all its
// devices lost: the password is checked as a login's is (same throttles),
// the new keys must be well formed and signed, and statement must add the
// device of those keys as the first of a new chain, signed by their sign
// key (the new master key). The account's keys, chain, sessions and
// inboxes are replaced at once (store.RecoverAccount); the result is the
// new device's session. Contacts see a new key, as for an account made
// again.
func (s *Service) Recover(ctx context.Context, addr string, user, password []byte, keys *proto.Keys, statement []byte) (*Result, error) {
	u, err := s.checkPassword(ctx, addr, user, password)
	if err != nil {
		return nil, err
	}
	name := u.Name
	if err := proto.VerifyKeys([]byte(name), keys); err != nil {
		return nil, proto.CodeInvalidKey
	}
	var st proto.DeviceStatement
	if err := st.Parse(statement); err != nil {
		return nil, &proto.RemoteError{Code: proto.CodeBadRequest, Message: err.Error()}
	}
	if string(st.User) != name || st.DeviceID != proto.KeyRecordID(keys) || !bytes.Equal(st.BoxKey, keys.BoxKey) || !bytes.Equal(st.SignKey, keys.SignKey) {
		return nil, &proto.RemoteError{Code: proto.CodeBadRequest, Message: "the statement must add the device of the new keys"}
	}
	if _, err := proto.ReplayDevices([]*proto.DeviceStatement{&st}, ed25519.PublicKey(keys.SignKey)); err != nil {
		return nil, &proto.RemoteError{Code: proto.CodeBadRequest, Message: err.Error()}
	}
	token := make([]byte, proto.TokenLen)
	if _, err := rand.Read(token); err != nil {
		return nil, fmt.Errorf("account: reading randomness: %w", err)
	}
	now := s.now()
	ss := &store.Session{TokenHash: store.HashToken(token), User: name, Created: now, LastSeen: now, Device: st.DeviceID}
	if err := s.st.RecoverAccount(name, keys.BoxKey, keys.SignKey, keys.KeySig, statement, ss); err != nil {
		return nil, storageErr("recover", err)
	}
	// (The cached device list is the old master key's: it is not used.)
	return &Result{User: name, Display: u.Display, Token: token, Expires: expiry(now, now), KeyID: proto.KeyRecordID(keys), Device: st.DeviceID}, nil
}
