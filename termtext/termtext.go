// Package termtext makes text from other users safe to show on a
// terminal or to use as a file name: no escape sequences or other control
// characters (C0, DEL and C1, whose U+009B some terminals take for CSI),
// no bidirectional controls that reorder what is shown, valid UTF-8. The
// chat, recv and the file receiver share it, so one filter decides what a
// stranger's bytes may do on the screen.
package termtext

import (
	"bytes"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Unsafe reports whether r may change a terminal's state or reorder what
// it shows: a control character or a bidirectional control.
func Unsafe(r rune) bool {
	switch {
	case unicode.IsControl(r): // C0, DEL, C1
		return true
	case r >= 0x202A && r <= 0x202E, r >= 0x2066 && r <= 0x2069, r == 0x200E, r == 0x200F, r == 0x061C:
		return true
	}
	return false
}

// Clean returns s safe to print: a newline stays, a tab becomes four
// spaces, other control characters become U+FFFD, bidirectional controls
// are dropped, and invalid UTF-8 becomes U+FFFD.
func Clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteRune(r)
		case r == '\t':
			b.WriteString("    ")
		case unicode.IsControl(r):
			b.WriteRune('\uFFFD')
		case Unsafe(r):
			// bidirectional controls: dropped
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Line is Clean for text shown on one line: a newline becomes a space.
func Line(s string) string {
	return strings.ReplaceAll(Clean(s), "\n", " ")
}

// EscapeJSON rewrites the unsafe characters that encoding/json leaves raw
// in its output (C1 controls and bidirectional controls; it escapes C0
// itself) as \uXXXX escapes, which JSON readers decode to the same
// string. b must be JSON as encoding/json writes it.
func EscapeJSON(b []byte) []byte {
	var out bytes.Buffer
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r >= 0x80 && Unsafe(r) {
			fmt.Fprintf(&out, `\u%04x`, r)
		} else {
			out.Write(b[i : i+n])
		}
		i += n
	}
	return out.Bytes()
}
