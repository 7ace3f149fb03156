package chat

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"securefastchat/client"
	"securefastchat/history"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

// testModel is a model on a real client of a real server, driven by calls
// to Update as the program would make them.
func testModel(t *testing.T) (*model, *client.Client, func(user string) *client.Client) {
	t.Helper()
	s := testserver.Start(t, nil)
	signup := func(user string) *client.Client { return testserver.Signup(t, s, user) }
	c := signup("ann")
	h, err := history.Open(filepath.Join(t.TempDir(), "history.db"), c.LocalKey("history"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	a := &app{c: c, h: h, addr: s.Addr(), warned: map[string]bool{}, send: func(tea.Msg) {}}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	t.Cleanup(a.cancel)
	a.outbox = newOutbox(a)
	m := newModel(a)
	m.load()
	return m, c, signup
}

func (m *model) typeLine(s string) tea.Cmd {
	m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s)})
	_, cmd := m.Update(tea.KeyMsg{Type: tea.KeyEnter})
	return cmd
}

// TestReceiptsOnlyFromTheReceiver: a receipt changes a message's mark
// only if it comes from the user (or a member of the group) it was sent
// to.
func TestReceiptsOnlyFromTheReceiver(t *testing.T) {
	m, _, signup := testModel(t)
	signup("bob")
	signup("eve")
	m.openConv("@bob")
	m.typeLine("for bob only")
	e := m.convs["@bob"].entries[0]
	if e.Status != history.Sending || e.Text != "for bob only" {
		t.Fatalf("typed entry %+v", e)
	}
	receipt := func(from, group string, typ uint8) {
		m.Update(eventMsg(client.Event{Kind: client.EventReceipt, User: from, Group: group, Receipt: typ, MsgIDs: [][proto.MsgIDLen]byte{e.ID}}))
	}
	receipt("eve", "", proto.ReceiptRead)
	receipt("bob", "team", proto.ReceiptRead)
	if e.Status != history.Sending {
		t.Fatalf("a receipt from someone else changed the mark to %v", e.Status)
	}
	receipt("bob", "", proto.ReceiptDelivered)
	if e.Status != history.Delivered {
		t.Fatalf("after bob's delivery receipt: %v", e.Status)
	}
	receipt("bob", "", proto.ReceiptRead)
	if e.Status != history.Read || !strings.Contains(m.View(), "for bob only  ✓✓ read") {
		t.Fatalf("after bob's read receipt: %v\n%s", e.Status, m.View())
	}
	// A late delivery receipt does not take it back.
	receipt("bob", "", proto.ReceiptDelivered)
	if e.Status != history.Read {
		t.Fatalf("a late delivery receipt set %v", e.Status)
	}
}

// TestHeldUntilAccepted: with a key warning, what is typed is held, not
// queued, until the user accepts the key.
func TestHeldUntilAccepted(t *testing.T) {
	m, _, signup := testModel(t)
	signup("bob")
	m.Update(keyChangeMsg{user: "bob", old: "SHA256:old", new: "SHA256:new"})
	m.a.setWarned("bob", true)
	m.openConv("@bob")
	if v := m.View(); !strings.Contains(v, "bob's KEY CHANGED (was SHA256:old, now SHA256:new)") {
		t.Fatalf("no warning shown:\n%s", v)
	}
	m.typeLine("wait for it")
	var e *history.Entry
	for _, x := range m.convs["@bob"].entries {
		if x.Text == "wait for it" {
			e = x
		}
	}
	if e == nil || e.Status != history.Held {
		t.Fatalf("typed entry %+v, want held", e)
	}
	if _, ok := m.a.outbox.next(); ok {
		t.Fatal("a held message was queued for sending")
	}
	// Settings survive a restart of the client.
	if v, _ := m.a.h.Meta("keywarns"); !strings.Contains(string(v), "SHA256:new") {
		t.Fatalf("key warning not saved: %q", v)
	}
	m.Update(acceptMsg{user: "bob", fingerprint: "SHA256:new"})
	if e.Status != history.Sending || m.a.isWarned("bob") {
		t.Fatalf("after accept: %v, warned %v", e.Status, m.a.isWarned("bob"))
	}
	if j, ok := m.a.outbox.next(); !ok || j.seq != e.Seq || j.text != "wait for it" || j.id != e.ID {
		t.Fatalf("after accept the outbox has %+v %v", j, ok)
	}
}

