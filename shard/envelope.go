package shard

import (
	"sync"
	"sync/atomic"
	"time"

	"securefastchat/proto"
	"securefastchat/store"
)

// envelope is a routed message, direct or group: the one form it has from
// the moment the sender's frame is parsed to its receivers' writes and the
// store. It holds the frame its receivers get (a Deliver or DeliverGroup
// whose server_id each receiver's delivery sets) and, pointing into that
// frame, the fields the store keeps; nothing on the path decodes it again.
// It is addressed, per delivery, to a recipient endpoint: a device of a
// user (see router).
//
// A direct message to an account with one device has one receiver: its
// envelope comes from a pool and belongs to whoever holds it (the sender's
// reader, then the receiver's shard loop, or the committer), and is
// released once its outcome is told. A direct message to an account with
// several devices, and a group message, are shared read-only by their
// deliveries (one per device) and left to the collector.
type envelope struct {
	frame  []byte  // the Deliver or DeliverGroup, server_id 0
	id     uint64  // a direct message's number in its receiver's sequence, if given before it is routed
	buf    *[]byte // the pooled buffer frame lives in (direct only)
	shared bool    // several receivers: copied before its server_id is set

	from  string
	msgID []byte // in frame
	kind  uint8
	time  int64  // the server's stamp, unix ms
	body  []byte // in frame: sealed end to end
	group string
	epoch uint32
	sig   []byte // in frame
	// A copy of a message sealed for devices (version 4): the sending
	// device, this device's wrap, and the message's receiver on a copy
	// for another device of the sender. A group message from a device
	// other than its sender's first (version 5) names the device too.
	fromDevice uint64
	wrap       []byte // in frame
	peer       string
	storeFirst bool // stored before it is delivered, in order with what follows

	out   outcome     // told what became of it, per receiver
	reply directReply // a direct message's outcome (out points here)
}

// outcome is told what became of an envelope for one receiver: the
// receiver's client acknowledged it, it is stored for them, or it was
// refused. A direct message has one receiver; a group message's outcome
// (groupAck) collects its members'.
type outcome interface {
	delivered(sh *Shard)                      // from the receiver's shard loop
	queued(sentID uint64)                     // from the committer; sentID: the stored one, for a repeat
	refused(code proto.ErrorCode, why string) // from any goroutine
}

// directReply answers the sender of a direct message with Sent.
type directReply struct {
	from   *conn // nil: nobody to answer
	reqID  uint32
	sentID uint64 // in the sender's sequence
	time   int64
}

func (r *directReply) delivered(sh *Shard) {
	m := proto.Sent{ServerID: r.sentID, Time: r.time, Status: proto.StatusDelivered}
	sh.scratch = m.Append(sh.scratch[:0], r.reqID)
	_ = r.from.enqueueHeld(sh, sh.scratch) // a sender that has gone needs no ack
}

func (r *directReply) queued(sentID uint64) {
	if r.from != nil {
		_ = r.from.enqueue((&proto.Sent{ServerID: sentID, Time: r.time, Status: proto.StatusQueued}).Append(nil, r.reqID))
	}
}

func (r *directReply) refused(code proto.ErrorCode, why string) {
	if r.from != nil {
		r.from.replyErr(r.reqID, code, why)
	}
}

// devicesReply answers the sender of a direct message to an account with
// several devices: once every device has it (acknowledged or stored), Sent
// says delivered if one of them acknowledged it, else queued. A device
// that refuses it (its queue is full) does not refuse it for the others:
// only if every device refused is the sender refused, with the first
// refusal.
//
// A sender who asked (SendDMDevicesDetail) is answered SentDevices: what
// became of the message on each device of the receiver's list (detail,
// one entry per device, each written once by that device's outcome
// before it counts down).
type devicesReply struct {
	remaining atomic.Int32
	acked     atomic.Bool // one device acknowledged it
	taken     atomic.Bool // one device has it (acknowledged or stored)
	mu        sync.Mutex
	refusal   *proto.RemoteError // the first refusal
	detail    []proto.DeviceStatus
	directReply
}

func (r *devicesReply) delivered(*Shard) { r.acked.Store(true); r.taken.Store(true); r.done() }

func (r *devicesReply) queued(sentID uint64) {
	if sentID != 0 {
		r.sentID = sentID // a repeat's: the first one's
	}
	r.taken.Store(true)
	r.done()
}

func (r *devicesReply) refused(code proto.ErrorCode, why string) {
	r.mu.Lock()
	if r.refusal == nil {
		r.refusal = &proto.RemoteError{Code: code, Message: why}
	}
	r.mu.Unlock()
	r.done()
}

// done records one device's outcome.
func (r *devicesReply) done() {
	if r.remaining.Add(-1) != 0 || r.from == nil {
		return
	}
	status := proto.StatusQueued
	switch {
	case r.acked.Load():
		status = proto.StatusDelivered
		fallthrough
	case r.taken.Load():
		sent := proto.Sent{ServerID: r.sentID, Time: r.time, Status: status}
		if r.detail != nil {
			_ = r.from.enqueue((&proto.SentDevices{Sent: sent, Devices: r.detail}).Append(nil, r.reqID))
		} else {
			_ = r.from.enqueue(sent.Append(nil, r.reqID))
		}
	default:
		r.mu.Lock()
		e := r.refusal
		r.mu.Unlock()
		r.from.replyErr(r.reqID, e.Code, e.Message)
	}
}

var envPool = sync.Pool{New: func() any { return new(envelope) }}

