package proto

import (
	"testing"
)

// BenchmarkHandshake is one full handshake, both sides.
func BenchmarkHandshake(b *testing.B) {
	server := mustKey(b, "server static")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ch, _ := NewClientHandshake(ClientConfig{ServerKey: &server.Public})
		reply, _, err := ServerHandshake(ServerConfig{Static: &server}, ch.Hello())
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := ch.Finish(reply); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSealOpen256 seals and opens one 256-byte transport frame.
func BenchmarkSealOpen256(b *testing.B) {
	server := mustKey(b, "server static")
	cs, ss, _, _ := handshake(b, server, &server.Public)
	msg := make([]byte, 256)
	var frame, plain []byte
	plain = make([]byte, 0, 512)
	b.ReportAllocs()
	b.SetBytes(256)
	for i := 0; i < b.N; i++ {
		frame, _ = cs.Seal(frame[:0], msg)
		if _, err := ss.Open(plain[:0], frame[FrameHeaderLen:]); err != nil {
			b.Fatal(err)
		}
	}
}
