package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func qmsg(to, from string, id uint64, body string, stored time.Time) *Queued {
	q := &Queued{ServerID: id, To: to, From: from, Kind: 1, Time: stored.UnixMilli(), Stored: stored, Body: []byte(body)}
	q.MsgID[0], q.MsgID[1] = byte(id>>8), byte(id)
	return q
}

func TestQueue(t *testing.T) {
	s := openTemp(t)
	now := time.Unix(1_700_000_000, 0)
	var msgs []*Queued
	for i := uint64(1); i <= 10; i++ {
		msgs = append(msgs, qmsg("bob", "alice", i*10, fmt.Sprint("m", i), now))
	}
	errs, err := s.Enqueue(msgs, QueueLimits{})
	if err != nil || errors.Join(errs...) != nil {
		t.Fatal(err, errs)
	}
	got, err := s.Peek(Inbox{User: "bob"}, 0, 4)
	if err != nil || len(got) != 4 || got[0].ServerID != 10 || string(got[3].Body) != "m4" || got[0].From != "alice" || got[0].MsgID != msgs[0].MsgID {
		t.Fatalf("peek: %v %+v", err, got)
	}
	got, _ = s.Peek(Inbox{User: "bob"}, 40, 100)
	if len(got) != 6 || got[0].ServerID != 50 {
		t.Fatalf("peek after 40: %d", len(got))
	}
	if n, b, _ := s.QueueLen("bob"); n != 10 || b <= 0 {
		t.Fatalf("len %d %d", n, b)
	}
	// A repeat of (sender, msg_id) is not stored twice.
	dup := qmsg("bob", "alice", 999, "again", now)
	dup.MsgID = msgs[2].MsgID
	s.Enqueue([]*Queued{dup}, QueueLimits{})
	if n, _, _ := s.QueueLen("bob"); n != 10 {
		t.Fatalf("duplicate stored: %d", n)
	}
	if err := s.Dequeue(Inbox{User: "bob"}, []uint64{10, 20, 12345}); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := s.QueueLen("bob"); n != 8 {
		t.Fatalf("after dequeue %d", n)
	}
	if id, _ := s.MaxServerID(); id != 100 {
		t.Fatalf("max id %d", id)
	}
	// Limits: the queue refuses more and keeps what it has.
	errs, _ = s.Enqueue([]*Queued{qmsg("bob", "carol", 200, "x", now)}, QueueLimits{Count: 8})
	if !errors.Is(errs[0], ErrQueueFull) {
		t.Fatalf("over the count limit: %v", errs[0])
	}
	errs, _ = s.Enqueue([]*Queued{qmsg("bob", "carol", 201, string(make([]byte, 5000)), now)}, QueueLimits{Bytes: 4096})
	if !errors.Is(errs[0], ErrQueueFull) {
		t.Fatalf("over the byte limit: %v", errs[0])
	}
	if n, _, _ := s.QueueLen("bob"); n != 8 {
		t.Fatalf("limits dropped messages: %d", n)
	}
}

// F10: the sweep deletes what is past the retention and nothing else, at
// the boundary.
func TestSweep(t *testing.T) {
	s := openTemp(t)
	now := time.Unix(1_700_000_000, 0)
	const week = 7 * 24 * time.Hour
	s.Enqueue([]*Queued{
		qmsg("bob", "alice", 1, "old", now.Add(-week-time.Second)),
		qmsg("bob", "alice", 2, "young", now.Add(-week+time.Second)),
		qmsg("carol", "alice", 3, "old", now.Add(-8*24*time.Hour)),
	}, QueueLimits{})
	n, err := s.Sweep(now.Add(-week))
	if err != nil || n != 2 {
		t.Fatalf("swept %d, %v", n, err)
	}
	left, _ := s.Peek(Inbox{User: "bob"}, 0, 10)
	if len(left) != 1 || string(left[0].Body) != "young" {
		t.Fatalf("left %+v", left)
	}
	if c, b, _ := s.QueueLen("carol"); c != 0 || b != 0 {
		t.Fatalf("carol's stats after the sweep: %d %d", c, b)
	}
}

