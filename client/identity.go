package client

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/nacl/secretbox"

	"securefastchat/proto"
)

// Identity is a user's end-to-end key pairs: an X25519 key that opens
// direct messages and an Ed25519 key that signs it. They are made on the
// client and never leave it.
type Identity struct {
	Box  proto.KeyPair
	Sign ed25519.PrivateKey
}

// NewIdentity makes fresh keys.
func NewIdentity() (*Identity, error) {
	box, err := proto.NewKeyPair(rand.Reader)
	if err != nil {
		return nil, err
	}
	_, sign, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &Identity{Box: box, Sign: sign}, nil
}

// PublicKeys returns the keys to publish for the canonical user name.
func (id *Identity) PublicKeys(canonUser string) proto.Keys {
	box := id.Box.Public.Bytes()
	return proto.Keys{
		BoxKey:  box,
		SignKey: id.Sign.Public().(ed25519.PublicKey),
		KeySig:  ed25519.Sign(id.Sign, proto.KeySigMessage([]byte(canonUser), box)),
	}
}

// KeyID returns proto.KeyRecordID of the keys published for the canonical
// user name: what a send to this user names as sealed for.
func (id *Identity) KeyID(canonUser string) uint64 {
	k := id.PublicKeys(canonUser)
	return proto.KeyRecordID(&k)
}

// KDFParams are the argon2id parameters that protect the identity file.
type KDFParams struct {
	Time      uint32
	MemoryKiB uint32
	Threads   uint8
}

// DefaultKDF is the production setting (t=3, m=64 MiB, p=4).
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

// Identity file layout:
//
//	magic "SFCID1" | t u32 | m u32 | p u8 | salt 16 | nonce 24
//	| secretbox(box private 32 | ed25519 seed 32, argon2id(password, salt))
const identityMagic = "SFCID1"

func (p KDFParams) key(password, salt []byte) *[32]byte {
	var k [32]byte
	copy(k[:], argon2.IDKey(password, salt, p.Time, p.MemoryKiB, p.Threads, 32))
	return &k
}

// SaveIdentity writes id to path (mode 0600), encrypted with a key derived
// from password. It refuses to overwrite an existing file.
func SaveIdentity(path string, id *Identity, password []byte, p KDFParams) error {
	return saveIdentity(Dir(filepath.Dir(path)), filepath.Base(path), id, password, p)
}

// LoadIdentity opens the identity file at path with password.
func LoadIdentity(path string, password []byte) (*Identity, error) {
	return loadIdentity(Dir(filepath.Dir(path)), filepath.Base(path), password)
}

// saveIdentity makes the record name in st: id, encrypted with a key
// derived from password. It refuses to replace one.
func saveIdentity(st Storage, name string, id *Identity, password []byte, p KDFParams) error {
	salt := make([]byte, 16)
	var nonce [24]byte
	if _, err := rand.Read(salt); err != nil {
		return err
	}
	if _, err := rand.Read(nonce[:]); err != nil {
		return err
	}
	b := []byte(identityMagic)
	b = binary.BigEndian.AppendUint32(b, p.Time)
	b = binary.BigEndian.AppendUint32(b, p.MemoryKiB)
	b = append(b, p.Threads)
	b = append(b, salt...)
	b = append(b, nonce[:]...)
	secret := append(id.Box.Private.Bytes(), id.Sign.Seed()...)
	b = secretbox.Seal(b, secret, &nonce, p.key(password, salt))
	clear(secret)
	if err := st.Create(name, b); err != nil {
		return fmt.Errorf("client: saving identity: %w", err)
	}
	return nil
}

// loadIdentity opens the identity record name in st with password.
func loadIdentity(st Storage, name string, password []byte) (*Identity, error) {
	b, err := st.Read(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (%s)", ErrNoIdentity, where(st, name))
	}
	if err != nil {
		return nil, fmt.Errorf("client: reading identity: %w", err)
	}
	const head = len(identityMagic) + 4 + 4 + 1 + 16 + 24
	if len(b) != head+64+secretbox.Overhead || !bytes.HasPrefix(b, []byte(identityMagic)) {
		return nil, ErrBadIdentity
	}
	o := len(identityMagic)
	p := KDFParams{
		Time:      binary.BigEndian.Uint32(b[o:]),
		MemoryKiB: binary.BigEndian.Uint32(b[o+4:]),
		Threads:   b[o+8],
	}
	if p.Time == 0 || p.Time > 64 || p.MemoryKiB == 0 || p.MemoryKiB > 4<<20 || p.Threads == 0 {
		return nil, ErrBadIdentity
	}
	salt := b[o+9 : o+25]
	var nonce [24]byte
	copy(nonce[:], b[o+25:head])
	secret, ok := secretbox.Open(nil, b[head:], &nonce, p.key(password, salt))
	if !ok {
		return nil, ErrBadIdentity
	}
	defer clear(secret)
	box, err := proto.KeyPairFromPrivate(secret[:32])
	if err != nil {
		return nil, ErrBadIdentity
	}
	return &Identity{Box: box, Sign: ed25519.NewKeyFromSeed(secret[32:])}, nil
}
