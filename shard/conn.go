package shard

import (
	"container/list"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"securefastchat/proto"
	"securefastchat/ratelimit"
	"securefastchat/store"
)

var (
	errConnClosed   = errors.New("shard: connection closed")
	errSlowConsumer = errors.New("shard: slow consumer")
)

// Pools. Output buffers start small and are kept only while small;
// message buffers come in two sizes so a 256-byte message does not pin
// 64 KiB while it waits in a shard's inbox.
const (
	outBufSize    = 16 << 10
	smallMsgSize  = 1 << 10
	largeMsgSize  = proto.MaxPlaintextLen
	keepOutBufMax = 1 << 20
)

var (
	outPool      = sync.Pool{New: func() any { b := make([]byte, 0, outBufSize); return &b }}
	smallMsgPool = sync.Pool{New: func() any { b := make([]byte, 0, smallMsgSize); return &b }}
	largeMsgPool = sync.Pool{New: func() any { b := make([]byte, 0, largeMsgSize); return &b }}
)

func getMsgBuf(n int) *[]byte {
	if n <= smallMsgSize {
		return smallMsgPool.Get().(*[]byte)
	}
	return largeMsgPool.Get().(*[]byte)
}

func putMsgBuf(b *[]byte) {
	if b == nil {
		return
	}
	*b = (*b)[:0]
	if cap(*b) <= smallMsgSize {
		smallMsgPool.Put(b)
	} else {
		largeMsgPool.Put(b)
	}
}

// conn is one client connection.
type conn struct {
	// Static after construction.
	sh    *Shard
	set   *Set
	nc    net.Conn
	ip    string
	start time.Time

	// Any goroutine: the logger, with the user once logged in.
	log atomic.Pointer[slog.Logger]

	// Set by the reader at login, before the conn is published in the
	// directory; read-only after.
	user      string         // canonical
	dev       uint64         // the device it logged in as (its id in the account's device list)
	receiving bool           // takes deliveries (not a LoginNoDeliveries session)
	seq       *atomic.Uint64 // the device's delivery sequence (seqs)

	// Owned by the reader goroutine.
	readerState

	// Any goroutine (atomics): which acks the reader lets through.
	acks ackGate

	// Owned by the shard loop (inbox.go).
	inbox

	// Guarded by liveMu (live.go).
	liveState

	// Guarded by the gate's mutex.
	gateElem *list.Element // place among connections not logged in

	// Guarded by the Set's links.mu (links.go).
	link *link

	// Guarded by wmu (outq.go).
	outQueue
}

// readerState is what a connection's reader goroutine owns.
type readerState struct {
	fr        *proto.FrameReader
	authed    bool
	token     []byte       // this session's token, for logout
	frameDL   bool         // a frame deadline is set for the frame being read
	closeRecv bool         // the peer sent Close
	checked   []byte       // the canonical name this connection found free (CheckUsername)
	upload    *groupUpload // a multi-part group change under way
	// looked are the users whose keys this session has looked up (and
	// been charged for): their device list costs nothing more, as one
	// lookup is a user's keys and devices together. At most maxLooked.
	looked map[string]struct{}
}

// maxLooked bounds readerState.looked; past it the set starts again.
const maxLooked = 512

// box names the device's inbox.
func (c *conn) box() store.Inbox { return store.Inbox{User: c.user, Device: c.dev} }

func newConn(sh *Shard, nc net.Conn, ip string) *conn {
	return &conn{sh: sh, set: sh.set, nc: nc, ip: ip, start: sh.set.opts.Now()}
}

// logger returns the connection's logger (made on first use, so a refused
// connection costs none).
func (c *conn) logger() *slog.Logger {
	if l := c.log.Load(); l != nil {
		return l
	}
	l := c.set.log.With("shard", c.sh.id, "remote", c.ip)
	if c.log.CompareAndSwap(nil, l) {
		return l
	}
	return c.log.Load()
}

