package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"securefastchat/proto"
)

// DialOptions configure Dial.
type DialOptions struct {
	// Pins is the home whose known_servers record pins server keys
	// (host:port -> key). If nil, no pin is checked or kept.
	Pins Storage
	// ServerKey, if set, is the fingerprint the server must present, even
	// on first contact.
	ServerKey string
	// NoPinNew refuses an unknown server instead of pinning its key.
	NoPinNew bool
	// Dial opens the byte stream. If nil, a TCP dialer is used.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// HandshakeTimeout bounds the handshake. If zero, 10 s.
	HandshakeTimeout time.Duration
	// Deliveries is the capacity of the delivery channel. If zero, 1024.
	Deliveries int
	// OnDelivery, if set, receives every delivery on the connection's
	// reader goroutine instead of the Deliveries channel, without copies:
	// the Delivery and everything it points to are valid only during the
	// call, and it must not block on a response from this connection. If
	// it returns true the connection acknowledges the delivery, batching
	// the acks of a burst into one frame.
	OnDelivery func(*Delivery) bool
	// MaxVersion, if set, is the highest protocol version offered (to
	// speak as an older client does).
	MaxVersion uint8
}

// maxQueuedOut bounds the sealed bytes waiting for the writer; senders
// wait beyond it.
const maxQueuedOut = 1 << 20

// Conn is one authenticated, encrypted connection to a server: requests
// and their responses, and the stream of deliveries the server pushes.
// Its methods are safe for concurrent use.
type Conn struct {
	// Static after Dial.
	nc           net.Conn
	addr         string
	serverKey    proto.PublicKey
	firstContact *FirstContact // nil unless this Dial pinned the server

	// Guarded by wmu. Senders seal into out; whoever finds no write in
	// progress writes out (and what others add meanwhile) in one call.
	wmu     sync.Mutex
	wcond   sync.Cond // signalled when a write finishes
	sess    *proto.Session
	out     []byte
	spare   []byte
	writing bool
	corked  int // Batch calls in progress: hold writes until the last ends
	werr    error

	// Guarded by mu.
	mu      sync.Mutex
	nextID  uint32
	waiters map[uint32]waiter
	err     error // why the connection ended

	onDelivery func(*Delivery) bool

	// Guarded by pushMu: live pushes (presence, signals, broadcasts) and,
	// until OnPush is set, the first of them kept for it.
	pushMu sync.Mutex
	onPush func(t proto.MsgType, body []byte)
	early  []push

	deliveries chan *Delivery
	closeOnce  sync.Once
	closed     chan struct{} // closed when the connection has ended
	readerDone chan struct{}
	reason     uint8 // the server's Close reason, if it sent one
}

// push is a live push kept until OnPush is set.
type push struct {
	t    proto.MsgType
	body []byte
}

// maxEarlyPushes bounds the pushes kept before OnPush is set.
const maxEarlyPushes = 256

// OnPush sets the function that receives live pushes: TPresence,
// TSignalMsg, TSignalDevicesMsg, TBroadcastMsg, TKeysChanged, TGroupChanged and TDevicesChanged
// bodies. It runs on the connection's reader
// goroutine, so it must not block; body is valid only during the call.
// Pushes that arrived before it was set (the presence list follows the
// login reply at once) are passed to it first.
func (c *Conn) OnPush(fn func(t proto.MsgType, body []byte)) {
	c.pushMu.Lock()
	defer c.pushMu.Unlock()
	c.onPush = fn
	for _, p := range c.early {
		fn(p.t, p.body)
	}
	c.early = nil
}

func (c *Conn) pushed(t proto.MsgType, body []byte) {
	c.pushMu.Lock()
	defer c.pushMu.Unlock()
	switch {
	case c.onPush != nil:
		c.onPush(t, body)
	case len(c.early) < maxEarlyPushes:
		c.early = append(c.early, push{t: t, body: append([]byte(nil), body...)})
	}
}

type response struct {
	t    proto.MsgType
	body []byte
}

// waiter is a request waiting for its response: a channel (Request) or a
// callback (Go).
type waiter struct {
	ch chan response
	fn func(proto.MsgType, []byte, error)
}

