package shard

import (
	"bytes"
	"slices"

	"securefastchat/proto"
)

// Direct messages sealed for devices (protocol version 4): the sender
// wraps the message's key for every device of the receiver's list and
// every other device of its own; each device gets its own copy (a
// DeliverDevices with its wrap). The server cannot check a wrap, but it
// checks the set: a send that misses a device, or names one that is not
// on the list, is refused with the difference, and the sender's client
// reads the lists again and resends.

// sendDMDevices is the path of a message sealed for devices; with
// detail (SendDMDevicesDetail), the sender is told what became of it on
// each device.
func (c *conn) sendDMDevices(id uint32, body []byte, detail bool) {
	if c.sess.Version < 4 || detail && c.sess.Version < 6 {
		c.replyErr(id, proto.CodeUnsupported, "a message sealed for devices needs protocol version 4, and its outcome per device 6")
		return
	}
	var m proto.SendDMDevices
	if err := m.Parse(body); err != nil {
		c.replyBad(id, err)
		return
	}
	var canon [proto.MaxUsernameLen]byte
	size := len(m.Payload) + (len(m.Copies)+len(m.Own))*(8+proto.WrapLen)
	to, ds, now, accepted, ok := c.admitDM(id, canon[:0], m.To, m.Kind, size)
	if !ok {
		return
	}
	if !c.checkCopies(id, to, ds, now, m.Copies, m.Own) {
		return
	}
	c.noteContact(to)
	own := m.Own
	if bytes.Equal(to, []byte(c.user)) {
		own = nil // a note to oneself: the receiver's copies are the user's
	}
	var mine *DeviceSet
	if len(own) > 0 {
		var err error
		if mine, err = c.set.devices([]byte(c.user), now); err != nil || mine == nil {
			c.replyErr(id, proto.CodeInternal, "internal error")
			return
		}
	}
	// Every copy sent counts toward the sender's answer: it comes once
	// each of the receiver's is acknowledged or stored (delivered if one
	// was acknowledged), and each of the sender's other devices' is
	// stored: those are stored first (and delivered in order from there),
	// so the sender does not wait on its own devices.
	r := &devicesReply{directReply: directReply{from: c, reqID: id, sentID: c.seq.Add(1), time: now}}
	var outs []deviceOutcome // a sender who asks is told each device's
	if detail {
		r.detail = make([]proto.DeviceStatus, len(ds.All))
		outs = make([]deviceOutcome, len(ds.All))
		for i, dev := range ds.All {
			r.detail[i] = proto.DeviceStatus{Device: dev, Status: proto.StatusNotSent}
			outs[i] = deviceOutcome{r: r, status: &r.detail[i].Status}
		}
	}
	targets := make([]*envelope, 0, len(m.Copies)+len(own))
	eps := make([]endpoint, 0, cap(targets))
	for i := range m.Copies {
		if cp := &m.Copies[i]; sends(ds.IDs, cp.Device) {
			var out outcome = r
			if outs != nil {
				out = &outs[slices.Index(ds.All, cp.Device)] // (checkCopies: it is on the list)
			}
			targets = append(targets, c.copyEnvelope(&m, to, nil, cp, r, out, now))
			eps = append(eps, deviceEndpoint(to, cp.Device))
		}
	}
	for i := range own {
		if cp := &own[i]; cp.Device != c.dev && sends(mine.IDs, cp.Device) {
			env := c.copyEnvelope(&m, []byte(c.user), to, cp, r, ownCopy{r}, now)
			env.storeFirst = true
			targets = append(targets, env)
			eps = append(eps, deviceEndpoint([]byte(c.user), cp.Device))
		}
	}
	r.remaining.Store(int32(len(targets)))
	for i, env := range targets {
		// A request (the receiver has not accepted the sender) is stored
		// first, as for one device.
		if rc := c.set.router.find(eps[i]); rc != nil && (accepted || env.storeFirst) {
			if !env.storeFirst {
				env.id = rc.seq.Add(1)
			}
			c.set.route(rc, env)
		} else {
			c.set.persist(eps[i].inbox(), env, nil)
		}
	}
}

// sends reports whether dev is one of the devices sent to.
func sends(ids []uint64, dev uint64) bool {
	for _, id := range ids {
		if id == dev {
			return true
		}
	}
	return false
}

