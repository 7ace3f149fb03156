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
	}
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
