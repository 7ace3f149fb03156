package chat

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/charmbracelet/lipgloss"

	"securefastchat/client"
	"securefastchat/history"
)

var (
	stHeader  = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("12"))
	stDim     = lipgloss.NewStyle().Foreground(lipgloss.Color("8"))
	stWarn    = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("9"))
	stOnline  = lipgloss.NewStyle().Foreground(lipgloss.Color("10"))
	stSel     = lipgloss.NewStyle().Reverse(true)
	stMe      = lipgloss.NewStyle().Foreground(lipgloss.Color("14"))
	stPlain   = lipgloss.NewStyle().Foreground(lipgloss.Color("11"))
	stNew     = lipgloss.NewStyle().Foreground(lipgloss.Color("13"))
	stEvent   = lipgloss.NewStyle().Foreground(lipgloss.Color("6")).Italic(true)
	stSideBox = lipgloss.NewStyle().BorderStyle(lipgloss.NormalBorder()).BorderRight(true).BorderForeground(lipgloss.Color("8"))
)

// maxShown bounds the messages of a conversation drawn (and scrollable)
// at once, so a long history does not slow every keystroke.
const maxShown = 500

// sidebarWidth is the conversation list's width; below minWideWidth
// columns the list is hidden and the header names the conversation.
const (
	sidebarWidth = 22
	minWideWidth = 60
)

func (m *model) View() string {
	w, h := max(m.width, 20), max(m.height, 6)
	header := m.header(w)
	status := m.statusLine(w)
	transfers := m.transferLines(w)
	input := m.input.View()
	bodyH := h - 2 - lipgloss.Height(input) - len(transfers)
	if bodyH < 1 {
		bodyH = 1
	}
	mainW := w
	var side string
	if w >= minWideWidth {
		mainW = w - sidebarWidth - 1
		side = stSideBox.Width(sidebarWidth).Height(bodyH).Render(m.sidebar(sidebarWidth, bodyH))
	}
	main := m.mainPane(mainW, bodyH)
	body := main
	if side != "" {
		body = lipgloss.JoinHorizontal(lipgloss.Top, side, main)
	}
	parts := []string{header, body}
	parts = append(parts, transfers...)
	parts = append(parts, status, input)
	return lipgloss.JoinVertical(lipgloss.Left, parts...)
}

func (m *model) header(w int) string {
	s := "securefastchat · " + m.a.c.User() + " @ " + m.a.addr
	if m.width < minWideWidth && m.open != "" {
		s = m.open + " · " + m.a.c.User()
	}
	return stHeader.Render(truncate(s, w))
}

func (m *model) statusLine(w int) string {
	var s string
	switch m.conn {
	case client.StateConnected:
		s = stOnline.Render("● connected")
	case client.StateReplaced:
		s = stWarn.Render("○ NOT CONNECTED: open elsewhere · Ctrl+R takes it back")
	case client.StateStopped:
		s = stWarn.Render("○ NOT CONNECTED (see above)")
	default:
		msg := "○ OFFLINE: connecting…"
		if m.connErr != "" {
			msg += " (" + m.connErr + ")"
		}
		s = stWarn.Render(truncate(msg, w/2+10))
	}
	pending := 0
	for _, c := range m.convs {
		for _, e := range c.entries {
			if e.Mine && e.Status == history.Sending {
				pending++
			}
		}
	}
	if pending > 0 {
		s += stDim.Render(fmt.Sprintf(" · %d waiting to send", pending))
	}
	if m.status != "" {
		s += " · " + m.status
	}
	return truncate(s, w)
}

func (m *model) transferLines(w int) []string {
	ids := make([]string, 0, len(m.transfers))
	byKey := map[string]*transfer{}
	for id, t := range m.transfers {
		k := fmt.Sprintf("%x", id)
		ids = append(ids, k)
		byKey[k] = t
	}
	sort.Strings(ids)
	var out []string
	for _, k := range ids {
		t := byKey[k]
		pct := 1.0
		if t.total > 0 {
			pct = float64(t.done) / float64(t.total)
		}
		dir := "↓ " + t.name + " from " + t.peer
		if t.mine {
			dir = "↑ " + t.name + " to " + t.peer
		}
		label := truncate(clean(dir), max(10, w-40))
		out = append(out, label+" "+m.bar.ViewAs(pct))
	}
	return out
}

