package main

import (
	"context"
	"fmt"
	"time"

	"securefastchat/proto"
)

const groupUsage = `group create NAME | add NAME USER | remove NAME USER | leave NAME | list | members NAME | invites | join NAME | rekey NAME`

func cmdGroup(args []string) error {
	cf := newClientFlags("group", groupUsage+" [--server ADDR --user NAME]",
		"Manages groups. Membership changes are signed by you and checked by every\nmember's client; adding or removing someone gives the group a new key.\n"+
			"Someone added by a user they have not written to (nor share a group with)\nis only invited: nothing of the group reaches them until they 'join'.")
	rest, err := cf.parseWords(args)
	if err != nil {
		return err
	}
	if *cf.user == "" {
		return usagef("--user is required")
	}
	if len(rest) == 0 {
		return usagef("group needs a subcommand: %s", groupUsage)
	}
	want := map[string]int{"create": 1, "add": 2, "remove": 2, "leave": 1, "list": 0, "members": 1, "invites": 0, "join": 1, "rekey": 1}
	n, ok := want[rest[0]]
	if !ok || len(rest)-1 != n {
		return usagef("usage: securefastchat %s", groupUsage)
	}
	if !proto.ValidUsername([]byte(*cf.user)) {
		return usagef("--user %q is not a valid name", *cf.user)
	}
	for _, a := range rest[1:] {
		if !proto.ValidUsername([]byte(a)) {
			return usagef("%q is not a valid name: use 1 to 32 characters of a-z A-Z 0-9 _", a)
		}
	}
	c, err := loginSender(cf, true)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	switch rest[0] {
	case "create":
		if err := c.CreateGroup(ctx, rest[1]); err != nil {
			return err
		}
		fmt.Printf("Created group %s; you are its admin.\n", rest[1])
	case "add":
		if err := c.AddMember(ctx, rest[1], rest[2]); err != nil {
			return err
		}
		fmt.Printf("Added %s to %s (the group has a new key).\n", rest[2], rest[1])
	case "remove":
		if err := c.RemoveMember(ctx, rest[1], rest[2]); err != nil {
			return err
		}
		fmt.Printf("Removed %s from %s (the group has a new key).\n", rest[2], rest[1])
	case "rekey":
		if err := c.Rekey(ctx, rest[1]); err != nil {
			return err
		}
		fmt.Printf("%s has a new key, for its members as they are now.\n", rest[1])
	case "leave":
		if err := c.LeaveGroup(ctx, rest[1]); err != nil {
			return err
		}
		fmt.Printf("Left %s.\n", rest[1])
	case "list":
		gs, err := c.Groups(ctx)
		if err != nil {
			return err
		}
		for _, g := range gs {
			fmt.Println(g)
		}
	case "invites":
		invs, err := c.GroupInvites(ctx)
		if err != nil {
			return err
		}
		if len(invs) == 0 {
			fmt.Println("No invitations.")
		}
		for _, inv := range invs {
			fmt.Printf("%s (invited by %s: 'group join %s' to accept, 'group leave %s' to decline)\n", inv.Group, inv.By, inv.Group, inv.Group)
		}
	case "join":
		if err := c.JoinGroup(ctx, rest[1]); err != nil {
			return err
		}
		fmt.Printf("Joined %s: its messages reach you from now on.\n", rest[1])
	case "members":
		ms, err := c.GroupMembers(ctx, rest[1])
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.Admin {
				fmt.Printf("%s (admin)\n", m.Name)
			} else {
				fmt.Println(m.Name)
			}
		}
	}
	return nil
}
