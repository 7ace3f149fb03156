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
// # Message types
//
// Every message type, by number (client to server below 0x80, server to
// client from 0x80; the layouts are beside each constant and in
// docs/PROTOCOL.md):
//
//	0x01  Signup              messages.go
//	0x02  Login               messages.go
//	0x03  Resume              messages.go
//	0x04  CheckUsername       messages.go
//	0x05  Logout              messages.go
//	0x06  SignupInvite        messages.go
//	0x07  LoginWith           messages.go (v2)
//	0x08  ResumeWith          messages.go (v2)
//	0x09  LoginDevice         devices.go (v3)
//	0x10  GetKeys             messages.go
//	0x11  SendDM              messages.go
//	0x12  Ack                 messages.go
//	0x13  Signal              live.go
//	0x14  Broadcast           live.go
//	0x15  SendDMFor           messages.go (v2)
//	0x16  Relation            requests.go (v2)
//	0x17  BlockedList         requests.go (v2)
//	0x18  DeviceChain         devices.go (v3)
//	0x19  DeviceAppend        devices.go (v3)
//	0x1A  LinkOpen            link.go (v3)
//	0x1B  LinkData            link.go (v3)
//	0x1C  DeviceSeen          devices.go (v3)
//	0x1D  SendDMDevices       devsealed.go (v4)
//	0x1E  Recover             devices.go (v4)
//	0x1F  SignalDevices       live.go (v5)
//	0x20  Ping                messages.go
//	0x21  ChangePassword      messages.go (v6)
//	0x22  SendDMDevicesDetail devsealed.go (v6)
//	0x3F  Close               messages.go
//	0x40  GroupChange         groupmsg.go
//	0x41  GroupList           groupmsg.go
//	0x42  GroupChain          groupmsg.go
//	0x43  GroupKeys           groupmsg.go
//	0x44  SendGroup           groupmsg.go
//	0x45  SendGroupFile       groupmsg.go
//	0x46  GroupChangeV2       groupmsg.go (v2)
//	0x47  GroupBadEpoch       groupmsg.go (v2)
//	0x48  GroupJoin           requests.go (v2)
//	0x49  GroupInvites        requests.go (v2)
//	0x4A  GroupChangeV3       groupmsg.go (v5)
//	0x4B  GroupBadEpochV2     groupmsg.go (v5)
//	0x80  OK                  messages.go
//	0x81  Error               messages.go
//	0x82  LoginOK             messages.go
//	0x83  Keys                messages.go
//	0x84  Sent                messages.go
//	0x85  Deliver             messages.go
//	0x86  Pong                messages.go
//	0x87  Available           messages.go
//	0x88  Groups              groupmsg.go
//	0x89  GroupChainReply     groupmsg.go
//	0x8A  GroupKeysReply      groupmsg.go
//	0x8B  DeliverGroup        groupmsg.go
//	0x8C  SignalMsg           live.go
//	0x8D  Presence            live.go
//	0x8E  BroadcastSent       live.go
//	0x8F  BroadcastMsg        live.go
//	0x90  KeysChanged         messages.go (v2)
//	0x91  GroupChanged        groupmsg.go (v2)
//	0x92  GroupKeysReplyV2    groupmsg.go (v2)
//	0x93  DeliverRequest      requests.go (v2)
//	0x94  Blocked             requests.go (v2)
//	0x95  GroupInvitesReply   requests.go (v2)
//	0x96  DeviceChainReply    devices.go (v3)
//	0x97  DevicesChanged      devices.go (v3)
//	0x98  LinkJoined          link.go (v3)
//	0x99  LinkRelay           link.go (v3)
//	0x9A  LinkClosed          link.go (v3)
//	0x9B  DeviceSeenReply     devices.go (v3)
//	0x9C  DevicesMismatch     devsealed.go (v4)
//	0x9D  DeliverDevices      devsealed.go (v4)
//	0x9E  GroupKeysReplyV3    groupmsg.go (v5)
//	0x9F  DeliverGroupV2      groupmsg.go (v5)
//	0xA0  SignalDevicesMsg    live.go (v5)
//	0xA1  SentDevices         messages.go (v6)
//
// Versions and what each added: the changelog on MaxVersion (frame.go).
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
