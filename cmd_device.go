package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"securefastchat/chat"
	"securefastchat/client"
	"securefastchat/history"
	"securefastchat/proto"
	"securefastchat/termtext"
)

const deviceUsage = `device list [USER] | device remove NAME|ID | device link [--manage] [--history] | device add --code CODE --name NAME`

func cmdDevice(args []string) error {
	cf := newClientFlags("device", deviceUsage+" [--server ADDR --user NAME]",
		"list: an account's devices (yours, or USER's) as its device list proves them:\n"+
			"a chain of statements signed by the account's master key, which your client\n"+
			"checks against the key it pinned and against the list it saw before. For\n"+
			"your own, when each last logged in: a device silent for 30 days is sent\n"+
			"nothing more (while another of yours logs in) until it logs in again.\n"+
			"remove: takes a device off your list (from a device that manages it: your\n"+
			"first, or one linked with --manage): its sessions end at once, nothing more is\n"+
			"sent to it, and every group you are in gets a new key.\n"+
			"link: on a device that manages your list, shows a code (as text and as a QR\n"+
			"code) for a new device, waits for it, shows the id it says, and adds it once\n"+
			"you answer yes. With --manage the new device gets your account's master key\n"+
			"through the link and manages your devices too (it can add and remove any of\n"+
			"them, and change your group memberships): only for a device you keep as\n"+
			"safely as this one. With --history it gets a copy of the conversations the chat\n"+
			"keeps on this device (the newest that fit a link, about 3 MiB; files stay here,\n"+
			"by name only; messages still to go are this device's to send); quit the chat\n"+
			"first, or use /link history in it. Without it, the new device starts empty.\n"+
			"add: on the new device, with the code: makes this home's keys, shows their id\n"+
			"(compare it with the first device's screen), and keeps them under a passphrase\n"+
			"of this device's own (from SFC_PASSWORD or a prompt; it never goes to the\n"+
			"server: the device logs in with its key). The user and the server come from\n"+
			"the code (--server overrides the address).")
	code := cf.fs.String("code", "", "add: the code 'device link' shows on your first device")
	name := cf.fs.String("name", "", "add: this device's name, as your devices list it")
	manage := cf.fs.Bool("manage", false, "link: the new device manages your devices too (it gets the master key)")
	withHistory := cf.fs.Bool("history", false, "link: the new device gets a copy of this device's conversations")
	rest, err := cf.parseWords(args)
	if err != nil {
		return err
	}
	if len(rest) == 1 && rest[0] == "add" {
		return deviceAdd(cf, *code, *name)
	}
	if *cf.user == "" {
		return usagef("--user is required")
	}
	if len(rest) == 1 && rest[0] == "link" {
		return deviceLink(cf, *manage, *withHistory)
	}
	list := len(rest) >= 1 && rest[0] == "list" && len(rest) <= 2
	if !list && (len(rest) != 2 || rest[0] != "remove") {
		return usagef("usage: securefastchat %s", deviceUsage)
	}
	of := *cf.user
	if list && len(rest) == 2 {
		of = rest[1]
	}
	if !proto.ValidUsername([]byte(of)) {
		return usagef("%q is not a valid name: use 1 to 32 characters of a-z A-Z 0-9 _", of)
	}
	c, err := loginSender(cf, true)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !list {
		d, err := c.RemoveDevice(ctx, rest[1])
		if d != nil {
			fmt.Printf("removed %016x %s from %s's devices: its sessions are ended, and nothing more is sent to it\n", d.ID, termtext.Line(d.Name), c.User())
		}
		if err == nil {
			fmt.Println("every group you are in has a new key, which it does not get")
		}
		return err
	}
	l, err := c.Devices(ctx, of)
	if err != nil {
		return err
	}
	var seen map[uint64]time.Duration
	if l.User == c.User() {
		if seen, err = c.DevicesSeen(ctx); err != nil {
			return err
		}
	}
	fmt.Printf("%s has %d device(s) (list statement %d):\n", l.User, len(l.Devices), l.Seq)
	for _, d := range l.Devices {
		fmt.Printf("  %016x  %-20s added %s", d.ID, termtext.Line(d.Name), time.Unix(d.Added, 0).Local().Format("2006-01-02 15:04"))
		if idle, ok := seen[d.ID]; ok {
			fmt.Printf(", %s", client.DeviceSilence(d.Name, idle))
		}
		fmt.Println()
	}
	return nil
}

