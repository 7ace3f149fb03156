package store

import "errors"

// Sentinel errors. Callers test them with errors.Is.
var (
	// ErrNotFound: no record under that key.
	ErrNotFound = errors.New("store: not found")
	// ErrUserExists: a user with that canonical name exists.
	ErrUserExists = errors.New("store: user exists")
	// ErrLocked: another process holds the data file.
	ErrLocked = errors.New("store: database locked by another process")
	// ErrCorrupt: the file is not a readable store. It is left untouched.
	ErrCorrupt = errors.New("store: database file is corrupt or not a securefastchat store")
	// ErrQueueFull: the receiver's queue is at its count or byte limit.
	ErrQueueFull = errors.New("store: receiver's queue is full")
	// ErrClosed: the batcher has stopped.
	ErrClosed = errors.New("store: closed")
	// ErrUnavailable: a write failed (disk full, I/O error); nothing was
	// committed and the caller may retry.
	ErrUnavailable = errors.New("store: storage unavailable")
	// ErrInvalidInvite: the invite code is unknown, used or expired.
	ErrInvalidInvite = errors.New("store: invite code is unknown, used or expired")
)
