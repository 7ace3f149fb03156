package proto

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/nacl/secretbox"
)

// Handshake layout. See docs/PROTOCOL.md for the byte-by-byte description.
//
//	ClientHello = magic(4) | ver_min(1) | ver_max(1) | flags(1) | e_c(32) | zero pad to 128
//	              [ | es_tag(16) unless FlagFirstContact ]
//	ServerHello = version(1) | flags(1) | e_s(32) [ | S_pub(32) if FlagStaticIncluded ] | confirm(16)
const (
	clientHelloPlainLen = 128
	esTagLen            = secretbox.Overhead
	// ClientHelloLen is the length of a ClientHello that names a known server key.
	ClientHelloLen = clientHelloPlainLen + esTagLen
	// ClientHelloFirstContactLen is the length of a first-contact ClientHello.
	ClientHelloFirstContactLen = clientHelloPlainLen
	serverHelloBaseLen         = 2 + KeyLen
	confirmLen                 = secretbox.Overhead

	// FlagFirstContact (ClientHello): the client does not know the server
	// key yet and asks for it; the es tag is omitted.
	FlagFirstContact = 0x01
	// FlagStaticIncluded (ServerHello): S_pub follows e_s.
	FlagStaticIncluded = 0x01
)

// Domain-separation labels.
const (
	protocolName = "securefastchat v1"
	esLabel      = "securefastchat v1 client hello"
	kdfInfo      = "securefastchat v1 transport"
)

// VersionErrorReply is the plaintext frame payload a server sends when the
// client hello is not one it can answer. It is unauthenticated, so a client
// must never fall back to a weaker version because of it.
const VersionErrorReply = "ERR unsupported_version"

// ClientHello is the first message of the handshake.
type ClientHello struct {
	MinVersion, MaxVersion uint8
	Flags                  uint8
	Ephemeral              [KeyLen]byte
	ESTag                  [esTagLen]byte // absent when Flags&FlagFirstContact
}

// Marshal returns the wire form.
func (h *ClientHello) Marshal() []byte {
	b := make([]byte, clientHelloPlainLen, ClientHelloLen)
	copy(b, Magic)
	b[4], b[5], b[6] = h.MinVersion, h.MaxVersion, h.Flags
	copy(b[7:], h.Ephemeral[:])
	if h.Flags&FlagFirstContact == 0 {
		b = append(b, h.ESTag[:]...)
	}
	return b
}

// ParseClientHello parses the wire form. It checks the magic, the length,
// the padding and the flags; it does not check versions or keys.
func ParseClientHello(b []byte) (ClientHello, error) {
	var h ClientHello
	if len(b) < clientHelloPlainLen {
		return h, fmt.Errorf("%w: client hello of %d bytes", ErrBadHello, len(b))
	}
	if string(b[:4]) != Magic {
		return h, fmt.Errorf("%w: bad magic", ErrUnsupportedVersion)
	}
	h.MinVersion, h.MaxVersion, h.Flags = b[4], b[5], b[6]
	if h.Flags&^FlagFirstContact != 0 {
		return h, fmt.Errorf("%w: unknown flags %#x", ErrBadHello, h.Flags)
	}
	want := ClientHelloLen
	if h.Flags&FlagFirstContact != 0 {
		want = ClientHelloFirstContactLen
	}
	if len(b) != want {
		return h, fmt.Errorf("%w: client hello of %d bytes, want %d", ErrBadHello, len(b), want)
	}
	copy(h.Ephemeral[:], b[7:7+KeyLen])
	for _, c := range b[7+KeyLen : clientHelloPlainLen] {
		if c != 0 {
			return h, fmt.Errorf("%w: non-zero padding", ErrBadHello)
		}
	}
	if want == ClientHelloLen {
		copy(h.ESTag[:], b[clientHelloPlainLen:])
	}
	return h, nil
}

// ServerHello is the server's reply.
type ServerHello struct {
	Version   uint8
	Flags     uint8
	Ephemeral [KeyLen]byte
	Static    [KeyLen]byte // present when Flags&FlagStaticIncluded
	Confirm   [confirmLen]byte
}

func (h *ServerHello) plainLen() int {
	if h.Flags&FlagStaticIncluded != 0 {
		return serverHelloBaseLen + KeyLen
	}
	return serverHelloBaseLen
}

// Marshal returns the wire form.
func (h *ServerHello) Marshal() []byte {
	b := make([]byte, 0, serverHelloBaseLen+KeyLen+confirmLen)
	b = append(b, h.Version, h.Flags)
	b = append(b, h.Ephemeral[:]...)
	if h.Flags&FlagStaticIncluded != 0 {
		b = append(b, h.Static[:]...)
	}
	return append(b, h.Confirm[:]...)
}

