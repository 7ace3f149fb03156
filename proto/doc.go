// Package proto defines the securefastchat wire format: frames, the
// handshake, the encrypted transport and the messages carried inside it.
// It is the only place the bytes on the wire are defined; docs/PROTOCOL.md
// documents the same layout byte by byte.
//
// # Protocol flow
//
//	client                                   server
//	ClientHello  (frame, plaintext)   ->
//	                                  <-     ServerHello (frame, plaintext + key confirmation box)
//	-- both sides now hold k_c2s and k_s2c; every later frame is sealed --
//	Signup / Login / Resume request   ->
//	                                  <-     LoginOK / Error
//	SendDM, GetKeys, Ack, Ping ...    ->
//	                                  <-     Sent, Keys, Deliver, Pong, Error ...
//	Close                             <->    Close
//
// # Frames
//
// Every unit on the wire is a frame: a 2-byte big-endian length followed by
// that many bytes of payload. The length is checked against MaxFrameLen
// before anything is allocated. Frames are self-delimiting, so the layer
// works over any reliable ordered byte stream (TCP, a WebSocket carrying
// binary messages, net.Pipe in tests); nothing here uses a TCP-specific
// call.
//
// # Transport encryption
//
// The handshake (Noise NK semantics built from X25519, SHA-256, HKDF and
// XSalsa20-Poly1305) gives one 32-byte key per direction. Each sealed frame is
// secretbox(plaintext, nonce, key) where the 24-byte nonce is
//
//	dir(1) || 0^15 || counter (u64, big endian)
//
// with dir 'C' for client-to-server and 'S' for server-to-client. The counter
// is implicit: both sides count frames and it is never sent. A replayed,
// dropped, reordered, reflected or forged frame therefore fails to open, and
// any failure to open is final for the connection. The counter never wraps:
// a sender refuses to seal past RekeyAfterFrames, and the peer reconnects
// with a fresh handshake.
package proto
