package client

import "testing"

// TestEventsBounded: an application that stops reading keeps the queue
// bounded by dropping what is only a courtesy, never a connection state or
// a key change, and keeps the order of what it keeps.
func TestEventsBounded(t *testing.T) {
	e := newEvents(4)
	stop := make(chan struct{})
	for range maxQueuedEvents + 100 {
		e.post(Event{Kind: EventPresence})
	}
	e.post(Event{Kind: EventKeyChange, User: "bob"})
	e.post(Event{Kind: EventConnection, State: StateConnecting})
	if got := e.dropped.Load(); got != 100 {
		t.Fatalf("dropped %d, want 100", got)
	}
	go e.run(stop)
	var last []EventKind
	for range maxQueuedEvents + 2 {
		ev := <-e.out
		last = append(last, ev.Kind)
	}
	close(stop)
	<-e.ran
	if n := len(last); last[n-2] != EventKeyChange || last[n-1] != EventConnection {
		t.Fatalf("the last two events are %v", last[n-2:])
	}
}