// ParseServerHello parses the wire form. A VersionErrorReply gives
// ErrUnsupportedVersion.
func ParseServerHello(b []byte) (ServerHello, error) {
	var h ServerHello
	if bytes.HasPrefix(b, []byte("ERR ")) {
		return h, fmt.Errorf("%w: the server answered %q", ErrUnsupportedVersion, b)
	}
	if len(b) < 2 {
		return h, fmt.Errorf("%w: server hello of %d bytes", ErrBadHello, len(b))
	}
	h.Version, h.Flags = b[0], b[1]
	if h.Flags&^FlagStaticIncluded != 0 {
		return h, fmt.Errorf("%w: unknown flags %#x", ErrBadHello, h.Flags)
	}
	if len(b) != h.plainLen()+confirmLen {
		return h, fmt.Errorf("%w: server hello of %d bytes", ErrBadHello, len(b))
	}
	copy(h.Ephemeral[:], b[2:])
	if h.Flags&FlagStaticIncluded != 0 {
		copy(h.Static[:], b[serverHelloBaseLen:])
	}
	copy(h.Confirm[:], b[h.plainLen():])
	return h, nil
}

// transcriptHash binds the protocol name, the server key and both hellos
// (versions included) into the key schedule.
func transcriptHash(serverPub []byte, clientHello, serverHelloPlain []byte) []byte {
	h := sha256.New()
	h.Write([]byte(protocolName))
	h.Write(serverPub)
	h.Write(clientHello)
	h.Write(serverHelloPlain)
	return h.Sum(nil)
}

func deriveKeys(dhES, dhEE, transcript []byte) (c2s, s2c []byte, err error) {
	ikm := make([]byte, 0, 2*KeyLen)
	ikm = append(append(ikm, dhES...), dhEE...)
	k, err := hkdf.Key(sha256.New, ikm, transcript, kdfInfo, 2*KeyLen)
	clear(ikm)
	if err != nil {
		return nil, nil, err
	}
	return k[:KeyLen], k[KeyLen:], nil
}

// esTag proves the client knows the server key; it binds the hello.
func esTag(dhES, helloPlain []byte) [esTagLen]byte {
	h := sha256.New()
	h.Write([]byte(esLabel))
	h.Write(dhES)
	h.Write(helloPlain)
	var key [32]byte
	copy(key[:], h.Sum(nil))
	var nonce [24]byte
	var tag [esTagLen]byte
	copy(tag[:], secretbox.Seal(nil, nil, &nonce, &key))
	return tag
}

func confirmTag(s2c []byte, plain []byte) [confirmLen]byte {
	h := newHalfConn(s2c, dirServerToClient, 0)
	sealed, _ := h.seal(nil, plain)
	var tag [confirmLen]byte
	copy(tag[:], sealed[FrameHeaderLen:])
	return tag
}

// ClientConfig configures the client side of the handshake.
type ClientConfig struct {
	// ServerKey is the pinned server key. If nil, the hello asks for the
	// key (first contact) and Finish returns it for the caller to check.
	ServerKey *PublicKey
	// Rand is the source of the ephemeral key. If nil, crypto/rand is used.
	Rand io.Reader
	// MinVersion and MaxVersion bound the versions offered. If zero,
	// MinVersion and MaxVersion of this package are used.
	MinVersion, MaxVersion uint8
}

// ClientHandshake is the client side of one handshake.
type ClientHandshake struct {
	cfg   ClientConfig
	eph   KeyPair
	hello []byte
}

// defaults fills in the randomness and the version range.
func defaults(r *io.Reader, minV, maxV *uint8) {
	if *r == nil {
		*r = rand.Reader
	}
	if *minV == 0 {
		*minV = MinVersion
	}
	if *maxV == 0 {
		*maxV = MaxVersion
	}
}

// NewClientHandshake makes the ephemeral key and the ClientHello.
func NewClientHandshake(cfg ClientConfig) (*ClientHandshake, error) {
	defaults(&cfg.Rand, &cfg.MinVersion, &cfg.MaxVersion)
	eph, err := NewKeyPair(cfg.Rand)
	if err != nil {
		return nil, err
	}
	h := ClientHello{MinVersion: cfg.MinVersion, MaxVersion: cfg.MaxVersion, Ephemeral: eph.Public.k}
	if cfg.ServerKey == nil {
		h.Flags = FlagFirstContact
	}
	hello := h.Marshal()
	if cfg.ServerKey != nil {
		dhES, err := eph.Private.Shared(*cfg.ServerKey)
		if err != nil {
			return nil, err
		}
		tag := esTag(dhES, hello[:clientHelloPlainLen])
		clear(dhES)
		copy(hello[clientHelloPlainLen:], tag[:])
	}
	return &ClientHandshake{cfg: cfg, eph: eph, hello: hello}, nil
}

// Hello returns the ClientHello frame payload.
func (c *ClientHandshake) Hello() []byte { return c.hello }

