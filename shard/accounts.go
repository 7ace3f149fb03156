package shard

import (
	"context"
	"crypto/ed25519"
	"time"

	"securefastchat/proto"
	"securefastchat/store"
)

// Accounts is what the shards need of the account service (sign-ups,
// logins, sessions and key lookups, each with its limits). The server
// assembles it from internal/account; the shards know only this.
type Accounts interface {
	Signup(ctx context.Context, addr string, user, password []byte, keys *proto.Keys, invite []byte, checked bool) (*Session, error)
	Login(ctx context.Context, addr string, user, password []byte) (*Session, error)
	Resume(addr string, user, token []byte) (*Session, error)
	// Logout revokes a session token.
	Logout(token []byte) error
	// Available reports whether a name may be signed up (see CheckUsername).
	Available(addr string, user []byte) (bool, error)
	// Keys returns another user's account for requester, charging its
	// lookup budget unless free.
	Keys(requester string, user []byte, free bool) (*store.User, error)
	// FirstContact charges requester for a message to someone it has no
	// relation with, before the name is looked at.
	FirstContact(requester string) error
	// DeviceChain returns user's canonical name and device statements
	// from seq from on (a reply's worth, and whether more follow),
	// charging requester's lookup budget unless free.
	DeviceChain(requester string, user []byte, from uint32, free bool) (string, [][]byte, bool, error)
	// AppendDevice appends a signed statement to requester's own device
	// chain, once it follows the chain and the account's master key
	// signed it, and returns its seq.
	AppendDevice(requester string, statement []byte) (uint32, error)
	// LoginDevice logs a device of user in: the device must be in the
	// account's device list and verify must accept its sign key.
	LoginDevice(addr string, user []byte, deviceID uint64, verify func(signKey ed25519.PublicKey) bool) (*Session, error)
	// Recover starts an account again from a new first device (all its
	// devices lost) with its password: new keys, a new device list, no
	// sessions or inboxes of the old devices; the new device's session.
	Recover(ctx context.Context, addr string, user, password []byte, keys *proto.Keys, statement []byte) (*Session, error)
	// ChangePassword replaces the password of user (canonical, logged
	// in on the session of token) with next, given the current one, old,
	// and revokes the user's other sessions.
	ChangePassword(ctx context.Context, addr, user string, token, old, next []byte) error
	// Devices returns the devices a message to a canonical name goes to,
	// or nil if there is no such account.
	Devices(canon string) (*DeviceSet, error)
	// OwnDevicesSeen returns when each device of user's own list last
	// logged in.
	OwnDevicesSeen(user string) ([]proto.DeviceSeen, error)
}

// DeviceSet is an account's devices, as its device list says (an account
// without one has its first device only): all of them, which a message
// sealed for devices must be sealed for, and those a message goes to
// (less the silent ones); and the key record senders seal for.
type DeviceSet struct {
	Key uint64   // proto.KeyRecordID of the account's published keys
	All []uint64 // the devices on the list, in its order
	IDs []uint64 // the devices sent to, in the list's order
}

// Session is the outcome of a sign-up, login or resume.
type Session struct {
	User    string // canonical
	Display string
	Token   []byte // nil for a resume: the presented token stays valid
	Expires time.Time
	Device  uint64 // the device logged in (a password login's is the first device)
}
