package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/progress"
	"github.com/charmbracelet/bubbles/textarea"
	"github.com/charmbracelet/bubbles/viewport"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"securefastchat/client"
	"securefastchat/history"
	"securefastchat/proto"
)

// Messages from the client's goroutines and from commands.
type (
	eventMsg client.Event
	connMsg  struct {
		State client.ConnState
		Err   error // why not connected
	}
	noticeMsg   struct{ text, conv string } // conv: also kept in that conversation
	receivedMsg struct {
		e       *history.Entry
		request bool // a direct message from someone not accepted
	}
	keyChangeMsg struct{ user, old, new string }
	sentMsg      struct {
		seq    uint64
		status uint8
		held   bool
		err    error
	}
	progressMsg struct {
		id          [proto.MsgIDLen]byte
		name, peer  string
		done, total int64
		mine        bool
	}
	fileSentMsg struct {
		seq uint64
		err error
	}
	// resultMsg is a command's outcome: lines for the info panel, a
	// conversation to open, conversations to know about.
	resultMsg struct {
		info  []string
		note  string // for the status line
		err   error
		open  string
		known []string
	}
	tickMsg time.Time
)

// typingTimeout is how long a typing indicator lasts without news; a
// typing signal is sent again at most every typingEvery while typing.
const (
	typingTimeout = 6 * time.Second
	typingEvery   = 3 * time.Second
)

// conv is one conversation: "@user", "#group" or "!broadcast".
type conv struct {
	key     string
	entries []*history.Entry
	unread  int
	last    time.Time
	typing  map[string]time.Time
	shown   int // how many of the last entries are drawn (maxShown more each time the top is reached)
}

// transfer is a file going up or down.
type transfer struct {
	name, peer  string
	done, total int64
	mine        bool
}

type model struct {
	a *app

	link *linking // a link offered for a new device (/link), if any

	width, height int
	convs         map[string]*conv
	open          string
	input         textarea.Model
	suggestions   []string // Tab completes the input from these
	vp            viewport.Model
	bar           progress.Model

	conn       client.ConnState
	connErr    string // why not connected
	online     map[string]bool
	presenceOn bool
	info       []string // the info panel: help, command output
	status     string   // one line: the last notice or error
	bySeq      map[uint64]*history.Entry
	byID       map[[proto.MsgIDLen]byte]*history.Entry // outgoing, for receipts
	transfers  map[[proto.MsgIDLen]byte]*transfer
	keyWarn    map[string]string // contact -> "old new" fingerprints, until accepted
	requests   map[string]bool   // senders of message requests not yet accepted
	invites    map[string]string // group -> who invited this user (not joined yet), as the server last said
	askInvites bool              // the invitations may have changed: ask the server
	verified   map[string]string // contact -> the fingerprint verified
	members    map[string][]string
	typedAt    time.Time // when a typing signal last went
	typedTo    string
	statusAt   time.Time       // when status was set: it fades after statusFade
	newFrom    uint64          // seq of the first entry unread when the open conversation was opened
	typed      []string        // what was entered, oldest first (Up and Down recall it)
	typedPos   int             // the entry recalled, len(typed) when none
	draft      string          // what was in the input before recalling
	grow       bool            // more of the open conversation was just drawn: keep the view where it was
	leaving    map[string]bool // groups this user is leaving (its own /leave)
	// replacedInfo: the info panel shows the "open elsewhere" notice.
	replacedInfo bool
}

// Input limits: the longest message is a few pages; the input box grows
// to inputRows rows, then scrolls.
const (
	inputMaxLines = 200
	inputRows     = 5
	// statusFade is how long a note stays on the status line.
	statusFade = 6 * time.Second
	// typedKeep bounds the input history.
	typedKeep = 200
)

