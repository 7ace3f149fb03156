package proto

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"golang.org/x/crypto/nacl/box"
)

// End-to-end layer. The server never opens these bytes; they are defined
// here because they are part of the wire format all clients must share.
//
//	sealed body = nonce(24) | box(inner, nonce, receiver_box_key, sender_box_private)
//	inner       = version u8 (1) | kind u8 | from str8 | to str8 | msg_id 16
//	              | sent_at i64 (unix ns) | body_len u32 | body | zero pad
//
// The inner plaintext is padded with zeros to a multiple of PadBucket so the
// server sees sizes only in buckets. The receiver checks that from, to,
// msg_id and kind match the envelope and the key that opened the box.
const (
	InnerVersion = 1
	// PadBucket is the size bucket inner plaintexts are padded to.
	PadBucket = 256
	// SealedOverhead is what sealing adds to an inner plaintext.
	SealedOverhead = 24 + box.Overhead
	innerFixedLen  = 1 + 1 + 1 + 1 + MsgIDLen + 8 + 4
	// MaxInnerLen is the largest padded inner plaintext that fits a body.
	MaxInnerLen = (MaxBodyLen - SealedOverhead) / PadBucket * PadBucket
	// KeySigContext prefixes what a user's signing key signs.
	KeySigContext = "securefastchat v1 box key"
	// KeyRecordContext prefixes what KeyRecordID hashes.
	KeyRecordContext = "securefastchat key record"
)

// Inner is the plaintext of a sealed message. A group message's inner
// (version 2) also names the roster position it was sent under: the
// statement seq and that statement's hash, as the sender knew them, which
// the sender's signature covers with the rest of the ciphertext.
//
//	inner v2 = version u8 (2) | kind u8 | from str8 | to str8 | msg_id 16
//	           | sent_at i64 | roster_seq u32 | roster_head 32
//	           | body_len u32 | body | zero pad
type Inner struct {
	Kind     uint8
	From, To []byte
	MsgID    []byte // 16
	SentAt   int64  // unix nanoseconds, by the sender's clock
	Body     []byte
	// Roster is set in a group message: the position it was sent under.
	Roster *RosterPos
}

// RosterPos is a position in a group's roster chain.
type RosterPos struct {
	Seq  uint32
	Head [32]byte
}

// InnerVersionGroup is the inner version that carries a roster position.
const InnerVersionGroup = 2

// rosterPosLen is what a roster position adds to an inner.
const rosterPosLen = 4 + 32

// MaxInnerBody is the largest body a direct message's inner with these
// names can carry.
func MaxInnerBody(from, to []byte) int {
	return MaxInnerLen - innerFixedLen - len(from) - len(to)
}

// MaxGroupInnerBody is the largest body a group message's inner can carry.
func MaxGroupInnerBody(from, group []byte) int { return MaxInnerBody(from, group) - rosterPosLen }

// Append appends the padded inner plaintext to b.
func (in *Inner) Append(b []byte) ([]byte, error) {
	max, version := MaxInnerBody(in.From, in.To), byte(InnerVersion)
	if in.Roster != nil {
		max, version = MaxGroupInnerBody(in.From, in.To), InnerVersionGroup
	}
	if len(in.Body) > max {
		return b, fmt.Errorf("%w: body of %d bytes, limit %d", ErrTooLarge, len(in.Body), max)
	}
	if len(in.MsgID) != MsgIDLen {
		return b, fmt.Errorf("%w: message id of %d bytes", ErrMalformed, len(in.MsgID))
	}
	start := len(b)
	b = append(b, version, in.Kind)
	b = appendStr8(appendStr8(b, in.From), in.To)
	b = append(b, in.MsgID...)
	b = binary.BigEndian.AppendUint64(b, uint64(in.SentAt))
	if in.Roster != nil {
		b = append(binary.BigEndian.AppendUint32(b, in.Roster.Seq), in.Roster.Head[:]...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(in.Body)))
	b = append(b, in.Body...)
	if r := (len(b) - start) % PadBucket; r != 0 {
		b = append(b, make([]byte, PadBucket-r)...)
	}
	return b, nil
}

// Parse decodes an inner plaintext. Padding must be zero and shorter than
// PadBucket (minimal), so no strict prefix of a valid inner parses.
func (in *Inner) Parse(b []byte) error {
	d := dec{b: b}
	v := d.u8()
	if d.err == nil && v != InnerVersion && v != InnerVersionGroup {
		return fmt.Errorf("%w: inner version %d", ErrMalformed, v)
	}
	in.Kind = d.u8()
	in.From, in.To = d.str8(), d.str8()
	in.MsgID = d.fixed(MsgIDLen)
	in.SentAt = int64(d.u64())
	in.Roster = nil
	if v == InnerVersionGroup {
		in.Roster = &RosterPos{Seq: d.u32()}
		copy(in.Roster.Head[:], d.fixed(32))
	}
	in.Body = d.fixed(int(d.u32()))
	if d.err != nil {
		return d.err
	}
	if len(b)%PadBucket != 0 {
		return fmt.Errorf("%w: inner length %d is not padded", ErrMalformed, len(b))
	}
	if len(d.b) >= PadBucket {
		return fmt.Errorf("%w: padding of %d bytes is not minimal", ErrMalformed, len(d.b))
	}
	for _, c := range d.b {
		if c != 0 {
			return fmt.Errorf("%w: non-zero padding", ErrMalformed)
		}
	}
	return nil
}

