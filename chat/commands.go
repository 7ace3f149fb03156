package chat

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"securefastchat/client"
	"securefastchat/history"
	"securefastchat/proto"
	"securefastchat/termtext"
)

// command is one slash command.
type command struct {
	name, args, help string
}

var commands = []command{
	{"/dm", "USER", "open a direct conversation"},
	{"/group", "NAME", "open a group"},
	{"/create", "NAME", "create a group (you are its admin) and open it"},
	{"/add", "USER", "add a member to the open group (admins)"},
	{"/remove", "USER", "remove a member from the open group (admins)"},
	{"/leave", "", "leave the open group (or decline its invitation)"},
	{"/join", "[NAME]", "accept the invitation to the open group (or NAME)"},
	{"/members", "", "list the open group's members"},
	{"/file", "PATH", "send a file in the open conversation (a person or a group)"},
	{"/fingerprint", "[USER]", "the server's key fingerprint, or your safety number with USER"},
	{"/verify", "USER", "mark USER verified, once you compared safety numbers out of band"},
	{"/accept", "USER", "accept USER's message request, or USER's changed key (and send what was held)"},
	{"/block", "USER", "drop what USER sends you from now on (they are not told)"},
	{"/decline", "USER", "decline USER's message request: block them and close the conversation"},
	{"/unblock", "USER", "undo /block (what they send next comes as a request)"},
	{"/blocked", "", "list whom you block"},
	{"/devices", "[USER | remove NAME | approve USER | hold on|off]", "your devices, or USER's, as the signed device list proves them; remove one of yours (its sessions end, your groups get new keys); hold contacts' new devices until you approve them"},
	{"/link", "[manage] [history] | yes | no", "show a code for a new device ('securefastchat device add' there), then add it (yes) or not (no); manage: it gets your master key and manages your devices too; history: it gets a copy of your conversations"},
	{"/broadcast", "[TEXT]", "send TEXT to everyone online (NOT end-to-end encrypted); alone, open the broadcasts"},
	{"/search", "TEXT", "find TEXT in the history on this machine (every conversation)"},
	{"/takeover", "", "use your account here again when another program or machine has it (Ctrl+R)"},
	{"/help", "", "this help"},
	{"/quit", "", "leave (what is not sent yet goes next time)"},
}

func helpLines() []string {
	lines := []string{"Commands (Tab completes, Esc closes this panel):"}
	for _, c := range commands {
		lines = append(lines, fmt.Sprintf("  %-13s %-7s %s", c.name, c.args, c.help))
	}
	return append(lines,
		"Plain text goes to the open conversation; Alt+Enter starts a new line (a paste keeps its lines).",
		"Alt+1..9: the conversations in the list; Ctrl+T or Alt+Down/Up: next/previous conversation;",
		"Up/Down: what you typed before; PgUp/PgDn or the mouse wheel: scroll (older history loads at the top);",
		"Ctrl+C: quit. Marks: sending, queued (stored for someone away), sent, delivered (their client",
		"has it), read. Broadcasts are marked [NOT E2E]. A message in another conversation rings the bell.")
}

// refreshSuggestions offers the commands, with the names this client
// knows, for Tab completion.
func (m *model) refreshSuggestions() {
	var users, groups []string
	for k := range m.convs {
		switch k[0] {
		case '@':
			users = append(users, k[1:])
		case '#':
			groups = append(groups, k[1:])
		}
	}
	for u := range m.online {
		if !slices.Contains(users, u) {
			users = append(users, u)
		}
	}
	sort.Strings(users)
	sort.Strings(groups)
	var s []string
	for _, c := range commands {
		switch c.args {
		case "USER", "[USER]":
			for _, u := range users {
				s = append(s, c.name+" "+u)
			}
		case "NAME":
			if c.name == "/group" {
				for _, g := range groups {
					s = append(s, c.name+" "+g)
				}
			}
		}
		if c.args == "" {
			s = append(s, c.name)
		} else {
			s = append(s, c.name+" ")
		}
	}
	m.suggestions = s
}