// directEnvelope makes the envelope of a direct message from c's user,
// stamped now, answered to request id of c.
func (c *conn) directEnvelope(m *proto.SendDM, id uint32, now int64) *envelope {
	e := envPool.Get().(*envelope)
	d := proto.Deliver{Time: now, From: []byte(c.user), MsgID: m.MsgID, Kind: m.Kind, Body: m.Body}
	e.buf = getMsgBuf(proto.MsgHeaderLen + 8 + 8 + 1 + len(d.From) + proto.MsgIDLen + 1 + 2 + len(m.Body))
	*e.buf = d.Append(*e.buf, 0)
	f := *e.buf
	n := len(f) - len(m.Body)
	e.frame, e.shared = f, false
	e.from, e.kind, e.time = c.user, m.Kind, now
	e.body = f[n:]
	e.msgID = f[n-2-1-proto.MsgIDLen : n-2-1]
	e.group, e.epoch, e.sig = "", 0, nil
	e.reply = directReply{from: c, reqID: id, sentID: c.seq.Add(1), time: now}
	e.out = &e.reply
	return e
}

// devicesEnvelope makes the shared envelope of a direct message from c's
// user to n devices of one account.
func (c *conn) devicesEnvelope(m *proto.SendDM, id uint32, now int64, n int) *envelope {
	e := c.directEnvelope(m, id, now)
	r := &devicesReply{directReply: e.reply}
	r.remaining.Store(int32(n))
	e.shared, e.out = true, r
	return e
}

// groupEnvelope makes the shared envelope of a group message from
// fromDevice (0: the sender's first device, whose key is the account's);
// out collects its members' outcomes.
func groupEnvelope(from string, fromDevice uint64, m *proto.SendGroup, now int64, out outcome) *envelope {
	d := proto.DeliverGroup{Time: now, Group: m.Group, From: []byte(from), FromDevice: fromDevice, Epoch: m.Epoch, MsgID: m.MsgID, Body: m.Body, Sig: m.Sig}
	f := d.Append(nil, 0)
	end := len(f) - len(m.Sig)
	n := end - len(m.Body)
	return &envelope{frame: f, shared: true, from: from, fromDevice: fromDevice, kind: proto.KindText, time: now,
		msgID: f[n-2-proto.MsgIDLen : n-2], body: f[n:end], group: string(m.Group), epoch: m.Epoch, sig: f[end:], out: out}
}

// minVersion is the oldest protocol version that can take the envelope
// (versionFor).
func (e *envelope) minVersion() uint8 { return versionFor(e.wrap != nil, e.group, e.fromDevice) }

// storedMinVersion is minVersion for a stored message.
func storedMinVersion(q *store.Queued) uint8 { return versionFor(q.Wrap != nil, q.Group, q.FromDevice) }

// versionFor is the oldest protocol version that can take a message: 4
// for a copy sealed for devices (wrapped), 5 for a group message from a
// device other than its sender's first, else any.
func versionFor(wrapped bool, group string, fromDevice uint64) uint8 {
	switch {
	case wrapped:
		return 4
	case group != "" && fromDevice != 0:
		return 5
	}
	return 0
}

// frameFor returns the frame for one receiver, numbered id in its
// sequence: a direct message's own buffer, or a copy of a shared one in
// scratch.
func (e *envelope) frameFor(id uint64, scratch *[]byte) []byte {
	if e.shared {
		*scratch = proto.SetDeliverID(append((*scratch)[:0], e.frame...), id)
		return *scratch
	}
	return proto.SetDeliverID(e.frame, id)
}

// record returns the store record of the envelope for one device.
func (e *envelope) record(to store.Inbox, stored time.Time) *store.Queued {
	q := &store.Queued{To: to.User, Device: to.Device, From: e.from, SentID: e.reply.sentID, Kind: e.kind, Time: e.time, Stored: stored,
		Body: append([]byte(nil), e.body...), Group: e.group, Epoch: e.epoch}
	if e.group != "" {
		q.SentID, q.Kind = 0, 0
		q.Sig = append([]byte(nil), e.sig...)
		q.FromDevice = e.fromDevice
	}
	if e.wrap != nil {
		q.FromDevice, q.Peer, q.Wrap = e.fromDevice, e.peer, append([]byte(nil), e.wrap...)
	}
	copy(q.MsgID[:], e.msgID)
	return q
}

// done releases a direct envelope once its outcome is told.
func (e *envelope) done() {
	if e.shared {
		return
	}
	putMsgBuf(e.buf)
	*e = envelope{}
	envPool.Put(e)
}

// appendStored appends the frame of a stored message: a Deliver (a
// DeliverRequest if request), a DeliverDevices, or a DeliverGroup.
func appendStored(b []byte, q *store.Queued, request bool) []byte {
	if q.Wrap != nil {
		d := proto.DeliverDevices{ServerID: q.ServerID, Time: q.Time, From: []byte(q.From), FromDevice: q.FromDevice, To: []byte(q.To),
			MsgID: q.MsgID[:], Kind: q.Kind, Wrap: q.Wrap, Payload: q.Body}
		if q.Peer != "" {
			d.To = []byte(q.Peer)
		}
		if request {
			d.Flags = proto.DeliverFlagRequest
		}
		return d.Append(b, 0)
	}
	if q.Group != "" {
		d := proto.DeliverGroup{ServerID: q.ServerID, Time: q.Time, Group: []byte(q.Group), From: []byte(q.From), FromDevice: q.FromDevice, Epoch: q.Epoch, MsgID: q.MsgID[:], Body: q.Body, Sig: q.Sig}
		return d.Append(b, 0)
	}
	d := proto.Deliver{ServerID: q.ServerID, Time: q.Time, From: []byte(q.From), MsgID: q.MsgID[:], Kind: q.Kind, Body: q.Body, Request: request}
	return d.Append(b, 0)
}
