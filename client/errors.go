package client

import (
	"errors"
	"fmt"

	"securefastchat/proto"
)

// Sentinel errors. Callers test them with errors.Is; errors the server
// sent are *proto.RemoteError and match proto.ErrorCode values.
var (
	// ErrConnect: the server could not be reached.
	ErrConnect = errors.New("client: cannot connect to the server")
	// ErrConnectionLost: the connection broke.
	ErrConnectionLost = errors.New("client: connection lost")
	// ErrProtocol: the server sent something this client cannot read.
	ErrProtocol = errors.New("client: protocol error")
	// ErrClosed: the connection was closed by this side.
	ErrClosed = errors.New("client: connection closed")
	// ErrServerKeyChanged: the server presented a key other than the
	// pinned or expected one. See KeyChangedError.
	ErrServerKeyChanged = errors.New("client: SERVER KEY CHANGED")
	// ErrUnknownServer: the server is not pinned and pinning was refused.
	ErrUnknownServer = errors.New("client: unknown server key")
	// ErrBadIdentity: the identity file does not open with this password
	// or is damaged.
	ErrBadIdentity = errors.New("client: cannot open the identity key (wrong password or damaged file)")
	// ErrNoIdentity: no identity key for this user in the home directory.
	ErrNoIdentity = errors.New("client: no identity key for this user in the home directory")
	// ErrPeerKey: a peer's published keys are malformed or badly signed.
	ErrPeerKey = errors.New("client: the peer's keys do not verify")
	// ErrPeerKeysChanged: a receiver's keys changed since the message was
	// sealed. See KeysChangedError.
	ErrPeerKeysChanged = errors.New("client: the receiver's keys have changed")
	// ErrNeedPassword: the server refused the kept session and no
	// password is known to log in again.
	ErrNeedPassword = errors.New("client: the session is no longer valid; log in with the password")
	// ErrNotConnected: the client was loaded but neither Connect nor
	// Start was called.
	ErrNotConnected = errors.New("client: not connected")
	// ErrNotServer: the address answers, but not as a securefastchat
	// server.
	ErrNotServer = errors.New("client: not a securefastchat server")
	// ErrDamagedContacts: the file of contacts' pinned keys does not read.
	ErrDamagedContacts = errors.New("client: the contacts file is damaged")
	// ErrRejected: a received message failed its end-to-end checks.
	ErrRejected = errors.New("client: message rejected")
	// ErrTooManyPartials: a file was refused because too many unfinished
	// ones are coming in, from its sender or in all.
	ErrTooManyPartials = errors.New("client: refused a file")
	// ErrFileTooLarge: a file over the size limit.
	ErrFileTooLarge = errors.New("client: file too large")
)

// UnknownServerError reports a server met for the first time when pinning
// a new key was refused (Config.NoPinNew): nothing was sent to it and
// nothing pinned. Fingerprint is the key it presented; to trust it, pin it
// with PinServer and Config.ServerKey set to it.
type UnknownServerError struct {
	Addr        string
	Fingerprint string
}

func (e *UnknownServerError) Error() string {
	return fmt.Sprintf("%v: %s presents %s", ErrUnknownServer, e.Addr, e.Fingerprint)
}

func (e *UnknownServerError) Is(target error) bool { return target == ErrUnknownServer }

// KeyChangedError reports a server key that differs from the pinned (or
// expected) one. Nothing was sent to that server.
type KeyChangedError struct {
	Addr      string
	Pinned    string // the fingerprint pinned or expected
	Presented string // the fingerprint the server presented
	Expected  bool   // Pinned came from --server-key rather than the pin file
	// FirstContact: nothing was pinned for Addr; the key given did not
	// match on the first contact.
	FirstContact bool
}

func (e *KeyChangedError) Error() string {
	if e.FirstContact {
		return fmt.Sprintf("the server at %s presents the key %s, not the one given with --server-key (%s); nothing was sent and nothing was pinned. "+
			"Check the fingerprint with the server's operator ('securefastchat fingerprint' on the server)", e.Addr, e.Presented, e.Pinned)
	}
	what := "pinned"
	if e.Expected {
		what = "expected"
	}
	return fmt.Sprintf("SERVER KEY CHANGED for %s: %s %s, server presents %s; no credentials were sent. "+
		"If the operator really changed the key, check the new fingerprint with them and remove the old line from known_servers",
		e.Addr, what, e.Pinned, e.Presented)
}

// Is makes errors.Is(err, ErrServerKeyChanged) true.
func (e *KeyChangedError) Is(target error) bool { return target == ErrServerKeyChanged }

// KeyChangeHeldError: with Config.HoldOnKeyChange, a message to a user
// whose keys changed was not sealed, since the change is not accepted.
type KeyChangeHeldError struct {
	User     string
	Old, New string // fingerprints
}

// ErrKeyChangeHeld: a message to a user whose keys changed is held until
// the change is accepted. See KeyChangeHeldError.
var ErrKeyChangeHeld = errors.New("client: held: the receiver's keys changed")

func (e *KeyChangeHeldError) Error() string {
	return fmt.Sprintf("%s's keys have CHANGED (were %s, now %s): nothing was sent. They may have reinstalled, or someone may be intercepting your messages: compare safety numbers with them out of band, then send again with --accept-key-change (or /accept %s in the chat)", e.User, e.Old, e.New, e.User)
}

// Is makes errors.Is(err, ErrKeyChangeHeld) true.
func (e *KeyChangeHeldError) Is(target error) bool { return target == ErrKeyChangeHeld }

// KeysChangedError: a message was not sent because the receiver's keys
// are not the ones it was sealed for. The new keys are pinned (and
// EventKeyChange was posted); prepare the message again to send it.
type KeysChangedError struct {
	User        string
	Fingerprint string // of the new keys
}

func (e *KeysChangedError) Error() string {
	return fmt.Sprintf("client: %s's keys have changed (now %s); nothing was sent: verify the new keys with them, then send again", e.User, e.Fingerprint)
}

// Is makes errors.Is(err, ErrPeerKeysChanged) true.
func (e *KeysChangedError) Is(target error) bool { return target == ErrPeerKeysChanged }

// ClosedError: the server closed the connection with a reason.
type ClosedError struct{ Reason uint8 }

func (e *ClosedError) Error() string {
	switch e.Reason {
	case proto.CloseReplaced:
		return "client: closed by the server: logged in elsewhere"
	case proto.CloseShutdown:
		return "client: closed by the server: shutting down"
	case proto.CloseSlowConsume:
		return "client: closed by the server: too slow reading"
	case proto.CloseRevoked:
		return "client: closed by the server: an admin revoked this session or disabled the account; log in again"
	case proto.CloseLoginAgain:
		return "client: closed by the server: the account's password changed; logging in again"
	case proto.CloseUpgrade:
		return "client: closed by the server: a message waits that needs a newer securefastchat; upgrade this program"
	}
	return fmt.Sprintf("client: closed by the server (reason %d)", e.Reason)
}

// Unwrap makes errors.Is(err, ErrConnectionLost) true.
func (e *ClosedError) Unwrap() error { return ErrConnectionLost }
