package client

import (
	"sync"
	"sync/atomic"
	"time"

	"securefastchat/proto"
)

// Everything the client has to tell the application reaches it one way:
// the channel Client.Events, in the order it happened. Messages are handed
// over by the goroutine that receives them, which waits while the
// application is behind: a message is acknowledged to the server only
// once it is on the channel. The rest never makes the client wait: it
// queues behind what is already waiting, and when the application has
// stopped reading for long, what is only a courtesy (presence, typing,
// broadcasts, receipts, rejected deliveries, file progress) is dropped
// and counted; connection states and key changes never are.

// EventKind says what an Event reports.
type EventKind uint8

// Event kinds.
const (
	// EventPresence: User came online or went (Online). With Reset, the
	// server is about to send a full list: forget what was known (User is
	// empty then).
	EventPresence EventKind = iota + 1
	// EventTyping: User started or stopped typing (Typing) to this user,
	// or in Group.
	EventTyping
	// EventBroadcast: User sent Text to everyone online. A broadcast is
	// NOT end-to-end encrypted: only the transport protected it, and the
	// server could have read or changed it.
	EventBroadcast
	// EventReceipt: User's client got (proto.ReceiptDelivered) or User saw
	// (proto.ReceiptRead) the messages MsgIDs this user sent them, directly
	// or in Group. It is end-to-end sealed: the server cannot forge it.
	EventReceipt
	// EventGroup: Group's roster changed: User (the signer, checked
	// against the signed chain) did Op (proto.OpCreate, OpAdd, OpRemove,
	// OpLeave, OpPromote) to Target, or said its key changed
	// (OpKeyChanged). Op 0 means this user is no longer a member (removed
	// or left): the server no longer shows the group, so who did it
	// cannot be checked.
	EventGroup
	// EventGroupBadKey: in Group, the key of Epoch that User made did not
	// open or did not match its commitment for Target (this user, or a
	// member whose signed report was checked); Text says how. No message
	// is sent under it; the next sender makes a new one.
	EventGroupBadKey
	// EventMessage: Message arrived, opened and checked. Once it is on
	// the channel it is recorded as seen and acknowledged to the server.
	EventMessage
	// EventConnection: the connection's state changed to State (connected;
	// connecting, with Err the reason it dropped; replaced by another
	// session of the user; stopped for good, with Err the reason).
	EventConnection
	// EventRejected: a delivery from User (empty for a live push) failed
	// its checks, for the reason Err. It is acknowledged and dropped: it
	// can never open.
	EventRejected
	// EventKeyChange: User's published keys differ from the pinned ones:
	// OldFingerprint was pinned, Fingerprint is pinned now.
	EventKeyChange
	// EventFileProgress: of File (its name and id; Path is empty until it
	// is whole), being received from User, Got bytes of File.Size have
	// arrived.
	EventFileProgress
	// EventDevice: User's device list, checked against the master key
	// pinned for User, added (Op proto.DeviceAdd) or removed
	// (proto.DeviceRemove) the device named Text.
	EventDevice
	// EventDeviceSilent: the device named Text of this account has not
	// logged in for Idle: within proto.DeviceSilentWarning of
	// proto.DeviceSilentAfter, or past it (it is sent nothing more).
	// Told once per device per client (DeviceSilence words it).
	EventDeviceSilent
	// EventPasswordMoved: the account's password, which the server knew
	// (an account from before login keys), is now its login key there,
	// and Text says to change it (Client.ChangePassword). Told once.
	EventPasswordMoved
)

// Event is one thing the client tells the application; Kind says which,
// and which fields are set.
type Event struct {
	Kind    EventKind
	User    string // canonical
	Online  bool
	Reset   bool
	Typing  bool
	Group   string
	Text    string
	Time    time.Time
	Receipt uint8
	MsgIDs  [][proto.MsgIDLen]byte
	Op      uint8  // EventGroup, EventDevice
	Target  string // EventGroup, EventGroupBadKey
	Epoch   uint32 // EventGroupBadKey

	Message *Message // EventMessage

	State ConnState // EventConnection
	Err   error     // EventConnection (why not connected), EventRejected

	OldFingerprint, Fingerprint string // EventKeyChange

	File *ReceivedFile // EventFileProgress
	Got  int64         // EventFileProgress

	Idle time.Duration // EventDeviceSilent
}

