package proto

import "fmt"

// ErrorCode is the code of an Error message. An ErrorCode is itself an
// error, so callers can test a RemoteError with errors.Is(err, CodeX).
// The list is documented in docs/PROTOCOL.md; codes are never reused.
type ErrorCode uint16

// Error codes.
const (
	CodeBadRequest         ErrorCode = 1  // the request did not parse
	CodeUnauthenticated    ErrorCode = 2  // the request needs a login first
	CodeInvalidCredentials ErrorCode = 3  // unknown user, wrong password or disabled account (never told apart)
	CodeRateLimited        ErrorCode = 4  // too many attempts; retry later
	CodeInvalidUsername    ErrorCode = 5  // not 1 to 32 of a-z A-Z 0-9 _
	CodeUsernameTaken      ErrorCode = 6  // the name (compared without case) exists
	CodeInvalidPassword    ErrorCode = 7  // not 8 to 1024 bytes
	CodeInvalidKey         ErrorCode = 8  // a public key that is malformed, low order or badly signed
	CodeInvalidToken       ErrorCode = 9  // unknown, expired, revoked or another user's token
	CodeNoSuchRecipient    ErrorCode = 10 // no user by that name
	CodeTooLarge           ErrorCode = 11 // a body over the limit
	CodeRecipientOffline   ErrorCode = 12 // the receiver is not connected (retryable)
	CodeUnsupported        ErrorCode = 13 // a message type this server does not know
	CodeInternal           ErrorCode = 14 // a server fault; retryable
	CodeStorageUnavailable ErrorCode = 15 // the store refused the write; retryable
	CodeAlreadyLoggedIn    ErrorCode = 16 // login or signup on a connection that is logged in
	CodeNoSuchUser         ErrorCode = 17 // lookup of a user that does not exist
	CodeForbidden          ErrorCode = 18 // not allowed for this user
	CodeRecipientBusy      ErrorCode = 19 // reserved: busy receivers are now queued for
	CodeTooManyRecipients  ErrorCode = 20 // reserved for multi-recipient requests
	CodeServerShuttingDown ErrorCode = 21 // the server is stopping; reconnect later
	CodeUnsupportedFeature ErrorCode = 22 // a flag or kind this server does not accept
	CodeSignupClosed       ErrorCode = 23 // the server takes no new accounts
	CodeConnectionLimit    ErrorCode = 24 // too many connections
	CodeQueueFull          ErrorCode = 25 // the receiver's queue is at its limit; nothing queued was dropped
	CodeNoSuchGroup        ErrorCode = 26 // no such group, or the requester is not a member (never told apart)
	CodeRekeyNeeded        ErrorCode = 27 // the group's key epoch is behind its roster: fetch, rekey, resend
	CodeGroupTaken         ErrorCode = 28 // a group by that name exists
	CodeGroupFull          ErrorCode = 29 // the group is at MaxGroupMembers
	CodeStaleGroup         ErrorCode = 30 // the change was based on an old roster or epoch: fetch and retry
	CodeInvalidInvite      ErrorCode = 31 // the invite code is unknown, used or expired
	CodeShareFull          ErrorCode = 32 // the sender holds its share of the receiver's queue; nothing queued was dropped
	CodeGroupLimit         ErrorCode = 33 // the user is an admin of as many groups as one may be
	CodeStaleDevices       ErrorCode = 34 // the device chain moved on since the statement was made: fetch and sign again (version 3)
	CodeTooManyDevices     ErrorCode = 35 // the account has MaxDevices devices (version 3)
	CodeLinkUnknown        ErrorCode = 36 // no device offers a link on that channel: the code expired, was used, or is wrong (version 3)
)

var codeNames = map[ErrorCode]string{
	CodeBadRequest:         "bad_request",
	CodeUnauthenticated:    "unauthenticated",
	CodeInvalidCredentials: "invalid_credentials",
	CodeRateLimited:        "rate_limited",
	CodeInvalidUsername:    "invalid_username",
	CodeUsernameTaken:      "username_taken",
	CodeInvalidPassword:    "invalid_password",
	CodeInvalidKey:         "invalid_key",
	CodeInvalidToken:       "invalid_token",
	CodeNoSuchRecipient:    "no_such_recipient",
	CodeTooLarge:           "too_large",
	CodeRecipientOffline:   "recipient_offline",
	CodeUnsupported:        "unsupported",
	CodeInternal:           "internal",
	CodeStorageUnavailable: "storage_unavailable",
	CodeAlreadyLoggedIn:    "already_logged_in",
	CodeNoSuchUser:         "no_such_user",
	CodeForbidden:          "forbidden",
	CodeRecipientBusy:      "recipient_busy",
	CodeTooManyRecipients:  "too_many_recipients",
	CodeServerShuttingDown: "server_shutting_down",
	CodeUnsupportedFeature: "unsupported_feature",
	CodeSignupClosed:       "signup_closed",
	CodeConnectionLimit:    "connection_limit",
	CodeQueueFull:          "recipient_queue_full",
	CodeNoSuchGroup:        "no_such_group",
	CodeRekeyNeeded:        "rekey_needed",
	CodeGroupTaken:         "group_taken",
	CodeGroupFull:          "group_full",
	CodeStaleGroup:         "stale_group",
	CodeInvalidInvite:      "invalid_invite",
	CodeShareFull:          "sender_share_full",
	CodeGroupLimit:         "group_limit",
	CodeStaleDevices:       "stale_devices",
	CodeTooManyDevices:     "too_many_devices",
	CodeLinkUnknown:        "link_unknown",
}

// String returns the code's name, as in docs/PROTOCOL.md.
func (c ErrorCode) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("error_%d", uint16(c))
}

// Error makes an ErrorCode usable as an error and with errors.Is.
func (c ErrorCode) Error() string { return c.String() }

// RemoteError is an Error message received from the peer.
type RemoteError struct {
	Code    ErrorCode
	Message string
}

func (e *RemoteError) Error() string {
	if e.Message == "" {
		return e.Code.String()
	}
	return e.Code.String() + ": " + e.Message
}

// Unwrap lets errors.Is match the code.
func (e *RemoteError) Unwrap() error { return e.Code }