func newModel(a *app) *model {
	in := textarea.New()
	in.Prompt = "> "
	in.Placeholder = "type a message, or /help"
	in.ShowLineNumbers = false
	in.CharLimit = 16000
	in.MaxHeight = inputMaxLines
	in.SetHeight(1)
	in.FocusedStyle.CursorLine = lipgloss.NewStyle()
	in.FocusedStyle.Base = lipgloss.NewStyle()
	in.BlurredStyle.Base = lipgloss.NewStyle()
	// Enter sends; Alt+Enter (or Ctrl+J, or Shift+Enter where the terminal
	// sends it as one of those) starts a new line.
	in.KeyMap.InsertNewline = key.NewBinding(key.WithKeys("alt+enter", "ctrl+j"))
	in.Focus()
	m := &model{leaving: map[string]bool{},
		a: a, convs: map[string]*conv{}, input: in, vp: viewport.New(80, 20),
		bar:    progress.New(progress.WithDefaultGradient(), progress.WithWidth(30)),
		online: map[string]bool{}, bySeq: map[uint64]*history.Entry{}, byID: map[[proto.MsgIDLen]byte]*history.Entry{},
		transfers: map[[proto.MsgIDLen]byte]*transfer{}, keyWarn: map[string]string{}, verified: map[string]string{}, requests: map[string]bool{}, invites: map[string]string{},
		members: map[string][]string{}, conn: client.StateConnecting, width: 80, height: 24,
	}
	m.vp.KeyMap.Up.SetEnabled(false)
	m.vp.KeyMap.Down.SetEnabled(false)
	return m
}

func (m *model) Init() tea.Cmd {
	m.load()
	m.refreshSuggestions()
	return tea.Batch(textarea.Blink, tick(), m.a.do(func(ctx context.Context) tea.Msg {
		groups, err := m.a.c.Groups(ctx)
		if err != nil {
			return resultMsg{err: fmt.Errorf("listing your groups: %w", err)}
		}
		var known []string
		for _, g := range groups {
			known = append(known, "#"+g)
		}
		return resultMsg{known: known}
	}))
}

func tick() tea.Cmd {
	return tea.Tick(time.Second, func(t time.Time) tea.Msg { return tickMsg(t) })
}

// load reads the history and the settings, and queues what was typed but
// never accepted by the server.
func (m *model) load() {
	all, bad, err := m.a.h.All()
	if err != nil {
		m.status = "could not read the history: " + err.Error()
	} else if bad > 0 {
		m.status = fmt.Sprintf("%d history records did not open and were skipped", bad)
	}
	for _, e := range all {
		if e.Mine && e.Status == history.Sending && e.File != "" {
			e.Status, e.Error = history.Failed, "interrupted: send it again with /file"
			m.update(e)
		}
		m.place(e)
		if e.Mine && e.Status == history.Sending {
			m.a.outbox.add(job{seq: e.Seq, conv: e.Conv, id: e.ID, text: e.Text})
		}
	}
	if v, _ := m.a.h.Meta("keywarns"); v != nil {
		_ = json.Unmarshal(v, &m.keyWarn)
	}
	if v, _ := m.a.h.Meta("verified"); v != nil {
		_ = json.Unmarshal(v, &m.verified)
	}
	// The account's marks are the client's (a new device gets them when it
	// is linked); marks this chat kept before are given to it once.
	marks := m.a.c.VerifiedContacts()
	for u, fp := range m.verified {
		if _, ok := marks[u]; !ok {
			_ = m.a.c.MarkVerified(u, fp)
		}
	}
	for u, fp := range marks {
		m.verified[u] = fp
	}
	if v, _ := m.a.h.Meta("requests"); v != nil {
		_ = json.Unmarshal(v, &m.requests)
	}
	for u := range m.keyWarn {
		m.a.setWarned(u, true)
	}
	// Open the most recent conversation.
	var best *conv
	for _, c := range m.convs {
		if best == nil || c.last.After(best.last) {
			best = c
		}
	}
	if best != nil {
		m.open = best.key
	}
}

// place puts an entry in its conversation.
func (m *model) place(e *history.Entry) {
	c := m.conv(e.Conv)
	c.entries = append(c.entries, e)
	if e.Time.After(c.last) {
		c.last = e.Time
	}
	if e.Unread {
		c.unread++
	}
	m.bySeq[e.Seq] = e
	if e.Mine {
		m.byID[e.ID] = e
	}
}