// Dial connects to addr and runs the handshake. The server's key is
// checked against opts.ServerKey and the pin file; a key that differs from
// the pinned one fails with a *KeyChangedError before any credential is
// sent, and an unknown key is pinned (unless NoPinNew).
func Dial(ctx context.Context, addr string, opts DialOptions) (*Conn, error) {
	if opts.Dial == nil {
		opts.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	if opts.HandshakeTimeout == 0 {
		opts.HandshakeTimeout = 10 * time.Second
	}
	want := ""
	if opts.ServerKey != "" {
		fp, err := proto.NormalizeFingerprint(opts.ServerKey)
		if err != nil {
			return nil, err
		}
		want = fp
	}
	var pinned *proto.PublicKey
	var pinnedFP string
	if opts.Pins != nil {
		k, fp, err := lookupPin(opts.Pins, addr)
		if err != nil {
			return nil, err
		}
		pinned, pinnedFP = k, fp
	}
	if want != "" && pinnedFP != "" && want != pinnedFP {
		return nil, &KeyChangedError{Addr: addr, Pinned: pinnedFP, Presented: want}
	}
	c, err := dialOnce(ctx, addr, opts, pinned)
	if err != nil {
		if pinned != nil && !errors.Is(err, proto.ErrUnsupportedVersion) && ctx.Err() == nil {
			// The server may hold another key: ask for it (first-contact
			// shape, sending nothing) so the error can show both.
			if probe, perr := dialOnce(ctx, addr, opts, nil); perr == nil {
				got := probe.serverKey.Fingerprint()
				probe.Close()
				if got != pinnedFP {
					return nil, &KeyChangedError{Addr: addr, Pinned: pinnedFP, Presented: got}
				}
			}
		}
		return nil, err
	}
	got := c.serverKey.Fingerprint()
	if want != "" && got != want {
		c.Close()
		return nil, &KeyChangedError{Addr: addr, Pinned: want, Presented: got, Expected: true, FirstContact: pinned == nil}
	}
	if pinned == nil && opts.Pins != nil {
		if opts.NoPinNew {
			c.Close()
			return nil, &UnknownServerError{Addr: addr, Fingerprint: got}
		}
		if err := addPin(opts.Pins, addr, c.serverKey); err != nil {
			c.Close()
			return nil, err
		}
		c.firstContact = &FirstContact{Addr: addr, Fingerprint: got, Checked: want != ""}
	}
	return c, nil
}

func dialOnce(ctx context.Context, addr string, opts DialOptions, pinned *proto.PublicKey) (*Conn, error) {
	nc, err := opts.Dial(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConnect, err)
	}
	dl := time.Now().Add(opts.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = nc.SetDeadline(dl)
	hs, err := proto.NewClientHandshake(proto.ClientConfig{ServerKey: pinned, MinVersion: proto.ClientMinVersion, MaxVersion: opts.MaxVersion})
	if err != nil {
		nc.Close()
		return nil, err
	}
	if err := proto.WriteFrame(nc, hs.Hello()); err != nil {
		nc.Close()
		return nil, fmt.Errorf("%w: sending hello: %v", ErrConnect, err)
	}
	var buf [proto.MaxHelloLen]byte
	reply, err := proto.ReadSmallFrame(nc, buf[:])
	if errors.Is(err, proto.ErrFrameTooLarge) || errors.Is(err, proto.ErrFrameTooShort) {
		nc.Close()
		return nil, fmt.Errorf("%w: %s answered with something else (is this the chat port, not the admin or web port?)", ErrNotServer, addr)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		nc.Close()
		return nil, fmt.Errorf("%w: %s did not answer the handshake in time (is it a securefastchat server? it may also be overloaded)", proto.ErrHandshakeFailed, addr)
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("%w: no handshake reply: %v", proto.ErrHandshakeFailed, err)
	}
	sess, key, err := hs.Finish(reply)
	if errors.Is(err, proto.ErrMalformed) {
		nc.Close()
		return nil, fmt.Errorf("%w: %s answered with something else (is this the chat port, not the admin or web port?)", ErrNotServer, addr)
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	n := opts.Deliveries
	if n == 0 {
		n = 1024
	}
	c := &Conn{
		nc: nc, addr: addr, serverKey: key, sess: sess,
		waiters:    make(map[uint32]waiter),
		deliveries: make(chan *Delivery, n),
		closed:     make(chan struct{}),
		readerDone: make(chan struct{}),
		onDelivery: opts.OnDelivery,
	}
	c.wcond.L = &c.wmu
	go c.readLoop()
	return c, nil
}

// ServerKey returns the server's static key.
func (c *Conn) ServerKey() proto.PublicKey { return c.serverKey }

// Version returns the protocol version agreed with the server.
func (c *Conn) Version() uint8 { return c.sess.Version }

// Delivery is one message the server pushed: a direct message or a group
// message (exactly one of DM and Group is set).
type Delivery struct {
	ServerID uint64
	DM       *proto.Deliver
	Group    *proto.DeliverGroup
	Devices  *proto.DeliverDevices // a direct message sealed for devices (version 4)
}

// Deliveries returns the messages the server pushes. The caller must Ack
// each one it has processed. The channel is closed when the connection ends.
func (c *Conn) Deliveries() <-chan *Delivery { return c.deliveries }

// Done is closed when the connection has ended; Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.closed }

// Err returns why the connection ended, or nil while it is open.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// CloseReason returns the reason of the server's Close frame, if any.
func (c *Conn) CloseReason() uint8 {
	<-c.readerDone
	return c.reason
}

func (c *Conn) readLoop() {
	defer close(c.readerDone)
	fr := proto.NewFrameReader(c.nc, proto.MaxFrameLen)
	defer fr.Release()
	var plain []byte // grows to the largest frame seen
	var fast struct {
		dl    Delivery
		dm    proto.Deliver
		group proto.DeliverGroup
		devs  proto.DeliverDevices
		acks  []uint64
		msg   []byte
	}
	flushAcks := func() {
		if len(fast.acks) > 0 {
			fast.msg = (&proto.Ack{ServerIDs: fast.acks}).Append(fast.msg[:0], 0)
			_ = c.write(fast.msg, false)
			fast.acks = fast.acks[:0]
		}
	}
	for {
		if fr.Pending() == 0 {
			flushAcks() // the end of a burst
		}
		p, err := fr.Next()
		if err != nil {
			c.fail(fmt.Errorf("%w: %v", ErrConnectionLost, err))
			return
		}
		msg, err := c.sess.Open(plain[:0], p)
		if err != nil {
			c.fail(fmt.Errorf("%w: %v", ErrConnectionLost, err))
			return
		}
		plain = msg[:0]
		t, id, body, err := proto.ParseHeader(msg)
		if err != nil {
			c.fail(fmt.Errorf("%w: %v", ErrProtocol, err))
			return
		}
		switch t {
		case proto.TDeliver, proto.TDeliverRequest, proto.TDeliverGroup, proto.TDeliverGroupV2, proto.TDeliverDevices:
			var dl *Delivery
			if c.onDelivery != nil {
				dl = &fast.dl
				*dl = Delivery{}
				switch t {
				case proto.TDeliverGroup, proto.TDeliverGroupV2:
					dl.Group = &fast.group
				case proto.TDeliverDevices:
					dl.Devices = &fast.devs
				default:
					dl.DM = &fast.dm
				}
			} else {
				dl = new(Delivery)
				body = append([]byte(nil), body...)
				switch t {
				case proto.TDeliverGroup, proto.TDeliverGroupV2:
					dl.Group = new(proto.DeliverGroup)
				case proto.TDeliverDevices:
					dl.Devices = new(proto.DeliverDevices)
				default:
					dl.DM = new(proto.Deliver)
				}
			}
			switch {
			case dl.Group != nil:
				err = dl.Group.ParseAs(t, body)
				dl.ServerID = dl.Group.ServerID
			case dl.Devices != nil:
				err = dl.Devices.Parse(body)
				dl.ServerID = dl.Devices.ServerID
			default:
				err = dl.DM.Parse(body)
				dl.DM.Request = t == proto.TDeliverRequest
				dl.ServerID = dl.DM.ServerID
			}
			if err != nil {
				c.fail(fmt.Errorf("%w: %v", ErrProtocol, err))
				return
			}
			if c.onDelivery != nil {
				if c.onDelivery(dl) {
					fast.acks = append(fast.acks, dl.ServerID)
					if len(fast.acks) == proto.MaxAckIDs {
						flushAcks()
					}
				}
				continue
			}
			select {
			case c.deliveries <- dl:
			case <-c.closed:
				return
			}
		case proto.TPresence, proto.TSignalMsg, proto.TSignalDevicesMsg, proto.TBroadcastMsg, proto.TGroupChanged, proto.TDevicesChanged,
			proto.TLinkJoined, proto.TLinkRelay, proto.TLinkClosed:
			c.pushed(t, body)
		case proto.TKeysChanged:
			if id == 0 {
				c.pushed(t, body) // a contact's keys changed
				continue
			}
			c.answer(t, id, body)
		case proto.TClose:
			var m proto.Close
			if m.Parse(body) == nil {
				c.reason = m.Reason
			}
			c.fail(&ClosedError{Reason: c.reason})
			return
		default:
			c.answer(t, id, body)
		}
	}
}

// answer hands a response to the request waiting for it.
func (c *Conn) answer(t proto.MsgType, id uint32, body []byte) {
	c.mu.Lock()
	w, ok := c.waiters[id]
	delete(c.waiters, id)
	c.mu.Unlock()
	switch {
	case !ok:
	case w.fn != nil:
		if t == proto.TError {
			_, _, err := parseResponse(response{t: t, body: body})
			w.fn(t, nil, err)
		} else {
			w.fn(t, body, nil)
		}
	default:
		w.ch <- response{t: t, body: append([]byte(nil), body...)}
	}
}

// fail ends the connection with err (the first error wins).
func (c *Conn) fail(err error) {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.closed)
		c.nc.Close()
		go func() {
			<-c.readerDone
			close(c.deliveries)
			// Callbacks still waiting learn why; after the reader is done
			// no response can race them.
			c.mu.Lock()
			var fns []func(proto.MsgType, []byte, error)
			for id, w := range c.waiters {
				if w.fn != nil {
					fns = append(fns, w.fn)
					delete(c.waiters, id)
				}
			}
			c.mu.Unlock()
			for _, fn := range fns {
				fn(0, nil, err)
			}
		}()
	})
}