// enter handles a line the user typed.
func (m *model) enter(line string) (tea.Cmd, bool) {
	line = strings.TrimRight(line, " ")
	if line == "" {
		return nil, false
	}
	if !strings.HasPrefix(line, "/") || strings.HasPrefix(line, "//") {
		return m.say(strings.TrimPrefix(line, "/")), false
	}
	name, arg, _ := strings.Cut(line, " ")
	arg = strings.TrimSpace(arg)
	m.status = ""
	a := m.a
	c := a.c
	needArg := func(what string) bool {
		if arg == "" {
			m.status = fmt.Sprintf("%s needs %s", name, what)
			return false
		}
		return true
	}
	group := ""
	if strings.HasPrefix(m.open, "#") {
		group = m.open[1:]
	}
	needGroup := func() bool {
		if group == "" {
			m.status = name + " works in a group: open one with /group NAME"
			return false
		}
		return true
	}
	switch name {
	case "/quit", "/exit":
		return nil, true
	case "/help":
		m.info = helpLines()
	case "/search":
		if !needArg("the text to find") {
			return nil, false
		}
		m.info = m.search(arg)
		return nil, false
	case "/takeover":
		if m.conn != client.StateReplaced {
			m.status = "this chat has the session already"
			return nil, false
		}
		return m.takeOver(), false
	case "/dm":
		if !needArg("a user name") {
			return nil, false
		}
		if u, err := proto.CanonicalUsername(arg); err == nil && m.convs["@"+u] != nil && m.conn != client.StateConnected {
			m.openConv("@" + u) // known already: opens offline too (keys are checked when it sends)
			return nil, false
		}
		return a.do(func(ctx context.Context) tea.Msg {
			pk, err := c.PeerKeys(ctx, arg)
			if err != nil {
				return resultMsg{err: fmt.Errorf("/dm %s: %w", arg, err)}
			}
			return resultMsg{open: "@" + pk.User}
		}), false
	case "/group", "/create":
		if !needArg("a group name") {
			return nil, false
		}
		g, err := proto.CanonicalUsername(arg)
		if err != nil {
			m.status = "group names are 1 to 32 of a-z 0-9 _"
			return nil, false
		}
		if name == "/group" && m.convs["#"+g] != nil && m.conn != client.StateConnected {
			m.openConv("#" + g) // known already; its members are listed once connected
			return nil, false
		}
		create := name == "/create"
		return a.do(func(ctx context.Context) tea.Msg {
			if create {
				if err := c.CreateGroup(ctx, g); err != nil {
					return resultMsg{err: fmt.Errorf("/create %s: %w", g, err)}
				}
			}
			ms, err := c.GroupMembers(ctx, g)
			if err != nil {
				return resultMsg{err: fmt.Errorf("/group %s: %w", g, err)}
			}
			return resultMsg{open: "#" + g, note: g + ": " + countMembers(len(ms)) + " (/members lists them)"}
		}), false
	case "/add", "/remove":
		if !needGroup() || !needArg("a user name") {
			return nil, false
		}
		add := name == "/add"
		return a.do(func(ctx context.Context) tea.Msg {
			var err error
			if add {
				err = c.AddMember(ctx, group, arg)
			} else {
				err = c.RemoveMember(ctx, group, arg)
			}
			if err != nil {
				return resultMsg{err: fmt.Errorf("%s %s: %w", name, arg, err)}
			}
			ms, err := c.GroupMembers(ctx, group)
			if err != nil {
				return resultMsg{err: err}
			}
			return resultMsg{info: memberLines(group, ms)}
		}), false
	case "/leave":
		if !needGroup() {
			return nil, false
		}
		m.leaving[group] = true
		return a.do(func(ctx context.Context) tea.Msg {
			if err := c.LeaveGroup(ctx, group); err != nil {
				return resultMsg{err: fmt.Errorf("/leave: %w", err)}
			}
			return resultMsg{info: []string{"You left " + group + ". Its history stays on this machine."}}
		}), false
	case "/members":
		if !needGroup() {
			return nil, false
		}
		return a.do(func(ctx context.Context) tea.Msg {
			ms, err := c.GroupMembers(ctx, group)
			if err != nil {
				return resultMsg{err: fmt.Errorf("/members: %w", err)}
			}
			return resultMsg{info: memberLines(group, ms)}
		}), false
	case "/file":
		if !needArg("a file path") {
			return nil, false
		}
		return m.sendFile(arg), false
	case "/fingerprint":
		if arg == "" {
			m.info = []string{
				"Server " + a.addr + ": " + c.ServerKey().Fingerprint(),
				"Compare it with the operator's 'securefastchat fingerprint'.",
				"Your keys: " + c.Fingerprint(),
			}
			return nil, false
		}
		verified := m.verified
		return a.do(func(ctx context.Context) tea.Msg {
			pk, err := c.PeerKeys(ctx, arg)
			if err != nil {
				return resultMsg{err: fmt.Errorf("/fingerprint %s: %w", arg, err)}
			}
			state := "not verified: compare the number with " + pk.User + " (in person or on a call), then /verify " + pk.User
			if fp, ok := verified[pk.User]; ok && fp == pk.Fingerprint() {
				state = "VERIFIED"
			}
			lines := []string{
				"Safety number with " + pk.User + " (" + state + "):",
				"  " + c.SafetyNumber(pk),
				pk.User + "'s keys: " + pk.Fingerprint(),
			}
			return resultMsg{info: append(lines, qrLines(c.SafetyNumber(pk))...)}
		}), false
	case "/block", "/decline", "/unblock":
		if !needArg("a user name") {
			return nil, false
		}
		user, err := proto.CanonicalUsername(arg)
		if err != nil {
			m.status = fmt.Sprintf("%s: %q is not a valid name", name, arg)
			return nil, false
		}
		if name == "/decline" {
			m.acceptedRequest(user) // no longer pending: declined
			delete(m.convs, "@"+user)
			if m.open == "@"+user {
				m.open = ""
			}
		}
		return a.do(func(ctx context.Context) tea.Msg {
			if name == "/unblock" {
				if err := c.Unblock(ctx, user); err != nil {
					return resultMsg{err: fmt.Errorf("/unblock %s: %w", user, err)}
				}
				return resultMsg{note: "unblocked " + user + ": what they send next comes as a request"}
			}
			if err := c.Block(ctx, user); err != nil {
				return resultMsg{err: fmt.Errorf("%s %s: %w", name, user, err)}
			}
			if name == "/decline" {
				n, err := a.h.DeleteConv("@" + user)
				if err != nil {
					return resultMsg{err: fmt.Errorf("/decline %s: blocked, but the conversation stays in the history: %w", user, err)}
				}
				return resultMsg{note: fmt.Sprintf("declined %s: blocked (/unblock %s undoes it), and their %d messages deleted from this history", user, user, n)}
			}
			return resultMsg{note: "blocked " + user + ": what they send you is dropped (they are not told); /unblock " + user + " undoes it"}
		}), false
	case "/join":
		g := arg
		if g == "" && strings.HasPrefix(m.open, "#") {
			g = m.open[1:]
		}
		if g == "" {
			m.status = "/join needs a group: open it, or /join NAME"
			return nil, false
		}
		g, err := proto.CanonicalUsername(g)
		if err != nil {
			m.status = "/join: not a valid group name"
			return nil, false
		}
		return a.do(func(ctx context.Context) tea.Msg {
			if err := c.JoinGroup(ctx, g); err != nil {
				return resultMsg{err: fmt.Errorf("/join %s: %w", g, err)}
			}
			return joinedMsg{group: g}
		}), false
	case "/link":
		return m.linkCommand(arg), false
	case "/devices":
		if name, ok := strings.CutPrefix(arg, "remove "); ok {
			name = strings.TrimSpace(name)
			return a.do(func(ctx context.Context) tea.Msg {
				d, err := c.RemoveDevice(ctx, name)
				if d == nil {
					return resultMsg{err: fmt.Errorf("/devices remove: %w", err)}
				}
				info := []string{fmt.Sprintf("Removed %s: its sessions are ended, and nothing more is sent to it.", d.Name)}
				if err != nil {
					info = append(info, err.Error())
				} else {
					info = append(info, "Every group you are in has a new key, which it does not get.")
				}
				return resultMsg{info: info}
			}), false
		}
		if user, ok := strings.CutPrefix(arg, "approve "); ok {
			user = strings.TrimSpace(user)
			return a.do(func(ctx context.Context) tea.Msg {
				devs, err := c.ApproveDevices(ctx, user)
				if err != nil {
					return resultMsg{err: fmt.Errorf("/devices approve: %w", err)}
				}
				return resultMsg{note: fmt.Sprintf("Approved %s's %d device(s): what you send them is sealed for each from now on.", user, len(devs))}
			}), false
		}
		if arg == "hold on" || arg == "hold off" {
			on := arg == "hold on"
			return a.do(func(ctx context.Context) tea.Msg {
				if err := c.SetHoldNewDevices(on); err != nil {
					return resultMsg{err: fmt.Errorf("/devices %s: %w", arg, err)}
				}
				if on {
					return resultMsg{note: "Holding your contacts' new devices: a device added after you next see their list gets nothing of yours until /devices approve USER."}
				}
				return resultMsg{note: "Not holding new devices: what you send is sealed for every device on your contacts' lists."}
			}), false
		}
		of := arg
		if of == "" {
			of = c.User()
		}
		return a.do(func(ctx context.Context) tea.Msg {
			l, err := c.Devices(ctx, of)
			if err != nil {
				return resultMsg{err: fmt.Errorf("/devices: %w", err)}
			}
			held, err := c.HeldDevices(ctx, of)
			if err != nil {
				return resultMsg{err: fmt.Errorf("/devices: %w", err)}
			}
			return resultMsg{info: deviceLines(l, held)}
		}), false
	case "/blocked":
		return a.do(func(ctx context.Context) tea.Msg {
			l, err := c.Blocked(ctx)
			if err != nil {
				return resultMsg{err: fmt.Errorf("/blocked: %w", err)}
			}
			info := []string{fmt.Sprintf("You block %d (Esc closes this):", len(l))}
			for _, u := range l {
				info = append(info, "  "+u+"  (/unblock "+u+")")
			}
			return resultMsg{info: info}
		}), false
	case "/verify", "/accept":
		if !needArg("a user name") {
			return nil, false
		}
		verify := name == "/verify"
		if user, err := proto.CanonicalUsername(arg); err == nil && !verify && m.requests[user] {
			return a.do(func(ctx context.Context) tea.Msg {
				if err := c.Accept(ctx, user); err != nil {
					return resultMsg{err: fmt.Errorf("/accept %s: %w", user, err)}
				}
				return acceptMsg{user: user, request: true}
			}), false
		}
		return a.do(func(ctx context.Context) tea.Msg {
			pk, err := c.PeerKeys(ctx, arg)
			if err != nil {
				return resultMsg{err: fmt.Errorf("%s %s: %w", name, arg, err)}
			}
			return acceptMsg{user: pk.User, fingerprint: pk.Fingerprint(), verify: verify}
		}), false
	case "/broadcast":
		if arg == "" {
			m.openConv("!broadcast")
			return nil, false
		}
		return a.do(func(ctx context.Context) tea.Msg {
			n, err := c.Broadcast(ctx, arg)
			if err != nil {
				return resultMsg{err: fmt.Errorf("/broadcast: %w", err)}
			}
			return broadcastSentMsg{text: arg, reached: n}
		}), false
	default:
		m.status = fmt.Sprintf("unknown command %s: /help lists them (start a message with // to send a slash)", name)
	}
	return nil, false
}