func (m *model) conv(key string) *conv {
	c := m.convs[key]
	if c == nil {
		c = &conv{key: key, typing: map[string]time.Time{}}
		m.convs[key] = c
	}
	return c
}

// order returns the conversations, most recent first.
func (m *model) order() []*conv {
	out := make([]*conv, 0, len(m.convs))
	for _, c := range m.convs {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].last.Equal(out[j].last) {
			return out[i].last.After(out[j].last)
		}
		return out[i].key < out[j].key
	})
	return out
}

func (m *model) saveMeta(name string, v any) {
	b, _ := json.Marshal(v)
	if err := m.a.h.SetMeta(name, b); err != nil {
		m.status = "could not save settings: " + err.Error()
	}
}

// add records a new entry in the history and shows it.
func (m *model) add(e *history.Entry) {
	if err := m.a.h.Add(e); err != nil {
		m.status = "could not save to the history: " + err.Error()
	}
	m.place(e)
}

func (m *model) update(es ...*history.Entry) {
	if len(es) == 0 {
		return
	}
	if err := m.a.h.Update(es...); err != nil {
		m.status = "could not save to the history: " + err.Error()
	}
}

func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	var cmds []tea.Cmd
	status := m.status
	defer func() {
		if m.status != status {
			m.statusAt = time.Now()
		}
	}()
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case tea.MouseMsg:
		m.mouse(msg)
		return m, nil
	case tea.KeyMsg:
		if cmd, quit, handled := m.key(msg); quit {
			return m, tea.Quit
		} else if handled {
			m.fitInput()
			m.markRead()
			return m, cmd
		} else if cmd != nil {
			cmds = append(cmds, cmd)
		}
	case tickMsg:
		m.expireTyping(time.Time(msg))
		if m.status != "" && time.Since(m.statusAt) > statusFade {
			m.status = ""
		}
		cmds = append(cmds, tick())
	case connMsg:
		m.connChanged(msg)
		if msg.State == client.StateConnected {
			m.askInvites = true
		}
	case invitesMsg:
		m.gotInvites(msg)
	case joinedMsg:
		delete(m.invites, msg.group)
		m.status = "joined " + msg.group + ": its messages reach you from now on"
	case noticeMsg:
		m.status = clean(msg.text)
		if msg.conv != "" {
			m.add(&history.Entry{Conv: msg.conv, ID: client.NewMsgID(), From: msg.conv[1:], Text: msg.text, Time: time.Now(), Notice: true, Unread: true})
		}
	case receivedMsg:
		m.noteRequest(msg.e, msg.request)
		m.place(msg.e)
		if m.open == "" {
			m.openConv(msg.e.Conv)
		}
		delete(m.conv(msg.e.Conv).typing, msg.e.From)
		if msg.e.Conv != m.open {
			cmds = append(cmds, m.bell())
		}
	case eventMsg:
		m.event(client.Event(msg))
	case keyChangeMsg:
		m.keyChanged(msg)
	case sentMsg:
		m.sent(msg)
	case fileSentMsg:
		if e := m.bySeq[msg.seq]; e != nil {
			delete(m.transfers, e.ID)
			if msg.err != nil {
				e.Status, e.Error = history.Failed, msg.err.Error()
			} else if e.Status < history.Sent {
				e.Status = history.Sent
			}
			m.update(e)
		}
	case progressMsg:
		t := m.transfers[msg.id]
		if t == nil {
			t = &transfer{name: msg.name, peer: msg.peer, mine: msg.mine}
			m.transfers[msg.id] = t
		}
		t.done, t.total = msg.done, msg.total
		if t.done >= t.total && !t.mine {
			delete(m.transfers, msg.id) // the message itself follows
		}
	case acceptMsg:
		m.accept(msg)
	case linkMsg:
		cmds = append(cmds, m.linkChanged(msg))
	case broadcastSentMsg:
		m.add(&history.Entry{Conv: "!broadcast", ID: client.NewMsgID(), From: m.a.c.User(), Mine: true, Plain: true,
			Text: msg.text, Time: time.Now(), Status: history.Sent})
		if msg.reached < 0 {
			m.status = "broadcast sent to everyone online (how many, the server tells its admins only)"
		} else {
			m.status = fmt.Sprintf("broadcast reached %d online", msg.reached)
		}
	case resultMsg:
		for _, k := range msg.known {
			m.conv(k)
		}
		if msg.open != "" {
			m.openConv(msg.open)
		}
		if msg.err != nil {
			m.status = "error: " + clean(msg.err.Error())
		} else if len(msg.info) > 0 {
			m.info = msg.info
		}
		if msg.note != "" {
			m.status = msg.note
		}
		m.refreshSuggestions()
	}
	if m.askInvites {
		m.askInvites = false
		cmds = append(cmds, m.fetchInvites())
	}
	var cmd tea.Cmd
	if k, ok := msg.(tea.KeyMsg); ok && k.Type == tea.KeyRunes && len(k.Runes) > 1 && !k.Paste {
		// Fast typing (or a terminal that sends a word at once) comes as
		// one message; its String() would match key names such as "down"
		// in the input's bindings, so hand it over rune by rune.
		for _, r := range k.Runes {
			m.input, cmd = m.input.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}, Alt: k.Alt})
			cmds = append(cmds, cmd)
		}
	} else {
		m.input, cmd = m.input.Update(msg)
		cmds = append(cmds, cmd)
	}
	if k, ok := msg.(tea.KeyMsg); ok && (k.Type == tea.KeyRunes || k.Type == tea.KeySpace) {
		cmds = append(cmds, m.typing())
	}
	m.fitInput()
	m.markRead()
	return m, tea.Batch(cmds...)
}

