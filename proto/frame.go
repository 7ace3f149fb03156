package proto

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// Magic opens every ClientHello.
const Magic = "SCH1"

// Protocol versions this build speaks.
//
// Changelog:
//
//	1: first version (handshake, accounts, direct messages, groups, live
//	   signals).
//	2: login flags (LoginWith, ResumeWith: a session may take no
//	   deliveries); sends name the receiver's key record (SendDMFor) and
//	   are refused with the current record (KeysChanged), which is also
//	   pushed to contacts when it changes; GroupChanged pushes; every group
//	   key epoch is made by a signed epoch statement that commits to the
//	   key (GroupChangeV2, GroupKeysReplyV2), and a member reports a bad one
//	   (GroupBadEpoch); a group message's inner (version 2) carries the
//	   roster position it was sent under; message requests and blocks
//	   (DeliverRequest, Relation, BlockedList, Blocked) and group
//	   invitations (GroupJoin, GroupInvites, GroupInvitesReply). A version 2
//	   server still serves version 1 clients, except for group changes (a
//	   version 1 client gets a request as Deliver, and one only invited to a
//	   group gets nothing of it); a version 2 client needs a version 2
//	   server.
//	3: each account's devices are a hash chain of statements signed by its
//	   master key (DeviceChain, DeviceAppend, DeviceChainReply; the codes
//	   StaleDevices and TooManyDevices); a device logs in with its own key
//	   (LoginDevice), signing the connection's binding, instead of the
//	   password; contacts online are told when a list grows
//	   (DevicesChanged). An account made before has no
//	   chain until its client, on its next version 3 connection, makes the
//	   first statement: its identity becomes its master key and first
//	   device. A version 3 server serves version 1 and 2 clients as
//	   before; a version 3 client works with a version 2 server, without
//	   device chains.
//	4: a direct message is sealed for devices (SendDMDevices): its key is
//	   wrapped for every device of the receiver and every other device of
//	   the sender, each device gets its own copy (DeliverDevices, which
//	   names the sending device), and a send whose devices are not the
//	   lists' is refused with the difference (DevicesMismatch). A version
//	   3 connection is not sent such a message: a device whose queue holds
//	   one is closed with CloseUpgrade, and its messages wait for a
//	   version 4 client. A version 4 server serves the versions before as
//	   they were.
//	5: groups per device: an epoch's key is wrapped for every device of
//	   every member (GroupChangeV3, refused with DevicesMismatch when its
//	   devices are not the lists'), by a device whose key signs the epoch
//	   statement (version 2); each device fetches its own copy
//	   (GroupKeysReplyV3); reports of bad epochs (GroupBadEpochV2) and
//	   group messages are signed by devices, and a group message names the
//	   device it came from (DeliverGroupV2). A member's device list
//	   changing makes its groups' current epochs stale: the next send is
//	   refused (rekey_needed) until an epoch covers the new devices. A
//	   version 4 session keeps the forms before while every member of the
//	   group has one device; one sent a message from another device is
//	   closed with CloseUpgrade, as in version 4. Typing signals are
//	   sealed for devices too (SignalDevices, SignalDevicesMsg).
//	6: ChangePassword replaces the account's password on a logged-in
//	   session, given the current one. A message sealed for devices sent
//	   as SendDMDevicesDetail is answered SentDevices: what became of it
//	   on each of the receiver's devices. A group's chain may hold key
//	   changes (statement version 2, OpKeyChanged): a recovered member
//	   names the key that signed its statements before. Clients of this version send, where
//	   a password goes (Signup, Login, Recover, ChangePassword), a login
//	   key derived from it (docs/PROTOCOL.md §5) and never the password
//	   itself; the server keeps and checks it as it did the password, so
//	   nothing changes for the versions before.
const (
	MinVersion = 1
	MaxVersion = 6
	// ClientMinVersion is the oldest server version this package's
	// clients accept.
	ClientMinVersion = 2
)

// Frame limits.
const (
	// FrameHeaderLen is the size of the length prefix of every frame.
	FrameHeaderLen = 2
	// MaxFrameLen is the largest frame payload the 2-byte length can carry.
	MaxFrameLen = 0xFFFF
	// MaxHelloLen caps a handshake frame; hellos are far smaller.
	MaxHelloLen = 256
	// SealOverhead is what sealing adds to a plaintext (the Poly1305 tag).
	SealOverhead = 16
	// MinSealedLen is the smallest valid sealed frame: a tag and a message header.
	MinSealedLen = SealOverhead + MsgHeaderLen
	// MaxPlaintextLen is the largest plaintext one sealed frame can carry.
	MaxPlaintextLen = MaxFrameLen - SealOverhead
)

// readBufSize is the size of the pooled read buffers: one largest frame
// plus room for the next frames of a burst.
const readBufSize = 96 << 10

var readBufPool = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

var plainPool = sync.Pool{New: func() any { b := make([]byte, 0, MaxFrameLen); return &b }}

// GetPlainBuf returns a pooled buffer large enough for any frame's
// plaintext; PutPlainBuf returns it.
func GetPlainBuf() *[]byte { return plainPool.Get().(*[]byte) }

// PutPlainBuf returns a buffer from GetPlainBuf to the pool.
func PutPlainBuf(b *[]byte) { *b = (*b)[:0]; plainPool.Put(b) }