// Finish checks the ServerHello and returns the transport session and the
// server's static key. With a pinned key, the returned key is that key; on
// first contact it is the key the server sent, which the caller must check
// or pin before sending anything.
func (c *ClientHandshake) Finish(serverHello []byte) (*Session, PublicKey, error) {
	defer c.eph.Private.Wipe()
	sh, err := ParseServerHello(serverHello)
	if err != nil {
		return nil, PublicKey{}, err
	}
	if sh.Version < c.cfg.MinVersion || sh.Version > c.cfg.MaxVersion {
		return nil, PublicKey{}, fmt.Errorf("%w: server chose version %d outside %d..%d", ErrUnsupportedVersion, sh.Version, c.cfg.MinVersion, c.cfg.MaxVersion)
	}
	var server PublicKey
	switch {
	case c.cfg.ServerKey != nil && sh.Flags&FlagStaticIncluded != 0:
		return nil, PublicKey{}, fmt.Errorf("%w: server sent its key unasked", ErrBadHello)
	case c.cfg.ServerKey == nil && sh.Flags&FlagStaticIncluded == 0:
		return nil, PublicKey{}, fmt.Errorf("%w: server did not send its key", ErrBadHello)
	case c.cfg.ServerKey != nil:
		server = *c.cfg.ServerKey
	default:
		if server, err = ParsePublicKey(sh.Static[:]); err != nil {
			return nil, PublicKey{}, err
		}
	}
	dhEE, err := c.eph.Private.dh(sh.Ephemeral[:])
	if err != nil {
		return nil, PublicKey{}, err
	}
	dhES, err := c.eph.Private.Shared(server)
	if err != nil {
		return nil, PublicKey{}, err
	}
	th := transcriptHash(server.k[:], c.hello, serverHello[:sh.plainLen()])
	c2s, s2c, err := deriveKeys(dhES, dhEE, th)
	clear(dhES)
	clear(dhEE)
	if err != nil {
		return nil, PublicKey{}, err
	}
	want := confirmTag(s2c, nil)
	if subtle.ConstantTimeCompare(want[:], sh.Confirm[:]) != 1 {
		return nil, PublicKey{}, ErrHandshakeFailed
	}
	s := &Session{
		Version: sh.Version,
		binding: bindingOf(th),
		send:    newHalfConn(c2s, dirClientToServer, 0),
		recv:    newHalfConn(s2c, dirServerToClient, 1),
	}
	clear(c2s)
	clear(s2c)
	return s, server, nil
}

// ServerConfig configures the server side of the handshake.
type ServerConfig struct {
	// Static is the server's long-term key pair.
	Static *KeyPair
	// Rand is the source of the ephemeral key. If nil, crypto/rand is used.
	Rand io.Reader
	// MinVersion and MaxVersion bound the versions accepted. If zero,
	// MinVersion and MaxVersion of this package are used.
	MinVersion, MaxVersion uint8
}

// ServerHandshake answers one ClientHello. On success it returns the
// ServerHello payload to send and the transport session. On a version
// mismatch it returns VersionErrorReply to send before closing, with
// ErrUnsupportedVersion. On any other error nothing is sent.
//
// The cheap checks (length, magic, versions) run before any key agreement.
func ServerHandshake(cfg ServerConfig, clientHello []byte) ([]byte, *Session, error) {
	defaults(&cfg.Rand, &cfg.MinVersion, &cfg.MaxVersion)
	ch, err := ParseClientHello(clientHello)
	if err != nil {
		if errors.Is(err, ErrUnsupportedVersion) {
			return []byte(VersionErrorReply), nil, err
		}
		return nil, nil, err
	}
	ver := min(ch.MaxVersion, cfg.MaxVersion)
	if ch.MinVersion > ch.MaxVersion || ver < ch.MinVersion || ver < cfg.MinVersion {
		return []byte(VersionErrorReply), nil, fmt.Errorf("%w: client offers %d..%d, server %d..%d", ErrUnsupportedVersion, ch.MinVersion, ch.MaxVersion, cfg.MinVersion, cfg.MaxVersion)
	}
	dhES, err := cfg.Static.Private.dh(ch.Ephemeral[:])
	if err != nil {
		return nil, nil, err
	}
	defer clear(dhES)
	firstContact := ch.Flags&FlagFirstContact != 0
	if !firstContact {
		want := esTag(dhES, clientHello[:clientHelloPlainLen])
		if subtle.ConstantTimeCompare(want[:], ch.ESTag[:]) != 1 {
			return nil, nil, fmt.Errorf("%w: client does not hold this server's key", ErrHandshakeFailed)
		}
	}
	eph, err := NewKeyPair(cfg.Rand)
	if err != nil {
		return nil, nil, err
	}
	defer eph.Private.Wipe()
	dhEE, err := eph.Private.dh(ch.Ephemeral[:])
	if err != nil {
		return nil, nil, err
	}
	defer clear(dhEE)
	sh := ServerHello{Version: ver, Ephemeral: eph.Public.k}
	if firstContact {
		sh.Flags = FlagStaticIncluded
		sh.Static = cfg.Static.Public.k
	}
	plain := sh.Marshal()[:sh.plainLen()]
	th := transcriptHash(cfg.Static.Public.k[:], clientHello, plain)
	c2s, s2c, err := deriveKeys(dhES, dhEE, th)
	if err != nil {
		return nil, nil, err
	}
	sh.Confirm = confirmTag(s2c, nil)
	s := &Session{
		Version: ver,
		binding: bindingOf(th),
		send:    newHalfConn(s2c, dirServerToClient, 1),
		recv:    newHalfConn(c2s, dirClientToServer, 0),
	}
	clear(c2s)
	clear(s2c)
	return sh.Marshal(), s, nil
}
