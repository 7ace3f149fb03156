package client

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"securefastchat/proto"
)

// PeerKeys are another user's verified public keys.
type PeerKeys struct {
	User    string
	Box     proto.PublicKey
	Sign    []byte
	Changed bool   // differ from the keys pinned before
	ID      uint64 // proto.KeyRecordID: what a send names as sealed for
	shared  *[32]byte
}

// Fingerprint identifies the pair of keys.
func (k *PeerKeys) Fingerprint() string {
	return proto.Fingerprint(append(k.Box.Bytes(), k.Sign...))
}

// contacts pins other users' keys in a file, sealed (atrest.go,
// "SFCCON1"; before, the same lines in plain text), one line per user:
//
//	name x25519:<hex> ed25519:<hex>
//
// and caches the keys fetched in this session.
//
// Keys that changed and that the user has not accepted yet are listed in
// a second file beside it (path + ".changed", sealed "SFCCHG1"), one line
// per user:
//
//	name <old fingerprint>
//
// so that every program on the account (a chat, a script's send) holds
// messages to them until the user accepts.
//
// The keys the user verified (compared safety numbers out of band) are in
// a third (path + ".verified", sealed "SFCVRF1"), one line per user:
//
//	name <fingerprint verified>
//
// A mark holds while the pinned keys have that fingerprint.
//
// The sign keys a contact had before a key change are in a fourth (path
// + ".former", sealed "SFCFMR1"), one line per user, the keys in hex
// joined by commas:
//
//	name <key>,<key>
//
// A group's chain may say that a member's key changed, naming the one
// before (proto.OpKeyChanged): it must be one of these, when this client
// knew the member's key before.
type contacts struct {
	st   Storage
	name string    // the record; the changed keys are name + ".changed"
	key  *[32]byte // seals the records

	mu         sync.Mutex
	pinned     map[string]*PeerKeys
	fetch      map[string]*PeerKeys // fetched and checked during this session
	unaccepted map[string]string    // user -> the fingerprint pinned before the change
	verified   map[string]string    // user -> the fingerprint the user verified
	former     map[string]string    // user -> the sign keys pinned before, hex, comma-joined
}

// Magics of the sealed files.
const (
	contactsMagic = "SFCCON1"
	changedMagic  = "SFCCHG1"
	verifiedMagic = "SFCVRF1"
	formerMagic   = "SFCFMR1"
)

func loadContacts(st Storage, name string, key *[32]byte) (*contacts, error) {
	ct := &contacts{st: st, name: name, key: key, pinned: map[string]*PeerKeys{}, fetch: map[string]*PeerKeys{}, unaccepted: map[string]string{}, verified: map[string]string{}, former: map[string]string{}}
	if err := ct.loadUnaccepted(); err != nil {
		return nil, err
	}
	if err := ct.loadMarks(ct.name+".former", formerMagic, ct.former); err != nil {
		return nil, err
	}
	if err := ct.loadMarks(ct.name+".verified", verifiedMagic, ct.verified); err != nil {
		return nil, err
	}
	content, plain, err := readSealed(st, key, contactsMagic, name)
	if errors.Is(err, fs.ErrNotExist) {
		return ct, nil
	}
	if errors.Is(err, ErrNewerFile) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w (the keys pinned for your contacts): %v", ErrDamagedContacts, err)
	}
	for n, line := range strings.Split(string(content), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		bad := fmt.Errorf("%w: %s line %d (the keys pinned for your contacts); move the file away to start over: keys are then pinned again as they are next used, so compare safety numbers again", ErrDamagedContacts, where(st, name), n+1)
		if len(fields) != 3 || !strings.HasPrefix(fields[1], "x25519:") || !strings.HasPrefix(fields[2], "ed25519:") {
			return nil, bad
		}
		box, err1 := hex.DecodeString(fields[1][len("x25519:"):])
		sign, err2 := hex.DecodeString(fields[2][len("ed25519:"):])
		if err1 != nil || err2 != nil || len(sign) != 32 {
			return nil, bad
		}
		k, err := proto.ParsePublicKey(box)
		if err != nil {
			return nil, bad
		}
		ct.pinned[fields[0]] = &PeerKeys{User: fields[0], Box: k, Sign: sign, ID: proto.KeyRecordID(&proto.Keys{BoxKey: box, SignKey: sign})}
	}
	if plain { // written before sealing: seal it now
		if err := ct.save(); err != nil {
			return nil, err
		}
	}
	return ct, nil
}

// fresh returns keys already fetched and checked in this session.
func (ct *contacts) fresh(user string) *PeerKeys {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.fetch[user]
}

// forget drops the session's cached keys of user, so they are fetched again.
func (ct *contacts) forget(user string) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	delete(ct.fetch, user)
}

// pin records fetched keys; it reports the old fingerprint if they differ
// from the pinned ones.
func (ct *contacts) pin(k *PeerKeys) (old string, changed bool, err error) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	ct.fetch[k.User] = k
	p := ct.pinned[k.User]
	if p != nil && p.Box.Equal(k.Box) && string(p.Sign) == string(k.Sign) {
		return "", false, nil
	}
	if p != nil {
		old, changed = p.Fingerprint(), true
		if _, ok := ct.unaccepted[k.User]; !ok {
			ct.unaccepted[k.User] = old
		}
		if err := ct.saveUnaccepted(); err != nil {
			return "", false, err
		}
		if _, ok := ct.verified[k.User]; ok { // verified were the keys before
			delete(ct.verified, k.User)
			if err := ct.saveMarks(ct.name+".verified", verifiedMagic, ct.verified); err != nil {
				return "", false, err
			}
		}
		if string(p.Sign) != string(k.Sign) && !ct.wasKey(k.User, p.Sign) {
			ct.former[k.User] = strings.TrimPrefix(ct.former[k.User]+","+hex.EncodeToString(p.Sign), ",")
			if err := ct.saveMarks(ct.name+".former", formerMagic, ct.former); err != nil {
				return "", false, err
			}
		}
	}
	ct.pinned[k.User] = k
	return old, changed, ct.save()
}

