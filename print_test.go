package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"securefastchat/client"
)

// recv shows what the user sent from another of their devices as theirs,
// with its receiver or its group.
func TestPrintMine(t *testing.T) {
	var b bytes.Buffer
	printMessage(&b, &client.Message{From: "alice", To: "bob", Text: "from the laptop", ServerTime: time.Now(), Mine: true})
	if !strings.Contains(b.String(), "] you, to bob from another device: from the laptop") {
		t.Fatalf("printed %q", b.String())
	}
	b.Reset()
	printMessage(&b, &client.Message{From: "alice", To: "alice", Group: "team", Text: "from the laptop", ServerTime: time.Now(), Mine: true})
	if !strings.Contains(b.String(), "] you, in team from another device: from the laptop") {
		t.Fatalf("printed %q", b.String())
	}
}