// fitInput sizes the input box to its lines, up to inputRows.
func (m *model) fitInput() {
	m.input.SetWidth(max(10, m.width))
	m.input.SetHeight(min(inputRows, max(1, m.input.LineCount())))
}

// mouse scrolls the conversation with the wheel.
func (m *model) mouse(msg tea.MouseMsg) {
	switch msg.Button {
	case tea.MouseButtonWheelUp:
		if m.vp.AtTop() {
			m.showMore()
		}
		m.vp.ScrollUp(3)
	case tea.MouseButtonWheelDown:
		m.vp.ScrollDown(3)
	}
}

// showMore draws maxShown more of the open conversation's history, if it
// has more, keeping the view where it was.
func (m *model) showMore() {
	c := m.convs[m.open]
	if c == nil || len(c.entries) <= c.shownCount() {
		return
	}
	c.shown = c.shownCount() + maxShown
	m.grow = true
}

// shownCount is how many of the last entries are drawn.
func (c *conv) shownCount() int { return max(c.shown, maxShown) }

// bell rings the terminal for a message in a conversation not open, unless
// turned off.
func (m *model) bell() tea.Cmd {
	if m.a.opts.NoBell || m.a.opts.Out == nil {
		return nil
	}
	out := m.a.opts.Out
	return func() tea.Msg {
		_, _ = out.Write([]byte("\a"))
		return nil
	}
}

// key handles a key press; it returns quit to leave, and handled when the
// key is not also for the input.
func (m *model) key(k tea.KeyMsg) (cmd tea.Cmd, quit, handled bool) {
	if k.Type == tea.KeyRunes && !k.Alt {
		return nil, false, false // text, even if it spells a key's name ("down")
	}
	switch s := k.String(); s {
	case "ctrl+c":
		return nil, true, true
	case "ctrl+r":
		if m.conn == client.StateReplaced {
			return m.takeOver(), false, true
		}
	case "enter":
		line := m.input.Value()
		if strings.TrimSpace(line) == "" {
			return nil, false, true
		}
		m.remember(line)
		m.input.Reset()
		cmd, quit := m.enter(line)
		return cmd, quit, true
	case "tab":
		m.complete()
		return nil, false, true
	case "up":
		if m.input.Line() == 0 {
			m.recall(-1)
			return nil, false, true
		}
	case "down":
		if m.input.Line() == m.input.LineCount()-1 {
			m.recall(1)
			return nil, false, true
		}
	case "pgup":
		if m.vp.AtTop() {
			m.showMore()
		}
		m.vp.PageUp()
		return nil, false, true
	case "pgdown":
		m.vp.PageDown()
		return nil, false, true
	case "alt+down", "ctrl+t":
		m.cycle(1)
		return nil, false, true
	case "alt+up":
		m.cycle(-1)
		return nil, false, true
	case "esc":
		m.info = nil
		return nil, false, true
	default:
		if n, ok := strings.CutPrefix(s, "alt+"); ok && len(n) == 1 && n[0] >= '1' && n[0] <= '9' {
			if order := m.order(); int(n[0]-'1') < len(order) {
				m.openConv(order[n[0]-'1'].key)
			}
			return nil, false, true
		}
	}
	return nil, false, false
}

