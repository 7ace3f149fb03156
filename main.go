// Command securefastchat is an end-to-end encrypted chat server and its
// command-line client, in one binary. Its commands are the table below;
// "securefastchat help" lists them.
package main

import (
	"fmt"
	"os"
	"strings"
)

// command is one subcommand: the table is the only list of them, and
// the usage text is made from it.
type command struct {
	name     string
	synopsis string // the arguments, for the usage text
	run      func(args []string) error
	hidden   bool // not in the usage text (a worker the bench starts)
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

var commands = []command{
	{name: "serve", synopsis: "[--listen ADDR] [--data DIR] [--shards N] [--strategy S] ...", run: cmdServe},
	{name: "fingerprint", synopsis: "[--data DIR]", run: cmdFingerprint},
	{name: "signup", synopsis: "--server ADDR --user NAME", run: cmdSignup},
	{name: "recover", synopsis: "--server ADDR --user NAME [--password-as-is]", run: cmdRecover},
	{name: "password", synopsis: "--server ADDR --user NAME", run: cmdPassword},
	{name: "chat", synopsis: "--server ADDR --user NAME [--downloads DIR] [--no-read-receipts] [--no-typing]", run: cmdChat},
	{name: "send", synopsis: "--server ADDR --user NAME --to PEER TEXT... | --file PATH | --group NAME TEXT...", run: cmdSend},
	{name: "group", synopsis: groupUsage[len("group "):], run: cmdGroup},
	{name: "contact", synopsis: contactUsage[len("contact "):], run: cmdContact},
	{name: "device", synopsis: deviceUsage[len("device "):], run: cmdDevice},
	{name: "recv", synopsis: "--server ADDR --user NAME [--wait DURATION] [--json] [--out DIR]", run: cmdRecv},
	{name: "bench", synopsis: "[--server ADDR | --embedded] [--scenario dm|latency|fanout|idle|login|mixed] ...", run: cmdBench},
	{name: "admin", synopsis: "[--admin ADDR] users | disable USER | enable USER | revoke USER | delete USER | stats | invite", run: cmdAdmin},
	{name: "backup", synopsis: "[--admin ADDR] OUT", run: cmdBackup},
	{name: "restore", synopsis: "BACKUP --data DIR", run: cmdRestore},
	{name: "health", synopsis: "[--server ADDR | --admin ADDR]", run: cmdHealth},
	{name: "version", run: func([]string) error { fmt.Println("securefastchat", version); return nil }},
	{name: "bench-worker", run: cmdBenchWorker, hidden: true},
}

// usage is the text "securefastchat help" prints.
func usage() string {
	var b strings.Builder
	b.WriteString("securefastchat: end-to-end encrypted chat server and client\n\nUsage:\n")
	for _, c := range commands {
		if !c.hidden {
			b.WriteString(strings.TrimRight(fmt.Sprintf("  securefastchat %-12s%s", c.name, c.synopsis), " ") + "\n")
		}
	}
	b.WriteString("\nRun \"securefastchat COMMAND --help\" for a command's flags.\nPasswords come from SFC_PASSWORD or, on a terminal, a prompt.\n")
	return b.String()
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage())
		os.Exit(2)
	}
	name, args := os.Args[1], os.Args[2:]
	switch name {
	case "help", "-h", "--help":
		fmt.Print(usage())
		return
	case "--version":
		name = "version"
	}
	for _, c := range commands {
		if c.name == name {
			os.Exit(exitCode(c.run(args)))
		}
	}
	fmt.Fprintf(os.Stderr, "securefastchat: unknown command %q (run 'securefastchat help')\n", name)
	os.Exit(2)
}