// wasKey reports whether key was one of user's sign keys before a key
// change this client saw. ct.mu is held.
func (ct *contacts) wasKey(user string, key []byte) bool {
	for _, k := range strings.Split(ct.former[user], ",") {
		if k != "" && k == hex.EncodeToString(key) {
			return true
		}
	}
	return false
}

// formerKey reports whether key may be what user's key was before a
// change: one this client saw user's key change from, or any key if it
// never saw one (it knew no key of user's before the current one).
func (ct *contacts) formerKey(user string, key []byte) bool {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.former[user] == "" || ct.wasKey(user, key)
}

// heldFor reports whether user's keys changed and the change was not
// accepted, and the fingerprint from before.
func (ct *contacts) heldFor(user string) (old string, held bool) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	old, held = ct.unaccepted[user]
	return old, held
}

// accept records that the user accepted user's current keys.
func (ct *contacts) accept(user string) error {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if _, ok := ct.unaccepted[user]; !ok {
		return nil
	}
	delete(ct.unaccepted, user)
	return ct.saveUnaccepted()
}

func (ct *contacts) loadUnaccepted() error {
	return ct.loadMarks(ct.name+".changed", changedMagic, ct.unaccepted)
}

func (ct *contacts) saveUnaccepted() error {
	return ct.saveMarks(ct.name+".changed", changedMagic, ct.unaccepted)
}

// loadMarks reads a record of lines "name fingerprint" into m.
func (ct *contacts) loadMarks(name, magic string, m map[string]string) error {
	b, _, err := readSealed(ct.st, ct.key, magic, name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("client: reading %s: %w", where(ct.st, name), err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			m[f[0]] = f[1]
		}
	}
	return nil
}

func (ct *contacts) saveMarks(name, magic string, m map[string]string) error {
	var b strings.Builder
	for user, fp := range m {
		fmt.Fprintf(&b, "%s %s\n", user, fp)
	}
	return writeSealed(ct.st, ct.key, magic, name, []byte(b.String()))
}

// markVerified records that the user verified user's keys of fingerprint.
func (ct *contacts) markVerified(user, fingerprint string) error {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if ct.verified[user] == fingerprint {
		return nil
	}
	ct.verified[user] = fingerprint
	return ct.saveMarks(ct.name+".verified", verifiedMagic, ct.verified)
}

// verifiedAll returns the verification marks of the keys pinned now.
func (ct *contacts) verifiedAll() map[string]string {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	out := make(map[string]string, len(ct.verified))
	for u, fp := range ct.verified {
		if p := ct.pinned[u]; p != nil && p.Fingerprint() == fp {
			out[u] = fp
		}
	}
	return out
}

// verifiedFor returns the fingerprint the user verified for user, if any.
func (ct *contacts) verifiedFor(user string) string {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.verified[user]
}

// snapshot returns the pinned contacts, each with whether its pinned keys
// are the ones verified, for a new device of the account.
func (ct *contacts) snapshot(self string) []proto.LinkContact {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	out := make([]proto.LinkContact, 0, len(ct.pinned))
	for user, k := range ct.pinned {
		if user == self {
			continue
		}
		out = append(out, proto.LinkContact{User: []byte(user), BoxKey: k.Box.Bytes(), SignKey: append([]byte(nil), k.Sign...),
			Verified: ct.verified[user] != "" && ct.verified[user] == k.Fingerprint(), Held: []byte(ct.unaccepted[user])})
	}
	return out
}

// adopt pins the contacts another device of the account sent, with their
// verification marks: a new device starts with the keys the account
// already trusts.
func (ct *contacts) adopt(cs []proto.LinkContact) error {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	for _, c := range cs {
		box, err := proto.ParsePublicKey(c.BoxKey)
		if err != nil {
			return fmt.Errorf("client: the keys synced for %s: %w", c.User, err)
		}
		k := &PeerKeys{User: string(c.User), Box: box, Sign: append([]byte(nil), c.SignKey...),
			ID: proto.KeyRecordID(&proto.Keys{BoxKey: c.BoxKey, SignKey: c.SignKey})}
		ct.pinned[k.User] = k
		if c.Verified {
			ct.verified[k.User] = k.Fingerprint()
		}
		if len(c.Held) > 0 {
			ct.unaccepted[k.User] = strings.Join(strings.Fields(string(c.Held)), "")
		}
	}
	if err := ct.save(); err != nil {
		return err
	}
	if err := ct.saveUnaccepted(); err != nil {
		return err
	}
	return ct.saveMarks(ct.name+".verified", verifiedMagic, ct.verified)
}

// save rewrites the file atomically.
func (ct *contacts) save() error {
	var b strings.Builder
	for name, k := range ct.pinned {
		fmt.Fprintf(&b, "%s x25519:%s ed25519:%s\n", name, k.Box.String(), hex.EncodeToString(k.Sign))
	}
	return writeSealed(ct.st, ct.key, contactsMagic, ct.name, []byte(b.String()))
}
