package proto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Group membership is client-authoritative: every roster change is a
// Statement signed by the member it concerns or by a current admin, and the
// statements form a hash chain per group. A client replays the chain with
// Roster.Apply and trusts no member list the server did not prove with it,
// so a malicious server cannot slip a member in.
//
//	statement = version u8 (1) | group str8 | seq u32 | prev 32 | op u8
//	            | target str8 | signer str8 | sig 64
//	          | version u8 (2) | group str8 | seq u32 | prev 32 | op u8 (6)
//	            | target str8 | signer str8 | old_key 32 | sig 64
//
// prev is the SHA-256 of the previous statement's bytes (zero for seq 0);
// sig is Ed25519 by signer over GroupSigContext and every byte before sig.
// Version 2 is the key-change statement (OpKeyChanged): a member who
// started their account again with a new key says, signed by it, which
// key signed their statements before, so the chain still checks from its
// start (ApplyChain).
const (
	StatementVersion          = 1
	StatementVersionKeyChange = 2
	GroupSigContext           = "securefastchat v1 group statement"
	GroupMsgContext           = "securefastchat v1 group message"
	GroupKeyLen               = 32
)

// Roster operations.
const (
	OpCreate  uint8 = 1 // seq 0: signer founds the group and is its admin
	OpAdd     uint8 = 2 // an admin adds target as a member
	OpRemove  uint8 = 3 // an admin removes target (not the last admin)
	OpLeave   uint8 = 4 // target leaves (signer == target)
	OpPromote uint8 = 5 // an admin makes target an admin
	// OpKeyChanged (statement version 2): target (the signer) has a new
	// key since its account was recovered; its statements before this
	// one, back to its previous key change, were signed by OldKey.
	OpKeyChanged uint8 = 6
)

// Roster errors.
var (
	ErrBadStatement = errors.New("proto: malformed group statement")
	ErrBadChain     = errors.New("proto: group statement does not follow the chain")
	ErrNotAllowed   = errors.New("proto: group statement not allowed by the roster")
	ErrBadSignature = errors.New("proto: group statement signature does not verify")
)

// Statement is one signed roster change.
type Statement struct {
	Group  []byte
	Seq    uint32
	Prev   [32]byte
	Op     uint8
	Target []byte
	Signer []byte
	OldKey []byte // OpKeyChanged: the signer's key before (32)
	Sig    []byte // 64
}

func (s *Statement) appendUnsigned(b []byte) []byte {
	v := byte(StatementVersion)
	if s.Op == OpKeyChanged {
		v = StatementVersionKeyChange
	}
	b = appendStr8(append(b, v), s.Group)
	b = binary.BigEndian.AppendUint32(b, s.Seq)
	b = append(append(b, s.Prev[:]...), s.Op)
	b = appendStr8(appendStr8(b, s.Target), s.Signer)
	if s.Op == OpKeyChanged {
		b = append(b, s.OldKey...)
	}
	return b
}

// signedBytes is what the signer signs.
func (s *Statement) signedBytes() []byte {
	return s.appendUnsigned([]byte(GroupSigContext))
}

// Append appends the statement (signature included) to b.
func (s *Statement) Append(b []byte) []byte { return append(s.appendUnsigned(b), s.Sig...) }

// Hash is the SHA-256 of the statement's bytes, the next statement's prev.
func (s *Statement) Hash() [32]byte { return sha256.Sum256(s.Append(nil)) }

// Sign signs the statement with the signer's Ed25519 key.
func (s *Statement) Sign(key ed25519.PrivateKey) { s.Sig = ed25519.Sign(key, s.signedBytes()) }