// SharedKey precomputes the box key between a private key and a peer's
// public key. The peer key must have passed ParsePublicKey.
func SharedKey(priv *PrivateKey, peer PublicKey) *[32]byte {
	var k [32]byte
	box.Precompute(&k, &peer.k, &priv.k)
	return &k
}

// SealBody appends nonce | box(inner) to dst with a random nonce from r
// (crypto/rand if nil).
func SealBody(dst, inner []byte, shared *[32]byte, r io.Reader) ([]byte, error) {
	if r == nil {
		r = rand.Reader
	}
	var nonce [24]byte
	if _, err := io.ReadFull(r, nonce[:]); err != nil {
		return dst, fmt.Errorf("proto: reading randomness: %w", err)
	}
	dst = append(dst, nonce[:]...)
	return box.SealAfterPrecomputation(dst, inner, &nonce, shared), nil
}

// OpenBody opens a sealed body and appends the inner plaintext to dst.
func OpenBody(dst, sealed []byte, shared *[32]byte) ([]byte, error) {
	if len(sealed) < SealedOverhead {
		return dst, ErrDecrypt
	}
	var nonce [24]byte
	copy(nonce[:], sealed)
	out, ok := box.OpenAfterPrecomputation(dst, sealed[24:], &nonce, shared)
	if !ok {
		return dst, ErrDecrypt
	}
	return out, nil
}

// KeySigMessage is what a user's Ed25519 key signs to vouch for a box key.
// user must be a valid user name.
func KeySigMessage(user []byte, boxKey []byte) []byte {
	m := make([]byte, 0, len(KeySigContext)+1+len(user)+len(boxKey))
	m = append(m, KeySigContext...)
	m = appendStr8(m, user)
	return append(m, boxKey...)
}

// KeyRecordID names a user's key record (its box and signing keys) in
// eight bytes: the first eight of SHA-256(KeyRecordContext || box_key ||
// sign_key), big endian. A sender names the record it sealed for
// (SendDMFor), so the server can refuse a message sealed for keys the
// receiver no longer has.
func KeyRecordID(k *Keys) uint64 {
	h := sha256.New()
	h.Write([]byte(KeyRecordContext))
	h.Write(k.BoxKey)
	h.Write(k.SignKey)
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

// VerifyKeys checks the key lengths, the box key's point and the signature
// over it for the canonical user name.
func VerifyKeys(canonicalUser []byte, k *Keys) error {
	if !ValidUsername(canonicalUser) {
		return ErrInvalidUsername
	}
	if len(k.BoxKey) != KeyLen || len(k.SignKey) != ed25519.PublicKeySize || len(k.KeySig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: wrong key lengths", ErrBadKey)
	}
	if _, err := ParsePublicKey(k.BoxKey); err != nil {
		return err
	}
	if !ed25519.Verify(ed25519.PublicKey(k.SignKey), KeySigMessage(canonicalUser, k.BoxKey), k.KeySig) {
		return fmt.Errorf("%w: the signature over the box key does not verify", ErrBadKey)
	}
	return nil
}

// FileChunk is the body of a KindFile message: one piece of a file.
//
//	file_id 16 | name str16 | size u64 | index u32 | count u32 | data str16
type FileChunk struct {
	FileID       []byte
	Name         []byte
	Size         uint64
	Index, Count uint32
	Data         []byte
}

// FileChunkData is the file data carried per chunk.
const FileChunkData = 32 << 10

// Append appends the chunk to b.
func (f *FileChunk) Append(b []byte) []byte {
	b = appendStr16(append(b, f.FileID...), f.Name)
	b = binary.BigEndian.AppendUint64(b, f.Size)
	b = binary.BigEndian.AppendUint32(b, f.Index)
	b = binary.BigEndian.AppendUint32(b, f.Count)
	return appendStr16(b, f.Data)
}

// Parse decodes a chunk.
func (f *FileChunk) Parse(b []byte) error {
	d := dec{b: b}
	f.FileID, f.Name = d.fixed(MsgIDLen), d.str16()
	f.Size, f.Index, f.Count = d.u64(), d.u32(), d.u32()
	f.Data = d.bytes16(FileChunkData)
	if d.err == nil && (f.Count == 0 || f.Index >= f.Count) {
		d.err = fmt.Errorf("%w: chunk %d of %d", ErrMalformed, f.Index, f.Count)
	}
	return d.done()
}
