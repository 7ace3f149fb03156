package shard

import (
	"errors"
	"os"
	"sync"

	"securefastchat/proto"
)

// outQueue is a connection's output: frames sealed into a pooled buffer
// and a writer goroutine, started only while there is output, that
// writes everything queued in one call. Guarded by wmu; any goroutine
// enqueues.
type outQueue struct {
	wmu     sync.Mutex
	sess    *proto.Session // its send half; the reader uses the receive half
	out     *[]byte        // sealed frames waiting for the writer; nil when empty
	writing bool           // a writer goroutine is running
	held    bool           // queued by a shard's batch, which starts the writer
	closed  bool           // no more output is accepted
}

// enqueue seals msg into the output queue and makes sure a writer runs.
// It never blocks on the network.
func (c *conn) enqueue(msg []byte) error { return c.enqueueHeld(nil, msg) }

// enqueueHeld is enqueue from a shard's loop while it handles a batch of
// events: the writer is started when the batch ends (handleBatch calls
// release), so what the batch queues for one connection goes out in one
// write.
func (c *conn) enqueueHeld(sh *Shard, msg []byte) error {
	c.wmu.Lock()
	if c.closed || c.sess == nil {
		c.wmu.Unlock()
		return errConnClosed
	}
	if c.out == nil {
		c.out = outPool.Get().(*[]byte)
	}
	if len(*c.out)+len(msg)+proto.FrameHeaderLen+proto.SealOverhead > c.set.opts.MaxPending {
		c.wmu.Unlock()
		c.set.Stats.SlowConsumers.Add(1)
		c.set.closeLog.log(c.logger(), CloseSlowConsumer, "closing slow consumer", "queued_bytes", c.set.opts.MaxPending)
		c.abort(CloseSlowConsumer)
		return errSlowConsumer
	}
	var err error
	*c.out, err = c.sess.Seal(*c.out, msg)
	if err != nil {
		c.wmu.Unlock()
		c.set.closeLog.log(c.logger(), CloseSealFailed, "closing connection: cannot seal", "err", err)
		c.abort(CloseSealFailed)
		return err
	}
	switch {
	case c.writing:
	case sh != nil && sh.batching:
		if !c.held {
			c.held = true
			sh.held = append(sh.held, c)
		}
	default:
		c.startWriterLocked()
	}
	c.wmu.Unlock()
	return nil
}

// startWriterLocked starts the writer; c.wmu is held.
func (c *conn) startWriterLocked() {
	c.writing = true
	c.set.wg.Add(1)
	go c.writeLoop()
}

// release starts the writer for what a shard's batch queued.
func (c *conn) release() {
	c.wmu.Lock()
	c.held = false
	if !c.writing && c.out != nil && !c.closed && c.sess != nil {
		c.startWriterLocked()
	}
	c.wmu.Unlock()
}

// writeLoop writes everything queued, one write per batch, and exits when
// the queue is empty. After a graceful close it closes the socket once the
// queue has drained.
func (c *conn) writeLoop() {
	defer c.set.wg.Done()
	o := &c.set.opts
	for {
		c.wmu.Lock()
		buf := c.out
		c.out = nil
		closed := c.closed
		if buf == nil {
			c.writing = false
			c.wmu.Unlock()
			if closed {
				c.nc.Close()
			}
			return
		}
		c.wmu.Unlock()
		_ = c.nc.SetWriteDeadline(o.Now().Add(o.WriteTimeout))
		_, err := c.nc.Write(*buf)
		if cap(*buf) <= keepOutBufMax {
			*buf = (*buf)[:0]
			outPool.Put(buf)
		}
		if err != nil {
			reason := CloseWriteFailed
			if errors.Is(err, os.ErrDeadlineExceeded) {
				reason = CloseWriteTimeout
				c.set.Stats.SlowConsumers.Add(1)
				c.set.closeLog.log(c.logger(), reason, "closing slow consumer: write deadline passed")
			}
			c.wmu.Lock()
			c.writing = false
			c.wmu.Unlock()
			c.abort(reason)
			return
		}
	}
}

// closeGraceful queues a Close frame; the writer closes the socket once
// everything queued before it is written.
func (c *conn) closeGraceful(reason CloseReason) {
	c.wmu.Lock()
	if c.closed {
		c.wmu.Unlock()
		return
	}
	c.set.Stats.Closes[reason].Add(1)
	if c.sess == nil {
		c.closed = true
		c.wmu.Unlock()
		c.nc.Close()
		return
	}
	if c.out == nil {
		c.out = outPool.Get().(*[]byte)
	}
	var err error
	*c.out, err = c.sess.Seal(*c.out, (&proto.Close{Reason: uint8(reason)}).Append(nil, 0))
	c.closed = true
	if err == nil && !c.writing {
		c.writing = true
		c.set.wg.Add(1)
		go c.writeLoop()
	}
	writing := c.writing
	c.wmu.Unlock()
	if !writing {
		c.nc.Close()
	}
}

// abort closes the socket at once, dropping queued output.
func (c *conn) abort(reason CloseReason) {
	c.wmu.Lock()
	if !c.closed {
		c.set.Stats.Closes[reason].Add(1)
	}
	c.closed = true
	if c.out != nil && !c.writing {
		putOut(c.out)
		c.out = nil
	}
	c.wmu.Unlock()
	c.nc.Close()
}

func putOut(b *[]byte) {
	if cap(*b) <= keepOutBufMax {
		*b = (*b)[:0]
		outPool.Put(b)
	}
}
