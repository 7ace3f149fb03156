package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"securefastchat/proto"
	"securefastchat/termtext"
)

const contactUsage = `contact accept USER | block USER | unblock USER | blocked | devices USER | approve USER | hold on|off`

func cmdContact(args []string) error {
	cf := newClientFlags("contact", contactUsage+" [--server ADDR --user NAME]",
		"Answers message requests. A first message from someone you have not written to\n"+
			"(nor share a group with) is a request: your clients send nothing back for it\n"+
			"until you accept, by writing to them or with 'contact accept'. 'block' makes\n"+
			"the server drop what they send you from now on, and what of theirs waits for\n"+
			"you; they are not told. 'unblock' undoes it; 'blocked' lists whom you block.\n\n"+
			"'devices' lists a contact's devices, as the list signed by their master key\n"+
			"proves it. 'hold on' holds your contacts' new devices: each contact's devices\n"+
			"as your clients next see them are trusted, and nothing of yours is sealed for a\n"+
			"device added after that (messages, group keys) until you check its id with the\n"+
			"contact and 'approve' them. 'hold off' (the default) trusts every device on\n"+
			"the list. The setting and the approvals are kept in this home.")
	rest, err := cf.parseWords(args)
	if err != nil {
		return err
	}
	if *cf.user == "" {
		return usagef("--user is required")
	}
	want := map[string]int{"accept": 1, "block": 1, "unblock": 1, "blocked": 0, "devices": 1, "approve": 1, "hold": 1}
	if len(rest) == 0 {
		return usagef("contact needs a subcommand: %s", contactUsage)
	}
	if n, ok := want[rest[0]]; !ok || len(rest)-1 != n {
		return usagef("usage: securefastchat %s", contactUsage)
	}
	if !proto.ValidUsername([]byte(*cf.user)) {
		return usagef("--user %q is not a valid name", *cf.user)
	}
	if rest[0] == "hold" && rest[1] != "on" && rest[1] != "off" {
		return usagef("usage: securefastchat contact hold on|off")
	}
	if len(rest) == 2 && rest[0] != "hold" && !proto.ValidUsername([]byte(rest[1])) {
		return usagef("%q is not a valid name: use 1 to 32 characters of a-z A-Z 0-9 _", rest[1])
	}
	c, err := loginSender(cf, true)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	switch rest[0] {
	case "accept":
		if err := c.Accept(ctx, rest[1]); err != nil {
			return err
		}
		fmt.Printf("Accepted %s: your clients answer their messages (receipts, typing) from now on.\n", rest[1])
	case "block":
		if err := c.Block(ctx, rest[1]); err != nil {
			return err
		}
		fmt.Printf("Blocked %s: what they send you is dropped (they are not told); 'securefastchat contact unblock %s' undoes it.\n", rest[1], rest[1])
	case "unblock":
		if err := c.Unblock(ctx, rest[1]); err != nil {
			return err
		}
		fmt.Printf("Unblocked %s: what they send next comes as a request.\n", rest[1])
	case "blocked":
		l, err := c.Blocked(ctx)
		if err != nil {
			return err
		}
		if len(l) == 0 {
			fmt.Println("You block nobody.")
		}
		for _, u := range l {
			fmt.Println(u)
		}
	case "devices":
		l, err := c.Devices(ctx, rest[1])
		if err != nil {
			return err
		}
		held, err := c.HeldDevices(ctx, rest[1])
		if err != nil {
			return err
		}
		fmt.Printf("%s has %d device(s), as the list signed by their master key proves:\n", l.User, len(l.Devices))
		for _, d := range l.Devices {
			mark := ""
			if slices.ContainsFunc(held, func(h proto.Device) bool { return h.ID == d.ID }) {
				mark = "  held: not approved"
			}
			fmt.Printf("  %016x  %s  added %s%s\n", d.ID, termtext.Line(d.Name), time.Unix(d.Added, 0).Local().Format("2006-01-02 15:04"), mark)
		}
		if len(held) > 0 {
			fmt.Printf("Nothing of yours is sealed for %s until you check the held devices' ids with them and run 'securefastchat contact approve %s'.\n", l.User, l.User)
		}
	case "approve":
		devs, err := c.ApproveDevices(ctx, rest[1])
		if err != nil {
			return err
		}
		fmt.Printf("Approved %s's %d device(s): what you send them is sealed for each from now on.\n", rest[1], len(devs))
	case "hold":
		if err := c.SetHoldNewDevices(rest[1] == "on"); err != nil {
			return err
		}
		if rest[1] == "on" {
			fmt.Println("Holding your contacts' new devices: their devices as your clients next see them are trusted; one added after that gets nothing of yours until you approve it ('securefastchat contact approve USER').")
		} else {
			fmt.Println("Not holding new devices: what you send is sealed for every device on your contacts' lists.")
		}
	}
	return nil
}
