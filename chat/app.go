// Package chat is the interactive terminal client: conversations, presence,
// typing, receipts, files and slash commands, on the Charm bubbletea
// framework. It keeps a local history sealed with the user's identity
// (package history), keeps what was typed until the server has it (across
// reconnects and restarts) and holds messages to a contact whose key has
// changed until the user accepts the change.
package chat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"securefastchat/client"
	"securefastchat/history"
	"securefastchat/proto"
	"securefastchat/termtext"
)

// Options configure a chat session.
type Options struct {
	// Config is the client configuration (server, home, pins). Run sets
	// its callbacks, OutDir and DeliveryReceipts.
	Config client.Config
	// User and Password log in.
	User, Password string
	// Downloads receives files. If empty, <home>/downloads/<user>.
	Downloads string
	// NoReadReceipts stops telling senders when their messages were seen.
	NoReadReceipts bool
	// NoTyping stops telling others when this user types (and showing
	// theirs is unaffected).
	NoTyping bool
	// In and Out are the terminal. If nil, stdin and stdout.
	In  io.Reader
	Out io.Writer
	// AltScreen uses the terminal's alternate screen.
	AltScreen bool
	// NoMouse leaves the mouse to the terminal (selection) instead of
	// scrolling with the wheel.
	NoMouse bool
	// NoBell does not ring the terminal's bell for a message in a
	// conversation that is not open.
	NoBell bool
}

// app is what the model shares with the goroutines that work for it.
// Everything here is safe for concurrent use.
type app struct {
	c       *client.Client
	h       *history.History
	opts    Options
	addr    string
	send    func(tea.Msg) // the program's Send
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	outbox  *outbox
	warnMu  sync.Mutex
	warned  map[string]bool // contacts whose key changed and was not accepted
	started time.Time
}

// OpenHistory opens the history the chat keeps for c's user in home,
// sealed with a key from the user's identity. Only one process holds it:
// another gives ErrHistoryInUse.
func OpenHistory(c *client.Client, home string) (*history.History, error) {
	hpath := filepath.Join(client.UserDir(home, c.User()), "history.db")
	h, err := history.Open(hpath, c.LocalKey("history"))
	switch {
	case errors.Is(err, history.ErrInUse):
		return nil, fmt.Errorf("%w by another chat of %s on this machine; use that one, or quit it first", ErrHistoryInUse, c.User())
	case errors.Is(err, history.ErrDamaged):
		return nil, fmt.Errorf("%w: %s; move it away to start a fresh history", ErrHistoryDamaged, hpath)
	}
	return h, err
}

