package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/term"

	"securefastchat/chat"
	"securefastchat/client"
)

// errNotPinned: the user did not accept a server met for the first time.
var errNotPinned = errors.New("the server's key was not accepted; nothing was pinned or sent")

// confirmServer pins a server met for the first time. Unless its key was
// given (--server-key), it shows the key and asks first (the chat runs on
// a terminal); then it pins exactly the key the user accepted.
func confirmServer(cfg client.Config) error {
	pinned, err := client.Pinned(cfg.Home, cfg.Addr)
	if err != nil || pinned {
		return err
	}
	ctx, cancel := timeout()
	defer cancel()
	if cfg.ServerKey == "" {
		ask := cfg
		ask.NoPinNew = true
		_, err := client.PinServer(ctx, ask)
		var unknown *client.UnknownServerError
		if !errors.As(err, &unknown) {
			return err
		}
		fmt.Fprintf(os.Stderr, "First contact with %s: its key is %s\n"+
			"Compare it with the operator's 'securefastchat fingerprint'; if it differs, someone may be in between.\n"+
			"Pin this key and continue? [y/N] ", unknown.Addr, unknown.Fingerprint)
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			return errNotPinned
		}
		cfg.ServerKey = unknown.Fingerprint
	}
	_, err = client.PinServer(ctx, cfg)
	return err
}

func cmdChat(args []string) error {
	cf := newClientFlags("chat", "chat --server ADDR --user NAME [--downloads DIR] [--no-read-receipts] [--no-typing] [--no-bell] [--no-mouse]",
		"The interactive client: your conversations, who is online, typing, and\ndelivered and read marks. /help inside lists the commands. Your history is\nkept on this machine, encrypted with your identity key; what you type while\noffline is sent once the connection is back.")
	downloads := cf.fs.String("downloads", "", "folder for received files (default: HOME/downloads/USER)")
	noRead := cf.fs.Bool("no-read-receipts", false, "do not tell senders when you have seen their messages")
	noTyping := cf.fs.Bool("no-typing", false, "do not tell others when you are typing")
	noAlt := cf.fs.Bool("no-alt-screen", false, "draw in the normal screen, not the terminal's alternate one")
	noBell := cf.fs.Bool("no-bell", false, "do not ring the terminal's bell for a message in a conversation that is not open")
	noMouse := cf.fs.Bool("no-mouse", false, "leave the mouse to the terminal (text selection) instead of scrolling with the wheel")
	if err := cf.parse(args); err != nil {
		return err
	}
	if cf.fs.NArg() != 0 {
		return usagef("chat takes no arguments")
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) || !term.IsTerminal(int(os.Stdout.Fd())) {
		return errors.New("chat needs a terminal; use send and recv in scripts")
	}
	pw, err := password(false)
	if err != nil {
		return err
	}
	cfg := cf.config()
	// A server met for the first time is pinned, and its fingerprint
	// shown, before the screen opens; later the chat connects in the
	// background and opens even while the server is down.
	if err := confirmServer(cfg); err != nil {
		return err
	}
	return chat.Run(chat.Options{
		Config: cfg, User: *cf.user, Password: pw, Downloads: *downloads,
		NoReadReceipts: *noRead, NoTyping: *noTyping, AltScreen: !*noAlt, NoBell: *noBell, NoMouse: *noMouse,
	})
}
