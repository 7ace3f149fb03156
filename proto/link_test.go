package proto

import (
	"golang.org/x/crypto/chacha20poly1305"

	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
)

func testLinkCode(t testing.TB) *LinkCode {
	t.Helper()
	server, err := NewKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	master, _, _ := ed25519.GenerateKey(rand.Reader)
	l := &LinkCode{User: []byte("alice"), Addr: "chat.example.org:7878", ServerKey: server.Public, Master: master}
	rand.Read(l.Secret[:])
	return l
}

// TestLinkCode: a code reads back as written (with the spaces a copy
// adds), and what is not one is refused with a message that says so.
func TestLinkCode(t *testing.T) {
	l := testLinkCode(t)
	s := l.String()
	if !strings.HasPrefix(s, LinkCodePrefix) || len(s) > 200 {
		t.Fatalf("code %q (%d characters)", s, len(s))
	}
	got, err := ParseLinkCode("  " + s + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.User) != "alice" || got.Addr != l.Addr || !got.ServerKey.Equal(l.ServerKey) || !bytes.Equal(got.Master, l.Master) || got.Secret != l.Secret {
		t.Fatalf("read back %+v", got)
	}
	if cut, err := ParseLinkCode(s[:50] + "\n  " + s[50:120] + "\r\n" + s[120:]); err != nil || cut.Secret != l.Secret {
		t.Fatalf("a code cut in lines, as copied off a screen: %v", err)
	}
	if got.Channel() != l.Channel() || got.Channel() == LinkChannel([LinkSecretLen]byte{}) {
		t.Fatal("the channel does not follow the secret")
	}
	for _, bad := range []string{"", "hello", LinkCodePrefix, LinkCodePrefix + "!!!", s[:len(s)-4], s + "AAAA"} {
		if _, err := ParseLinkCode(bad); !errors.Is(err, ErrBadLinkCode) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	// A code of version 2 (from a device before hold frames) reads as
	// such; one newer than this build is refused, saying to update.
	old := *l
	old.Version = 2
	if got, err := ParseLinkCode(old.String()); err != nil || got.Version != 2 || got.Secret != l.Secret {
		t.Fatalf("a version 2 code: %+v %v", got, err)
	}
	if got.Version != LinkCodeVersion {
		t.Fatalf("a new code reads as version %d", got.Version)
	}
	newer := *l
	newer.Version = LinkCodeVersion + 1
	if _, err := ParseLinkCode(newer.String()); !errors.Is(err, ErrBadLinkCode) || !strings.Contains(err.Error(), "update securefastchat") {
		t.Fatalf("a newer code: %v", err)
	}
}

// A full hold frame fits a link frame.
func TestLinkHoldFits(t *testing.T) {
	ids := make([]uint64, MaxHoldApproved)
	c := LinkHoldContact{User: bytes.Repeat([]byte{'a'}, MaxUsernameLen), Approved: ids}
	cs := make([]LinkHoldContact, LinkHoldPerFrame)
	for i := range cs {
		cs[i] = c
	}
	b := (&LinkHold{More: true, On: true, Contacts: cs}).Append(nil)
	if len(b)+chacha20poly1305.Overhead > MaxLinkData {
		t.Fatalf("a full hold frame is %d bytes sealed, over %d", len(b)+chacha20poly1305.Overhead, MaxLinkData)
	}
	var back LinkHold
	if err := back.Parse(b); err != nil || len(back.Contacts) != LinkHoldPerFrame || !back.On || !back.More {
		t.Fatal(err)
	}
}

// TestLinkCipher: each device opens the other's frames in order, and a
// frame the relay altered, repeated, reordered or turned back, or one
// sealed under another secret, does not open.
func TestLinkCipher(t *testing.T) {
	l := testLinkCode(t)
	e, n := NewLinkCipher(l.Secret, true), NewLinkCipher(l.Secret, false)
	f0, f1 := n.Seal(nil, []byte("request")), n.Seal(nil, []byte("second"))
	if _, err := e.Open(nil, f1); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("a frame out of order: %v", err)
	}
	bad := bytes.Clone(f0)
	bad[3] ^= 1
	if _, err := e.Open(nil, bad); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("an altered frame: %v", err)
	}
	if p, err := e.Open(nil, f0); err != nil || string(p) != "request" {
		t.Fatalf("the first frame: %q %v", p, err)
	}
	if _, err := e.Open(nil, f0); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("a frame repeated: %v", err)
	}
	if p, err := e.Open(nil, f1); err != nil || string(p) != "second" {
		t.Fatalf("the second frame: %q %v", p, err)
	}
	back := e.Seal(nil, []byte("answer"))
	if _, err := e.Open(nil, back); !errors.Is(err, ErrDecrypt) {
		t.Fatal("a device opened its own frame turned back to it")
	}
	other := testLinkCode(t)
	if _, err := NewLinkCipher(other.Secret, false).Open(nil, back); !errors.Is(err, ErrDecrypt) {
		t.Fatal("a frame opened under another link's secret")
	}
	if p, err := n.Open(nil, back); err != nil || string(p) != "answer" {
		t.Fatalf("the answer: %q %v", p, err)
	}
}

