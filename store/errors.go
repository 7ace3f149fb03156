package store

import (
	"errors"
	"fmt"
)

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
	// ErrShareFull: the sender has filled its share of the receiver's
	// queue. See ShareFullError.
	ErrShareFull = errors.New("store: sender's share of the receiver's queue is full")
	// ErrBlocked: the receiver blocks the sender; nothing was stored
	// (Put reports it as Result.Dropped, not as an error).
	ErrBlocked = errors.New("store: the receiver blocks the sender")
	// ErrNewer: the file was written by a newer securefastchat. It is left
	// untouched.
	ErrNewer = errors.New("store: the database was written by a newer securefastchat")
	// ErrClosed: the batcher has stopped.
	ErrClosed = errors.New("store: closed")
	// ErrUnavailable: a write failed (disk full, I/O error); nothing was
	// committed and the caller may retry.
	ErrUnavailable = errors.New("store: storage unavailable")
	// ErrInvalidInvite: the invite code is unknown, used or expired.
	ErrInvalidInvite = errors.New("store: invite code is unknown, used or expired")
)

// ShareFullError says how much of one receiver's queue one sender may
// hold: its share, as a contact (a quarter) or a stranger (a tenth).
type ShareFullError struct {
	Count   int64 // messages
	Bytes   int64
	Contact bool // the sender is the receiver's contact
}

func (e *ShareFullError) Error() string {
	return fmt.Sprintf("store: a sender may hold %d messages and %d bytes of this receiver's queue", e.Count, e.Bytes)
}

// Is makes errors.Is(err, ErrShareFull) true.
func (e *ShareFullError) Is(target error) bool { return target == ErrShareFull }