// Run logs in, runs the interface until the user quits, and logs out of
// the terminal cleanly. Messages typed but not yet accepted by the server
// stay in the history and go out at the next start.
func Run(o Options) error {
	if o.In == nil {
		o.In = os.Stdin
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	canon, err := proto.CanonicalUsername(o.User)
	if err != nil {
		return fmt.Errorf("chat: %w", err)
	}
	if o.Downloads == "" {
		o.Downloads = filepath.Join(o.Config.Home, "downloads", canon)
	}
	if err := os.MkdirAll(o.Downloads, 0o700); err != nil {
		return fmt.Errorf("chat: downloads folder: %w", err)
	}
	a := &app{opts: o, addr: o.Config.Addr, warned: map[string]bool{}, started: time.Now()}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	defer a.cancel()

	// Everything local first: the identity (the password opens it) and
	// the history. A second chat of this user, or a damaged history, stops
	// here with a clear error, before anything reaches the server (so it
	// takes nobody's session).
	cfg := o.Config
	cfg.OutDir = o.Downloads
	cfg.DeliveryReceipts = true
	c, err := client.Load(cfg, o.User, o.Password)
	if err != nil {
		return err
	}
	a.c = c
	h, err := OpenHistory(c, cfg.Home)
	if err != nil {
		c.Close()
		return err
	}
	a.h = h

	m := newModel(a)
	popts := []tea.ProgramOption{tea.WithInput(o.In), tea.WithOutput(o.Out)}
	if o.AltScreen {
		popts = append(popts, tea.WithAltScreen())
	}
	if !o.NoMouse {
		popts = append(popts, tea.WithMouseCellMotion())
	}
	p := tea.NewProgram(m, popts...)
	a.send = p.Send // blocks until the program runs, and does nothing once it has ended

	a.outbox = newOutbox(a)
	a.wg.Add(2)
	go a.forwardEvents()
	go a.outbox.run()
	// Connect in the background: the chat opens with its history while the
	// server is away, and what is typed waits for the connection.
	c.Start()

	_, runErr := p.Run()
	a.cancel()
	c.Close()
	a.wg.Wait()
	h.Close()
	return runErr
}

// Errors Run returns before the interface opens.
var (
	// ErrHistoryInUse: another chat of the same user holds the history.
	ErrHistoryInUse = errors.New("chat: the history is in use")
	// ErrHistoryDamaged: the history file cannot be read.
	ErrHistoryDamaged = errors.New("chat: the history file is damaged")
)

// convOfReject is the conversation a message that could not be opened is
// noted in: its sender's.
func convOfReject(from string) string {
	if from == "" {
		return ""
	}
	return "@" + from
}

// rejectText is the notice for a message that could not be opened.
func rejectText(from string, err error) string {
	if from == "" {
		return "could not open something the server pushed: " + err.Error()
	}
	return fmt.Sprintf("a message from %s could not be opened: %v", from, err)
}

// forwardEvents reads the client's events. Received messages are stored
// in the history, a burst in one transaction, then handed to the
// interface; the rest goes to the interface in the order it came.
func (a *app) forwardEvents() {
	defer a.wg.Done()
	evs := a.c.Events()
	var batch []*history.Entry
	var requests []bool
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if err := a.h.Add(batch...); err != nil {
			a.send(noticeMsg{text: "could not save to the history: " + err.Error()})
		}
		for i, e := range batch {
			a.send(receivedMsg{e: e, request: requests[i]})
		}
		batch, requests = batch[:0], requests[:0]
	}
	for {
		var ev client.Event
		var ok bool
		if len(batch) > 0 && len(batch) < 256 {
			select {
			case ev, ok = <-evs:
			default:
				flush() // the burst is over
				continue
			}
		} else {
			flush()
			ev, ok = <-evs
		}
		if !ok {
			flush()
			return
		}
		if ev.Kind == client.EventMessage {
			e := entryOf(ev.Message)
			batch = append(batch, e)
			requests = append(requests, ev.Message.Request)
			if d := ev.Message.FromRemovedDevice; d != "" {
				// Said under it, in its conversation.
				flush()
				a.send(noticeMsg{conv: e.Conv, text: fmt.Sprintf("that came from %s's device %q, since removed from the account's devices: it was sent before the removal",
					ev.Message.From, termtext.Line(d))})
			}
			continue
		}
		flush() // what came before this event is shown before it
		a.event(ev)
	}
}

// event hands one event other than a message to the interface.
func (a *app) event(ev client.Event) {
	switch ev.Kind {
	case client.EventConnection:
		a.send(connMsg{State: ev.State, Err: ev.Err})
	case client.EventRejected:
		a.send(noticeMsg{text: rejectText(ev.User, ev.Err), conv: convOfReject(ev.User)})
	case client.EventKeyChange:
		a.setWarned(ev.User, true)
		a.send(keyChangeMsg{user: ev.User, old: ev.OldFingerprint, new: ev.Fingerprint})
	case client.EventDevice:
		text := deviceText(ev)
		if ev.Op == proto.DeviceAdd && a.c.HoldNewDevices() {
			text += "; you hold new devices: nothing of yours goes to " + ev.User + " until you check its id with them and /devices approve " + ev.User
		}
		a.send(noticeMsg{text: text, conv: "@" + ev.User})
	case client.EventDeviceSilent:
		a.send(noticeMsg{text: silentText(ev)})
	case client.EventPasswordMoved:
		// (the status line is one line: the event's text is for stderr)
		a.send(noticeMsg{text: "change your password now: securefastchat password"})
	case client.EventFileProgress:
		a.send(progressMsg{id: ev.File.ID, name: ev.File.Name, peer: ev.User, done: ev.Got, total: ev.File.Size})
	default:
		a.send(eventMsg(ev))
	}
}

// entryOf is a received message as a history entry.
func entryOf(m *client.Message) *history.Entry {
	e := &history.Entry{ID: m.MsgID, From: m.From, Time: m.ServerTime, Unread: true, Text: m.Text, Before: m.BeforeChange}
	switch {
	case m.Group != "":
		// In the group; what the user wrote from another device shows
		// as their own.
		e.Conv, e.Mine, e.Unread = "#"+m.Group, m.Mine, !m.Mine
	case m.Mine:
		// What the user sent from another device: in the conversation
		// with its receiver, as their own.
		e.Conv, e.Mine, e.Unread = "@"+m.To, true, false
	default:
		e.Conv = "@" + m.From
	}
	if m.File != nil {
		e.ID, e.File, e.Size, e.Text = m.File.ID, m.File.Path, m.File.Size, m.File.Name
	}
	return e
}

// isWarned reports whether user's key changed and was not accepted.
func (a *app) isWarned(user string) bool {
	a.warnMu.Lock()
	defer a.warnMu.Unlock()
	return a.warned[user]
}

