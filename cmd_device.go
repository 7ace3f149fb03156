package main

import (
	"context"
	"fmt"
	"time"

	"securefastchat/proto"
	"securefastchat/termtext"
)

const deviceUsage = `device list [USER]`

func cmdDevice(args []string) error {
	cf := newClientFlags("device", deviceUsage+" [--server ADDR --user NAME]",
		"Lists an account's devices (yours, or USER's) as its device list proves them:\n"+
			"a chain of statements signed by the account's master key, which your client\n"+
			"checks against the key it pinned and against the list it saw before.")
	rest, err := cf.parseWords(args)
	if err != nil {
		return err
	}
	if *cf.user == "" {
		return usagef("--user is required")
	}
	if len(rest) == 0 || rest[0] != "list" || len(rest) > 2 {
		return usagef("usage: securefastchat %s", deviceUsage)
	}
	of := *cf.user
	if len(rest) == 2 {
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
	l, err := c.Devices(ctx, of)
	if err != nil {
		return err
	}
	fmt.Printf("%s has %d device(s) (list statement %d):\n", l.User, len(l.Devices), l.Seq)
	for _, d := range l.Devices {
		fmt.Printf("  %016x  %-20s added %s\n", d.ID, termtext.Line(d.Name), time.Unix(d.Added, 0).Local().Format("2006-01-02 15:04"))
	}
	return nil
}