// run is the reader goroutine.
func (c *conn) run() {
	defer c.cleanup()
	defer func() {
		if r := recover(); r != nil {
			c.set.Stats.Panics.Add(1)
			c.logger().Error("shard: panic in connection", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	if !c.handshake() {
		return
	}
	for {
		p, err := c.fr.Next()
		if err != nil {
			c.readFailed(err)
			return
		}
		pb := proto.GetPlainBuf()
		msg, err := c.sess.Open((*pb)[:0], p)
		if err != nil {
			proto.PutPlainBuf(pb)
			c.set.Stats.ProtocolErrors.Add(1)
			c.set.closeLog.log(c.logger(), CloseProtocol, "closing connection: frame failed to open", "err", err)
			c.abort(CloseProtocol)
			return
		}
		ok := c.handle(msg)
		proto.PutPlainBuf(pb)
		if !ok {
			return
		}
	}
}

func (c *conn) readFailed(err error) {
	switch {
	case c.closeRecv:
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		c.logger().Debug("connection ended without Close (abnormal end)", "user", c.user)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.logger().Debug("connection timed out", "user", c.user, "authed", c.authed)
	case errors.Is(err, proto.ErrFrameTooLarge), errors.Is(err, proto.ErrFrameTooShort):
		c.set.Stats.ProtocolErrors.Add(1)
		c.set.closeLog.log(c.logger(), CloseProtocol, "closing connection: bad frame length", "err", err)
		c.abort(CloseProtocol)
	case errors.Is(err, net.ErrClosed):
	default:
		c.logger().Debug("read failed", "err", err)
	}
}

// handshake runs the server side of the handshake under an absolute
// deadline. It reads exactly one small frame, so nothing is buffered for a
// peer that has not finished.
func (c *conn) handshake() bool {
	o := &c.set.opts
	_ = c.nc.SetDeadline(c.start.Add(o.HandshakeTimeout))
	var buf [proto.MaxHelloLen]byte
	hello, err := proto.ReadSmallFrame(c.nc, buf[:])
	if err != nil {
		c.set.Stats.HandshakeFailed.Add(1)
		c.logger().Debug("handshake: reading hello", "err", err)
		return false
	}
	reply, sess, err := proto.ServerHandshake(proto.ServerConfig{Static: o.Static}, hello)
	if err != nil {
		c.set.Stats.HandshakeFailed.Add(1)
		c.logger().Debug("handshake failed", "err", err)
		if reply != nil {
			_ = proto.WriteFrame(c.nc, reply)
		}
		return false
	}
	if err := proto.WriteFrame(c.nc, reply); err != nil {
		c.set.Stats.HandshakeFailed.Add(1)
		return false
	}
	c.wmu.Lock()
	c.sess = sess
	c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Time{})
	_ = c.nc.SetReadDeadline(c.start.Add(o.LoginTimeout))
	c.fr = proto.NewFrameReader(c.nc, proto.MaxFrameLen)
	c.fr.BeforeRead = c.beforeRead
	return true
}

// beforeRead sets read deadlines once logged in: an idle deadline while no
// frame has started, and an absolute per-frame deadline once one has (not
// extended per byte, against slowloris). Before login the absolute login
// deadline set at the handshake stays.
func (c *conn) beforeRead(partial bool) {
	if !c.authed {
		return
	}
	o := &c.set.opts
	if !partial {
		c.frameDL = false
		_ = c.nc.SetReadDeadline(o.Now().Add(o.IdleTimeout))
		return
	}
	if !c.frameDL {
		c.frameDL = true
		_ = c.nc.SetReadDeadline(o.Now().Add(o.FrameTimeout))
	}
}

// handle processes one request; false closes the connection.
func (c *conn) handle(msg []byte) bool {
	t, id, body, err := proto.ParseHeader(msg)
	if err != nil {
		c.replyErr(0, proto.CodeBadRequest, "message shorter than its header")
		return true
	}
	c.frameDL = false
	failpoint("handle", c.user)
	switch t {
	case proto.TSignup, proto.TSignupInvite, proto.TLogin, proto.TResume, proto.TLoginWith, proto.TResumeWith, proto.TLoginDevice, proto.TRecover:
		if c.authed {
			c.replyErr(id, proto.CodeAlreadyLoggedIn, "this connection is logged in")
			return true
		}
		return c.login(t, id, body)
	case proto.TCheckUsername:
		var m proto.UserReq
		if err := m.Parse(body); err != nil {
			c.replyBad(id, err)
			return true
		}
		ok, err := c.set.opts.Accounts.Available(c.ip, m.User)
		if err != nil {
			c.replyFailure(id, err)
			return true
		}
		if ok {
			// A sign-up for this name on this connection spends no more.
			c.checked, _ = proto.AppendCanonicalUsername(c.checked[:0], m.User)
		}
		c.reply((&proto.Available{Available: ok}).Append(nil, id))
	case proto.TPing:
		var m proto.Ping
		if err := m.Parse(body); err != nil {
			c.replyBad(id, err)
			return true
		}
		c.reply(m.Append(nil, proto.TPong, id))
	case proto.TLinkOpen:
		c.linkOpen(id, body)
	case proto.TLinkData:
		c.linkData(id, body)
	case proto.TClose:
		c.closeRecv = true
		c.closeGraceful(CloseNormal)
		return false
	case proto.TLogout, proto.TGetKeys, proto.TSendDM, proto.TSendDMFor, proto.TSendDMDevices, proto.TSendDMDevicesDetail, proto.TAck,
		proto.TGroupChange, proto.TGroupChangeV2, proto.TGroupChangeV3, proto.TGroupBadEpoch, proto.TGroupBadEpochV2, proto.TGroupList, proto.TGroupChain, proto.TGroupKeys, proto.TSendGroup, proto.TSendGroupFile,
		proto.TSignal, proto.TSignalDevices, proto.TBroadcast, proto.TRelation, proto.TBlockedList, proto.TGroupJoin, proto.TGroupInvites,
		proto.TDeviceChain, proto.TDeviceAppend, proto.TDeviceSeen, proto.TChangePassword:
		if !c.authed {
			c.replyErr(id, proto.CodeUnauthenticated, "log in first")
			return true
		}
		return c.handleAuthed(t, id, body)
	default:
		c.replyErr(id, proto.CodeUnsupported, fmt.Sprintf("message type %#x is not supported", uint8(t)))
	}
	return true
}

func (c *conn) handleAuthed(t proto.MsgType, id uint32, body []byte) bool {
	switch t {
	case proto.TSendDM, proto.TSendDMFor:
		c.sendDM(t, id, body)
	case proto.TSendDMDevices, proto.TSendDMDevicesDetail:
		c.sendDMDevices(id, body, t == proto.TSendDMDevicesDetail)
	case proto.TGroupChange, proto.TGroupChangeV2, proto.TGroupChangeV3:
		c.groupChange(t, id, body)
	case proto.TGroupBadEpoch, proto.TGroupBadEpochV2:
		c.badEpoch(t, id, body)
	case proto.TGroupList, proto.TGroupChain, proto.TGroupKeys:
		c.groupRead(t, id, body)
	case proto.TSendGroup, proto.TSendGroupFile:
		c.sendGroup(id, body, t == proto.TSendGroupFile)
	case proto.TSignalDevices:
		c.signalDevices(id, body)
	case proto.TSignal:
		c.signal(id, body)
	case proto.TBroadcast:
		c.broadcast(id, body)
	case proto.TRelation:
		c.changeRelation(id, body)
	case proto.TGroupJoin:
		c.joinGroup(id, body)
	case proto.TDeviceChain:
		c.deviceChain(id, body)
	case proto.TDeviceAppend:
		c.appendDevice(id, body)
	case proto.TDeviceSeen:
		c.devicesSeen(id, body)
	case proto.TChangePassword:
		c.changePassword(id, body)
	case proto.TGroupInvites:
		if err := proto.ParseEmpty(body); err != nil {
			c.replyBad(id, err)
			return true
		}
		c.listInvites(id)
	case proto.TBlockedList:
		if err := proto.ParseEmpty(body); err != nil {
			c.replyBad(id, err)
			return true
		}
		c.listBlocked(id)
	case proto.TAck:
		ids, err := proto.ParseAckIDs(body)
		if err != nil {
			c.replyBad(id, err)
			return true
		}
		for i := 0; i < ids.Len(); i++ {
			ok, tooMany := c.acks.admit()
			if tooMany {
				c.set.Stats.ProtocolErrors.Add(1)
				c.set.closeLog.log(c.logger(), CloseProtocol, "closing connection: it acknowledges deliveries that are not pending", "bogus", maxBogusAcks)
				c.closeGraceful(CloseProtocol)
				return false
			}
			if ok {
				c.sh.post(event{kind: evAck, c: c, serverID: ids.At(i)})
			}
		}
	case proto.TGetKeys:
		var m proto.UserReq
		if err := m.Parse(body); err != nil {
			c.replyBad(id, err)
			return true
		}
		u, err := c.set.opts.Accounts.Keys(c.user, m.User, c.freeLookup(m.User))
		if err != nil {
			c.replyFailure(id, err)
			return true
		}
		c.lookedUp(u.Name)
		c.replyKeys(id, proto.TKeys, u)
	case proto.TLogout:
		if err := proto.ParseEmpty(body); err != nil {
			c.replyBad(id, err)
			return true
		}
		if c.token != nil {
			if err := c.set.opts.Accounts.Logout(c.token); err != nil {
				c.replyFailure(id, err)
				return true
			}
		}
		c.reply(proto.AppendEmpty(nil, proto.TOK, id))
		c.closeGraceful(CloseNormal)
		return false
	}
	return true
}

func (c *conn) login(t proto.MsgType, id uint32, body []byte) bool {
	o := &c.set.opts
	ctx, cancel := context.WithDeadline(context.Background(), c.start.Add(o.LoginTimeout))
	defer cancel()
	var res *Session
	var err error
	var flags uint8
	var keys *proto.Keys // a signup's: its contacts online are told
	switch t {
	case proto.TSignup, proto.TSignupInvite:
		var m proto.Signup
		if t == proto.TSignup {
			err = m.Parse(body)
		} else {
			err = m.ParseInvite(body)
		}
		if err == nil {
			canon, _ := proto.AppendCanonicalUsername(nil, m.User)
			checked := c.checked != nil && string(canon) == string(c.checked)
			c.checked = nil
			res, err = o.Accounts.Signup(ctx, c.ip, m.User, m.Password, &m.Keys, m.Invite, checked)
			keys = &m.Keys
		}
	case proto.TLogin, proto.TLoginWith:
		var m proto.Login
		if err = m.ParseAs(t, body); err == nil {
			flags = m.Flags
			if err = checkLoginFlags(flags); err == nil {
				res, err = o.Accounts.Login(ctx, c.ip, m.User, m.Password)
			}
		}
	case proto.TLoginDevice:
		var m proto.LoginDevice
		if err = m.Parse(body); err == nil {
			flags = m.Flags
			if err = checkLoginFlags(flags); err == nil {
				binding := c.sess.Binding()
				res, err = o.Accounts.LoginDevice(c.ip, m.User, m.DeviceID, func(k ed25519.PublicKey) bool { return m.Verify(k, binding) })
			}
		}
	case proto.TRecover:
		var m proto.Recover
		if c.sess.Version < 4 {
			err = proto.CodeUnsupported
		} else if err = m.Parse(body); err == nil {
			if res, err = o.Accounts.Recover(ctx, c.ip, m.User, m.Password, &m.Keys, m.Statement); err == nil {
				keys = &m.Keys
				// The old devices' sessions end now, as a revocation's.
				c.set.endSessions(res.User, "the account was recovered on a new device")
			}
		}
	case proto.TResume, proto.TResumeWith:
		var m proto.Resume
		if err = m.ParseAs(t, body); err == nil {
			flags = m.Flags
			if err = checkLoginFlags(flags); err == nil {
				res, err = o.Accounts.Resume(c.ip, m.User, m.Token)
			}
			if err == nil {
				res.Token = append([]byte(nil), m.Token...)
			}
		}
	}
	if err != nil {
		if errors.Is(err, proto.ErrMalformed) || errors.Is(err, proto.ErrTooLarge) {
			c.replyBad(id, err)
			return true
		}
		c.set.Stats.LoginsFailed.Add(1)
		c.replyFailure(id, err)
		return true
	}
	c.authed, c.user, c.dev, c.token = true, res.User, res.Device, res.Token
	c.linkLoggedIn()
	// A device the cached set left out (silent for a month, back) is sent
	// to from its login on: dropped before the login is answered.
	c.set.devsets.loggedIn(c.user, c.dev)
	c.receiving, c.seq = flags&proto.LoginNoDeliveries == 0, c.set.seqs.of(c.box())
	c.log.Store(c.logger().With("user", c.user))
	c.set.gate.release(c)
	_ = c.nc.SetReadDeadline(time.Time{})
	// Counted before the answer, so whoever got the answer sees it counted.
	c.set.Stats.LoginsOK.Add(1)
	c.reply((&proto.LoginOK{User: []byte(res.Display), Token: res.Token, Expires: res.Expires.Unix()}).Append(nil, id))
	c.loadContacts()
	c.loadBlocks()
	if keys != nil {
		c.set.devsets.drop(c.user) // a new account: none of a deleted one's devices
		c.set.keysChanged(c.user, keys)
	}
	if !c.receiving {
		// It sends and asks only: it replaces nothing, takes nothing from
		// the queue and shows nobody the user online.
		c.set.dir.addSide(c.user, c)
		c.logger().Info("logged in", "kind", loginKind(t), "device", fmt.Sprintf("%016x", c.dev), "deliveries", false)
		return true
	}
	old, first := c.set.dir.register(c)
	if old != nil {
		old.logger().Info("closing: the device's receiving session moved to another connection")
		old.closeGraceful(CloseReplaced)
	}
	c.sh.post(event{kind: evLogin, c: c})
	c.logger().Info("logged in", "kind", loginKind(t), "device", fmt.Sprintf("%016x", c.dev))
	c.cameOnline(first)
	return true
}

// checkLoginFlags refuses login flags this server does not know.
func checkLoginFlags(flags uint8) error {
	if flags&^proto.LoginFlagsKnown != 0 {
		return proto.CodeUnsupportedFeature
	}
	return nil
}

func loginKind(t proto.MsgType) string {
	switch t {
	case proto.TSignup, proto.TSignupInvite:
		return "signup"
	case proto.TResume, proto.TResumeWith:
		return "resume"
	case proto.TLoginDevice:
		return "device"
	case proto.TRecover:
		return "recover"
	}
	return "password"
}

// sendDM is the per-message path: parse, check, stamp, and hand the
// message to the receiver's shard.
func (c *conn) sendDM(t proto.MsgType, id uint32, body []byte) {
	var m proto.SendDM
	if err := m.ParseAs(t, body); err != nil {
		c.replyBad(id, err)
		return
	}
	var canon [proto.MaxUsernameLen]byte
	to, ds, now, accepted, ok := c.admitDM(id, canon[:0], m.To, m.Kind, len(m.Body))
	if !ok {
		return
	}
	if t == proto.TSendDMFor && m.KeyID != ds.Key {
		c.replyKeysChanged(id, string(to))
		return
	}
	if c.sess.Version >= 4 {
		// A version 4 sender seals for devices once the receiver or the
		// sender has more than the account's first device: this form is
		// for that device alone.
		legacy := [1]proto.DeviceCopy{{Device: ds.Key}}
		if !c.checkCopies(id, to, ds, now, legacy[:], nil) {
			return
		}
	}
	if len(ds.IDs) > 1 {
		c.sendToDevices(id, to, ds.IDs, &m, now, accepted)
		return
	}
	ep := deviceEndpoint(to, ds.IDs[0])
	rc := c.set.router.find(ep)
	if rc == nil || !accepted {
		// Away, or a request (the receiver has not written to the sender
		// nor shares a group with them): stored first and answered
		// "queued" either way, so a stranger cannot tell whether the
		// receiver is online.
		c.noteContact(to)
		c.set.persist(ep.inbox(), c.directEnvelope(&m, id, now), nil)
		return
	}
	c.noteContact(to)
	// The sender's number for it is in the sender's sequence, the
	// receiver's (given as it is written) in the receiver's: neither
	// learns the other's traffic.
	env := c.directEnvelope(&m, id, now)
	env.id = rc.seq.Add(1)
	c.set.route(rc, env)
}

// admitDM checks what every direct message must pass before it is
// routed: its kind, the sender's rate, the receiver's name (appended to
// canon), blocks, and the cost of a first message to someone; and it finds
// the receiver's devices. It answers the request itself when it refuses
// (ok false); accepted reports that the receiver accepts the sender, now
// is the message's stamp (unix ms).
func (c *conn) admitDM(id uint32, canon, rawTo []byte, kind uint8, size int) (to []byte, ds *DeviceSet, now int64, accepted, ok bool) {
	if kind != proto.KindText && kind != proto.KindFile {
		c.replyErr(id, proto.CodeUnsupportedFeature, "unknown message kind")
		return nil, nil, 0, false, false
	}
	if err := c.set.chargeMessage(c.user, size); err != nil {
		c.replyFailure(id, err)
		return nil, nil, 0, false, false
	}
	to, err := proto.AppendCanonicalUsername(canon, rawTo)
	if err != nil {
		c.replyErr(id, proto.CodeNoSuchRecipient, "no such user")
		return nil, nil, 0, false, false
	}
	if c.blocksUser(to) {
		c.replyErr(id, proto.CodeForbidden, "you block "+string(to)+": unblock them first (what they send you is dropped meanwhile)")
		return nil, nil, 0, false, false
	}
	accepted, wrote := c.relation(to)
	if !accepted && !wrote {
		// A first message to someone: charged before the name is looked
		// at, the same whether it exists, is online, or not.
		if err := c.set.opts.Accounts.FirstContact(c.user); err != nil {
			c.replyFailure(id, err)
			return nil, nil, 0, false, false
		}
	}
	now = c.set.opts.Now().UnixMilli()
	ds, err = c.set.devices(to, now)
	switch {
	case err != nil:
		c.replyFailure(id, err)
		return nil, nil, 0, false, false
	case ds == nil:
		c.replyErr(id, proto.CodeNoSuchRecipient, "no such user")
		return nil, nil, 0, false, false
	}
	return to, ds, now, accepted, true
}

// sendToDevices sends a direct message to every device of an account with
// several: those online get it at once (unless it is a request, which is
// stored first as for one device), the others through their inboxes. Each
// device numbers it in its own sequence.
func (c *conn) sendToDevices(id uint32, to []byte, devs []uint64, m *proto.SendDM, now int64, accepted bool) {
	c.noteContact(to)
	env := c.devicesEnvelope(m, id, now, len(devs))
	for _, dev := range devs {
		ep := deviceEndpoint(to, dev)
		if rc := c.set.router.find(ep); rc != nil && accepted {
			c.set.route(rc, env)
		} else {
			c.set.persist(ep.inbox(), env, nil)
		}
	}
}

// replyKeysChanged refuses a message sealed for keys user no longer has,
// with the current ones, so the sender's client can warn and seal again.
func (c *conn) replyKeysChanged(id uint32, user string) {
	u, err := c.set.opts.Store.GetUser(user)
	if err != nil {
		c.replyFailure(id, err)
		return
	}
	c.replyKeys(id, proto.TKeysChanged, u)
}

// replyKeys answers with a user's key record as message type t.
func (c *conn) replyKeys(id uint32, t proto.MsgType, u *store.User) {
	r := proto.KeysReply{User: []byte(u.Name), Keys: proto.Keys{BoxKey: u.BoxKey, SignKey: u.SignKey, KeySig: u.KeySig}}
	c.reply(r.AppendType(nil, t, id))
}

// cleanup runs when the reader exits.
func (c *conn) cleanup() {
	c.wmu.Lock()
	draining := c.closed && c.writing // a graceful close: the writer closes the socket
	c.wmu.Unlock()
	if !draining {
		c.abort(ClosePeer)
	}
	if c.fr != nil {
		c.fr.Release()
	}
	c.set.gate.release(c)
	c.leaveLink()
	if c.authed {
		if !c.receiving {
			c.set.dir.removeSide(c.user, c)
		} else if was, last := c.set.dir.unregister(c); was && last {
			c.wentOffline()
		}
		c.logger().Info("logged out")
	}
	if !c.sh.post(event{kind: evGone, c: c}) {
		// The shard has stopped; nobody else will account for c.
		c.sh.mu.Lock()
		delete(c.sh.conns, c)
		c.sh.mu.Unlock()
		c.sh.nconns.Add(-1)
	}
}

// reply queues a response.
func (c *conn) reply(msg []byte) { _ = c.enqueue(msg) }

func (c *conn) replyErr(id uint32, code proto.ErrorCode, text string) {
	c.reply((&proto.Error{Code: code, Message: []byte(text)}).Append(nil, id))
}

func (c *conn) replyBad(id uint32, err error) {
	if errors.Is(err, proto.ErrTooLarge) {
		c.replyErr(id, proto.CodeTooLarge, err.Error())
		return
	}
	c.replyErr(id, proto.CodeBadRequest, err.Error())
}

// replyFailure sends the code an account or store error carries, or
// internal for anything else (logged, never sent in full).
func (c *conn) replyFailure(id uint32, err error) {
	var code proto.ErrorCode
	var refused *ratelimit.Refused
	var remote *proto.RemoteError
	switch {
	case errors.As(err, &remote):
		c.replyErr(id, remote.Code, remote.Message)
	case errors.As(err, &refused):
		c.replyErr(id, proto.CodeRateLimited, refused.Error())
	case errors.As(err, &code):
		c.replyErr(id, code, codeText(code))
	case errors.Is(err, store.ErrUnavailable):
		c.replyErr(id, proto.CodeStorageUnavailable, "storage is unavailable; retry later")
	case errors.Is(err, context.DeadlineExceeded):
		c.replyErr(id, proto.CodeRateLimited, "the server is busy; retry later")
	default:
		c.logger().Error("request failed", "err", err)
		c.replyErr(id, proto.CodeInternal, "internal error")
	}
}

func codeText(code proto.ErrorCode) string {
	switch code {
	case proto.CodeSignupClosed:
		return "this server takes no new accounts"
	case proto.CodeInvalidInvite:
		return "sign-up needs an unused, unexpired invite code"
	case proto.CodeInvalidCredentials:
		return "invalid credentials"
	case proto.CodeRateLimited:
		return "too many attempts; retry later"
	case proto.CodeInvalidUsername:
		return proto.ErrInvalidUsername.Error()[len("proto: "):]
	case proto.CodeUsernameTaken:
		return "that user name is taken"
	case proto.CodeInvalidPassword:
		return fmt.Sprintf("a password is %d to %d bytes", proto.MinPasswordLen, proto.MaxPasswordLen)
	case proto.CodeInvalidKey:
		return "the public keys are malformed, of low order or not signed"
	case proto.CodeInvalidToken:
		return "the session token is not valid; log in with the password"
	case proto.CodeNoSuchUser:
		return "no such user"
	}
	return code.String()
}