// acceptMsg: the user accepted (or verified) a contact's current key.
type acceptMsg struct {
	user, fingerprint string
	verify            bool
	request           bool // a message request accepted (no key)
}

// joinedMsg: the user accepted the invitation to a group.
type joinedMsg struct{ group string }

type broadcastSentMsg struct {
	text    string
	reached int
}

// maxSearchResults bounds what /search lists.
const maxSearchResults = 40

// search finds text (ignoring case) in every conversation's history, the
// most recent first.
func (m *model) search(text string) []string {
	needle := strings.ToLower(text)
	type hit struct {
		conv string
		e    *history.Entry
	}
	var hits []hit
	for key, c := range m.convs {
		for _, e := range c.entries {
			if !e.Notice && strings.Contains(strings.ToLower(e.Text), needle) {
				hits = append(hits, hit{key, e})
			}
		}
	}
	sort.Slice(hits, func(i, j int) bool { return hits[i].e.Time.After(hits[j].e.Time) })
	lines := []string{fmt.Sprintf("/search %s: %d found (Esc closes this)", text, len(hits))}
	for i, h := range hits {
		if i == maxSearchResults {
			lines = append(lines, fmt.Sprintf("  … and %d more", len(hits)-i))
			break
		}
		one := strings.ReplaceAll(clean(h.e.Text), "\n", " ⏎ ")
		lines = append(lines, fmt.Sprintf("  %s %s %s: %s", h.e.Time.Local().Format("Jan 2 15:04"), h.conv, h.e.From, one))
	}
	return lines
}

