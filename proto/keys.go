package proto

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// KeyLen is the length of an X25519 key.
const KeyLen = 32

// PublicKey is an X25519 public key.
type PublicKey struct {
	k [KeyLen]byte
}

// PrivateKey is an X25519 private key. It cannot be compared with ==,
// and its String method never prints the key.
type PrivateKey struct {
	_ [0]func()
	k [KeyLen]byte
}

// KeyPair is a private key and its public key.
type KeyPair struct {
	Private PrivateKey
	Public  PublicKey
}

// lowOrderProbe is any scalar: X25519 of a low-order or all-zero point with
// a clamped scalar is all zeros, which curve25519.X25519 reports as an error.
var lowOrderProbe = [KeyLen]byte{9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31}

// ParsePublicKey checks b is a 32-byte X25519 point that is neither all zero
// nor of low order.
func ParsePublicKey(b []byte) (PublicKey, error) {
	var p PublicKey
	if len(b) != KeyLen {
		return p, fmt.Errorf("%w: length %d", ErrBadKey, len(b))
	}
	copy(p.k[:], b)
	if _, err := curve25519.X25519(lowOrderProbe[:], p.k[:]); err != nil {
		return PublicKey{}, fmt.Errorf("%w: low-order point", ErrBadKey)
	}
	return p, nil
}

// Bytes returns a copy of the key.
func (p PublicKey) Bytes() []byte { b := p.k; return b[:] }

// Array returns the key as an array.
func (p PublicKey) Array() [KeyLen]byte { return p.k }

// IsZero reports whether the key is unset.
func (p PublicKey) IsZero() bool { return p.k == [KeyLen]byte{} }

// Equal reports whether two public keys are the same.
func (p PublicKey) Equal(q PublicKey) bool { return p.k == q.k }

// String returns the key in hex.
func (p PublicKey) String() string { return hex.EncodeToString(p.k[:]) }

// Fingerprint returns "SHA256:" and the unpadded base64 of the key's SHA-256,
// the form ssh uses for host keys.
func (p PublicKey) Fingerprint() string { return Fingerprint(p.k[:]) }

// Fingerprint returns the SHA-256 fingerprint of raw key bytes.
func Fingerprint(raw []byte) string {
	sum := sha256.Sum256(raw)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// NormalizeFingerprint accepts a fingerprint with or without its "SHA256:"
// prefix and returns the canonical form.
func NormalizeFingerprint(s string) (string, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "SHA256:")
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) != sha256.Size {
		return "", errors.New("proto: a fingerprint is SHA256: followed by 43 base64 characters")
	}
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(b), nil
}

// NewKeyPair makes a key pair from rand.
func NewKeyPair(rand io.Reader) (KeyPair, error) {
	var kp KeyPair
	if _, err := io.ReadFull(rand, kp.Private.k[:]); err != nil {
		return KeyPair{}, fmt.Errorf("proto: reading randomness: %w", err)
	}
	pub, err := curve25519.X25519(kp.Private.k[:], curve25519.Basepoint)
	if err != nil {
		return KeyPair{}, err
	}
	copy(kp.Public.k[:], pub)
	return kp, nil
}

// KeyPairFromPrivate rebuilds a key pair from 32 private-key bytes.
func KeyPairFromPrivate(b []byte) (KeyPair, error) {
	var kp KeyPair
	if len(b) != KeyLen {
		return kp, fmt.Errorf("%w: private key length %d", ErrBadKey, len(b))
	}
	copy(kp.Private.k[:], b)
	pub, err := curve25519.X25519(kp.Private.k[:], curve25519.Basepoint)
	if err != nil {
		return KeyPair{}, err
	}
	copy(kp.Public.k[:], pub)
	return kp, nil
}

// Bytes returns a copy of the private key, for storage.
func (k *PrivateKey) Bytes() []byte { b := k.k; return b[:] }

// String never reveals the key.
func (k *PrivateKey) String() string { return "PrivateKey(redacted)" }

// Wipe overwrites the key (best effort: Go may have copied it).
func (k *PrivateKey) Wipe() { clear(k.k[:]) }

// dh computes X25519(k, peer), rejecting low-order and all-zero results.
func (k *PrivateKey) dh(peer []byte) ([]byte, error) {
	out, err := curve25519.X25519(k.k[:], peer)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	return out, nil
}

// Shared returns X25519(k, peer); it fails on a low-order peer key.
func (k *PrivateKey) Shared(peer PublicKey) ([]byte, error) { return k.dh(peer.k[:]) }