func TestBatcher(t *testing.T) {
	s := openTemp(t)
	b := s.NewBatcher(BatcherOptions{Limits: QueueLimits{Count: 500}})
	var wg sync.WaitGroup
	var ok, full atomic.Int64
	now := time.Now()
	for i := 0; i < 600; i++ {
		wg.Add(1)
		q := qmsg("bob", fmt.Sprint("s", i%7), uint64(i+1), "hello", now)
		q.MsgID[2] = byte(i >> 8)
		if err := b.Submit(&Op{Put: q, Done: func(r Result) {
			defer wg.Done()
			switch {
			case r.Err == nil:
				ok.Add(1)
			case errors.Is(r.Err, ErrQueueFull):
				full.Add(1)
			default:
				t.Errorf("result %v", r.Err)
			}
		}}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if ok.Load() != 500 || full.Load() != 100 {
		t.Fatalf("ok %d full %d", ok.Load(), full.Load())
	}
	commits, ops, _ := b.Stats()
	if commits >= ops {
		t.Fatalf("%d commits for %d ops: no batching", commits, ops)
	}
	done := make(chan struct{})
	b.Submit(&Op{Del: Inbox{User: "bob"}, DelIDs: []uint64{1, 2, 3}})
	b.Submit(&Op{Done: func(Result) { close(done) }}) // a barrier
	<-done
	if n, _, _ := s.QueueLen("bob"); n != 497 {
		t.Fatalf("after dequeue: %d", n)
	}
	b.Close()
	if err := b.Submit(&Op{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("submit after close: %v", err)
	}
	t.Logf("600 ops in %d commits", commits)
}

// BenchmarkQueueDurable measures durable enqueues per second with fsync,
// many submitters sharing each commit (group commit).
func BenchmarkQueueDurable(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	bt := s.NewBatcher(BatcherOptions{})
	defer bt.Close()
	body := make([]byte, 256+40)
	now := time.Now()
	var wg sync.WaitGroup
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		wg.Add(1)
		q := &Queued{ServerID: uint64(i + 1), To: fmt.Sprint("user", i%500), From: fmt.Sprint("user", (i+1)%500), Kind: 1, Stored: now, Body: body}
		q.MsgID[0], q.MsgID[1], q.MsgID[2], q.MsgID[3] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
		bt.Submit(&Op{Put: q, Done: func(Result) { wg.Done() }})
	}
	wg.Wait()
	b.StopTimer()
	commits, ops, d := bt.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(ops)/float64(max(commits, 1)), "msgs/commit")
	_ = d
}

// TestBatchDedupWithinCommit: a repeat in the same commit as the first
// copy is recognised (the de-duplication records are written at the end
// of the transaction) and gets the first copy's id.
func TestBatchDedupWithinCommit(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var next uint64
	bt := s.NewBatcher(BatcherOptions{NewID: func(Inbox) uint64 { next++; return next }})
	defer bt.Close()
	results := make([]Result, 3)
	var wg sync.WaitGroup
	for i := range results {
		q := &Queued{To: "bob", From: "alice", Kind: 1, Stored: time.Now(), Body: []byte("x")}
		q.MsgID[0] = byte(i / 2) // the first two share an id
		wg.Add(1)
		bt.Submit(&Op{Put: q, Done: func(r Result) { results[i] = r; wg.Done() }})
	}
	wg.Wait()
	if results[0].Dup || !results[1].Dup || results[1].ServerID != results[0].ServerID || results[2].Dup {
		t.Fatalf("results %+v", results)
	}
	if n, _, err := s.QueueLen("bob"); err != nil || n != 2 {
		t.Fatalf("queue holds %d (%v), want 2", n, err)
	}
	// Certainly one transaction: Enqueue.
	var msgs []*Queued
	for i := 0; i < 2; i++ {
		q := &Queued{ServerID: uint64(100 + i), To: "carol", From: "alice", Kind: 1, Stored: time.Now(), Body: []byte("x")}
		msgs = append(msgs, q)
	}
	if _, err := s.Enqueue(msgs, QueueLimits{}); err != nil {
		t.Fatal(err)
	}
	if n, _, err := s.QueueLen("carol"); err != nil || n != 1 {
		t.Fatalf("carol's queue holds %d (%v), want 1", n, err)
	}
}
