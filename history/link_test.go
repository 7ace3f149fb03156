package history

import (
	"strings"
	"testing"
	"time"

	"securefastchat/proto"
)

// TestLinkCopy: entries go through a link's frames and come back as they
// were, but for what must not be copied as it is: a message still to be
// sent stays the existing device's (not copied, and marked failed if one
// comes anyway, so the new device never sends it), and a file is shown by
// name, saying where it is.
func TestLinkCopy(t *testing.T) {
	at := time.UnixMilli(1_790_000_000_123)
	in := []*Entry{
		{Conv: "@bob", ID: [16]byte{1}, From: "bob", Text: "hello", Time: at, Unread: true},
		{Conv: "#team", ID: [16]byte{2}, From: "ann", Mine: true, Text: "hi all", Time: at, Status: Read, ReadBy: []string{"bob", "carol"}},
		{Conv: "@bob", ID: [16]byte{3}, From: "ann", Mine: true, Text: "not yet", Time: at, Status: Sending},
		{Conv: "@dave", ID: [16]byte{4}, From: "ann", Mine: true, Text: "held", Time: at, Status: Held},
		{Conv: "@bob", ID: [16]byte{5}, From: "bob", Text: "plans.pdf", File: "/home/ann/Downloads/plans.pdf", Size: 1234, Time: at},
		{Conv: "#team", ID: [16]byte{6}, From: "bob", Text: "bob added carol", Event: true, Time: at},
		{Conv: "!broadcast", ID: [16]byte{7}, From: "admin", Text: "maintenance", Plain: true, Time: at},
		{Conv: "@bob", ID: [16]byte{8}, From: "ann", Mine: true, Text: "refused", Status: Failed, Error: "the server refused it", Time: at},
	}
	frames, skipped := proto.PackLinkHistory(ToLink(in), uint32(len(in)))
	var got []proto.LinkHistoryEntry
	for _, f := range frames {
		var m proto.LinkHistory
		if err := m.Parse(f); err != nil {
			t.Fatal(err)
		}
		got = append(got, m.Entries...)
	}
	out := FromLink(got)
	if skipped != 0 || len(out) != 6 {
		t.Fatalf("%d entries came (%d skipped), want 6: the two still to send stay", len(out), skipped)
	}
	for _, e := range out {
		if e.ID == [16]byte{3} || e.ID == [16]byte{4} {
			t.Fatalf("%q was copied", e.Text)
		}
		if !e.Time.Equal(at) {
			t.Fatalf("%q: time %v", e.Text, e.Time)
		}
	}
	if e := out[0]; e.Text != "hello" || !e.Unread || e.Mine || e.Status != Received {
		t.Fatalf("a received message: %+v", e)
	}
	if e := out[1]; !e.Mine || e.Status != Read || strings.Join(e.ReadBy, ",") != "bob,carol" {
		t.Fatalf("a group message read by two: %+v", e)
	}
	if e := out[2]; e.File != "" || !strings.Contains(e.Text, "plans.pdf") || !strings.Contains(e.Text, "on the device this history was copied from") {
		t.Fatalf("a file: %+v", e)
	}
	if e := out[3]; !e.Event || out[4].Plain != true || out[5].Status != Failed || out[5].Error != "the server refused it" {
		t.Fatalf("an event, a broadcast, a failure: %+v %+v %+v", e, out[4], out[5])
	}

	// A message still to send that comes anyway is never this device's to
	// send.
	odd := ToLink([]*Entry{{Conv: "@bob", From: "ann", Mine: true, Text: "x", Time: at, Status: Read}})
	odd[0].Status = uint8(Sending)
	if e := FromLink(odd)[0]; e.Status != Failed || !strings.Contains(e.Error, "that device's to send") {
		t.Fatalf("a copied message still to send: %+v", e)
	}
}