// remember adds an entered line to the input history.
func (m *model) remember(line string) {
	if n := len(m.typed); n == 0 || m.typed[n-1] != line {
		m.typed = append(m.typed, line)
		if len(m.typed) > typedKeep {
			m.typed = m.typed[len(m.typed)-typedKeep:]
		}
	}
	m.typedPos, m.draft = len(m.typed), ""
}

// recall moves through the input history (step -1: older).
func (m *model) recall(step int) {
	pos := m.typedPos + step
	if pos < 0 || pos > len(m.typed) {
		return
	}
	if m.typedPos == len(m.typed) {
		m.draft = m.input.Value()
	}
	m.typedPos = pos
	if pos == len(m.typed) {
		m.input.SetValue(m.draft)
	} else {
		m.input.SetValue(m.typed[pos])
	}
	m.input.CursorEnd()
}

// complete completes the input from the suggestions (commands, with the
// users and groups this client knows): the first that extends it.
func (m *model) complete() {
	v := m.input.Value()
	if !strings.HasPrefix(v, "/") || strings.Contains(v, "\n") {
		return
	}
	for _, s := range m.suggestions {
		if len(s) > len(v) && strings.HasPrefix(s, v) {
			m.input.SetValue(s)
			m.input.CursorEnd()
			return
		}
	}
}

// connChanged shows the connection's new state. Being replaced or stopped
// is said in full in the panel, with what to do.
func (m *model) connChanged(ev connMsg) {
	m.conn, m.connErr = ev.State, ""
	if ev.Err != nil {
		m.connErr = clean(ev.Err.Error())
	}
	if ev.State != client.StateConnected {
		m.online = map[string]bool{}
	}
	user := m.a.c.User()
	switch ev.State {
	case client.StateConnected:
		if m.replacedInfo {
			m.info, m.replacedInfo = nil, false
		}
	case client.StateReplaced:
		m.info = []string{
			"NOT CONNECTED: " + user + " is open in another program or on another machine.",
			"",
			"The server gives one program at a time your messages, and that one has them now. " +
				"What you type here waits. Press Ctrl+R (or type /takeover) to use " + user + " here again; the other program is then disconnected.",
		}
		m.replacedInfo = true
	case client.StateStopped:
		m.info = []string{"NOT CONNECTED, and not reconnecting:", "", stoppedText(ev.Err), "", "Quit with Ctrl+C; your history and what you typed are kept."}
		m.replacedInfo = false
	}
}

// stoppedText says why the client stopped for good, and what to do.
func stoppedText(err error) string {
	var ce *client.ClosedError
	switch {
	case errors.As(err, &ce) && ce.Reason == proto.CloseRevoked:
		return "An admin of the server ended this session or disabled the account. Start the chat again to log in with your password; if that fails, ask the server's operator."
	case errors.Is(err, proto.CodeInvalidCredentials):
		return "The server no longer takes your password (it was changed, or the account is disabled). Start the chat again with the current password, or ask the server's operator."
	case err == nil:
		return "the connection ended."
	}
	return clean(err.Error())
}

// takeOver opens the user's receiving session here again.
func (m *model) takeOver() tea.Cmd {
	m.status = "taking the session back…"
	return m.a.do(func(ctx context.Context) tea.Msg {
		if err := m.a.c.TakeOver(ctx); err != nil {
			return resultMsg{err: fmt.Errorf("taking the session back: %w", err)}
		}
		return resultMsg{note: "connected here again; the other program was disconnected"}
	})
}

