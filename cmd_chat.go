package main

import (
	"errors"
	"os"

	"golang.org/x/term"

	"securefastchat/chat"
	"securefastchat/client"
)

func cmdChat(args []string) error {
	cf := newClientFlags("chat", "chat --server ADDR --user NAME [--downloads DIR] [--no-read-receipts] [--no-typing]",
		"The interactive client: your conversations, who is online, typing, and\ndelivered and read marks. /help inside lists the commands. Your history is\nkept on this machine, encrypted with your identity key; what you type while\noffline is sent once the connection is back.")
	downloads := cf.fs.String("downloads", "", "folder for received files (default: HOME/downloads/USER)")
	noRead := cf.fs.Bool("no-read-receipts", false, "do not tell senders when you have seen their messages")
	noTyping := cf.fs.Bool("no-typing", false, "do not tell others when you are typing")
	noAlt := cf.fs.Bool("no-alt-screen", false, "draw in the normal screen, not the terminal's alternate one")
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
	wasPinned, err := client.Pinned(*cf.home, *cf.server)
	if err != nil {
		return err
	}
	cfg := cf.config()
	cfg.OnPeerKeyChange = nil // the chat shows its own warnings
	cfg.OnReject = nil
	err = chat.Run(chat.Options{
		Config: cfg, User: *cf.user, Password: pw, Downloads: *downloads,
		NoReadReceipts: *noRead, NoTyping: *noTyping, AltScreen: !*noAlt,
	})
	if err == nil && !wasPinned {
		os.Stderr.WriteString("Pinned the key of " + *cf.server + " (compare it with the operator's 'securefastchat fingerprint'; /fingerprint shows it)\n")
	}
	return err
}
