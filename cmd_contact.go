package main

import (
	"context"
	"fmt"
	"time"

	"securefastchat/proto"
)

const contactUsage = `contact accept USER | block USER | unblock USER | blocked`

func cmdContact(args []string) error {
	cf := newClientFlags("contact", contactUsage+" [--server ADDR --user NAME]",
		"Answers message requests. A first message from someone you have not written to\n"+
			"(nor share a group with) is a request: your clients send nothing back for it\n"+
			"until you accept, by writing to them or with 'contact accept'. 'block' makes\n"+
			"the server drop what they send you from now on, and what of theirs waits for\n"+
			"you; they are not told. 'unblock' undoes it; 'blocked' lists whom you block.")
	rest, err := cf.parseWords(args)
	if err != nil {
		return err
	}
	if *cf.user == "" {
		return usagef("--user is required")
	}
	want := map[string]int{"accept": 1, "block": 1, "unblock": 1, "blocked": 0}
	if len(rest) == 0 {
		return usagef("contact needs a subcommand: %s", contactUsage)
	}
	if n, ok := want[rest[0]]; !ok || len(rest)-1 != n {
		return usagef("usage: securefastchat %s", contactUsage)
	}
	if !proto.ValidUsername([]byte(*cf.user)) {
		return usagef("--user %q is not a valid name", *cf.user)
	}
	if len(rest) == 2 && !proto.ValidUsername([]byte(rest[1])) {
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
	}
	return nil
}