// Parse decodes a statement. Names must be valid user or group names.
func (s *Statement) Parse(b []byte) error {
	d := dec{b: b}
	v := d.u8()
	if d.err == nil && v != StatementVersion && v != StatementVersionKeyChange {
		return fmt.Errorf("%w: version %d (a newer securefastchat wrote it: upgrade)", ErrBadStatement, v)
	}
	s.Group, s.Seq = d.str8(), d.u32()
	copy(s.Prev[:], d.fixed(32))
	s.Op, s.Target, s.Signer = d.u8(), d.str8(), d.str8()
	s.OldKey = nil
	if v == StatementVersionKeyChange {
		s.OldKey = d.fixed(ed25519.PublicKeySize)
	}
	s.Sig = d.fixed(ed25519.SignatureSize)
	if err := d.done(); err != nil {
		return fmt.Errorf("%w: %v", ErrBadStatement, err)
	}
	ops := s.Op >= OpCreate && s.Op <= OpPromote
	if v == StatementVersionKeyChange {
		ops = s.Op == OpKeyChanged
	}
	if !ValidUsername(s.Group) || !ValidUsername(s.Target) || !ValidUsername(s.Signer) || !ops {
		return fmt.Errorf("%w: names or op", ErrBadStatement)
	}
	return nil
}

// RosterMember is one member of a group.
type RosterMember struct {
	Name  string // canonical
	Admin bool
}

// Roster is a group's membership as proved by its statement chain. The
// member list keeps join order (the oldest first).
type Roster struct {
	Group   string
	Seq     uint32   // the last statement applied
	Last    [32]byte // its hash
	Members []RosterMember
}

// SignKeyFunc returns a user's Ed25519 key, or nil if unknown.
type SignKeyFunc func(user string) ed25519.PublicKey

// Index returns the position of a member, or -1.
func (r *Roster) Index(name string) int {
	for i, m := range r.Members {
		if m.Name == name {
			return i
		}
	}
	return -1
}

// IsAdmin reports whether name is an admin of the group.
func (r *Roster) IsAdmin(name string) bool {
	i := r.Index(name)
	return i >= 0 && r.Members[i].Admin
}

func (r *Roster) admins() int {
	n := 0
	for _, m := range r.Members {
		if m.Admin {
			n++
		}
	}
	return n
}

// Names returns the members' names in join order.
func (r *Roster) Names() []string {
	out := make([]string, len(r.Members))
	for i, m := range r.Members {
		out[i] = m.Name
	}
	return out
}

// Clone returns a copy that Apply can change without touching r.
func (r *Roster) Clone() *Roster {
	c := *r
	c.Members = append([]RosterMember(nil), r.Members...)
	return &c
}

// Apply checks a statement against the roster (chain, rights, signature)
// and applies it. r is nil before the create statement. On error the
// roster is unchanged.
func (r *Roster) Apply(s *Statement, keys SignKeyFunc) (*Roster, error) {
	signer, target := string(s.Signer), string(s.Target)
	var next *Roster
	if r == nil {
		if s.Op != OpCreate || s.Seq != 0 || s.Prev != ([32]byte{}) || signer != target {
			return nil, fmt.Errorf("%w: a group starts with its creator's create statement", ErrBadChain)
		}
		next = &Roster{Group: string(s.Group), Members: []RosterMember{{Name: signer, Admin: true}}}
	} else {
		if string(s.Group) != r.Group || s.Seq != r.Seq+1 || s.Prev != r.Last {
			return nil, fmt.Errorf("%w: seq %d after %d", ErrBadChain, s.Seq, r.Seq)
		}
		next = r.Clone()
		ti := next.Index(target)
		switch s.Op {
		case OpAdd:
			if !r.IsAdmin(signer) || ti >= 0 {
				return nil, fmt.Errorf("%w: %s cannot add %s", ErrNotAllowed, signer, target)
			}
			next.Members = append(next.Members, RosterMember{Name: target})
		case OpRemove:
			if !r.IsAdmin(signer) || ti < 0 || signer == target || next.Members[ti].Admin && r.admins() == 1 {
				return nil, fmt.Errorf("%w: %s cannot remove %s", ErrNotAllowed, signer, target)
			}
			next.Members = append(next.Members[:ti], next.Members[ti+1:]...)
		case OpLeave:
			if signer != target || ti < 0 {
				return nil, fmt.Errorf("%w: only a member can leave, by itself", ErrNotAllowed)
			}
			wasLastAdmin := next.Members[ti].Admin && r.admins() == 1
			next.Members = append(next.Members[:ti], next.Members[ti+1:]...)
			if wasLastAdmin && len(next.Members) > 0 {
				next.Members[0].Admin = true // the oldest member takes over
			}
		case OpPromote:
			if !r.IsAdmin(signer) || ti < 0 || next.Members[ti].Admin {
				return nil, fmt.Errorf("%w: %s cannot promote %s", ErrNotAllowed, signer, target)
			}
			next.Members[ti].Admin = true
		case OpKeyChanged:
			if signer != target || ti < 0 || len(s.OldKey) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("%w: only a member says that its own key changed", ErrNotAllowed)
			}
		default:
			return nil, fmt.Errorf("%w: op %d after create", ErrBadChain, s.Op)
		}
	}
	key := keys(signer)
	if key == nil || !ed25519.Verify(key, s.signedBytes(), s.Sig) {
		return nil, fmt.Errorf("%w: by %s", ErrBadSignature, signer)
	}
	next.Seq, next.Last = s.Seq, s.Hash()
	return next, nil
}