// checkCopies checks a send's copies against the lists: copies must name
// every device of the receiver's list (ds) and own every other device of
// the sender's. Otherwise it refuses the send with DevicesMismatch and
// reports false.
func (c *conn) checkCopies(id uint32, to []byte, ds *DeviceSet, now int64, copies, own []proto.DeviceCopy) bool {
	self := bytes.Equal(to, []byte(c.user))
	mine := ds
	if !self {
		var err error
		if mine, err = c.set.devices([]byte(c.user), now); err != nil || mine == nil {
			c.replyErr(id, proto.CodeInternal, "internal error")
			return false
		}
	}
	toOK := sameDevices(ds.All, 0, copies)
	ownOK := sameDevices(mine.All, c.dev, own)
	if self {
		ownOK = len(own) == 0
	}
	if toOK && ownOK {
		return true
	}
	var m proto.DevicesMismatch
	if !toOK {
		m.Users = append(m.Users, devicesDiff(bytes.Clone(to), ds.All, 0, copies)) // a clone: to stays on the sender's stack
	}
	if !ownOK {
		if self {
			m.Users = append(m.Users, devicesDiff([]byte(c.user), nil, 0, own))
		} else {
			m.Users = append(m.Users, devicesDiff([]byte(c.user), mine.All, c.dev, own))
		}
	}
	c.reply(m.Append(nil, id))
	return false
}

// sameDevices reports whether copies name each device of list but skip
// once each, and nothing else.
func sameDevices(list []uint64, skip uint64, copies []proto.DeviceCopy) bool {
	n := 0
	for _, d := range list {
		if d != skip {
			n++
		}
	}
	if len(copies) != n {
		return false
	}
	for i, cp := range copies {
		if cp.Device == skip || !sends(list, cp.Device) {
			return false
		}
		for _, before := range copies[:i] {
			if before.Device == cp.Device {
				return false
			}
		}
	}
	return true
}

// devicesDiff names the devices of list (but skip) that copies miss, and
// those copies name that are not on it (or twice).
func devicesDiff(user []byte, list []uint64, skip uint64, copies []proto.DeviceCopy) proto.DevicesDiff {
	d := proto.DevicesDiff{User: user}
	named := map[uint64]bool{}
	for _, cp := range copies {
		if cp.Device == skip || !sends(list, cp.Device) || named[cp.Device] {
			d.Extra = append(d.Extra, cp.Device)
		}
		named[cp.Device] = true
	}
	for _, dev := range list {
		if dev != skip && !named[dev] {
			d.Missing = append(d.Missing, dev)
		}
	}
	return d
}

// deviceOutcome is the outcome of the copy for one device of the
// receiver, for a sender told each device's: it notes the device's
// status, then counts as devicesReply does.
type deviceOutcome struct {
	r      *devicesReply
	status *uint8 // the device's entry in r.detail
}

func (o *deviceOutcome) delivered(sh *Shard) { *o.status = proto.StatusDelivered; o.r.delivered(sh) }

func (o *deviceOutcome) queued(sentID uint64) { *o.status = proto.StatusQueued; o.r.queued(sentID) }

func (o *deviceOutcome) refused(code proto.ErrorCode, why string) {
	*o.status = proto.StatusRefused
	o.r.refused(code, why)
}

// ownCopy is the outcome of a copy for another device of the sender: the
// sender's answer waits for it, but what becomes of it says nothing of the
// receiver's.
type ownCopy struct{ r *devicesReply }

func (o ownCopy) delivered(*Shard)                { o.r.done() }
func (o ownCopy) queued(uint64)                   { o.r.done() }
func (o ownCopy) refused(proto.ErrorCode, string) { o.r.done() }

// copyEnvelope makes the envelope of one device's copy: a DeliverDevices
// for a device of user to (peer is the message's receiver on a copy for
// another device of the sender, nil otherwise), told its outcome through
// out; r holds the sender's answer.
func (c *conn) copyEnvelope(m *proto.SendDMDevices, to, peer []byte, cp *proto.DeviceCopy, r *devicesReply, out outcome, now int64) *envelope {
	e := envPool.Get().(*envelope)
	d := proto.DeliverDevices{Time: now, From: []byte(c.user), FromDevice: c.dev, To: to, MsgID: m.MsgID, Kind: m.Kind, Wrap: cp.Wrap, Payload: m.Payload}
	if peer != nil {
		d.To = peer
	}
	e.buf = getMsgBuf(proto.MsgHeaderLen + 8 + 8 + 1 + 1 + len(d.From) + 8 + 1 + len(d.To) + proto.MsgIDLen + 1 + proto.WrapLen + 2 + len(m.Payload))
	*e.buf = d.Append(*e.buf, 0)
	f := *e.buf
	n := len(f) - len(m.Payload)
	e.frame, e.shared = f, false
	e.from, e.kind, e.time = c.user, m.Kind, now
	e.body = f[n:]
	e.wrap = f[n-2-proto.WrapLen : n-2]
	e.msgID = f[n-2-proto.WrapLen-1-proto.MsgIDLen : n-2-proto.WrapLen-1]
	e.fromDevice, e.peer = c.dev, string(peer)
	e.reply = r.directReply
	e.out = out
	return e
}
