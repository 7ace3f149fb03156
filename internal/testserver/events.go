package testserver

import (
	"sync"

	"securefastchat/client"
)

// A test often waits for a message while something else (a callback of
// its own, a helper such as Acquaint) watches the same client's other
// events. watched splits a client's one Events channel in two for that:
// messages, in order, on one channel; everything else on another.

// watched is one client's split events. Its pump goroutine reads the
// client's Events until Close closes it, then closes both channels.
type watched struct {
	msgs  chan *client.Message
	other chan client.Event
}

// otherBacklog is how many non-message events wait for a test that reads
// them; past it they are dropped (a test that wants them reads them).
const otherBacklog = 1 << 16

var (
	watchMu  sync.Mutex
	watchers = map[*client.Client]*watched{}
)

func watch(c *client.Client) *watched {
	watchMu.Lock()
	defer watchMu.Unlock()
	if w, ok := watchers[c]; ok {
		return w
	}
	w := &watched{msgs: make(chan *client.Message, 1024), other: make(chan client.Event, otherBacklog)}
	watchers[c] = w
	go func() {
		defer func() {
			close(w.msgs)
			close(w.other)
			watchMu.Lock()
			delete(watchers, c)
			watchMu.Unlock()
		}()
		for ev := range c.Events() {
			if ev.Kind == client.EventMessage {
				w.msgs <- ev.Message
				continue
			}
			select {
			case w.other <- ev:
			default:
			}
		}
	}()
	return w
}

// Messages returns the messages c receives, in order; it is closed when c
// is. Every caller for the same client shares one channel.
func Messages(c *client.Client) <-chan *client.Message { return watch(c).msgs }

// Events returns c's events other than messages, in order; it is closed
// when c is.
func Events(c *client.Client) <-chan client.Event { return watch(c).other }

// OnEvent calls fn with each of c's events other than messages, until c is
// closed, from a goroutine of its own.
func OnEvent(c *client.Client, fn func(client.Event)) {
	ch := Events(c)
	go func() {
		for ev := range ch {
			fn(ev)
		}
	}()
}
