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
//	magic "SFCID2" | t u32 | m u32 | p u8 | salt 16 | nonce 24
//	| secretbox(box private 32 | ed25519 seed 32, argon2id(password, salt))
//
// Version 2 says that the account's password goes to the server only as
// its login key (loginKey, with the file's argon2 parameters), so the
// key the file is sealed with comes from nothing the server has seen. A
// version 1 file ("SFCID1", the same bytes) is of an account whose
// password went to the server as it is: the client moves the account to
// its login key (movePassword) and the file to version 2. A later
// version is refused.
const (
	identityMagic   = "SFCID2"
	identityMagicV1 = "SFCID1"
)

// identityFile is what an identity file says besides the keys.
type identityFile struct {
	kdf KDFParams // its argon2id parameters, also its login key's
	v1  bool      // version 1: the server knows the password itself
}

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
	id, _, err := loadIdentity(Dir(filepath.Dir(path)), filepath.Base(path), password)
	return id, err
}

// saveIdentity makes the record name in st: id, encrypted with a key
// derived from password. It refuses to replace one.
func saveIdentity(st Storage, name string, id *Identity, password []byte, p KDFParams) error {
	return saveIdentityAs(st, name, identityMagic, id, password, p)
}

// saveIdentityAs is saveIdentity in the version magic says.
func saveIdentityAs(st Storage, name, magic string, id *Identity, password []byte, p KDFParams) error {
	b, err := sealIdentity(magic, id, password, p)
	if err != nil {
		return err
	}
	if err := st.Create(name, b); err != nil {
		return fmt.Errorf("client: saving identity: %w", err)
	}
	return nil
}

// sealIdentity is the identity file of id under password, in the
// version magic says.
func sealIdentity(magic string, id *Identity, password []byte, p KDFParams) ([]byte, error) {
	salt := make([]byte, 16)
	var nonce [24]byte
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	b := []byte(magic)
	b = binary.BigEndian.AppendUint32(b, p.Time)
	b = binary.BigEndian.AppendUint32(b, p.MemoryKiB)
	b = append(b, p.Threads)
	b = append(b, salt...)
	b = append(b, nonce[:]...)
	secret := append(id.Box.Private.Bytes(), id.Sign.Seed()...)
	b = secretbox.Seal(b, secret, &nonce, p.key(password, salt))
	clear(secret)
	return b, nil
}

// identityHead is the length of an identity file before its sealed keys.
const identityHead = len(identityMagic) + 4 + 4 + 1 + 16 + 24

// loadIdentity opens the identity record name in st with password.
func loadIdentity(st Storage, name string, password []byte) (*Identity, identityFile, error) {
	b, f, err := readIdentity(st, name)
	if err != nil {
		return nil, f, err
	}
	o := len(identityMagic)
	salt := b[o+9 : o+25]
	var nonce [24]byte
	copy(nonce[:], b[o+25:identityHead])
	secret, ok := secretbox.Open(nil, b[identityHead:], &nonce, f.kdf.key(password, salt))
	if !ok {
		return nil, identityFile{}, ErrBadIdentity
	}
	defer clear(secret)
	box, err := proto.KeyPairFromPrivate(secret[:32])
	if err != nil {
		return nil, identityFile{}, ErrBadIdentity
	}
	return &Identity{Box: box, Sign: ed25519.NewKeyFromSeed(secret[32:])}, f, nil
}

// readIdentity reads the identity record name in st and what it says,
// without opening it.
func readIdentity(st Storage, name string) ([]byte, identityFile, error) {
	b, err := st.Read(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, identityFile{}, fmt.Errorf("%w (%s)", ErrNoIdentity, where(st, name))
	}
	if err != nil {
		return nil, identityFile{}, fmt.Errorf("client: reading identity: %w", err)
	}
	family := identityMagic[:len(identityMagic)-1]
	if bytes.HasPrefix(b, []byte(family)) && len(b) > len(family) && b[len(family)] > identityMagic[len(family)] && b[len(family)] <= '9' {
		return nil, identityFile{}, fmt.Errorf("%w: %s", ErrNewerFile, where(st, name))
	}
	v1 := bytes.HasPrefix(b, []byte(identityMagicV1))
	if len(b) != identityHead+64+secretbox.Overhead || !v1 && !bytes.HasPrefix(b, []byte(identityMagic)) {
		return nil, identityFile{}, ErrBadIdentity
	}
	o := len(identityMagic)
	p := KDFParams{
		Time:      binary.BigEndian.Uint32(b[o:]),
		MemoryKiB: binary.BigEndian.Uint32(b[o+4:]),
		Threads:   b[o+8],
	}
	if p.Time == 0 || p.Time > 64 || p.MemoryKiB == 0 || p.MemoryKiB > 4<<20 || p.Threads == 0 {
		return nil, identityFile{}, ErrBadIdentity
	}
	return b, identityFile{kdf: p, v1: v1}, nil
}

// markIdentityV2 turns the version 1 identity record name into version
// 2, once the account's password is its login key on the server: the
// same sealed keys under the same password.
func markIdentityV2(st Storage, name string) error {
	b, err := st.Read(name)
	if err != nil {
		return fmt.Errorf("client: reading identity: %w", err)
	}
	if !bytes.HasPrefix(b, []byte(identityMagicV1)) {
		return nil
	}
	b = append([]byte(identityMagic), b[len(identityMagicV1):]...)
	if err := st.Replace(name, b); err != nil {
		return fmt.Errorf("client: saving identity: %w", err)
	}
	return nil
}