func (m *model) sidebar(w, h int) string {
	lines := []string{stDim.Render("Conversations")}
	for _, c := range m.order() {
		mark := " "
		if c.key[0] == '@' {
			switch {
			case m.online[c.key[1:]]:
				mark = stOnline.Render("●")
			case m.presenceOn:
				mark = stDim.Render("○")
			}
			if m.requests[c.key[1:]] {
				mark = stWarn.Render("?")
			}
			if _, bad := m.keyWarn[c.key[1:]]; bad {
				mark = stWarn.Render("!")
			}
		}
		if _, invited := m.invites[c.key[1:]]; invited && c.key[0] == '#' {
			mark = stWarn.Render("?")
		}
		name := c.key
		if c.key[0] == '@' {
			name = c.key[1:]
			if _, ok := m.verified[name]; ok {
				name += " ✔"
			}
		}
		if c.unread > 0 {
			name += fmt.Sprintf(" (%d)", c.unread)
		}
		line := truncate(name, w-2)
		if c.key == m.open {
			line = stSel.Render(line)
		}
		lines = append(lines, mark+" "+line)
	}
	if len(lines) == 1 {
		lines = append(lines, stDim.Render("none yet: /dm USER"))
	}
	if len(lines) > h {
		lines = lines[:h]
	}
	return strings.Join(lines, "\n")
}

func (m *model) mainPane(w, h int) string {
	if m.info != nil {
		var b []string
		for _, l := range m.info {
			b = append(b, lipgloss.NewStyle().Width(w).Render(l))
		}
		s := strings.Join(b, "\n")
		return lipgloss.NewStyle().Width(w).Height(h).MaxHeight(h).Render(s)
	}
	if m.open == "" {
		return lipgloss.NewStyle().Width(w).Height(h).Render("No conversation open.\n\n/dm USER opens one, /group NAME a group, /help lists the commands.")
	}
	title := m.title(w)
	c := m.convs[m.open]
	var lines []string
	before := 0 // lines of what was drawn before more history was added on top
	if c != nil {
		entries := c.entries
		shown := c.shownCount()
		if len(entries) > shown {
			lines = append(lines, stDim.Render(fmt.Sprintf("… %d older messages: PgUp or the mouse wheel at the top shows more", len(entries)-shown)))
			entries = entries[len(entries)-shown:]
		}
		if m.grow {
			prev := min(len(entries), max(0, shown-maxShown))
			for _, e := range entries[len(entries)-prev:] {
				before += lipgloss.Height(m.entryLine(e, w))
			}
		}
		for _, e := range entries {
			if e.Seq == m.newFrom && m.newFrom != 0 {
				lines = append(lines, stNew.Render(truncate("──── new messages "+strings.Repeat("─", w), w)))
			}
			lines = append(lines, m.entryLine(e, w))
		}
	}
	vh := h - lipgloss.Height(title)
	if vh < 1 {
		vh = 1
	}
	atBottom := m.vp.AtBottom() || m.vp.TotalLineCount() <= m.vp.Height
	m.vp.Width, m.vp.Height = w, vh
	content := strings.Join(lines, "\n")
	m.vp.SetContent(content)
	switch {
	case m.grow:
		// Keep the first line that was at the top where it was.
		m.vp.SetYOffset(lipgloss.Height(content) - before - 1)
		m.grow = false
	case atBottom:
		m.vp.GotoBottom()
	}
	return lipgloss.JoinVertical(lipgloss.Left, title, m.vp.View())
}

