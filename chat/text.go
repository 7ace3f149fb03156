package chat

import (
	"strings"

	"rsc.io/qr"

	"securefastchat/termtext"
)

// clean makes text from other users safe to print on a terminal.
func clean(s string) string { return termtext.Clean(s) }

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
