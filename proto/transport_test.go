package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
)

func sealedFrames(t *testing.T, s *Session, n int) [][]byte {
	var out [][]byte
	for i := 0; i < n; i++ {
		f, err := s.Seal(nil, []byte{byte(i), 1, 2, 3, 4, 5})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, f[FrameHeaderLen:])
	}
	return out
}

// T12: a replayed frame fails; T13: swapped or dropped frames fail; the
// failure is sticky and the counter does not advance.
func TestReplayReorderDrop(t *testing.T) {
	server := mustKey(t, "server static")
	cases := map[string]func(f [][]byte) [][]byte{
		"replay":  func(f [][]byte) [][]byte { return [][]byte{f[0], f[0]} },
		"swap":    func(f [][]byte) [][]byte { return [][]byte{f[1], f[0]} },
		"drop":    func(f [][]byte) [][]byte { return [][]byte{f[0], f[2]} },
		"reflect": nil,
	}
	for name, order := range cases {
		t.Run(name, func(t *testing.T) {
			cs, ss, _, _ := handshake(t, server, &server.Public)
			if order == nil {
				// A server frame reflected back to the server.
				f, _ := ss.Seal(nil, []byte("to client"))
				if _, err := ss.Open(nil, f[FrameHeaderLen:]); !errors.Is(err, ErrDecrypt) {
					t.Fatalf("reflected frame opened: %v", err)
				}
				return
			}
			frames := order(sealedFrames(t, cs, 3))
			if _, err := ss.Open(nil, frames[0]); err != nil && name != "swap" {
				t.Fatalf("first frame: %v", err)
			}
			var err error
			for _, f := range frames[1:] {
				_, err = ss.Open(nil, f)
			}
			if !errors.Is(err, ErrDecrypt) {
				t.Fatalf("%s accepted: %v", name, err)
			}
			// Sticky: even the right next frame fails now.
			good := sealedFrames(t, cs, 1)[0]
			if _, err := ss.Open(nil, good); err == nil {
				t.Fatal("session usable after a failed open")
			}
		})
	}
}

// T14: one flipped bit anywhere in a sealed frame fails to open.
func TestFrameBitFlip(t *testing.T) {
	server := mustKey(t, "server static")
	cs0, _, _, _ := handshake(t, server, &server.Public)
	f := sealedFrames(t, cs0, 1)[0]
	for i := 0; i < len(f)*8; i++ {
		_, ss, _, _ := handshake(t, server, &server.Public)
		g := append([]byte(nil), f...)
		g[i/8] ^= 1 << (i % 8)
		if _, err := ss.Open(nil, g); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("bit %d: opened", i)
		}
	}
	// A corrupted length prefix delivers a frame of the wrong size.
	_, ss, _, _ := handshake(t, server, &server.Public)
	if _, err := ss.Open(nil, f[:len(f)-1]); !errors.Is(err, ErrDecrypt) {
		t.Fatal("truncated frame opened")
	}
}

// T16: with the counter forced to 2^64-2 the sender refuses and never wraps.
func TestCounterNeverWraps(t *testing.T) {
	server := mustKey(t, "server static")
	cs, ss, _, _ := handshake(t, server, &server.Public)
	cs.setCounters(maxCounter-2, 0)
	if _, err := cs.Seal(nil, []byte("last")); err != nil {
		t.Fatalf("2^64-2 must still seal once: %v", err)
	}
	if _, err := cs.Seal(nil, []byte("wrap")); !errors.Is(err, ErrRekeyNeeded) {
		t.Fatalf("sealed at 2^64-1: %v", err)
	}
	if _, err := cs.Seal(nil, []byte("again")); !errors.Is(err, ErrRekeyNeeded) {
		t.Fatal("the refusal is not sticky")
	}
	ss.setCounters(0, maxCounter-1)
	if _, err := ss.Open(nil, make([]byte, 40)); !errors.Is(err, ErrRekeyNeeded) {
		t.Fatalf("receiver opened at the reserved counter: %v", err)
	}
	// The soft limit: at RekeyAfterFrames the sender asks for a new handshake.
	cs2, _, _, _ := handshake(t, server, &server.Public)
	cs2.send.n = RekeyAfterFrames
	if _, err := cs2.Seal(nil, []byte("x")); !errors.Is(err, ErrRekeyNeeded) {
		t.Fatalf("sealed past RekeyAfterFrames: %v", err)
	}
}

func frameBytes(payloads ...[]byte) []byte {
	var b []byte
	for _, p := range payloads {
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
		b = append(b, p...)
	}
	return b
}

func TestFrameReader(t *testing.T) {
	big := bytes.Repeat([]byte{7}, MaxFrameLen)
	in := frameBytes([]byte("a"), []byte("bc"), big, []byte("d"))
	for name, r := range map[string]io.Reader{
		"whole":    bytes.NewReader(in),
		"one-byte": iotest.OneByteReader(bytes.NewReader(in)),
		"half":     iotest.HalfReader(bytes.NewReader(in)),
	} {
		fr := NewFrameReader(r, 0)
		for _, want := range [][]byte{[]byte("a"), []byte("bc"), big, []byte("d")} {
			got, err := fr.Next()
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: got %d bytes, %v", name, len(got), err)
			}
		}
		if _, err := fr.Next(); err != io.EOF {
			t.Fatalf("%s: after the last frame: %v", name, err)
		}
		if fr.Buffered() {
			t.Fatalf("%s: idle reader still holds a buffer", name)
		}
	}
}

// T1, T3, T4, T5: truncated, empty and oversized frames fail before
// anything is allocated for them.
func TestFrameReaderLimits(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		max  int
		want error
	}{
		{"truncated", append([]byte{0, 100}, make([]byte, 50)...), 0, io.ErrUnexpectedEOF},
		{"zero length", []byte{0, 0}, 0, ErrFrameTooShort},
		{"over the hello cap", []byte{0xff, 0xff}, MaxHelloLen, ErrFrameTooLarge},
		{"header only", []byte{0}, 0, io.ErrUnexpectedEOF},
	}
	for _, c := range cases {
		fr := NewFrameReader(bytes.NewReader(c.in), c.max)
		if _, err := fr.Next(); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	// A "2 GB" prefix read as the 2-byte length is 0x7FFF, under the cap:
	// the reader waits for 32 KiB that never come, allocating nothing more
	// than one pooled buffer.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 100; i++ {
		fr := NewFrameReader(bytes.NewReader([]byte{0x7f, 0xff, 0xff, 0xff}), MaxHelloLen)
		if _, err := fr.Next(); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("2 GB prefix: %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Fatalf("rejecting oversized frames allocated %d bytes", d)
	}
	if _, err := ReadSmallFrame(bytes.NewReader([]byte{0xff, 0xff}), make([]byte, MaxHelloLen)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("ReadSmallFrame: %v", err)
	}
}

func TestFrameReaderAllocs(t *testing.T) {
	in := frameBytes(bytes.Repeat([]byte{1}, 300))
	r := bytes.NewReader(in)
	fr := NewFrameReader(r, 0)
	allocs := testing.AllocsPerRun(1000, func() {
		r.Reset(in)
		if _, err := fr.Next(); err != nil {
			t.Fatal(err)
		}
		fr.Release()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per frame", allocs)
	}
}
