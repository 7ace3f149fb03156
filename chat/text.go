package chat

import (
	"strings"
	"unicode"

	"rsc.io/qr"
)

// clean makes text from other users safe to print on a terminal: no
// escape sequences or other control characters (a newline stays, a tab is
// a space), no bidirectional overrides that reorder what is shown, and
// valid UTF-8.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteRune(r)
		case r == '\t':
			b.WriteString("    ")
		case unicode.IsControl(r):
			b.WriteRune('\uFFFD')
		case r >= 0x202A && r <= 0x202E, r >= 0x2066 && r <= 0x2069, r == 0x200E, r == 0x200F, r == 0x061C:
			// bidirectional controls: dropped
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// qrLines draws the digits of a safety number as a QR code in half-block
// characters, for a phone to scan off the screen (light modules are
// drawn, as on a terminal with a dark background).
func qrLines(number string) []string {
	code, err := qr.Encode(strings.ReplaceAll(number, " ", ""), qr.L)
	if err != nil {
		return nil
	}
	const quiet = 2
	n := code.Size + 2*quiet
	dark := func(x, y int) bool { return code.Black(x-quiet, y-quiet) }
	var lines []string
	for y := 0; y < n; y += 2 {
		var b strings.Builder
		b.WriteString("  ")
		for x := 0; x < n; x++ {
			top, bottom := !dark(x, y), y+1 < n && !dark(x, y+1)
			if y+1 >= n {
				bottom = false
			}
			switch {
			case top && bottom:
				b.WriteRune('█')
			case top:
				b.WriteRune('▀')
			case bottom:
				b.WriteRune('▄')
			default:
				b.WriteRune(' ')
			}
		}
		lines = append(lines, b.String())
	}
	return lines
}