func (m *model) cycle(step int) {
	order := m.order()
	if len(order) == 0 {
		return
	}
	i := 0
	for j, c := range order {
		if c.key == m.open {
			i = j
		}
	}
	m.openConv(order[(i+step+len(order))%len(order)].key)
}

func (m *model) openConv(key string) {
	c := m.conv(key)
	m.open = key
	m.info = nil
	m.vp.GotoBottom()
	// Where the unread messages start, a line says so while it is open.
	m.newFrom = 0
	for _, e := range c.entries {
		if e.Unread && !e.Mine {
			m.newFrom = e.Seq
			break
		}
	}
}

// typing tells the open conversation that this user is typing, at most
// every typingEvery.
func (m *model) typing() tea.Cmd {
	if m.a.opts.NoTyping || m.open == "" || m.open[0] == '!' || strings.HasPrefix(m.input.Value(), "/") || m.conn != client.StateConnected {
		return nil
	}
	if m.typedTo == m.open && time.Since(m.typedAt) < typingEvery {
		return nil
	}
	m.typedTo, m.typedAt = m.open, time.Now()
	return m.sendTyping(m.open, true)
}

func (m *model) sendTyping(key string, active bool) tea.Cmd {
	c := m.a.c
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(m.a.ctx, 10*time.Second)
		defer cancel()
		if key[0] == '@' {
			_ = c.SendTyping(ctx, key[1:], "", active)
		} else {
			_ = c.SendTyping(ctx, "", key[1:], active)
		}
		return nil
	}
}

func (m *model) expireTyping(now time.Time) {
	for _, c := range m.convs {
		for u, t := range c.typing {
			if now.Sub(t) > typingTimeout {
				delete(c.typing, u)
			}
		}
	}
}

func (m *model) event(ev client.Event) {
	switch ev.Kind {
	case client.EventGroup:
		m.groupEvent(ev)
	case client.EventGroupBadKey:
		who := ev.Target + " found"
		if ev.Target == m.a.c.User() {
			who = "you found"
		}
		m.add(&history.Entry{Conv: "#" + ev.Group, ID: client.NewMsgID(), From: ev.User, Time: ev.Time, Event: true, Unread: true,
			Text: fmt.Sprintf("⚠ %s that the key %s made (epoch %d) is bad: %s. Nothing is sent under it; the next message makes a new one.",
				who, ev.User, ev.Epoch, ev.Text)})
	case client.EventPresence:
		m.presenceOn = true
		if ev.Reset {
			m.online = map[string]bool{}
			return
		}
		if ev.Online {
			m.online[ev.User] = true
		} else {
			delete(m.online, ev.User)
		}
	case client.EventTyping:
		key := "@" + ev.User
		if ev.Group != "" {
			key = "#" + ev.Group
		}
		c := m.conv(key)
		if ev.Typing {
			c.typing[ev.User] = time.Now()
		} else {
			delete(c.typing, ev.User)
		}
	case client.EventBroadcast:
		m.add(&history.Entry{Conv: "!broadcast", From: ev.User, Text: ev.Text, Time: ev.Time, Plain: true, Unread: true})
		if m.open == "" {
			m.openConv("!broadcast")
		}
	case client.EventReceipt:
		var changedEntries []*history.Entry
		defer func() { m.update(changedEntries...) }()
		for _, id := range ev.MsgIDs {
			e := m.byID[id]
			if e == nil || !e.Mine {
				continue
			}
			// Only the receiver of a message may say it has it.
			if ev.Group == "" && e.Conv != "@"+ev.User || ev.Group != "" && e.Conv != "#"+ev.Group {
				continue
			}
			changed := false
			switch {
			case ev.Receipt == proto.ReceiptRead && ev.Group != "":
				if !slices.Contains(e.ReadBy, ev.User) {
					e.ReadBy = append(e.ReadBy, ev.User)
					changed = true
				}
				if e.Status < history.Delivered {
					e.Status, changed = history.Delivered, true
				}
			case ev.Receipt == proto.ReceiptRead:
				if e.Status != history.Read {
					e.Status, changed = history.Read, true
				}
			case e.Status < history.Delivered:
				e.Status, changed = history.Delivered, true
			}
			if changed {
				changedEntries = append(changedEntries, e)
			}
		}
	}
}