func (a *app) setWarned(user string, on bool) {
	a.warnMu.Lock()
	if on {
		a.warned[user] = true
	} else {
		delete(a.warned, user)
	}
	a.warnMu.Unlock()
}

// job is a typed message waiting to go: its history entry's seq and what
// to send.
type job struct {
	seq  uint64
	conv string
	id   [proto.MsgIDLen]byte
	text string
}

// outbox sends jobs one at a time, in the order typed. While the
// connection is down the client waits for it to come back; a refusal that
// may pass (rate limit, storage) is tried again with backoff; a message to
// a contact whose key changed is held (the interface asks first).
type outbox struct {
	a    *app
	mu   sync.Mutex
	q    []job
	kick chan struct{}
}

func newOutbox(a *app) *outbox { return &outbox{a: a, kick: make(chan struct{}, 1)} }

func (o *outbox) add(j job) {
	o.mu.Lock()
	o.q = append(o.q, j)
	o.mu.Unlock()
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

func (o *outbox) next() (job, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.q) == 0 {
		return job{}, false
	}
	j := o.q[0]
	o.q = o.q[1:]
	return j, true
}

func (o *outbox) run() {
	defer o.a.wg.Done()
	for {
		j, ok := o.next()
		if !ok {
			select {
			case <-o.kick:
				continue
			case <-o.a.ctx.Done():
				return
			}
		}
		o.send(j)
		if o.a.ctx.Err() != nil {
			return
		}
	}
}

// permanent reports refusals that sending again cannot fix.
func permanent(err error) bool {
	for _, c := range []proto.ErrorCode{proto.CodeNoSuchRecipient, proto.CodeTooLarge, proto.CodeForbidden,
		proto.CodeNoSuchGroup, proto.CodeBadRequest, proto.CodeUnsupportedFeature} {
		if errors.Is(err, c) {
			return true
		}
	}
	return errors.Is(err, client.ErrPeerKey) || errors.Is(err, proto.ErrTooLarge)
}

func (o *outbox) send(j job) {
	a := o.a
	wait := time.Second
	heldTold := false
	for {
		var r *client.Receipt
		var err error
		if j.conv[0] == '@' {
			peer := j.conv[1:]
			var out *client.Outgoing
			out, err = a.c.PrepareAs(a.ctx, peer, proto.KindText, []byte(j.text), j.id)
			if err == nil {
				// The client holds the change for every program of the
				// account; the event that says so may still be on its way.
				if _, held := a.c.KeyChangeHeld(peer); held {
					a.setWarned(peer, true)
				}
			}
			if err == nil && a.isWarned(peer) {
				a.send(sentMsg{seq: j.seq, held: true})
				return
			}
			if err == nil {
				r, err = a.c.Send(a.ctx, out)
			}
		} else {
			r, err = a.c.SendGroupTextAs(a.ctx, j.conv[1:], j.text, j.id)
		}
		if a.ctx.Err() != nil {
			return // quitting: it stays in the history as sending
		}
		if err == nil {
			a.send(sentMsg{seq: j.seq, status: r.Status})
			return
		}
		if permanent(err) {
			a.send(sentMsg{seq: j.seq, err: err})
			return
		}
		if errors.Is(err, client.ErrPeerKeysChanged) {
			continue // the new keys are pinned and warned of: this holds it
		}
		switch {
		case errors.Is(err, client.ErrDevicesHeld) && heldTold:
			// Said once: it goes once the user approves the device.
		case errors.Is(err, client.ErrDevicesHeld):
			heldTold = true
			a.send(noticeMsg{text: fmt.Sprintf("held, not sent: %v; it goes once you do", err), conv: j.conv})
		default:
			a.send(noticeMsg{text: fmt.Sprintf("not sent yet (%v); trying again", err)})
		}
		select {
		case <-time.After(wait):
		case <-a.ctx.Done():
			return
		}
		wait = min(wait*2, 30*time.Second)
	}
}

// do runs fn off the interface's goroutine and sends its result.
func (a *app) do(fn func(ctx context.Context) tea.Msg) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(a.ctx, 2*time.Minute)
		defer cancel()
		return fn(ctx)
	}
}

// deviceText is the notice for a contact's device list that changed.
// silentText warns of one of the user's own devices going silent.
func silentText(ev client.Event) string {
	return "your device " + ev.Text + ": " + client.DeviceSilence(ev.Text, ev.Idle) // cleaned as any notice is, when drawn
}

func deviceText(ev client.Event) string {
	if ev.Op == proto.DeviceRemove {
		return fmt.Sprintf("%s removed a device: %s", ev.User, ev.Text)
	}
	return fmt.Sprintf("%s added a device: %s (their safety number stays the same; ask them if you did not expect it)", ev.User, ev.Text)
}