// send seals one message and writes it. Messages sent while a write is
// in progress go out together in the next write, so a busy connection
// makes one system call for many messages.
func (c *Conn) send(msg []byte) error { return c.write(msg, true) }

// write is send; if wait is false it never waits for room (the reader's
// acks: waiting there could wait on a peer that waits on us).
func (c *Conn) write(msg []byte, wait bool) error {
	c.wmu.Lock()
	for wait && c.writing && len(c.out) >= maxQueuedOut && c.werr == nil {
		c.wcond.Wait()
	}
	if c.werr != nil {
		c.wmu.Unlock()
		return c.sendErr()
	}
	var err error
	if c.out, err = c.sess.Seal(c.out, msg); err != nil {
		c.werr = err
		c.wmu.Unlock()
		c.fail(err)
		return err
	}
	if c.writing || c.corked > 0 {
		c.wmu.Unlock()
		return nil // the writer, or the end of the batch, takes it
	}
	return c.flushLocked()
}

// Batch runs fn and sends what fn sends (with Go, Ack or SendRaw) in one
// write when it returns: a sender with several messages ready makes one
// system call, and the server reads them with one. fn must not wait for a
// response on this connection (Request): its request is not sent until fn
// returns.
func (c *Conn) Batch(fn func()) error {
	c.wmu.Lock()
	c.corked++
	c.wmu.Unlock()
	defer func() {
		c.wmu.Lock()
		c.corked--
		if c.corked > 0 || c.writing || len(c.out) == 0 || c.werr != nil {
			c.wmu.Unlock()
			return
		}
		_ = c.flushLocked()
	}()
	fn()
	return c.Err()
}