// groupEvent writes a change of a group's roster into its timeline: a
// member just added sees the group appear with who added them.
func (m *model) groupEvent(ev client.Event) {
	me := m.a.c.User()
	who := func(u string) string {
		if u == me {
			return "you"
		}
		return u
	}
	var text string
	switch ev.Op {
	case proto.OpCreate:
		text = who(ev.User) + " created " + ev.Group
	case proto.OpAdd:
		text = who(ev.User) + " added " + who(ev.Target)
		if ev.Target == me {
			m.askInvites = true // perhaps only invited
		}
	case proto.OpRemove:
		text = who(ev.User) + " removed " + who(ev.Target)
	case proto.OpLeave:
		text = who(ev.Target) + " left"
	case proto.OpPromote:
		text = who(ev.User) + " made " + who(ev.Target) + " an admin"
	case proto.OpKeyChanged:
		text = who(ev.User) + " recovered their account: what they signed here before is checked with their key from before"
		if ev.User == me {
			text = "you said here that your key changed (you recovered your account)"
		}
	case 0:
		delete(m.invites, ev.Group)
		if m.leaving[ev.Group] {
			text = "you left " + ev.Group
		} else {
			text = "you were removed from " + ev.Group + " (or it was deleted): you no longer get or send its messages"
		}
		delete(m.leaving, ev.Group)
	default:
		return
	}
	key := "#" + ev.Group
	unread := key != m.open && ev.User != me
	m.add(&history.Entry{Conv: key, ID: client.NewMsgID(), From: ev.User, Text: text, Time: ev.Time, Event: true, Unread: unread})
	if m.open == "" {
		m.openConv(key)
	}
	delete(m.members, ev.Group)
	m.refreshSuggestions()
}

func (m *model) keyChanged(k keyChangeMsg) {
	m.keyWarn[k.user] = k.old + " " + k.new
	m.saveMeta("keywarns", m.keyWarn)
	text := fmt.Sprintf("%s's KEY HAS CHANGED (was %s, now %s). They may have reinstalled, or someone may be intercepting. "+
		"Messages to them are held: compare safety numbers (/fingerprint %s), then /accept %s.", k.user, k.old, k.new, k.user, k.user)
	if _, ok := m.verified[k.user]; ok {
		delete(m.verified, k.user)
		m.saveMeta("verified", m.verified)
		text = "VERIFIED CONTACT: " + text
	}
	m.add(&history.Entry{Conv: "@" + k.user, From: k.user, Text: text, Time: time.Now(), Notice: true, Unread: true})
}

func (m *model) sent(s sentMsg) {
	e := m.bySeq[s.seq]
	if e == nil {
		return
	}
	switch {
	case s.held:
		e.Status = history.Held
	case s.err != nil && e.Conv[0] == '#' && errors.Is(s.err, proto.CodeNoSuchGroup):
		e.Status, e.Error = history.Failed, "you are not a member of "+e.Conv[1:]+" (removed, or you left)"
	case s.err != nil:
		e.Status, e.Error = history.Failed, s.err.Error()
	default:
		st := history.Queued
		switch {
		case e.Conv[0] == '#':
			// The server's word counts for nothing here: delivered and read
			// come from the members' receipts (a group with no other member
			// never shows delivered).
			st = history.Sent
		case s.status == proto.StatusDelivered:
			st = history.Delivered
		}
		if e.Status < st || e.Status == history.Held {
			e.Status = st
		}
	}
	m.update(e)
}

