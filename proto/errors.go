package proto

import "errors"

// Sentinel errors. Callers test them with errors.Is.
var (
	// ErrFrameTooLarge: a frame length above the limit in force.
	ErrFrameTooLarge = errors.New("proto: frame too large")
	// ErrFrameTooShort: a frame shorter than its type allows.
	ErrFrameTooShort = errors.New("proto: frame too short")
	// ErrBadHello: a handshake message that does not parse.
	ErrBadHello = errors.New("proto: malformed hello")
	// ErrUnsupportedVersion: the peers share no protocol version.
	ErrUnsupportedVersion = errors.New("proto: unsupported version")
	// ErrBadKey: an all-zero, low-order or malformed public key.
	ErrBadKey = errors.New("proto: invalid public key")
	// ErrHandshakeFailed: key confirmation failed (wrong server key,
	// tampering, a man in the middle or a downgrade).
	ErrHandshakeFailed = errors.New("proto: handshake failed")
	// ErrDecrypt: a sealed frame did not open (forged, replayed,
	// reordered, reflected or corrupt). The connection must close.
	ErrDecrypt = errors.New("proto: frame failed to open")
	// ErrRekeyNeeded: the send counter reached its limit; the connection
	// must close and reconnect with a fresh handshake.
	ErrRekeyNeeded = errors.New("proto: nonce counter exhausted, reconnect required")
	// ErrMalformed: a message whose fields do not parse.
	ErrMalformed = errors.New("proto: malformed message")
	// ErrTooLarge: a message body above its limit.
	ErrTooLarge = errors.New("proto: message too large")
	// ErrUnknownType: a message type this version does not know.
	ErrUnknownType = errors.New("proto: unknown message type")
)
