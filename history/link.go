package history

import (
	"path/filepath"
	"time"

	"securefastchat/proto"
)

// Copying a history to a new device of the account, through the link
// (proto linkhistory.go). What the existing device was still to send
// (sending, or held for a key change) stays its own to send, and is not
// copied; a file's content stays where it was received or sent from, so
// the new device shows its name, saying so.

// ToLink returns the entries to copy, oldest first, as history frames
// carry them.
func ToLink(entries []*Entry) []proto.LinkHistoryEntry {
	out := make([]proto.LinkHistoryEntry, 0, len(entries))
	for _, e := range entries {
		if e.Mine && (e.Status == Sending || e.Status == Held) {
			continue
		}
		l := proto.LinkHistoryEntry{Conv: []byte(e.Conv), ID: e.ID, From: []byte(e.From), Time: e.Time.UnixMilli(),
			Status: uint8(e.Status), Size: uint64(max(e.Size, 0)), Text: []byte(e.Text), Error: []byte(e.Error)}
		for _, r := range e.ReadBy {
			l.ReadBy = append(l.ReadBy, []byte(r))
		}
		if len(l.ReadBy) > 255 {
			l.ReadBy = l.ReadBy[:255]
		}
		if len(l.Error) > 255 {
			l.Error = l.Error[:255]
		}
		for _, f := range []struct {
			on   bool
			flag uint8
		}{{e.Mine, proto.HistoryMine}, {e.File != "", proto.HistoryFile}, {e.Plain, proto.HistoryPlain},
			{e.Notice, proto.HistoryNotice}, {e.Event, proto.HistoryEvent}, {e.Before, proto.HistoryBefore}, {e.Unread, proto.HistoryUnread}} {
			if f.on {
				l.Flags |= f.flag
			}
		}
		if e.File != "" && e.Text == "" {
			l.Text = []byte(filepath.Base(e.File))
		}
		out = append(out, l)
	}
	return out
}

// LinkEntries returns the whole history as a link copies it (ToLink):
// the source of client.LinkOptions.History. Records that do not open are
// left out.
func (h *History) LinkEntries() ([]proto.LinkHistoryEntry, error) {
	all, _, err := h.All()
	return ToLink(all), err
}

// FromLink returns the entries a link copied, to Add to the new device's
// history. A sent message that was still to go on the other device (which
// ToLink does not copy) is marked failed here, so this device never
// sends it.
func FromLink(copied []proto.LinkHistoryEntry) []*Entry {
	out := make([]*Entry, 0, len(copied))
	for i := range copied {
		l := &copied[i]
		e := &Entry{Conv: string(l.Conv), ID: l.ID, From: string(l.From), Text: string(l.Text), Time: time.UnixMilli(l.Time),
			Status: Status(l.Status), Error: string(l.Error),
			Mine: l.Flags&proto.HistoryMine != 0, Plain: l.Flags&proto.HistoryPlain != 0, Notice: l.Flags&proto.HistoryNotice != 0,
			Event: l.Flags&proto.HistoryEvent != 0, Before: l.Flags&proto.HistoryBefore != 0, Unread: l.Flags&proto.HistoryUnread != 0}
		for _, r := range l.ReadBy {
			e.ReadBy = append(e.ReadBy, string(r))
		}
		switch {
		case !e.Mine:
			e.Status = Received
		case e.Status == Received || e.Status == Sending || e.Status == Held || e.Status > Held:
			e.Status, e.Error = Failed, "copied from another device before it was sent: it is that device's to send"
		}
		if l.Flags&proto.HistoryFile != 0 {
			e.Text = "[file] " + e.Text + " (on the device this history was copied from)"
		}
		out = append(out, e)
	}
	return out
}