// markRead marks what the open conversation shows as read, and tells the
// senders unless read receipts are off.
func (m *model) markRead() {
	c := m.convs[m.open]
	if c == nil || c.unread == 0 {
		return
	}
	byFrom := map[string][][proto.MsgIDLen]byte{}
	var seen []*history.Entry
	for _, e := range c.entries {
		if !e.Unread {
			continue
		}
		e.Unread = false
		seen = append(seen, e)
		if !e.Mine && !e.Notice && !e.Plain {
			byFrom[e.From] = append(byFrom[e.From], e.ID)
		}
	}
	m.update(seen...)
	c.unread = 0
	if m.a.opts.NoReadReceipts {
		return
	}
	group := ""
	if c.key[0] == '#' {
		group = c.key[1:]
	}
	for from, ids := range byFrom {
		if group == "" && m.requests[from] {
			continue // nothing goes back to a request until it is accepted
		}
		m.a.c.MarkRead(from, group, ids...)
	}
}

// noteRequest keeps which direct conversations are message requests: one
// starts with a request, and ends when the user accepts it (writing to
// them, /accept), or when their messages come as no request any more (it
// was accepted in another program).
func (m *model) noteRequest(e *history.Entry, request bool) {
	if e.Conv == "" || e.Conv[0] != '@' || e.Mine {
		return
	}
	from := e.Conv[1:]
	if request == m.requests[from] {
		return
	}
	if request {
		m.requests[from] = true
		m.status = fmt.Sprintf("message request from %s: /dm %s to read it", from, from)
	} else {
		delete(m.requests, from)
	}
	m.saveMeta("requests", m.requests)
}

// invitesMsg is the server's list of this user's group invitations.
type invitesMsg struct {
	invites []client.GroupInvite
	err     error
}

// fetchInvites asks the server for this user's group invitations.
func (m *model) fetchInvites() tea.Cmd {
	c := m.a.c
	return m.a.do(func(ctx context.Context) tea.Msg {
		invs, err := c.GroupInvites(ctx)
		return invitesMsg{invites: invs, err: err}
	})
}

// gotInvites keeps the invitations, and tells of new ones.
func (m *model) gotInvites(msg invitesMsg) {
	if msg.err != nil {
		return // asked again on the next change or connection
	}
	next := map[string]string{}
	for _, inv := range msg.invites {
		next[inv.Group] = inv.By
		if _, known := m.invites[inv.Group]; !known {
			m.conv("#" + inv.Group)
			m.status = fmt.Sprintf("%s invited you to group %s: /group %s to look, /join %s to accept", inv.By, inv.Group, inv.Group, inv.Group)
		}
	}
	m.invites = next
}

// acceptedRequest records that the user accepted from's request.
func (m *model) acceptedRequest(from string) {
	if m.requests[from] {
		delete(m.requests, from)
		m.saveMeta("requests", m.requests)
	}
}

// accept clears a contact's key warning (and with verify, records the
// fingerprint the user compared), then sends what was held for them.
func (m *model) accept(a acceptMsg) {
	if a.request {
		m.acceptedRequest(a.user)
		m.status = "accepted " + a.user + "'s message request: receipts and typing go to them now"
		if _, warned := m.keyWarn[a.user]; !warned {
			return
		}
	}
	if err := m.a.c.AcceptKeyChange(a.user); err != nil { // (for the account's other programs)
		m.status = "accepting " + a.user + "'s key: " + err.Error()
		return
	}
	delete(m.keyWarn, a.user)
	m.saveMeta("keywarns", m.keyWarn)
	m.a.setWarned(a.user, false)
	if a.verify {
		m.verified[a.user] = a.fingerprint
		m.saveMeta("verified", m.verified)
		if err := m.a.c.MarkVerified(a.user, a.fingerprint); err != nil {
			m.status = "marking " + a.user + " verified: " + err.Error()
			return
		}
		m.status = a.user + " is marked verified (" + a.fingerprint + ")"
	} else {
		m.status = "accepted " + a.user + "'s key " + a.fingerprint
	}
	held := 0
	if c := m.convs["@"+a.user]; c != nil {
		for _, e := range c.entries {
			if e.Mine && e.Status == history.Held {
				e.Status = history.Sending
				m.update(e)
				m.a.outbox.add(job{seq: e.Seq, conv: e.Conv, id: e.ID, text: e.Text})
				held++
			}
		}
	}
	if held > 0 {
		m.status += fmt.Sprintf("; sending %d held messages", held)
	}
}
