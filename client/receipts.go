package client

import (
	"context"
	"errors"
	"sync"
	"time"

	"securefastchat/proto"
)

// Receipts are end-to-end sealed messages like any other (a KindText
// envelope around a KindReceipt inner), so the server stores and forwards
// them and cannot tell them from text. They are gathered for a moment and
// sent one per sender, group and type, with up to proto.MaxReceiptIDs ids
// each.

// receiptDelay is how long receipts gather before they go.
const receiptDelay = 150 * time.Millisecond

// maxPendingReceipts bounds the ids waiting to go; past it new ones are
// dropped (a receipt is a courtesy, not a message).
const maxPendingReceipts = 8192

type receiptKey struct {
	peer, group string
	typ         uint8
}

// receipts is the queue of receipts to send; its loop belongs to the
// Client and stops with it.
type receipts struct {
	mu      sync.Mutex
	pending map[receiptKey][][proto.MsgIDLen]byte
	order   []receiptKey
	n       int // ids pending
	kick    chan struct{}
}

func newReceipts() *receipts {
	return &receipts{pending: map[receiptKey][][proto.MsgIDLen]byte{}, kick: make(chan struct{}, 1)}
}

func (q *receipts) add(k receiptKey, ids ...[proto.MsgIDLen]byte) {
	q.mu.Lock()
	if q.n+len(ids) > maxPendingReceipts {
		q.mu.Unlock()
		return
	}
	q.n += len(ids)
	if _, ok := q.pending[k]; !ok {
		q.order = append(q.order, k)
	}
	q.pending[k] = append(q.pending[k], ids...)
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

func (q *receipts) take() ([]receiptKey, map[receiptKey][][proto.MsgIDLen]byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	order, pending := q.order, q.pending
	q.order, q.pending, q.n = nil, map[receiptKey][][proto.MsgIDLen]byte{}, 0
	return order, pending
}

// MarkRead tells from that this user has seen the messages ids they sent
// (in group, or directly if group is empty). Applications that let their
// users turn read receipts off simply do not call it. Nothing goes to the
// sender of a request this user has not accepted.
func (c *Client) MarkRead(from, group string, ids ...[proto.MsgIDLen]byte) {
	if len(ids) > 0 && from != c.user && (group != "" || !c.IsRequest(from)) {
		c.receipts.add(receiptKey{peer: from, group: group, typ: proto.ReceiptRead}, ids...)
	}
}

// delivered queues a delivery receipt for a message handed to the
// application, if the configuration asks for them.
func (c *Client) delivered(m *Message) {
	if !c.cfg.DeliveryReceipts || m.From == c.user || m.Request {
		return
	}
	id := m.MsgID
	if m.File != nil {
		id = m.File.ID
	}
	c.receipts.add(receiptKey{peer: m.From, group: m.Group, typ: proto.ReceiptDelivered}, id)
}

// receiptLoop sends queued receipts until the client stops. A receipt the
// server refuses for the sender's rate is tried again a little later.
func (c *Client) receiptLoop() {
	for {
		select {
		case <-c.receipts.kick:
		case <-c.stop:
			return
		}
		select {
		case <-time.After(receiptDelay):
		case <-c.stop:
			return
		}
		order, pending := c.receipts.take()
		for _, k := range order {
			ids := pending[k]
			for len(ids) > 0 {
				n := min(len(ids), proto.MaxReceiptIDs)
				if !c.sendReceipt(k, ids[:n]) {
					return
				}
				ids = ids[n:]
			}
		}
	}
}

// sendReceipt sends one receipt, retrying a rate limit with backoff; it
// returns false once the client is stopping.
func (c *Client) sendReceipt(k receiptKey, ids [][proto.MsgIDLen]byte) bool {
	r := proto.Receipt{Type: k.typ, Group: []byte(k.group)}
	for i := range ids {
		r.MsgIDs = append(r.MsgIDs, ids[i][:])
	}
	body := r.Append(nil)
	wait := time.Second
	for attempt := 0; attempt < 6; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		go func() {
			select {
			case <-c.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		out, err := c.prepare(ctx, k.peer, proto.KindText, proto.KindReceipt, body)
		if err == nil {
			_, err = c.Send(ctx, out)
		}
		cancel()
		select {
		case <-c.stop:
			return false
		default:
		}
		if err == nil || !errors.Is(err, proto.CodeRateLimited) {
			return true // sent, or refused for good: a receipt is not worth more
		}
		select {
		case <-time.After(wait):
		case <-c.stop:
			return false
		}
		wait *= 2
	}
	return true
}
