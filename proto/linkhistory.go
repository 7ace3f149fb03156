package proto

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// History frames (link code version 5, flag LinkFlagHistory): the
// conversations the existing device kept, copied to the new one when the
// user asks for it. They follow the hold frames (and the manage frame),
// the last with more 0; total is how many entries the existing device
// had, so the new device can say how much of it came.
//
//	link history  = kind u8 (8) | more u8 | total u32 | count u16 | history entry x count
//	history entry = conv str8 | id 16 | from str8 | flags u8 | time i64 (unix ms)
//	                | status u8 | size u64 | text str16 | error str8
//	                | readers u8 | (user str8) x readers
//
// The entries are what the client shows, not messages: nothing in them is
// checked against a key, and the new device takes them because the link
// is the user's own (sealed end to end under the code's secret).

// History entry flags.
const (
	HistoryMine       uint8 = 1 << iota // sent by this account
	HistoryFile                         // a file: text is its name, size its size
	HistoryPlain                        // a broadcast, not end-to-end encrypted
	HistoryNotice                       // a line from the client itself
	HistoryEvent                        // a line of a group's timeline
	HistoryBefore                       // a group message from a member who left just after it
	HistoryUnread                       // received and not seen yet
	historyFlagsKnown = HistoryMine | HistoryFile | HistoryPlain | HistoryNotice | HistoryEvent | HistoryBefore | HistoryUnread
)

// LinkHistoryEntry is one line of a conversation in a history frame.
type LinkHistoryEntry struct {
	Conv   []byte // "@user", "#group" or "!broadcast"
	ID     [16]byte
	From   []byte
	Flags  uint8
	Time   int64 // unix milliseconds
	Status uint8 // where a sent message is (the client's own numbering, PROTOCOL.md §5.3)
	Size   uint64
	Text   []byte
	Error  []byte
	ReadBy [][]byte // at most 255
}

// LinkHistory is a history frame.
type LinkHistory struct {
	More    bool
	Total   uint32
	Entries []LinkHistoryEntry
}

const (
	linkHistoryHead = 1 + 1 + 4 + 2
	// maxLinkHistoryPlain is the most a history frame's plaintext takes,
	// so that sealed it fits a link frame.
	maxLinkHistoryPlain = MaxLinkData - chacha20poly1305.Overhead
)

// size is how many bytes e takes in a frame; ok is false when it cannot
// be carried (a field too long for its length prefix).
func (e *LinkHistoryEntry) size() (n int, ok bool) {
	if len(e.Conv) == 0 || len(e.Conv) > 255 || len(e.From) > 255 || len(e.Text) > 0xFFFF || len(e.Error) > 255 || len(e.ReadBy) > 255 {
		return 0, false
	}
	n = 1 + len(e.Conv) + 16 + 1 + len(e.From) + 1 + 8 + 1 + 8 + 2 + len(e.Text) + 1 + len(e.Error) + 1
	for _, r := range e.ReadBy {
		if len(r) > 255 {
			return 0, false
		}
		n += 1 + len(r)
	}
	return n, true
}

func (e *LinkHistoryEntry) append(b []byte) []byte {
	b = append(appendStr8(b, e.Conv), e.ID[:]...)
	b = append(appendStr8(b, e.From), e.Flags)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time))
	b = binary.BigEndian.AppendUint64(append(b, e.Status), e.Size)
	b = appendStr8(appendStr16(b, e.Text), e.Error)
	b = append(b, uint8(len(e.ReadBy)))
	for _, r := range e.ReadBy {
		b = appendStr8(b, r)
	}
	return b
}

// Append appends the frame's plaintext.
func (m *LinkHistory) Append(b []byte) []byte {
	b = append(b, LinkKindHistory, boolByte(m.More))
	b = binary.BigEndian.AppendUint32(b, m.Total)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Entries)))
	for i := range m.Entries {
		b = m.Entries[i].append(b)
	}
	return b
}

// Parse decodes a history frame's plaintext.
func (m *LinkHistory) Parse(b []byte) error {
	d := dec{b: b}
	if k := d.u8(); d.err == nil && k != LinkKindHistory {
		return fmt.Errorf("%w: link frame kind %d, want history", ErrMalformed, k)
	}
	m.More, m.Total = d.bool(), d.u32()
	n := int(d.u16())
	m.Entries = nil
	for i := 0; i < n && d.err == nil; i++ {
		var e LinkHistoryEntry
		e.Conv = d.str8()
		copy(e.ID[:], d.fixed(16))
		e.From, e.Flags = d.str8(), d.u8()
		e.Time = int64(d.u64())
		e.Status, e.Size = d.u8(), d.u64()
		e.Text, e.Error = d.str16(), d.str8()
		for r := int(d.u8()); r > 0 && d.err == nil; r-- {
			e.ReadBy = append(e.ReadBy, d.str8())
		}
		if d.err != nil {
			break
		}
		if len(e.Conv) == 0 || e.Flags&^historyFlagsKnown != 0 {
			return fmt.Errorf("%w: a history entry (conversation %q, flags %#x)", ErrMalformed, e.Conv, e.Flags)
		}
		m.Entries = append(m.Entries, e)
	}
	return d.done()
}

// PackLinkHistory packs entries, in their order, into the plaintexts of
// history frames, each within a link frame, the last with more 0 (one
// empty frame when there are none). An entry that cannot be carried (a
// field too long, or larger than a frame) is left out and counted in
// skipped.
func PackLinkHistory(entries []LinkHistoryEntry, total uint32) (frames [][]byte, skipped int) {
	var cur []LinkHistoryEntry
	size := linkHistoryHead
	flush := func(more bool) {
		m := LinkHistory{More: more, Total: total, Entries: cur}
		frames = append(frames, m.Append(make([]byte, 0, size)))
		cur, size = nil, linkHistoryHead
	}
	for i := range entries {
		n, ok := entries[i].size()
		if !ok || linkHistoryHead+n > maxLinkHistoryPlain {
			skipped++
			continue
		}
		if size+n > maxLinkHistoryPlain || len(cur) == 0xFFFF {
			flush(true)
		}
		cur, size = append(cur, entries[i]), size+n
	}
	flush(false)
	return frames, skipped
}

// LinkHistorySize is how many bytes entry takes in a history frame, and
// whether it can be carried at all.
func LinkHistorySize(e *LinkHistoryEntry) (int, bool) {
	n, ok := e.size()
	return n, ok && linkHistoryHead+n <= maxLinkHistoryPlain
}
