// Command securefastchat is an end-to-end encrypted chat server and its
// command-line client, in one binary.
//
//	securefastchat serve        run the server
//	securefastchat fingerprint  print the server key's fingerprint
//	securefastchat signup       create an account
//	securefastchat chat         the interactive terminal client
//	securefastchat send         send a direct message or a file
//	securefastchat recv         print received messages
//	securefastchat group        create and manage groups
//	securefastchat contact      accept or block message requests
//	securefastchat bench        measure a server under load
//	securefastchat admin        manage a running server's users, invites and stats
//	securefastchat backup       take a hot backup; restore brings it back
//	securefastchat health       check that a server answers
package main

import (
	"fmt"
	"os"
)

const usage = `securefastchat: end-to-end encrypted chat server and client

Usage:
  securefastchat serve       [--listen ADDR] [--data DIR] [--shards N] [--strategy S] ...
  securefastchat fingerprint [--data DIR]
  securefastchat signup      --server ADDR --user NAME
  securefastchat chat        --server ADDR --user NAME [--downloads DIR] [--no-read-receipts] [--no-typing]
  securefastchat send        --server ADDR --user NAME --to PEER TEXT... | --file PATH | --group NAME TEXT...
  securefastchat group       create NAME | add NAME USER | remove NAME USER | leave NAME | list | members NAME | invites | join NAME
  securefastchat contact     accept USER | block USER | unblock USER | blocked
  securefastchat recv        --server ADDR --user NAME [--wait DURATION] [--json] [--out DIR]
  securefastchat bench       [--server ADDR | --embedded] [--scenario dm|latency|fanout|idle|login|mixed] ...
  securefastchat admin       [--admin ADDR] users | disable USER | enable USER | revoke USER | delete USER | stats | invite
  securefastchat backup      [--admin ADDR] OUT
  securefastchat restore     BACKUP --data DIR
  securefastchat health      [--server ADDR | --admin ADDR]
  securefastchat version

Run "securefastchat COMMAND --help" for a command's flags.
Passwords come from SFC_PASSWORD or, on a terminal, a prompt.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "serve":
		err = cmdServe(args)
	case "fingerprint":
		err = cmdFingerprint(args)
	case "signup":
		err = cmdSignup(args)
	case "chat":
		err = cmdChat(args)
	case "send":
		err = cmdSend(args)
	case "recv":
		err = cmdRecv(args)
	case "group":
		err = cmdGroup(args)
	case "contact":
		err = cmdContact(args)
	case "bench":
		err = cmdBench(args)
	case "admin":
		err = cmdAdmin(args)
	case "backup":
		err = cmdBackup(args)
	case "restore":
		err = cmdRestore(args)
	case "health":
		err = cmdHealth(args)
	case "bench-worker":
		err = cmdBenchWorker(args)
	case "version", "--version":
		fmt.Println("securefastchat", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "securefastchat: unknown command %q (run 'securefastchat help')\n", cmd)
		os.Exit(2)
	}
	os.Exit(exitCode(err))
}