func countMembers(n int) string {
	if n == 1 {
		return "1 member"
	}
	return fmt.Sprintf("%d members", n)
}

func memberLines(group string, ms []proto.RosterMember) []string {
	lines := []string{group + ": " + countMembers(len(ms)) + " (Esc closes this)"}
	for _, mb := range ms {
		role := ""
		if mb.Admin {
			role = " (admin)"
		}
		lines = append(lines, "  "+mb.Name+role)
	}
	return lines
}

// say sends text to the open conversation: stored first, then queued.
func (m *model) say(text string) tea.Cmd {
	key := m.open
	switch {
	case key == "":
		m.status = "open a conversation first: /dm USER or /group NAME"
		return nil
	case key[0] == '!':
		m.status = "this is the broadcast feed: use /broadcast TEXT"
		return nil
	}
	limit := client.MaxTextLen(m.a.c.User(), key[1:])
	if len(text) > limit {
		m.status = fmt.Sprintf("the message is %d bytes; the limit is %d (send long text as a file)", len(text), limit)
		return nil
	}
	e := &history.Entry{Conv: key, ID: client.NewMsgID(), From: m.a.c.User(), Mine: true, Text: text, Time: time.Now(), Status: history.Sending}
	if key[0] == '@' {
		m.acceptedRequest(key[1:]) // writing to them accepts them
	}
	if by, invited := m.invites[key[1:]]; invited && key[0] == '#' {
		m.status = fmt.Sprintf("you are invited to %s by %s and have not joined: /join to accept (or /leave to decline)", key[1:], by)
		return nil
	}
	if key[0] == '@' && m.a.isWarned(key[1:]) {
		e.Status = history.Held
		m.status = key[1:] + "'s key changed: the message is held until you /accept " + key[1:]
	}
	m.add(e)
	if e.Status == history.Sending {
		m.a.outbox.add(job{seq: e.Seq, conv: key, id: e.ID, text: text})
	}
	m.vp.GotoBottom()
	m.typedAt = time.Time{}
	if m.a.opts.NoTyping {
		return nil
	}
	return m.sendTyping(key, false)
}