// deviceLink offers a link for a new device from this one (one that
// manages the account's devices), and adds the device that joins once the
// user says yes; with manage, the new device manages them too, and with
// withHistory it gets a copy of the history the chat keeps here.
func deviceLink(cf *clientFlags, manage, withHistory bool) error {
	cfg := cf.senderConfig()
	c, err := login(cf, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	opts := client.LinkOptions{Manage: manage}
	if withHistory {
		// Held from now until the link ends, so what is copied is all
		// there is (a chat of this user cannot start meanwhile).
		h, err := chat.OpenHistory(c, cfg.Home)
		if errors.Is(err, chat.ErrHistoryInUse) {
			return fmt.Errorf("%w: the chat holds it, so link from there with /link history, or quit it first", err)
		}
		if err != nil {
			return err
		}
		defer h.Close()
		opts.History = h.LinkEntries
	}
	ctx, cancel := context.WithTimeout(context.Background(), proto.LinkTTL)
	defer cancel()
	offer, err := c.OfferLinkWith(ctx, opts)
	if err != nil {
		return err
	}
	defer offer.Close()
	code := offer.Code()
	fmt.Printf("On the new device, run:\n\n  securefastchat device add --name NAME --code %s\n\n", code)
	if q := termtext.QR(code); q != nil {
		fmt.Printf("or scan it:\n\n%s\n\n", strings.Join(q, "\n"))
	}
	fmt.Printf("The code holds a secret: whoever has it can ask to be %s's device. It works once, for %d minutes.\n", c.User(), int(proto.LinkTTL/time.Minute))
	fmt.Println("Waiting for the new device...")
	req, err := offer.Request(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("A device named %q asks to be added, with id %016x.\n", termtext.Line(req.Name), req.DeviceID)
	fmt.Print("Is that the id the new device shows? Add it? [y/N] ")
	answer, _ := bufio.NewReader(os.Stdin).ReadString('\n') // none (end of input) is no
	if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
		_ = offer.Refuse("the user of the first device did not accept it")
		return errors.New("not added: the new device is told so")
	}
	if err := offer.Accept(ctx); err != nil {
		return err
	}
	fmt.Printf("Added %s (%016x) to %s's devices; your contacts are told.\n", termtext.Line(req.Name), req.DeviceID, c.User())
	if manage {
		fmt.Printf("%s manages your devices too: it holds your account's master key.\n", termtext.Line(req.Name))
	}
	if h := offer.HistoryCopied(); h.Asked {
		fmt.Println(client.HistoryCopiedText(h))
	}
	return nil
}

// deviceAdd makes this home a new device of the account whose code it is
// given.
func deviceAdd(cf *clientFlags, code, name string) error {
	if code == "" || name == "" {
		return usagef("device add needs --code (from 'device link' on your first device) and --name (this device's)")
	}
	if len(name) > proto.MaxDeviceName {
		return usagef("--name is at most %d bytes", proto.MaxDeviceName)
	}
	lc, err := proto.ParseLinkCode(code)
	if err != nil {
		return usagef("--code: %v", err)
	}
	cfg := cf.config()
	cf.fs.Visit(func(f *flag.Flag) {
		if f.Name == "server" {
			lc.Addr = cfg.Addr // the address given wins over the code's
		}
	})
	cfg.Addr = lc.Addr
	fmt.Fprintln(os.Stderr, "A passphrase for this device's keys (it stays on this device):")
	pass, err := password(true)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), proto.LinkTTL)
	defer cancel()
	c, err := client.AddDevice(ctx, cfg, code, name, pass, func(id uint64) {
		fmt.Printf("This device's id is %016x: check that your first device shows the same, and answer yes there.\n", id)
	})
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Printf("This home is now %s's device %q. Its keys are in %s.\n", c.User(), termtext.Line(name), client.IdentityPath(cfg.Home, c.User()))
	fmt.Printf("Use it with --user %s --server %s; it logs in with its own key.\n", c.User(), cfg.Addr)
	if c.Manages() {
		fmt.Println("It manages your devices: it holds your account's master key, so keep it as safely as your first device.")
	}
	entries, copied := c.LinkedHistory()
	if copied.Asked && len(entries) > 0 {
		if err := keepLinkedHistory(c, cfg.Home, entries); err != nil {
			return fmt.Errorf("this device is set up, but the history copied to it was not kept: %w", err)
		}
	}
	fmt.Println(client.HistoryCopiedText(copied))
	return nil
}

// keepLinkedHistory adds the history a link copied to the history the
// chat keeps in this home (new: the home had no identity for the user).
func keepLinkedHistory(c *client.Client, home string, entries []proto.LinkHistoryEntry) error {
	h, err := chat.OpenHistory(c, home)
	if err != nil {
		return err
	}
	if err := h.Add(history.FromLink(entries)...); err != nil {
		h.Close()
		return err
	}
	return h.Close()
}