// TestLinkRequestSigned: the request's signature covers the channel, the
// name and the keys.
func TestLinkRequestSigned(t *testing.T) {
	box, _ := NewKeyPair(rand.Reader)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	ch := testLinkCode(t).Channel()
	r := LinkRequest{Name: []byte("laptop"), BoxKey: box.Public.Bytes(), SignKey: pub}
	r.Sign(priv, ch)
	var got LinkRequest
	if err := got.Parse(r.Append(nil)); err != nil || got.Verify(ch) != nil {
		t.Fatalf("%v %v", err, got.Verify(ch))
	}
	if got.Verify([LinkChannelLen]byte{}) == nil {
		t.Fatal("a request verified for another channel")
	}
	got.Name = []byte("phone")
	if got.Verify(ch) == nil {
		t.Fatal("a renamed request verified")
	}
}

func seedLinkFrames(t testing.TB) [][]byte {
	box, _ := NewKeyPair(rand.Reader)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	r := LinkRequest{Name: []byte("laptop"), BoxKey: box.Public.Bytes(), SignKey: pub}
	r.Sign(priv, [LinkChannelLen]byte{})
	return [][]byte{
		r.Append(nil),
		(&LinkAnswer{Statement: seedDeviceStatements()[0]}).Append(nil),
		(&LinkAnswer{Refusal: []byte("not mine")}).Append(nil),
		[]byte(testLinkCode(t).String()),
		(&LinkSync{More: true, Contacts: []LinkContact{{User: []byte("bob"), BoxKey: box.Public.Bytes(), SignKey: pub, Verified: true}, {User: []byte("carol"), BoxKey: box.Public.Bytes(), SignKey: pub, Held: []byte("SHA256:old")}}}).Append(nil),
		(&LinkSync{}).Append(nil),
		(&LinkHold{More: true, On: true, Contacts: []LinkHoldContact{{User: []byte("bob"), Approved: []uint64{7, 9}}, {User: []byte("carol")}}}).Append(nil),
		(&LinkHold{}).Append(nil),
		[]byte((&LinkCode{Version: 2, User: []byte("alice"), Addr: "chat.example.org:7878", ServerKey: box.Public, Master: pub}).String()),
		[]byte((&LinkCode{Version: 4, User: []byte("alice"), Addr: "chat.example.org:7878", ServerKey: box.Public, Master: pub}).String()),
		(&LinkManage{Seed: priv.Seed()}).Append(nil),
		LinkDone,
		[]byte((&LinkCode{Version: 5, Flags: LinkFlagManage | LinkFlagHistory, User: []byte("alice"), Addr: "chat.example.org:7878", ServerKey: box.Public, Master: pub}).String()),
		(&LinkHistory{More: true, Total: 3, Entries: seedHistoryEntries()}).Append(nil),
		(&LinkHistory{}).Append(nil),
	}
}

func seedHistoryEntries() []LinkHistoryEntry {
	return []LinkHistoryEntry{
		{Conv: []byte("@bob"), ID: [16]byte{1}, From: []byte("bob"), Time: 1_790_000_000_000, Text: []byte("hello"), Flags: HistoryUnread},
		{Conv: []byte("#team"), ID: [16]byte{2}, From: []byte("alice"), Flags: HistoryMine, Time: 1_790_000_001_000, Status: 5, Text: []byte("hi all"), ReadBy: [][]byte{[]byte("bob"), []byte("carol")}},
		{Conv: []byte("@carol"), ID: [16]byte{3}, From: []byte("alice"), Flags: HistoryMine | HistoryFile, Status: 6, Size: 12345, Text: []byte("plans.pdf"), Error: []byte("refused")},
	}
}

