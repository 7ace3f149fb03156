package proto

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// detRand is a deterministic byte stream for known-answer tests.
type detRand struct {
	seed string
	n    uint64
	buf  []byte
}

func (r *detRand) Read(p []byte) (int, error) {
	for len(r.buf) < len(p) {
		var ctr [8]byte
		binary.BigEndian.PutUint64(ctr[:], r.n)
		r.n++
		sum := sha256.Sum256(append([]byte(r.seed), ctr[:]...))
		r.buf = append(r.buf, sum[:]...)
	}
	copy(p, r.buf)
	r.buf = r.buf[len(p):]
	return len(p), nil
}

func mustKey(t testing.TB, seed string) KeyPair {
	t.Helper()
	kp, err := NewKeyPair(&detRand{seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// handshake runs both sides in memory.
func handshake(t testing.TB, server KeyPair, pinned *PublicKey) (*Session, *Session, []byte, []byte) {
	t.Helper()
	ch, err := NewClientHandshake(ClientConfig{ServerKey: pinned, Rand: &detRand{seed: "client eph"}})
	if err != nil {
		t.Fatal(err)
	}
	reply, ss, err := ServerHandshake(ServerConfig{Static: &server, Rand: &detRand{seed: "server eph"}}, ch.Hello())
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	cs, got, err := ch.Finish(reply)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	if !got.Equal(server.Public) {
		t.Fatalf("client sees server key %v, want %v", got, server.Public)
	}
	return cs, ss, ch.Hello(), reply
}

func TestHandshakeRoundTrip(t *testing.T) {
	server := mustKey(t, "server static")
	for _, pinned := range []*PublicKey{&server.Public, nil} {
		cs, ss, _, _ := handshake(t, server, pinned)
		for i := 0; i < 3; i++ {
			f, err := cs.Seal(nil, []byte(fmt.Sprintf("c2s %d", i)))
			if err != nil {
				t.Fatal(err)
			}
			p, err := ss.Open(nil, f[FrameHeaderLen:])
			if err != nil || string(p) != fmt.Sprintf("c2s %d", i) {
				t.Fatalf("server open: %q %v", p, err)
			}
			f, _ = ss.Seal(nil, []byte("s2c"))
			if p, err := cs.Open(nil, f[FrameHeaderLen:]); err != nil || string(p) != "s2c" {
				t.Fatalf("client open: %q %v", p, err)
			}
		}
	}
}

// TestHandshakeVectors freezes the handshake bytes for fixed keys (run
// with -update to rewrite testdata/handshake-vectors.txt after a deliberate
// change of the wire format).
func TestHandshakeVectors(t *testing.T) {
	server := mustKey(t, "server static")
	var b strings.Builder
	for _, mode := range []string{"pinned", "first-contact"} {
		var pinned *PublicKey
		if mode == "pinned" {
			pinned = &server.Public
		}
		cs, ss, hello, reply := handshake(t, server, pinned)
		c1, _ := cs.Seal(nil, []byte("client frame 0"))
		s1, _ := ss.Seal(nil, []byte("server frame 1"))
		fmt.Fprintf(&b, "mode: %s\nserver_static_public: %s\nclient_hello: %x\nserver_hello: %x\nclient_frame_0: %x\nserver_frame_1: %x\n\n",
			mode, server.Public, hello, reply, c1, s1)
	}
	const path = "testdata/handshake-vectors.txt"
	if *update {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != string(want) {
		t.Fatalf("handshake bytes changed; if deliberate, bump the protocol version and run with -update\ngot:\n%s", b.String())
	}
}

// TestHandshakeVectorsOpen checks the frozen frames open with the keys a
// fresh handshake derives (so the vectors are not only self-consistent
// output but decryptable traffic).
func TestHandshakeVectorsOpen(t *testing.T) {
	f, err := os.Open("testdata/handshake-vectors.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	server := mustKey(t, "server static")
	vals := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		vals[k] = v
		if k != "server_frame_1" {
			continue
		}
		pinned := &server.Public
		if vals["mode"] == "first-contact" {
			pinned = nil
		}
		cs, ss, _, _ := handshake(t, server, pinned)
		c0, _ := hex.DecodeString(vals["client_frame_0"])
		s1, _ := hex.DecodeString(vals["server_frame_1"])
		if p, err := ss.Open(nil, c0[2:]); err != nil || string(p) != "client frame 0" {
			t.Fatalf("%s: client frame does not open: %v", vals["mode"], err)
		}
		if p, err := cs.Open(nil, s1[2:]); err != nil || string(p) != "server frame 1" {
			t.Fatalf("%s: server frame does not open: %v", vals["mode"], err)
		}
	}
}

func TestWrongServerKeyFails(t *testing.T) {
	server := mustKey(t, "server static")
	other := mustKey(t, "other server")
	ch, err := NewClientHandshake(ClientConfig{ServerKey: &other.Public})
	if err != nil {
		t.Fatal(err)
	}
	if reply, _, err := ServerHandshake(ServerConfig{Static: &server}, ch.Hello()); !errors.Is(err, ErrHandshakeFailed) || reply != nil {
		t.Fatalf("server accepted a hello for another key: %v", err)
	}
}

// T10: an active attacker swapping e_s breaks key confirmation.
func TestMITMSwapsServerEphemeral(t *testing.T) {
	server := mustKey(t, "server static")
	attacker := mustKey(t, "attacker")
	ch, _ := NewClientHandshake(ClientConfig{ServerKey: &server.Public})
	reply, _, err := ServerHandshake(ServerConfig{Static: &server}, ch.Hello())
	if err != nil {
		t.Fatal(err)
	}
	copy(reply[2:2+KeyLen], attacker.Public.k[:])
	if _, _, err := ch.Finish(reply); !errors.Is(err, ErrHandshakeFailed) {
		t.Fatalf("client accepted a swapped e_s: %v", err)
	}
}

// T18: altering the version fields in flight fails.
func TestDowngradeFails(t *testing.T) {
	server := mustKey(t, "server static")
	for _, pinned := range []*PublicKey{&server.Public, nil} {
		ch, _ := NewClientHandshake(ClientConfig{ServerKey: pinned, MinVersion: 1, MaxVersion: 1})
		hello := append([]byte(nil), ch.Hello()...)
		hello[5] = 2 // attacker raises ver_max; server still picks 1
		reply, _, err := ServerHandshake(ServerConfig{Static: &server, MaxVersion: 2}, hello)
		if pinned != nil {
			if !errors.Is(err, ErrHandshakeFailed) {
				t.Fatalf("server accepted an altered pinned hello: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := ch.Finish(reply); !errors.Is(err, ErrHandshakeFailed) && !errors.Is(err, ErrUnsupportedVersion) {
			t.Fatalf("client accepted a handshake over an altered hello: %v", err)
		}
		// And the server's chosen version altered in the reply.
		ch2, _ := NewClientHandshake(ClientConfig{MinVersion: 1, MaxVersion: 2})
		reply2, _, err := ServerHandshake(ServerConfig{Static: &server, MaxVersion: 2}, ch2.Hello())
		if err != nil {
			t.Fatal(err)
		}
		reply2[0] = 1 // downgrade 2 -> 1
		if _, _, err := ch2.Finish(reply2); !errors.Is(err, ErrHandshakeFailed) {
			t.Fatalf("client accepted a downgraded reply: %v", err)
		}
	}
}

// T7: no common version gives the plaintext error.
func TestNoCommonVersion(t *testing.T) {
	server := mustKey(t, "server static")
	ch, _ := NewClientHandshake(ClientConfig{MinVersion: 7, MaxVersion: 9})
	reply, s, err := ServerHandshake(ServerConfig{Static: &server}, ch.Hello())
	if !errors.Is(err, ErrUnsupportedVersion) || s != nil || string(reply) != VersionErrorReply {
		t.Fatalf("got %q %v", reply, err)
	}
	if _, _, err := ch.Finish(reply); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("client: %v", err)
	}
	bad := ch.Hello()
	bad = append([]byte("XXXX"), bad[4:]...)
	if reply, _, err := ServerHandshake(ServerConfig{Static: &server}, bad); !errors.Is(err, ErrUnsupportedVersion) || string(reply) != VersionErrorReply {
		t.Fatalf("wrong magic: %q %v", reply, err)
	}
}

// lowOrderPoints are the X25519 points of small order (libsodium's list).
var lowOrderPoints = []string{
	"0000000000000000000000000000000000000000000000000000000000000000",
	"0100000000000000000000000000000000000000000000000000000000000000",
	"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
	"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
}

// T8: low-order and all-zero ephemeral keys are refused on both sides.
func TestLowOrderKeysRejected(t *testing.T) {
	server := mustKey(t, "server static")
	for _, h := range lowOrderPoints {
		p, _ := hex.DecodeString(h)
		if _, err := ParsePublicKey(p); !errors.Is(err, ErrBadKey) {
			t.Errorf("ParsePublicKey accepted %s", h)
		}
		hello := ClientHello{MinVersion: 1, MaxVersion: 1, Flags: FlagFirstContact}
		copy(hello.Ephemeral[:], p)
		if _, s, err := ServerHandshake(ServerConfig{Static: &server}, hello.Marshal()); !errors.Is(err, ErrBadKey) || s != nil {
			t.Errorf("server accepted e_c %s: %v", h, err)
		}
		ch, _ := NewClientHandshake(ClientConfig{ServerKey: &server.Public})
		reply, _, err := ServerHandshake(ServerConfig{Static: &server}, ch.Hello())
		if err != nil {
			t.Fatal(err)
		}
		copy(reply[2:2+KeyLen], p)
		if _, _, err := ch.Finish(reply); !errors.Is(err, ErrBadKey) {
			t.Errorf("client accepted e_s %s: %v", h, err)
		}
		fc, _ := NewClientHandshake(ClientConfig{})
		reply, _, _ = ServerHandshake(ServerConfig{Static: &server}, fc.Hello())
		copy(reply[2+KeyLen:2+2*KeyLen], p)
		if _, _, err := fc.Finish(reply); !errors.Is(err, ErrBadKey) {
			t.Errorf("client accepted S %s: %v", h, err)
		}
	}
}

// T14 for the handshake: any flipped bit of either hello fails.
func TestHelloBitFlips(t *testing.T) {
	server := mustKey(t, "server static")
	ch, _ := NewClientHandshake(ClientConfig{ServerKey: &server.Public})
	hello := ch.Hello()
	for i := 0; i < len(hello)*8; i += 3 {
		h := append([]byte(nil), hello...)
		h[i/8] ^= 1 << (i % 8)
		if _, s, err := ServerHandshake(ServerConfig{Static: &server}, h); err == nil || s != nil {
			// A flip in e_c can still give a valid point, but then the es tag fails.
			t.Fatalf("bit %d: server accepted a corrupted hello", i)
		}
	}
	reply, _, err := ServerHandshake(ServerConfig{Static: &server}, hello)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(reply)*8; i++ {
		c, _ := NewClientHandshake(ClientConfig{ServerKey: &server.Public, Rand: &detRand{seed: "x"}})
		r, _, err := ServerHandshake(ServerConfig{Static: &server, Rand: &detRand{seed: "y"}}, c.Hello())
		if err != nil {
			t.Fatal(err)
		}
		r[i/8] ^= 1 << (i % 8)
		if _, _, err := c.Finish(r); err == nil {
			t.Fatalf("bit %d: client accepted a corrupted reply", i)
		}
	}
}

// T45: no compression or other unknown option can be negotiated: unknown
// flag bits in either hello are refused.
func TestUnknownFlagsRefused(t *testing.T) {
	server := mustKey(t, "server static")
	ch, _ := NewClientHandshake(ClientConfig{})
	hello := append([]byte(nil), ch.Hello()...)
	hello[6] |= 0x02
	if _, s, err := ServerHandshake(ServerConfig{Static: &server}, hello); !errors.Is(err, ErrBadHello) || s != nil {
		t.Fatalf("client flag 0x02: %v", err)
	}
	reply, _, err := ServerHandshake(ServerConfig{Static: &server}, ch.Hello())
	if err != nil {
		t.Fatal(err)
	}
	reply[1] |= 0x02
	if _, _, err := ch.Finish(reply); !errors.Is(err, ErrBadHello) {
		t.Fatalf("server flag 0x02: %v", err)
	}
}