// FrameReader reads length-prefixed frames from a byte stream.
//
// It holds a buffer only while input is pending: when the last buffered
// frame has been consumed, the next call returns the buffer to a pool and
// blocks on a 2-byte read, so an idle connection holds no read buffer. A
// burst of frames arriving together is read with one large read.
//
// The payload returned by Next is valid until the next call to Next or
// Release. A FrameReader is not safe for concurrent use.
type FrameReader struct {
	// BeforeRead, if set, is called before each read that may block:
	// partial is false when no frame has started (the connection is idle)
	// and true when a frame is partly read. Servers set deadlines here.
	BeforeRead func(partial bool)

	r          io.Reader
	max        int
	hdr        [FrameHeaderLen]byte
	buf        *[]byte
	start, end int
}

// NewFrameReader returns a reader that rejects frames longer than max
// (MaxFrameLen if max is zero or larger).
func NewFrameReader(r io.Reader, max int) *FrameReader {
	fr := &FrameReader{r: r}
	fr.SetMax(max)
	return fr
}

// SetMax changes the largest accepted frame length.
func (fr *FrameReader) SetMax(max int) {
	if max <= 0 || max > MaxFrameLen {
		max = MaxFrameLen
	}
	fr.max = max
}

// Buffered reports whether a buffer is held (input is pending).
func (fr *FrameReader) Buffered() bool { return fr.buf != nil }

// Pending returns how many bytes are buffered past the last frame
// returned (0 means the next Next will read from the stream).
func (fr *FrameReader) Pending() int {
	if fr.buf == nil {
		return 0
	}
	return fr.end - fr.start
}

// Release returns the buffer to the pool. The reader stays usable.
func (fr *FrameReader) Release() {
	if fr.buf != nil {
		readBufPool.Put(fr.buf)
		fr.buf = nil
		fr.start, fr.end = 0, 0
	}
}

// Next returns the payload of the next frame. A length above the limit
// returns ErrFrameTooLarge before anything is allocated; a zero length
// returns ErrFrameTooShort.
func (fr *FrameReader) Next() ([]byte, error) {
	if fr.buf != nil && fr.start == fr.end {
		fr.Release()
	}
	if fr.buf == nil {
		// Idle: block on the header alone, holding no buffer.
		if fr.BeforeRead != nil {
			fr.BeforeRead(false)
		}
		if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
			return nil, err
		}
		n := int(binary.BigEndian.Uint16(fr.hdr[:]))
		if err := fr.checkLen(n); err != nil {
			return nil, err
		}
		fr.buf = readBufPool.Get().(*[]byte)
		fr.start, fr.end = 0, 0
		if err := fr.fill(n); err != nil {
			return nil, err
		}
		p := (*fr.buf)[0:n]
		fr.start = n
		return p, nil
	}
	buf := *fr.buf
	if fr.end-fr.start < FrameHeaderLen {
		if err := fr.fill(FrameHeaderLen); err != nil {
			return nil, err
		}
		buf = *fr.buf
	}
	n := int(binary.BigEndian.Uint16(buf[fr.start:]))
	if err := fr.checkLen(n); err != nil {
		return nil, err
	}
	fr.start += FrameHeaderLen
	if err := fr.fill(n); err != nil {
		return nil, err
	}
	p := (*fr.buf)[fr.start : fr.start+n]
	fr.start += n
	return p, nil
}

func (fr *FrameReader) checkLen(n int) error {
	if n == 0 {
		return ErrFrameTooShort
	}
	if n > fr.max {
		return fmt.Errorf("%w: %d > %d", ErrFrameTooLarge, n, fr.max)
	}
	return nil
}

// fill makes sure at least need bytes are buffered from fr.start, moving
// the pending bytes to the front of the buffer if they would not fit.
func (fr *FrameReader) fill(need int) error {
	buf := *fr.buf
	if fr.end-fr.start >= need {
		return nil
	}
	if fr.start+need > len(buf) {
		copy(buf, buf[fr.start:fr.end])
		fr.end -= fr.start
		fr.start = 0
	}
	if fr.BeforeRead != nil {
		fr.BeforeRead(true)
	}
	n, err := io.ReadAtLeast(fr.r, buf[fr.end:], need-(fr.end-fr.start))
	fr.end += n
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// ReadSmallFrame reads exactly one frame into buf, whose length bounds the
// frame's; it reads nothing past the frame. The handshake uses it, so
// nothing is buffered for a peer that has not finished the handshake.
func ReadSmallFrame(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [FrameHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n == 0 {
		return nil, ErrFrameTooShort
	}
	if n > len(buf) {
		return nil, fmt.Errorf("%w: %d > %d", ErrFrameTooLarge, n, len(buf))
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf[:n], nil
}

// AppendFrame appends payload as one frame to dst.
func AppendFrame(dst, payload []byte) ([]byte, error) {
	if len(payload) == 0 {
		return dst, ErrFrameTooShort
	}
	if len(payload) > MaxFrameLen {
		return dst, ErrFrameTooLarge
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(payload)))
	return append(dst, payload...), nil
}

// WriteFrame writes payload as one frame to w.
func WriteFrame(w io.Writer, payload []byte) error {
	b, err := AppendFrame(make([]byte, 0, FrameHeaderLen+len(payload)), payload)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