// TestLinkHistory: history frames read back; a code of version 5 says
// with its flags what follows; PackLinkHistory keeps every frame within a
// link frame and leaves out what cannot be carried.
func TestLinkHistory(t *testing.T) {
	in := LinkHistory{More: true, Total: 7, Entries: seedHistoryEntries()}
	var got LinkHistory
	if err := got.Parse(in.Append(nil)); err != nil {
		t.Fatal(err)
	}
	if !got.More || got.Total != 7 || len(got.Entries) != 3 || string(got.Entries[1].ReadBy[1]) != "carol" || got.Entries[2].Size != 12345 ||
		string(got.Entries[2].Error) != "refused" || got.Entries[0].Time != 1_790_000_000_000 || got.Entries[1].ID != [16]byte{2} {
		t.Fatalf("read back %+v", got)
	}
	checkPrefixes(t, in.Append(nil), func(b []byte) error { var m LinkHistory; return m.Parse(b) })
	bad := LinkHistory{Entries: []LinkHistoryEntry{{Conv: []byte("@bob"), Flags: 0x80}}}
	if err := got.Parse(bad.Append(nil)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("an unknown flag: %v", err)
	}
	if err := got.Parse((&LinkManage{Seed: make([]byte, 32)}).Append(nil)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("another frame read as history: %v", err)
	}

	// Codes: version 5 carries its flags; 4 means a managing device; 3
	// neither; an unknown flag is refused, saying to update.
	l := testLinkCode(t)
	l.Version, l.Flags = 5, LinkFlagHistory
	c, err := ParseLinkCode(l.String())
	if err != nil || !c.CopiesHistory() || c.Manages() || c.Flags != LinkFlagHistory {
		t.Fatalf("a version 5 code for history: %+v %v", c, err)
	}
	l.Flags = LinkFlagHistory | LinkFlagManage
	if c, err = ParseLinkCode(l.String()); err != nil || !c.CopiesHistory() || !c.Manages() {
		t.Fatalf("a version 5 code for both: %+v %v", c, err)
	}
	l.Version, l.Flags = 4, 0
	if c, err = ParseLinkCode(l.String()); err != nil || c.CopiesHistory() || !c.Manages() {
		t.Fatalf("a version 4 code: %+v %v", c, err)
	}
	l.Version = 3
	if c, err = ParseLinkCode(l.String()); err != nil || c.CopiesHistory() || c.Manages() {
		t.Fatalf("a version 3 code: %+v %v", c, err)
	}
	l.Version, l.Flags = 5, 0x40
	if _, err := ParseLinkCode(l.String()); !errors.Is(err, ErrBadLinkCode) || !strings.Contains(err.Error(), "update securefastchat") {
		t.Fatalf("a code with an unknown flag: %v", err)
	}

	// Packing: many entries fill several frames, each sealed within
	// MaxLinkData, in their order; one too large for a frame is left out.
	var many []LinkHistoryEntry
	for i := range 3000 {
		many = append(many, LinkHistoryEntry{Conv: []byte("@bob"), ID: [16]byte{byte(i), byte(i >> 8)}, From: []byte("bob"), Text: bytes.Repeat([]byte("x"), 40+i%200)})
	}
	huge := LinkHistoryEntry{Conv: []byte("@bob"), Text: bytes.Repeat([]byte("y"), 0xFFFF)}
	many = append(many[:10], append([]LinkHistoryEntry{huge}, many[10:]...)...)
	frames, skipped := PackLinkHistory(many, uint32(len(many)))
	if skipped != 1 || len(frames) < 3 {
		t.Fatalf("%d frames, %d skipped", len(frames), skipped)
	}
	n := 0
	for i, f := range frames {
		if len(f)+chacha20poly1305.Overhead > MaxLinkData {
			t.Fatalf("frame %d: %d bytes", i, len(f))
		}
		var m LinkHistory
		if err := m.Parse(f); err != nil || m.More != (i < len(frames)-1) || m.Total != uint32(len(many)) {
			t.Fatalf("frame %d: more %v total %d: %v", i, m.More, m.Total, err)
		}
		for _, e := range m.Entries {
			if want := many[n+btoi(n >= 10)]; e.ID != want.ID {
				t.Fatalf("entry %d out of order", n)
			}
			n++
		}
	}
	if n != 3000 {
		t.Fatalf("%d entries packed", n)
	}
	if frames, skipped := PackLinkHistory(nil, 0); len(frames) != 1 || skipped != 0 {
		t.Fatal("no history is one empty frame")
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestLinkManage: a manage frame reads back, and gives its key only for
// the master key it belongs to.
func TestLinkManage(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	var m LinkManage
	if err := m.Parse((&LinkManage{Seed: priv.Seed()}).Append(nil)); err != nil {
		t.Fatal(err)
	}
	if k, err := m.Key(pub); err != nil || !k.Equal(priv) {
		t.Fatalf("the key back: %v", err)
	}
	if _, err := m.Key(other); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("another account's master key: %v", err)
	}
	if err := m.Parse(append([]byte{LinkKindManage}, priv.Seed()[:31]...)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a short seed: %v", err)
	}
	if err := m.Parse(LinkDone); !errors.Is(err, ErrMalformed) {
		t.Fatalf("another frame: %v", err)
	}
}

// FuzzLinkFrames feeds the link's decoders (the code, the request, the
// answer): none panics, and what decodes encodes to the same bytes.
func FuzzLinkFrames(f *testing.F) {
	seeds := seedLinkFrames(f)
	writeCorpus(f, "FuzzLinkFrames", seeds)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if l, err := ParseLinkCode(string(in)); err == nil {
			if again, err := ParseLinkCode(l.String()); err != nil || again.String() != l.String() {
				t.Fatalf("a code does not read back: %v", err)
			}
		}
		var r LinkRequest
		if r.Parse(in) == nil {
			if !bytes.Equal(r.Append(nil), in) {
				t.Fatal("round trip changed the request")
			}
			r.Verify([LinkChannelLen]byte{}) // must not panic
		}
		var a LinkAnswer
		if a.Parse(in) == nil && !bytes.Equal(a.Append(nil), in) {
			t.Fatal("round trip changed the answer")
		}
		var y LinkSync
		if y.Parse(in) == nil && !bytes.Equal(y.Append(nil), in) {
			t.Fatal("round trip changed the sync frame")
		}
		var h LinkHold
		if h.Parse(in) == nil && !bytes.Equal(h.Append(nil), in) {
			t.Fatal("round trip changed the hold frame")
		}
		var m LinkManage
		if m.Parse(in) == nil && !bytes.Equal(m.Append(nil), in) {
			t.Fatal("round trip changed the manage frame")
		}
		var hi LinkHistory
		if hi.Parse(in) == nil && !bytes.Equal(hi.Append(nil), in) {
			t.Fatal("round trip changed the history frame")
		}
		if ParseLinkDone(in) == nil && !bytes.Equal(in, LinkDone) {
			t.Fatal("a done frame that is not one parsed")
		}
	})
}

// A full sync frame fits a link frame, as PROTOCOL.md says (173 contacts
// of the longest names and held fingerprints).
func TestLinkSyncFits(t *testing.T) {
	if LinkSyncPerFrame != 173 {
		t.Fatalf("a sync frame carries %d contacts; docs/PROTOCOL.md says 173", LinkSyncPerFrame)
	}
	c := LinkContact{User: bytes.Repeat([]byte{'a'}, MaxUsernameLen), BoxKey: make([]byte, KeyLen), SignKey: make([]byte, ed25519.PublicKeySize), Held: bytes.Repeat([]byte{'h'}, 255)}
	cs := make([]LinkContact, LinkSyncPerFrame)
	for i := range cs {
		cs[i] = c
	}
	b := (&LinkSync{More: true, Contacts: cs}).Append(nil)
	if len(b)+chacha20poly1305.Overhead > MaxLinkData {
		t.Fatalf("a full sync frame is %d bytes sealed, over %d", len(b)+chacha20poly1305.Overhead, MaxLinkData)
	}
	var back LinkSync
	if err := back.Parse(b); err != nil || len(back.Contacts) != LinkSyncPerFrame {
		t.Fatal(err)
	}
}