// maxQueuedEvents bounds the events that wait for the application; past
// it, the lossy kinds are dropped and counted in Client.EventsDropped.
const maxQueuedEvents = 4096

// lossy reports whether an event kind may be dropped when the application
// is far behind: the server keeps none of them either, or (a receipt, a
// rejected delivery) it was a courtesy whose message is acknowledged.
func (k EventKind) lossy() bool {
	switch k {
	case EventPresence, EventTyping, EventBroadcast, EventReceipt, EventRejected, EventFileProgress:
		return true
	}
	return false
}

// events is the client's one way to the application. Owner: the Client;
// its run goroutine alone sends on out, and the Client closes out after
// that goroutine has stopped.
type events struct {
	out     chan Event
	wake    chan struct{} // cap 1: something was queued
	ran     chan struct{} // closed when run has returned
	dropped atomic.Int64

	mu sync.Mutex // guards q
	q  []queuedEvent
}

type queuedEvent struct {
	ev   Event
	done chan struct{} // closed once ev is on out; nil if nobody waits
}

func newEvents(capacity int) *events {
	return &events{out: make(chan Event, capacity), wake: make(chan struct{}, 1), ran: make(chan struct{})}
}

// post queues ev behind what waits and returns at once.
func (e *events) post(ev Event) {
	e.mu.Lock()
	if len(e.q) >= maxQueuedEvents && ev.Kind.lossy() {
		e.mu.Unlock()
		e.dropped.Add(1)
		return
	}
	e.q = append(e.q, queuedEvent{ev: ev})
	e.mu.Unlock()
	e.kick()
}

// hand queues ev and waits until it is on the channel. It reports false
// if the client stopped first: ev was not handed over.
func (e *events) hand(ev Event) bool {
	done := make(chan struct{})
	e.mu.Lock()
	e.q = append(e.q, queuedEvent{ev: ev, done: done})
	e.mu.Unlock()
	e.kick()
	select {
	case <-done:
		return true
	case <-e.ran:
		// run has returned: whether it handed ev over is settled.
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
}

func (e *events) kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// run moves queued events to out, in order, until stop.
func (e *events) run(stop <-chan struct{}) {
	defer close(e.ran)
	for {
		e.mu.Lock()
		if len(e.q) == 0 {
			e.mu.Unlock()
			select {
			case <-e.wake:
				continue
			case <-stop:
				return
			}
		}
		next := e.q[0]
		e.mu.Unlock()
		select {
		case e.out <- next.ev:
		case <-stop:
			return
		}
		e.mu.Lock()
		e.q[0] = queuedEvent{}
		e.q = e.q[1:]
		if len(e.q) == 0 {
			e.q = nil // let the backing array go
		}
		e.mu.Unlock()
		if next.done != nil {
			close(next.done)
		}
	}
}

// close closes out once run has stopped. What was posted and still waits
// goes on the channel first, as far as its buffer has room, so a program
// reading until the channel closes is told it; what a receiver waited to
// hand over was not handed over, and comes again from the server.
func (e *events) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, q := range e.q {
		if q.done != nil {
			continue
		}
		select {
		case e.out <- q.ev:
		default:
		}
	}
	e.q = nil
	close(e.out)
}

// Events returns the channel on which the client tells the application
// everything (see EventKind): messages, receipts, presence, typing, group
// changes, connection states, rejected deliveries, key changes and file
// progress, in order. The application must keep reading it: a message is
// acknowledged to the server only once it is on it, and receiving waits
// while it is full. It is closed by Close.
func (c *Client) Events() <-chan Event { return c.events.out }

// EventsDropped returns how many events of the lossy kinds (presence,
// typing, broadcasts, receipts, rejected deliveries, file progress) were
// dropped because the application had stopped reading Events.
func (c *Client) EventsDropped() int64 { return c.events.dropped.Load() }

// post tells the application ev without waiting.
func (c *Client) post(ev Event) { c.events.post(ev) }