// ReplayRoster applies a whole chain from the create statement.
func ReplayRoster(chain []*Statement, keys SignKeyFunc) (*Roster, error) {
	rs, err := (*Roster)(nil).ApplyChain(chain, keys)
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("%w: empty chain", ErrBadChain)
	}
	return rs[len(rs)-1], nil
}

// ApplyChain applies chain after r (nil before the create statement) and
// returns the roster after each statement. A member's statement is
// checked against the key that member's next key-change statement in
// chain names as its old one, if there is one (or else against keys, so
// that a key change naming a key that signed nothing changes nothing);
// else against keys. So what a member signed before starting their
// account again still checks, with the key they themselves name (signed
// by their new key), and nothing signed by that old key after their key
// change does.
func (r *Roster) ApplyChain(chain []*Statement, keys SignKeyFunc) ([]*Roster, error) {
	before := make([]ed25519.PublicKey, len(chain)) // the key statement i is checked with, if not keys'
	later := map[string]ed25519.PublicKey{}
	for i := len(chain) - 1; i >= 0; i-- {
		s := chain[i]
		before[i] = later[string(s.Signer)]
		if s.Op == OpKeyChanged && len(s.OldKey) == ed25519.PublicKeySize {
			later[string(s.Signer)] = ed25519.PublicKey(s.OldKey)
		}
	}
	out := make([]*Roster, 0, len(chain))
	for i, s := range chain {
		var next *Roster
		err := ErrBadSignature
		if key := before[i]; key != nil {
			next, err = r.Apply(s, func(string) ed25519.PublicKey { return key })
		}
		if errors.Is(err, ErrBadSignature) {
			next, err = r.Apply(s, keys)
		}
		if err != nil {
			return out, fmt.Errorf("statement %d: %w", s.Seq, err)
		}
		out = append(out, next)
		r = next
	}
	return out, nil
}

// NewGroupKey makes a random group key.
func NewGroupKey(r io.Reader) (*[GroupKeyLen]byte, error) {
	if r == nil {
		r = rand.Reader
	}
	var k [GroupKeyLen]byte
	if _, err := io.ReadFull(r, k[:]); err != nil {
		return nil, err
	}
	return &k, nil
}

