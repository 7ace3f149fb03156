package chat

import (
	"strings"

	"securefastchat/termtext"
)

// clean makes text from other users safe to print on a terminal.
func clean(s string) string { return termtext.Clean(s) }

// qrLines draws the digits of a safety number as a QR code, for a phone
// to scan off the screen.
func qrLines(number string) []string { return termtext.QR(strings.ReplaceAll(number, " ", "")) }