// TestTypedWordsThatNameKeys: text typed in one burst that spells a key's
// name ("down", "enter") is text, not that key.
func TestTypedWordsThatNameKeys(t *testing.T) {
	m, _, _ := testModel(t)
	for _, w := range []string{"down", "up", "enter", "tab", "ctrl+c", "esc"} {
		m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(w + " ")})
	}
	if got := m.input.Value(); got != "down up enter tab ctrl+c esc " {
		t.Fatalf("input %q", got)
	}
}

// runOutbox runs the chat's outbox until the test ends, and returns what
// it tells the interface.
func runOutbox(t *testing.T, m *model) <-chan tea.Msg {
	got := make(chan tea.Msg, 10)
	m.a.send = func(msg tea.Msg) { got <- msg }
	m.a.wg.Add(1)
	go m.a.outbox.run()
	t.Cleanup(func() { m.a.cancel(); m.a.wg.Wait() })
	return got
}

// TestOutboxSends: the outbox sends a typed message with the id it was
// stored under, and reports the server's answer.
func TestOutboxSends(t *testing.T) {
	m, c, signup := testModel(t)
	bob := signup("bob")
	testserver.Acquaint(t, c, bob) // (a stranger's message is stored first, and said "queued")
	got := runOutbox(t, m)
	m.openConv("@bob")
	m.typeLine("through the outbox")
	e := m.convs["@bob"].entries[0]
	select {
	case msg := <-testserver.Messages(bob):
		if msg.Text != "through the outbox" || msg.MsgID != e.ID || msg.From != c.User() {
			t.Fatalf("bob got %+v", msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bob got nothing")
	}
	select {
	case msg := <-got:
		s, ok := msg.(sentMsg)
		if !ok || s.seq != e.Seq || s.err != nil {
			t.Fatalf("outbox reported %+v", msg)
		}
		m.Update(s)
		if e.Status != history.Delivered {
			t.Fatalf("status %v after the server said delivered", e.Status)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the outbox reported nothing")
	}
}

// TestOutboxHoldsForDevices: with the hold on, what ann writes to bob
// once he has a device she has not approved is held: the chat says so
// once, in the conversation, and sends it when she approves the device.
func TestOutboxHoldsForDevices(t *testing.T) {
	m, c, signup := testModel(t)
	bob := signup("bob")
	testserver.Acquaint(t, c, bob)
	if err := c.SetHoldNewDevices(true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendText(context.Background(), "bob", "bob's devices as they are"); err != nil {
		t.Fatal(err)
	}
	<-testserver.Messages(bob)
	phone, _ := testserver.AddDevice(t, bob, "phone", nil)
	got := runOutbox(t, m)
	m.openConv("@bob")
	m.typeLine("wait for my approval")
	select {
	case msg := <-got:
		n, ok := msg.(noticeMsg)
		if !ok || n.conv != "@bob" || !strings.Contains(n.text, "held, not sent") || !strings.Contains(n.text, fmt.Sprintf("phone (%016x)", phone.DeviceID)) {
			t.Fatalf("the chat said %+v", msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the chat said nothing of the held message")
	}
	if _, err := c.ApproveDevices(context.Background(), "bob"); err != nil {
		t.Fatal(err)
	}
	select {
	case msg := <-testserver.Messages(bob):
		if msg.Text != "wait for my approval" {
			t.Fatalf("bob got %+v", msg)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the held message did not go once the device was approved")
	}
	for {
		select {
		case msg := <-got:
			if _, ok := msg.(noticeMsg); ok {
				t.Fatalf("the chat said it again: %+v", msg)
			}
			if s, ok := msg.(sentMsg); ok && s.err == nil {
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the outbox reported nothing")
		}
	}
}

// TestProgressBar: a file going up or down shows a bar with its name,
// peer and share done, and goes when it is done.
func TestProgressBar(t *testing.T) {
	m, _, _ := testModel(t)
	id := [proto.MsgIDLen]byte{1}
	m.Update(progressMsg{id: id, name: "notes.pdf", peer: "bob", done: 512 << 10, total: 1 << 20, mine: true})
	v := m.View()
	if !strings.Contains(v, "↑ notes.pdf to bob") || !strings.Contains(v, "50%") {
		t.Fatalf("no upload bar:\n%s", v)
	}
	in := [proto.MsgIDLen]byte{2}
	m.Update(progressMsg{id: in, name: "photo.jpg", peer: "cat", done: 1 << 20, total: 4 << 20})
	if v := m.View(); !strings.Contains(v, "↓ photo.jpg from cat") || !strings.Contains(v, "25%") {
		t.Fatalf("no download bar:\n%s", v)
	}
	m.Update(progressMsg{id: in, name: "photo.jpg", peer: "cat", done: 4 << 20, total: 4 << 20})
	if v := m.View(); strings.Contains(v, "photo.jpg") {
		t.Fatalf("a finished download still shows:\n%s", v)
	}
}

// TestLongConversation: only the last maxShown messages are drawn.
func TestLongConversation(t *testing.T) {
	m, _, _ := testModel(t)
	for i := 0; i < maxShown+100; i++ {
		m.place(&history.Entry{Seq: uint64(i + 1), Conv: "@bob", From: "bob", Text: "line", Time: time.Now()})
	}
	m.openConv("@bob")
	m.View()
	if n := m.vp.TotalLineCount(); n != maxShown+1 {
		t.Fatalf("drew %d lines, want %d", n, maxShown+1)
	}
}

// The mouse wheel scrolls the conversation, and at the top it draws older
// history (past the last maxShown messages).
func TestMouseWheelScrolls(t *testing.T) {
	m, _, _ := testModel(t)
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 20})
	for i := 0; i < maxShown+100; i++ {
		m.place(&history.Entry{Seq: uint64(i + 1), Conv: "@bob", From: "bob", Text: "message", Time: time.Now()})
	}
	m.openConv("@bob")
	m.View()
	bottom := m.vp.YOffset
	m.Update(tea.MouseMsg{Button: tea.MouseButtonWheelUp, Action: tea.MouseActionPress})
	m.View()
	if m.vp.YOffset >= bottom {
		t.Fatalf("wheel up: offset %d, was %d", m.vp.YOffset, bottom)
	}
	m.Update(tea.MouseMsg{Button: tea.MouseButtonWheelDown, Action: tea.MouseActionPress})
	m.View()
	if m.vp.YOffset != bottom {
		t.Fatalf("wheel down: offset %d, want %d", m.vp.YOffset, bottom)
	}
	m.vp.GotoTop()
	m.Update(tea.MouseMsg{Button: tea.MouseButtonWheelUp, Action: tea.MouseActionPress})
	m.View()
	if c := m.convs["@bob"]; c.shownCount() <= maxShown || m.vp.YOffset == 0 {
		t.Fatalf("wheel up at the top: %d shown, offset %d", c.shownCount(), m.vp.YOffset)
	}
}

// A group message's marks come from the members' receipts only: the
// server's word that it reached every member (which it says of a group
// with nobody else, and of a member whose client could not open it) never
// shows it delivered; a member's delivery receipt does.
func TestGroupMarksFromReceiptsOnly(t *testing.T) {
	m, _, _ := testModel(t)
	m.openConv("#team")
	e := &history.Entry{Conv: "#team", ID: client.NewMsgID(), From: "ann", Mine: true, Text: "hi team", Time: time.Now(), Status: history.Sending}
	m.add(e)
	m.Update(sentMsg{seq: e.Seq, status: proto.StatusDelivered})
	if e.Status != history.Sent {
		t.Fatalf("the server's delivered made it %v, want sent", e.Status)
	}
	m.Update(eventMsg(client.Event{Kind: client.EventReceipt, User: "bob", Group: "team", Receipt: proto.ReceiptDelivered, MsgIDs: [][proto.MsgIDLen]byte{e.ID}}))
	if e.Status != history.Delivered {
		t.Fatalf("after bob's receipt: %v", e.Status)
	}
}

// TestDeviceNotice: a contact's new device is noted in the conversation
// with them, and the name they gave it cannot act on the terminal.
func TestDeviceNotice(t *testing.T) {
	m, _, _ := testModel(t)
	var got []tea.Msg
	m.a.send = func(msg tea.Msg) { got = append(got, msg) }
	m.a.event(client.Event{Kind: client.EventDevice, User: "bob", Op: proto.DeviceAdd, Text: "laptop\x1b[2J"})
	if len(got) != 1 {
		t.Fatalf("sent %v", got)
	}
	m.Update(got[0])
	c := m.convs["@bob"]
	if c == nil || len(c.entries) != 1 || !c.entries[0].Notice || !strings.Contains(c.entries[0].Text, "bob added a device: laptop") {
		t.Fatalf("bob's conversation: %+v", c)
	}
	if strings.Contains(m.View(), "\x1b[2J") {
		t.Fatal("the device's name reached the terminal raw")
	}
}

// TestDevicesCommand: /devices lists one's own devices, and another
// user's, in the panel, and removes one's own by name; a device's name
// cannot act on the terminal.
func TestDevicesCommand(t *testing.T) {
	m, _, signup := testModel(t)
	bob := signup("bob")
	run := func(line string) resultMsg {
		t.Helper()
		cmd := m.typeLine(line)
		if cmd == nil {
			t.Fatalf("%s ran nothing", line)
		}
		r, ok := cmd().(resultMsg)
		if !ok {
			t.Fatalf("%s: no result", line)
		}
		m.Update(r)
		return r
	}
	r := run("/devices")
	if r.err != nil || len(r.info) != 2 || !strings.Contains(r.info[0], "ann has 1 device(s)") || !strings.Contains(r.info[1], client.DefaultDeviceName) {
		t.Fatalf("/devices: %+v", r)
	}
	if !strings.Contains(m.View(), "ann has 1 device(s)") {
		t.Fatal("the list is not shown")
	}
	if r := run("/devices bob"); r.err != nil || !strings.Contains(r.info[0], "bob has 1 device(s)") {
		t.Fatalf("/devices bob: %+v", r)
	}
	// ann removes a device of hers by name.
	testserver.AddDevice(t, m.a.c, "tablet", nil)
	if r := run("/devices"); r.err != nil || len(r.info) != 3 {
		t.Fatalf("/devices with the tablet: %+v", r)
	}
	if r := run("/devices remove tablet"); r.err != nil || !strings.Contains(r.info[0], "Removed tablet") {
		t.Fatalf("/devices remove tablet: %+v", r)
	}
	if r := run("/devices"); r.err != nil || len(r.info) != 2 {
		t.Fatalf("/devices after the removal: %+v", r)
	}
	if r := run("/devices remove phone"); r.err == nil || !strings.Contains(r.err.Error(), `no device "phone"`) {
		t.Fatalf("/devices remove phone: %+v", r)
	}
	l := &proto.DeviceList{User: "eve", Devices: []proto.Device{{ID: 1, Name: "evil\x1b[2J"}}}
	if got := strings.Join(deviceLines(l, l.Devices), "\n"); strings.Contains(got, "\x1b") {
		t.Fatalf("a raw escape in the list: %q", got)
	}

	// With the hold on, a device bob adds after ann saw his list is held
	// until she approves it.
	if r := run("/devices hold on"); r.err != nil || !strings.Contains(r.note, "Holding your contacts' new devices") {
		t.Fatalf("/devices hold on: %+v", r)
	}
	if r := run("/devices bob"); r.err != nil || strings.Contains(strings.Join(r.info, "\n"), "held") {
		t.Fatalf("/devices bob, as first seen with the hold on: %+v", r)
	}
	phone, _ := testserver.AddDevice(t, bob, "phone", nil)
	r = run("/devices bob")
	if got := strings.Join(r.info, "\n"); r.err != nil || !strings.Contains(got, fmt.Sprintf("%016x  phone", phone.DeviceID)) || !strings.Contains(got, "held: not approved") || !strings.Contains(got, "/devices approve bob") {
		t.Fatalf("/devices bob with his phone held: %+v", r)
	}
	if r := run("/devices approve bob"); r.err != nil || !strings.Contains(r.note, "Approved bob's 2 device(s)") {
		t.Fatalf("/devices approve bob: %+v", r)
	}
	if r := run("/devices bob"); r.err != nil || strings.Contains(strings.Join(r.info, "\n"), "held") {
		t.Fatalf("/devices bob, approved: %+v", r)
	}
	if r := run("/devices hold off"); r.err != nil || !strings.Contains(r.note, "Not holding") {
		t.Fatalf("/devices hold off: %+v", r)
	}
}

// TestPasswordMovedNotice: the chat says that the account's password was
// moved to its login key, and to change it.
func TestPasswordMovedNotice(t *testing.T) {
	m, _, _ := testModel(t)
	var got []tea.Msg
	m.a.send = func(msg tea.Msg) { got = append(got, msg) }
	m.a.event(client.Event{Kind: client.EventPasswordMoved, Text: "your password no longer goes to the server; change it ('securefastchat password')"})
	if len(got) != 1 {
		t.Fatalf("sent %v", got)
	}
	m.Update(got[0])
	if v := m.View(); !strings.Contains(v, "change your password now: securefastchat password") {
		t.Fatalf("the chat shows:\n%s", v)
	}
}

// TestKeyChangedNotice: a member's key change in a group, said by their
// recovery, shows in the group.
func TestKeyChangedNotice(t *testing.T) {
	m, _, _ := testModel(t)
	var got []tea.Msg
	m.a.send = func(msg tea.Msg) { got = append(got, msg) }
	m.a.event(client.Event{Kind: client.EventGroup, Group: "team", User: "alice", Op: proto.OpKeyChanged, Target: "alice"})
	for _, msg := range got {
		m.Update(msg)
	}
	m.openConv("#team")
	if v := m.View(); !strings.Contains(v, "alice recovered their account") {
		t.Fatalf("the chat shows:\n%s", v)
	}
}

// TestSilentDeviceNotice: the chat warns of one of the user's own devices
// going silent, with what to do, and the device's name cannot act on the
// terminal.
func TestSilentDeviceNotice(t *testing.T) {
	m, _, _ := testModel(t)
	var got []tea.Msg
	m.a.send = func(msg tea.Msg) { got = append(got, msg) }
	m.a.event(client.Event{Kind: client.EventDeviceSilent, User: "me", Text: "tablet\x1b[2J", Idle: 24*24*time.Hour + time.Hour})
	if len(got) != 1 {
		t.Fatalf("sent %v", got)
	}
	m.Update(got[0])
	v := m.View()
	if !strings.Contains(v, "your device tablet") || !strings.Contains(v, "silent for 24 days") || strings.Contains(v, "\x1b[2J") {
		t.Fatalf("the chat shows:\n%s", v)
	}
}