// flushLocked writes out, and what is added meanwhile, until it is empty.
// It is called with wmu held and no write in progress, and unlocks it.
func (c *Conn) flushLocked() error {
	c.writing = true
	for len(c.out) > 0 && c.werr == nil {
		buf := c.out
		c.out = c.spare[:0]
		c.wmu.Unlock()
		_ = c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		_, werr := c.nc.Write(buf)
		c.wmu.Lock()
		c.spare = buf[:0]
		if werr != nil {
			c.werr = fmt.Errorf("%w: %v", ErrConnectionLost, werr)
		}
		c.wcond.Broadcast()
	}
	c.writing = false
	failed := c.werr != nil
	c.wmu.Unlock()
	if failed {
		return c.sendErr()
	}
	return nil
}

// sendErr ends the connection after a failed write and returns why it
// ended.
func (c *Conn) sendErr() error {
	c.wmu.Lock()
	werr := c.werr
	c.wmu.Unlock()
	c.fail(werr)
	return c.Err()
}

// Request sends a request built by build (which appends the message with
// the given id) and waits for its response. An Error response is returned
// as a *proto.RemoteError.
func (c *Conn) Request(ctx context.Context, build func(b []byte, id uint32) []byte) (proto.MsgType, []byte, error) {
	ch := make(chan response, 1)
	id, err := c.register(waiter{ch: ch})
	if err != nil {
		return 0, nil, err
	}
	if err := c.send(build(nil, id)); err != nil {
		return 0, nil, err
	}
	select {
	case r := <-ch:
		return parseResponse(r)
	case <-c.closed:
		// A response that arrived just before the connection ended wins.
		select {
		case r := <-ch:
			return parseResponse(r)
		default:
			return 0, nil, c.Err()
		}
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiters, id)
		c.mu.Unlock()
		return 0, nil, ctx.Err()
	}
}

