package store

import (
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Op is one write for a Batcher: an enqueue, a dequeue, or neither (a
// barrier: its Done runs once everything submitted before it is on disk).
type Op struct {
	// Put enqueues a message (with de-duplication and the queue limits).
	Put *Queued
	// Del and DelIDs dequeue a device's delivered messages (if
	// Del.User is set).
	Del    Inbox
	DelIDs []uint64
	// Contact, if both are set, records two users as contacts of each
	// other.
	Contact [2]string
	// Done, if set, is called from the batcher's goroutine once the
	// transaction holding the op has committed (or failed). It must not
	// block.
	Done func(Result)
}

// Result is the outcome of an Op.
type Result struct {
	ServerID uint64 // for Put: the id stored (the first one, for a repeat)
	SentID   uint64 // for Put: the sender's id of it (the first one, for a repeat)
	Dup      bool   // for Put: the (sender, msg_id) was stored before
	Dropped  bool   // for Put: the receiver blocks the sender: nothing was stored (Err is nil)
	Err      error  // nil, ErrQueueFull, a *ShareFullError, or ErrUnavailable (nothing committed)
}

// BatcherOptions configure a Batcher.
type BatcherOptions struct {
	// Limits cap each receiver's queue.
	Limits QueueLimits
	// MaxBatch is the most ops in one transaction. If zero, 4096.
	MaxBatch int
	// Queue is the capacity of the submission channel. If zero, 16384.
	Queue int
	// OnCommit, if set, is told how long each transaction took and how
	// many ops it held (from the batcher's goroutine; it must not block).
	OnCommit func(d time.Duration, ops int)
	// NewID assigns a message its number in its receiver's delivery
	// sequence at commit time, so a queue's order is the order of commits
	// and a reader that has seen every id up to N never misses a later
	// commit. If nil, Put keeps the ServerID it carries.
	NewID func(Inbox) uint64
}

// Batcher is the store's group committer: one goroutine takes every
// pending op and applies them in one read-write transaction, so many
// writers share one fsync. Submit never waits for the disk.
type Batcher struct {
	s    *Store
	o    BatcherOptions
	ch   chan *Op
	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu     sync.RWMutex // held for reading by Submit, for writing by Close
	closed bool

	// Counters.
	commits, ops int64
	commitTime   time.Duration
	statsMu      sync.Mutex
}

// NewBatcher starts a group committer over s. Close stops it.
func (s *Store) NewBatcher(o BatcherOptions) *Batcher {
	if o.MaxBatch == 0 {
		o.MaxBatch = 4096
	}
	if o.Queue == 0 {
		o.Queue = 16384
	}
	b := &Batcher{s: s, o: o, ch: make(chan *Op, o.Queue), stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop()
	return b
}

// Limits returns the queue limits in force.
func (b *Batcher) Limits() QueueLimits { return b.o.Limits }

// Submit queues op for the next commit. It waits only if the submission
// channel is full (backpressure), and fails with ErrClosed after Close.
func (b *Batcher) Submit(op *Op) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	b.ch <- op
	return nil
}

// Stats returns the number of commits and ops so far and the total time
// spent committing.
func (b *Batcher) Stats() (commits, ops int64, commitTime time.Duration) {
	b.statsMu.Lock()
	defer b.statsMu.Unlock()
	return b.commits, b.ops, b.commitTime
}

// Close commits what was submitted and stops. It is idempotent.
func (b *Batcher) Close() {
	b.once.Do(func() {
		b.mu.Lock()
		b.closed = true
		b.mu.Unlock()
		close(b.stop)
	})
	<-b.done
}

func (b *Batcher) loop() {
	defer close(b.done)
	batch := make([]*Op, 0, b.o.MaxBatch)
	for {
		select {
		case op := <-b.ch:
			batch = append(batch[:0], op)
		case <-b.stop:
			// Closed: nothing more can be submitted; drain and finish.
			for {
				select {
				case op := <-b.ch:
					b.commit(append(batch[:0], op))
				default:
					return
				}
			}
		}
	fill:
		for len(batch) < b.o.MaxBatch {
			select {
			case op := <-b.ch:
				batch = append(batch, op)
			default:
				break fill
			}
		}
		b.commit(batch)
	}
}

// update runs one transaction; a panic inside bbolt (a corrupt page) is
// an error, not the end of the committer.
func (b *Batcher) update(fn func(tx *bolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: panic in transaction: %v", ErrCorrupt, r)
		}
	}()
	return b.s.db.Update(fn)
}

func (b *Batcher) commit(batch []*Op) {
	results := make([]Result, len(batch))
	start := time.Now()
	err := b.update(func(tx *bolt.Tx) error {
		w := newWtx(tx)
		for i, op := range batch {
			results[i] = Result{}
			if op.Put != nil {
				if b.o.NewID != nil {
					op.Put.ServerID = b.o.NewID(op.Put.inbox())
				}
				id, sentID, dup, err := w.enqueue(op.Put, b.o.Limits)
				switch {
				case errors.Is(err, ErrBlocked):
					results[i] = Result{SentID: sentID, Dropped: true}
				case err != nil && !errors.Is(err, ErrQueueFull) && !errors.Is(err, ErrShareFull):
					return err
				default:
					results[i] = Result{ServerID: id, SentID: sentID, Dup: dup, Err: err}
				}
			}
			if op.Del.User != "" {
				if _, err := w.dequeue(op.Del, op.DelIDs); err != nil {
					return err
				}
			}
			if op.Contact[0] != "" && op.Contact[1] != "" {
				if err := putContact(tx, op.Contact[0], op.Contact[1]); err != nil {
					return err
				}
			}
		}
		return w.finish()
	})
	d := time.Since(start)
	if err != nil {
		// Nothing in the batch was committed.
		for i := range results {
			results[i] = Result{Err: fmt.Errorf("%w: %v", ErrUnavailable, err)}
		}
	}
	if b.o.OnCommit != nil {
		b.o.OnCommit(d, len(batch))
	}
	b.statsMu.Lock()
	b.commits++
	b.ops += int64(len(batch))
	b.commitTime += d
	b.statsMu.Unlock()
	for i, op := range batch {
		if op.Done != nil {
			op.Done(results[i])
		}
	}
}