// sendFile sends a file to the open conversation with a progress bar.
func (m *model) sendFile(path string) tea.Cmd {
	key := m.open
	if key == "" || key[0] == '!' {
		m.status = "open a conversation first: /dm USER or /group NAME"
		return nil
	}
	peer := key[1:]
	if strings.HasPrefix(path, "~/") {
		if h, err := os.UserHomeDir(); err == nil {
			path = filepath.Join(h, path[2:])
		}
	}
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() {
		m.status = "/file: " + path + " is not a file I can read"
		return nil
	}
	if key[0] == '@' && m.a.isWarned(peer) {
		m.status = peer + "'s key changed: /accept " + peer + " first"
		return nil
	}
	abs, _ := filepath.Abs(path)
	e := &history.Entry{Conv: m.open, ID: client.NewMsgID(), From: m.a.c.User(), Mine: true, Text: filepath.Base(path),
		File: abs, Size: st.Size(), Time: time.Now(), Status: history.Sending}
	m.add(e)
	label := peer
	if key[0] == '#' {
		label = key
	}
	m.transfers[e.ID] = &transfer{name: e.Text, peer: label, total: st.Size(), mine: true}
	a, seq, id := m.a, e.Seq, e.ID
	return func() tea.Msg {
		progress := func(done, total int64) {
			a.send(progressMsg{id: id, name: filepath.Base(abs), peer: label, done: done, total: total, mine: true})
		}
		var err error
		if key[0] == '#' {
			_, err = a.c.SendGroupFileAs(a.ctx, peer, abs, id, progress)
		} else {
			_, err = a.c.SendFileAs(a.ctx, peer, abs, id, progress)
		}
		return fileSentMsg{seq: seq, err: err}
	}
}

// deviceLines shows a device list in the info panel.
func deviceLines(l *proto.DeviceList, held []proto.Device) []string {
	info := []string{fmt.Sprintf("%s has %d device(s), as the list signed by their master key proves (Esc closes this):", l.User, len(l.Devices))}
	for _, d := range l.Devices {
		mark := ""
		if slices.ContainsFunc(held, func(h proto.Device) bool { return h.ID == d.ID }) {
			mark = "  held: not approved"
		}
		info = append(info, fmt.Sprintf("  %016x  %s  added %s%s", d.ID, termtext.Line(d.Name), time.Unix(d.Added, 0).Local().Format("2006-01-02 15:04"), mark))
	}
	if len(held) > 0 {
		info = append(info, fmt.Sprintf("Nothing of yours is sealed for %s until you check the held devices' ids with them and /devices approve %s.", l.User, l.User))
	}
	return info
}
