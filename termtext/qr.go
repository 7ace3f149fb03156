package termtext

import (
	"strings"

	"rsc.io/qr"
)

// QR draws text as a QR code in half-block characters, two modules a
// line, for a phone to scan off a terminal (light modules are drawn, as
// on a terminal with a dark background); nil if it does not fit a code.
func QR(text string) []string {
	code, err := qr.Encode(text, qr.L)
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
