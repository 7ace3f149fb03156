package proto

import (
	"crypto/sha256"
	"encoding/binary"

	"golang.org/x/crypto/nacl/secretbox"
)

// Direction bytes that open every transport nonce.
const (
	dirClientToServer = 'C'
	dirServerToClient = 'S'
)

const (
	// RekeyAfterFrames is the soft limit: past it a sender refuses to seal
	// and the connection must be replaced by a fresh handshake.
	RekeyAfterFrames = 1 << 32
	// maxCounter is reserved and never used, so the counter cannot wrap.
	maxCounter = ^uint64(0)
)

// halfConn is one direction of the transport: a key, an implicit counter
// and a sticky first error.
type halfConn struct {
	key   [32]byte
	dir   byte
	n     uint64
	limit uint64
	err   error
}

func newHalfConn(key []byte, dir byte, start uint64) halfConn {
	h := halfConn{dir: dir, n: start, limit: RekeyAfterFrames}
	copy(h.key[:], key)
	return h
}

func (h *halfConn) nonce() *[24]byte {
	var n [24]byte
	n[0] = h.dir
	binary.BigEndian.PutUint64(n[16:], h.n)
	return &n
}

// seal appends the length-prefixed sealed frame of plaintext to dst.
func (h *halfConn) seal(dst, plaintext []byte) ([]byte, error) {
	if h.err != nil {
		return dst, h.err
	}
	if h.n >= h.limit || h.n >= maxCounter-1 {
		h.err = ErrRekeyNeeded
		return dst, h.err
	}
	if len(plaintext)+SealOverhead > MaxFrameLen {
		return dst, ErrFrameTooLarge
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(plaintext)+SealOverhead))
	dst = secretbox.Seal(dst, plaintext, h.nonce(), &h.key)
	h.n++
	return dst, nil
}

// open decrypts a sealed frame payload, appending the plaintext to dst
// (which must not overlap payload). A failure is sticky and does not
// advance the counter.
func (h *halfConn) open(dst, payload []byte) ([]byte, error) {
	if h.err != nil {
		return nil, h.err
	}
	if len(payload) < SealOverhead {
		h.err = ErrDecrypt
		return nil, h.err
	}
	if h.n >= maxCounter-1 {
		h.err = ErrRekeyNeeded
		return nil, h.err
	}
	out, ok := secretbox.Open(dst, payload, h.nonce(), &h.key)
	if !ok {
		h.err = ErrDecrypt
		return nil, h.err
	}
	h.n++
	return out, nil
}

// Session is the transport state of one connection after the handshake:
// one key and counter per direction. Seal and Open may be used by different
// goroutines at once; each alone is not safe for concurrent use.
type Session struct {
	// Version is the protocol version both sides agreed on.
	Version uint8
	binding [32]byte
	send    halfConn
	recv    halfConn
}

// Binding is a value unique to this connection that both sides know and
// nobody else can make use of: SHA-256 of a label and the handshake
// transcript. A signature over it (a device's login) cannot be replayed on
// another connection.
func (s *Session) Binding() [32]byte { return s.binding }

func bindingOf(transcript []byte) [32]byte {
	return sha256.Sum256(append([]byte(bindingLabel), transcript...))
}

// bindingLabel separates the binding from every other use of the
// transcript.
const bindingLabel = "securefastchat v3 channel binding"

// Seal appends the frame (length prefix included) carrying plaintext to dst.
func (s *Session) Seal(dst, plaintext []byte) ([]byte, error) { return s.send.seal(dst, plaintext) }

// Open decrypts a frame payload and appends the plaintext to dst, which
// must not overlap payload. Any error is final: the caller must close the
// connection.
func (s *Session) Open(dst, payload []byte) ([]byte, error) { return s.recv.open(dst, payload) }

// SendErr returns the sticky send error, if any.
func (s *Session) SendErr() error { return s.send.err }

// SentFrames is the number of frames sealed so far (counter included).
func (s *Session) SentFrames() uint64 { return s.send.n }

// setCounters sets both counters and lifts the soft limit; tests use it
// to check that the counter never wraps.
func (s *Session) setCounters(send, recv uint64) {
	s.send.n, s.recv.n = send, recv
	s.send.limit = maxCounter
}