// Go sends a request built by build and returns without waiting. done is
// called once, on the connection's reader goroutine, with the response (an
// Error response as a *proto.RemoteError; the body is valid only during
// the call), or with the error that ended the connection. done must not
// block.
func (c *Conn) Go(build func(b []byte, id uint32) []byte, done func(t proto.MsgType, body []byte, err error)) error {
	id, err := c.register(waiter{fn: done})
	if err != nil {
		return err
	}
	if err := c.send(build(nil, id)); err != nil {
		c.mu.Lock()
		_, pending := c.waiters[id]
		delete(c.waiters, id)
		c.mu.Unlock()
		if !pending {
			return nil // done has been or will be called
		}
		return err
	}
	return nil
}

// register gives a waiter a fresh request id.
func (c *Conn) register(w waiter) (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	for {
		c.nextID++
		if _, busy := c.waiters[c.nextID]; c.nextID != 0 && !busy {
			break
		}
	}
	c.waiters[c.nextID] = w
	return c.nextID, nil
}

func parseResponse(r response) (proto.MsgType, []byte, error) {
	if r.t == proto.TError {
		var e proto.Error
		if err := e.Parse(r.body); err != nil {
			return 0, nil, fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		return r.t, nil, &proto.RemoteError{Code: e.Code, Message: string(e.Message)}
	}
	return r.t, r.body, nil
}

// expect checks a response's type.
func expect(t, want proto.MsgType, err error) error {
	if err != nil {
		return err
	}
	if t != want {
		return fmt.Errorf("%w: response type %#x, want %#x", ErrProtocol, uint8(t), uint8(want))
	}
	return nil
}

// Ack acknowledges deliveries (at most proto.MaxAckIDs at once).
func (c *Conn) Ack(serverIDs ...uint64) error {
	return c.send((&proto.Ack{ServerIDs: serverIDs}).Append(nil, 0))
}

// Ping checks the connection is alive.
func (c *Conn) Ping(ctx context.Context) error {
	t, _, err := c.Request(ctx, func(b []byte, id uint32) []byte { return (&proto.Ping{}).Append(b, proto.TPing, id) })
	return expect(t, proto.TPong, err)
}

// SendRaw sends a message without waiting for any response. Tests use it
// to speak the protocol directly.
func (c *Conn) SendRaw(msg []byte) error { return c.send(msg) }

// Abort drops the connection without a Close frame, as a crash would.
func (c *Conn) Abort() {
	c.fail(ErrClosed)
	<-c.readerDone
}

// Close sends Close and closes the connection.
func (c *Conn) Close() error {
	select {
	case <-c.closed:
	default:
		_ = c.send((&proto.Close{Reason: proto.CloseNormal}).Append(nil, 0))
		c.fail(ErrClosed)
	}
	<-c.readerDone
	return nil
}
