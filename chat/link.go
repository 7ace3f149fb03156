package chat

import (
	"context"
	"fmt"
	"strings"

	tea "github.com/charmbracelet/bubbletea"

	"securefastchat/client"
	"securefastchat/proto"
	"securefastchat/termtext"
)

// Linking a new device from the chat (/link): the chat offers a link and
// shows its code, the new device joins with 'securefastchat device add',
// the chat shows the id the new device says, and the user answers /link
// yes or /link no. The offer belongs to the model; its waits run as
// commands bounded by the link's life and the chat's.

// linkCodeLine is how much of a link code the chat draws on one line.
const linkCodeLine = 40

// linking is a link offered from this chat.
type linking struct {
	offer  *client.LinkOffer
	manage bool                    // the new device gets the master key
	req    *client.LinkRequestInfo // the device that asked, once it has
	done   context.CancelFunc      // ends the wait for it
}

// linkMsg is what became of a link: offered, asked for by a device,
// answered, or ended.
type linkMsg struct {
	from  *client.LinkOffer // the link it is about (a wait's or an answer's)
	offer *client.LinkOffer
	opts  linkOpts // what the offer gives the new device
	req   *client.LinkRequestInfo
	added bool     // the device was added
	info  []string // said when it ended, a line each
	err   error
}

// linkOpts is what a link offered from the chat gives the new device.
type linkOpts struct{ manage, history bool }

// parseLinkOpts reads /link's words: manage, history, both or neither.
func parseLinkOpts(arg string) (linkOpts, bool) {
	var o linkOpts
	for _, w := range strings.Fields(arg) {
		switch {
		case w == "manage" && !o.manage:
			o.manage = true
		case w == "history" && !o.history:
			o.history = true
		default:
			return o, false
		}
	}
	return o, true
}

// linkCommand runs /link [manage] [history], /link yes and /link no.
func (m *model) linkCommand(arg string) tea.Cmd {
	a, l := m.a, m.link
	switch arg {
	default:
		opts, ok := parseLinkOpts(arg)
		if !ok {
			break
		}
		if l != nil {
			m.status = "a link is open already: /link no ends it"
			return nil
		}
		lo := client.LinkOptions{Manage: opts.manage}
		if opts.history {
			lo.History = a.h.LinkEntries
		}
		return a.do(func(ctx context.Context) tea.Msg {
			o, err := a.c.OfferLinkWith(ctx, lo)
			if err != nil {
				return linkMsg{err: fmt.Errorf("/link: %w", err)}
			}
			return linkMsg{offer: o, opts: opts}
		})
	case "yes", "no":
		if l == nil {
			m.status = "no link is open: /link offers one"
			return nil
		}
		if arg == "no" {
			_ = l.offer.Refuse("the user did not accept it")
			m.endLink()
			m.status = "link closed: nothing added"
			return nil
		}
		if l.req == nil {
			m.status = "no device has asked yet: run 'securefastchat device add' with the code on it"
			return nil
		}
		return a.do(func(ctx context.Context) tea.Msg {
			if err := l.offer.Accept(ctx); err != nil {
				return linkMsg{from: l.offer, err: fmt.Errorf("/link yes: %w", err)}
			}
			info := []string{fmt.Sprintf("Added %s (%016x) to your devices; your contacts are told.", termtext.Line(l.req.Name), l.req.DeviceID)}
			if l.manage {
				info = append(info, "It manages your devices too: it holds your account's master key.")
			}
			if h := l.offer.HistoryCopied(); h.Asked {
				info = append(info, client.HistoryCopiedText(h))
			}
			return linkMsg{from: l.offer, added: true, info: info}
		})
	}
	m.status = "/link takes nothing, manage, history (or both), yes or no"
	return nil
}

// linkChanged shows what became of the link, and returns the next wait.
func (m *model) linkChanged(msg linkMsg) tea.Cmd {
	if msg.from != nil && (m.link == nil || m.link.offer != msg.from) {
		return nil // about a link ended here before
	}
	switch {
	case msg.offer != nil:
		ctx, cancel := context.WithTimeout(m.a.ctx, proto.LinkTTL)
		m.link = &linking{offer: msg.offer, manage: msg.opts.manage, done: cancel}
		code := msg.offer.Code()
		// The code in lines short enough for any pane, so that none is
		// broken where the pane would choose (the new device reads it
		// with or without the breaks).
		m.info = []string{"On the new device, run 'securefastchat device add --name NAME --code CODE' with this code:"}
		for rest := code; rest != ""; {
			n := min(len(rest), linkCodeLine)
			m.info, rest = append(m.info, rest[:n]), rest[n:]
		}
		if msg.opts.manage {
			m.info = append(m.info, "The new device will manage your devices: it gets your account's master key.")
		}
		if msg.opts.history {
			m.info = append(m.info, "It gets a copy of your history (the newest that fits a link); it needs securefastchat of this version.")
		}
		m.info = append(append(m.info, "It holds a secret: whoever has it can ask to be your device. It works once, for "+
			fmt.Sprintf("%d minutes; /link no ends it. Or scan it:", int(proto.LinkTTL.Minutes()))), termtext.QR(code)...)
		o := msg.offer
		return func() tea.Msg {
			req, err := o.Request(ctx)
			if err != nil {
				return linkMsg{from: o, err: fmt.Errorf("/link: %w", err)}
			}
			return linkMsg{from: o, req: req}
		}
	case msg.req != nil:
		m.link.req = msg.req
		m.info = []string{
			fmt.Sprintf("A device named %q asks to be added, with id %016x.", termtext.Line(msg.req.Name), msg.req.DeviceID),
			"If the new device shows the same id: /link yes. Otherwise: /link no.",
		}
	case msg.added:
		m.endLink()
		m.info = msg.info
	case msg.err != nil:
		m.endLink()
		m.status = "error: " + clean(msg.err.Error())
	}
	return nil
}

// endLink closes the link, if one is open.
func (m *model) endLink() {
	if m.link != nil {
		m.link.done()
		_ = m.link.offer.Close()
		m.link = nil
	}
}
