package termtext

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"hello":                      "hello",
		"a\nb":                       "a\nb",
		"a\tb":                       "a    b",
		"\x1b]0;owned\x07title":      "\uFFFD]0;owned\uFFFDtitle",
		"\x1b[2J\x1b[Hclear":         "\uFFFD[2J\uFFFD[Hclear",
		"\x1b]52;c;ZXZpbA==\x07clip": "\uFFFD]52;c;ZXZpbA==\uFFFDclip",
		"\u009b31mred":               "\uFFFD31mred", // C1 CSI
		"abc\u202edcba":              "abcdcba",
		"x\u200fy\u200ez\u061c":      "xyz",
		"\u2066iso\u2069":            "iso",
		"bad\xffutf8":                "bad\uFFFDutf8",
		"\r\nfake line":              "\uFFFD\nfake line",
		"del\x7f":                    "del\uFFFD",
	} {
		if got := Clean(in); got != want {
			t.Errorf("Clean(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Line("one\ntwo"); got != "one two" {
		t.Errorf("Line: %q", got)
	}
}

func TestEscapeJSON(t *testing.T) {
	in := "csi\u009b[2J rtl\u202e esc\x1b bell\x07 é ok"
	b, err := json.Marshal(map[string]string{"text": in})
	if err != nil {
		t.Fatal(err)
	}
	out := EscapeJSON(b)
	for _, r := range string(out) {
		if Unsafe(r) {
			t.Fatalf("raw %U left in %s", r, out)
		}
	}
	if !strings.Contains(string(out), `\u009b`) || !strings.Contains(string(out), "é") {
		t.Fatalf("escaped: %s", out)
	}
	var back map[string]string
	if err := json.Unmarshal(out, &back); err != nil || back["text"] != in {
		t.Fatalf("round trip: %q %v", back["text"], err)
	}
}

// A link code (about 200 characters) fits a QR code, drawn two modules a
// line, each line as wide as the next.
func TestQR(t *testing.T) {
	lines := QR("securefastchat-link:" + strings.Repeat("A", 200))
	if len(lines) < 10 {
		t.Fatalf("%d lines", len(lines))
	}
	for _, l := range lines {
		if len([]rune(l)) != len([]rune(lines[0])) {
			t.Fatalf("uneven lines: %q", lines)
		}
	}
	if QR(strings.Repeat("x", 5000)) != nil {
		t.Fatal("text too long for a code drew one")
	}
}
