package proto

import "fmt"

// MaxUsernameLen is the longest user name.
const MaxUsernameLen = 32

// Password length limits, in bytes. Passwords are never truncated.
const (
	MinPasswordLen = 8
	MaxPasswordLen = 1024
)

// ErrInvalidUsername: a name that breaks the rule.
var ErrInvalidUsername = fmt.Errorf("proto: a user name is 1 to %d characters of a-z A-Z 0-9 _", MaxUsernameLen)

// ValidUsername reports whether b is 1 to 32 bytes of a-z A-Z 0-9 _.
// Anything else (other scripts, look-alikes, invalid UTF-8, NUL) is invalid.
func ValidUsername(b []byte) bool {
	if len(b) == 0 || len(b) > MaxUsernameLen {
		return false
	}
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// AppendCanonicalUsername appends the canonical (lower-case) form of a valid
// name to dst; it fails with ErrInvalidUsername. Names are compared and
// stored in this form only, so case variants are one name.
func AppendCanonicalUsername(dst, b []byte) ([]byte, error) {
	if !ValidUsername(b) {
		return dst, ErrInvalidUsername
	}
	for _, c := range b {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst, nil
}

// CanonicalUsername returns the canonical form of a valid name.
func CanonicalUsername(s string) (string, error) {
	b, err := AppendCanonicalUsername(make([]byte, 0, len(s)), []byte(s))
	return string(b), err
}
