package chat

import (
	"testing"
	"time"

	"securefastchat/client"
)

// What the user sent from another of their devices goes in the
// conversation with its receiver, as their own and read; what others send
// goes in the conversation with them, unread.
func TestEntryOfMine(t *testing.T) {
	at := time.Unix(1_800_000_000, 0)
	mine := entryOf(&client.Message{From: "alice", To: "bob", Text: "sent from the laptop", ServerTime: at, Mine: true})
	if mine.Conv != "@bob" || !mine.Mine || mine.Unread || mine.From != "alice" {
		t.Fatalf("a message sent from another device: %+v", mine)
	}
	theirs := entryOf(&client.Message{From: "bob", To: "alice", Text: "hello", ServerTime: at})
	if theirs.Conv != "@bob" || theirs.Mine || !theirs.Unread {
		t.Fatalf("a message from bob: %+v", theirs)
	}
	// In a group: in the group's conversation either way.
	mine = entryOf(&client.Message{From: "alice", To: "alice", Group: "team", Text: "from the laptop", ServerTime: at, Mine: true})
	if mine.Conv != "#team" || !mine.Mine || mine.Unread {
		t.Fatalf("a group message sent from another device: %+v", mine)
	}
	theirs = entryOf(&client.Message{From: "bob", To: "alice", Group: "team", Text: "hello team", ServerTime: at})
	if theirs.Conv != "#team" || theirs.Mine || !theirs.Unread {
		t.Fatalf("a group message from bob: %+v", theirs)
	}
}