func (m *model) title(w int) string {
	key := m.open
	parts := []string{stHeader.Render(key)}
	c := m.convs[key]
	if key[0] == '@' {
		peer := key[1:]
		switch {
		case m.online[peer]:
			parts = append(parts, stOnline.Render("online"))
		case m.presenceOn:
			parts = append(parts, stDim.Render("offline"))
		}
		if _, ok := m.verified[peer]; ok {
			parts = append(parts, stOnline.Render("✔ verified"))
		}
	}
	if key[0] == '!' {
		parts = append(parts, stPlain.Render("broadcasts are NOT end-to-end encrypted: the server can read them"))
	}
	if c != nil && len(c.typing) > 0 {
		var who []string
		for u := range c.typing {
			who = append(who, u)
		}
		sort.Strings(who)
		parts = append(parts, stDim.Render(strings.Join(who, ", ")+" typing…"))
	}
	t := truncate(strings.Join(parts, " · "), w)
	if by, invited := m.invites[key[1:]]; invited && key[0] == '#' {
		inv := fmt.Sprintf("INVITATION: %s added you to %s, and is not in your contacts. You get none of its messages until you /join; /leave declines.", by, key[1:])
		t += "\n" + stWarn.Width(w).Render(inv)
	}
	if key[0] == '@' && m.requests[key[1:]] {
		p := key[1:]
		req := fmt.Sprintf("MESSAGE REQUEST: %s is not in your contacts. Nothing goes back to them (no receipts, no typing) until you accept: reply, or /accept %s. /block %s drops what they send; /decline %s blocks and closes this.",
			p, p, p, p)
		t += "\n" + stWarn.Width(w).Render(req)
	}
	if key[0] == '@' {
		if fps, bad := m.keyWarn[key[1:]]; bad {
			was, now, _ := strings.Cut(fps, " ")
			warn := fmt.Sprintf("⚠ %s's KEY CHANGED (was %s, now %s). Messages to them are HELD. Compare safety numbers with /fingerprint %s, then /accept %s.",
				key[1:], was, now, key[1:], key[1:])
			t += "\n" + stWarn.Width(w).Render(warn)
		}
	}
	return t
}

func when(t time.Time) string {
	if t.IsZero() {
		return "     "
	}
	t = t.Local()
	if y, mo, d := t.Date(); y == time.Now().Year() && mo == time.Now().Month() && d == time.Now().Day() {
		return t.Format("15:04")
	}
	return t.Format("Jan 2 15:04")
}

func mark(e *history.Entry) string {
	switch e.Status {
	case history.Sending:
		return stDim.Render("… sending")
	case history.Queued:
		return stDim.Render("✓ queued")
	case history.Sent:
		return stDim.Render("✓ sent")
	case history.Delivered:
		if len(e.ReadBy) > 0 {
			return stOnline.Render(fmt.Sprintf("✓✓ read by %d", len(e.ReadBy)))
		}
		return stDim.Render("✓✓ delivered")
	case history.Read:
		return stOnline.Render("✓✓ read")
	case history.Failed:
		return stWarn.Render("✗ failed: " + clean(e.Error))
	case history.Held:
		return stWarn.Render("⚠ held: key changed")
	}
	return ""
}

func (m *model) entryLine(e *history.Entry, w int) string {
	style := lipgloss.NewStyle().Width(w)
	if e.Notice {
		return stWarn.Width(w).Render("⚠ " + clean(e.Text))
	}
	if e.Event {
		return stEvent.Width(w).Render(stDim.Render(when(e.Time)) + " " + clean(e.Text))
	}
	who := e.From
	if e.Mine {
		who = stMe.Render(who)
	}
	prefix := stDim.Render(when(e.Time)) + " "
	if e.Plain {
		prefix += stPlain.Render("[NOT E2E] ")
	}
	body := clean(e.Text)
	if e.File != "" {
		body = fmt.Sprintf("[file] %s (%s)", clean(e.Text), size(e.Size))
		if !e.Mine {
			body += " saved to " + clean(e.File)
		}
	}
	line := prefix + who + ": " + body
	if e.Before {
		line += stDim.Render("  (sent before " + e.From + " left the group)")
	}
	if e.Mine {
		line += "  " + mark(e)
	}
	return style.Render(line)
}

func size(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// truncate cuts s (which may hold styles) to w cells.
func truncate(s string, w int) string {
	if w <= 0 {
		return ""
	}
	if lipgloss.Width(s) <= w {
		return s
	}
	return lipgloss.NewStyle().MaxWidth(w).Render(s)
}