// wrapInfo binds a wrapped key to its group, epoch and member (and, from
// version 5, the member's device), so a wrap cannot be replayed into
// another group, epoch or device. Device 0 is the form before devices: a
// wrap for the member's account keys.
func wrapInfo(group []byte, epoch uint32, member []byte, device uint64) []byte {
	ctx := "securefastchat v1 group key"
	if device != 0 {
		ctx = "securefastchat v2 group key"
	}
	b := appendStr8(append([]byte(ctx), 0), group)
	b = binary.BigEndian.AppendUint32(b, epoch)
	b = appendStr8(b, member)
	if device != 0 {
		b = binary.BigEndian.AppendUint64(b, device)
	}
	return b
}

// WrapGroupKey seals a group key for one member device: box from the
// wrapping device's box key to the member device's, over info || key.
// Device 0 wraps for the member's account keys (the form before devices).
//
//	wrapped = nonce(24) | box(info || key)
func WrapGroupKey(key *[GroupKeyLen]byte, group []byte, epoch uint32, member []byte, device uint64, shared *[32]byte, r io.Reader) ([]byte, error) {
	plain := append(wrapInfo(group, epoch, member, device), key[:]...)
	return SealBody(nil, plain, shared, r)
}

// UnwrapGroupKey opens a wrapped key and checks it was made for this
// group, epoch, member and device.
func UnwrapGroupKey(wrapped, group []byte, epoch uint32, member []byte, device uint64, shared *[32]byte) (*[GroupKeyLen]byte, error) {
	plain, err := OpenBody(nil, wrapped, shared)
	if err != nil {
		return nil, err
	}
	info := wrapInfo(group, epoch, member, device)
	if len(plain) != len(info)+GroupKeyLen || !bytes.Equal(plain[:len(info)], info) {
		return nil, fmt.Errorf("%w: wrapped key for another group, epoch, member or device", ErrDecrypt)
	}
	var k [GroupKeyLen]byte
	copy(k[:], plain[len(info):])
	return &k, nil
}

// GroupMsgSigned is what a sender signs for a group message: the group,
// the epoch, the message id and the ciphertext.
func GroupMsgSigned(group []byte, epoch uint32, msgID, ciphertext []byte) []byte {
	b := appendStr8([]byte(GroupMsgContext), group)
	b = binary.BigEndian.AppendUint32(b, epoch)
	b = append(b, msgID...)
	return append(b, ciphertext...)
}

// SealGroup encrypts a group message body with the epoch key (secretbox,
// random nonce): nonce(24) | secretbox(inner).
func SealGroup(inner []byte, key *[GroupKeyLen]byte, r io.Reader) ([]byte, error) {
	return SealBody(nil, inner, key, r)
}

// OpenGroup decrypts a group message body.
func OpenGroup(sealed []byte, key *[GroupKeyLen]byte) ([]byte, error) {
	return OpenBody(nil, sealed, key)
}

// EpochStatement makes a key epoch: its maker signs which roster the key
// is for (position and head hash) and a commitment to the key, so every
// member can check that the copy wrapped for it is the key everyone else
// got. One statement is stored per epoch and served to every member.
//
//	epoch_stmt = version u8 (1) | group str8 | epoch u32 | roster_seq u32
//	             | roster_head 32 | commit 32 | maker str8 | sig 64
//	epoch_stmt = version u8 (2) | group str8 | epoch u32 | roster_seq u32
//	             | roster_head 32 | commit 32 | maker str8
//	             | maker_device u64 | sig 64
//	commit     = HKDF-SHA256(ikm = key, salt = none,
//	                         info = "securefastchat key-check" || str8(group) || epoch u32)
//
// sig is Ed25519 over EpochStmtContext and every byte before sig: by the
// maker's account key in version 1, by the maker's device (maker_device,
// on the maker's device list) in version 2, which version 5 sessions
// make.
type EpochStatement struct {
	Group     []byte
	Epoch     uint32
	RosterSeq uint32
	Head      [32]byte // the roster statement's hash at RosterSeq
	Commit    [32]byte
	Maker     []byte
	Device    uint64 // the maker's device; 0: version 1, signed by the account key
	Sig       []byte // 64
}

