package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"securefastchat/client"
)

// recv shows what the user sent from another of their devices as theirs,
// with its receiver.
func TestPrintMine(t *testing.T) {
	var b bytes.Buffer
	printMessage(&b, &client.Message{From: "alice", To: "bob", Text: "from the laptop", ServerTime: time.Now(), Mine: true})
	if !strings.Contains(b.String(), "] you, to bob from another device: from the laptop") {
		t.Fatalf("printed %q", b.String())
	}
}
