package main

import (
	"context"
	"fmt"
	"time"

	"securefastchat/client"
	"securefastchat/proto"
	"securefastchat/termtext"
)

const deviceUsage = `device list [USER] | device remove NAME|ID`

func cmdDevice(args []string) error {
	cf := newClientFlags("device", deviceUsage+" [--server ADDR --user NAME]",
		"list: an account's devices (yours, or USER's) as its device list proves them:\n"+
			"a chain of statements signed by the account's master key, which your client\n"+
			"checks against the key it pinned and against the list it saw before. For\n"+
			"your own, when each last logged in: a device silent for 30 days is sent\n"+
			"nothing more (while another of yours logs in) until it logs in again.\n"+
			"remove: takes a device off your list (from the device that manages it, your\n"+
			"first): its sessions end at once, nothing more is sent to it, and every group\n"+
			"you are in gets a new key.")
	rest, err := cf.parseWords(args)
	if err != nil {
		return err
	}
	if *cf.user == "" {
		return usagef("--user is required")
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