// Epoch statement constants.
const (
	EpochStmtVersion = 2
	EpochStmtContext = "securefastchat v1 epoch statement"
	keyCheckInfo     = "securefastchat key-check"
	BadEpochContext  = "securefastchat v1 bad epoch"
	// BadEpochContextV2 is the context of a report signed by a device.
	BadEpochContextV2 = "securefastchat v2 bad epoch"
)

// KeyCommitment is the commitment an epoch statement makes to its key.
func KeyCommitment(key *[GroupKeyLen]byte, group []byte, epoch uint32) [32]byte {
	info := binary.BigEndian.AppendUint32(appendStr8([]byte(keyCheckInfo), group), epoch)
	out, err := hkdf.Key(sha256.New, key[:], nil, string(info), 32)
	if err != nil {
		panic("proto: hkdf: " + err.Error()) // only for an impossible length
	}
	return [32]byte(out)
}

func (s *EpochStatement) appendUnsigned(b []byte) []byte {
	v := byte(1)
	if s.Device != 0 {
		v = EpochStmtVersion
	}
	b = appendStr8(append(b, v), s.Group)
	b = binary.BigEndian.AppendUint32(b, s.Epoch)
	b = binary.BigEndian.AppendUint32(b, s.RosterSeq)
	b = append(append(b, s.Head[:]...), s.Commit[:]...)
	b = appendStr8(b, s.Maker)
	if s.Device != 0 {
		b = binary.BigEndian.AppendUint64(b, s.Device)
	}
	return b
}

// Append appends the statement (signature included) to b.
func (s *EpochStatement) Append(b []byte) []byte { return append(s.appendUnsigned(b), s.Sig...) }

// Sign signs the statement with the maker's Ed25519 key (its device's,
// with Device set).
func (s *EpochStatement) Sign(key ed25519.PrivateKey) {
	s.Sig = ed25519.Sign(key, s.appendUnsigned([]byte(EpochStmtContext)))
}

// Verify checks the signature with the maker's key.
func (s *EpochStatement) Verify(key ed25519.PublicKey) bool {
	return len(key) == ed25519.PublicKeySize && ed25519.Verify(key, s.appendUnsigned([]byte(EpochStmtContext)), s.Sig)
}

// Parse decodes a statement.
func (s *EpochStatement) Parse(b []byte) error {
	d := dec{b: b}
	v := d.u8()
	if d.err == nil && v != 1 && v != EpochStmtVersion {
		return fmt.Errorf("%w: epoch statement version %d", ErrBadStatement, v)
	}
	s.Group, s.Epoch, s.RosterSeq = d.str8(), d.u32(), d.u32()
	copy(s.Head[:], d.fixed(32))
	copy(s.Commit[:], d.fixed(32))
	s.Maker, s.Device = d.str8(), 0
	if v == 2 {
		s.Device = d.u64()
	}
	s.Sig = d.fixed(ed25519.SignatureSize)
	if err := d.done(); err != nil {
		return fmt.Errorf("%w: %v", ErrBadStatement, err)
	}
	if !ValidUsername(s.Group) || !ValidUsername(s.Maker) || s.Epoch == 0 || v == 2 && s.Device == 0 {
		return fmt.Errorf("%w: epoch statement names or epoch", ErrBadStatement)
	}
	return nil
}

// BadEpochSigned is what a member signs to report an epoch bad: its copy
// of the key did not open, or did not match the statement's commitment.
// From version 5 the reporter's device signs it, and it names the device
// (device 0: the form before, signed by the account key).
func BadEpochSigned(group []byte, epoch uint32, reporter []byte, device uint64) []byte {
	ctx := BadEpochContext
	if device != 0 {
		ctx = BadEpochContextV2
	}
	b := appendStr8([]byte(ctx), group)
	b = appendStr8(binary.BigEndian.AppendUint32(b, epoch), reporter)
	if device != 0 {
		b = binary.BigEndian.AppendUint64(b, device)
	}
	return b
}
