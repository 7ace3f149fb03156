package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"securefastchat/client"
	"securefastchat/internal/admin"
	"securefastchat/internal/backup"
	"securefastchat/internal/server"
	"securefastchat/proto"
)

// defaultAdminAddr is SFC_ADMIN, or the loopback admin port.
func defaultAdminAddr() string {
	if a := os.Getenv("SFC_ADMIN"); a != "" {
		return a
	}
	return "127.0.0.1:9090"
}

// serverDataDir is where an operator's command looks for the server's
// data directory: SFC_DATA (as serve reads it), or serve's default.
func serverDataDir() string {
	if d := os.Getenv("SFC_DATA"); d != "" {
		return d
	}
	return defaultDataDir()
}

// parseInterleaved parses flags that may come before, between or after
// the positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// adminClient is the admin API's client for a command: the listener's
// address, and the token from SFC_ADMIN_TOKEN or, on the server's machine,
// the one the server keeps in its data directory.
func adminClient(addr, data string) *admin.Client {
	tok := os.Getenv("SFC_ADMIN_TOKEN")
	if tok == "" {
		tok, _ = admin.ReadToken(data) // none: the server will say so
	}
	return &admin.Client{Addr: addr, Token: tok}
}

// adminErr adds what to do to a refused token.
func adminErr(err error, data string) error {
	if errors.Is(err, admin.ErrUnauthorized) {
		return fmt.Errorf("%w (set SFC_ADMIN_TOKEN to the server's token, or run on the server's machine with --data %s readable: the token is in %s)",
			err, data, filepath.Join(data, admin.TokenFileName))
	}
	return err
}

// confirm asks on the terminal for the user name, unless yes.
func confirm(yes bool, cmd, what, user string) error {
	if yes {
		return nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return usagef("admin %s asks first on a terminal; elsewhere add --yes", cmd)
	}
	fmt.Fprintf(os.Stderr, "%s. Type the user name (%s) to go on: ", what, user)
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if strings.TrimSpace(strings.ToLower(line)) != user {
		return errors.New("not confirmed; nothing was changed")
	}
	return nil
}

const adminUsage = `Usage: securefastchat admin [--admin ADDR] [--json] COMMAND

Talks to a running server's admin listener (serve --admin). The token
comes from SFC_ADMIN_TOKEN or, on the server's machine, from the server's
data directory (--data), where the server keeps the one it made.

Commands:
  users                  list the users: online, disabled, messages queued
  disable USER [--yes]   refuse their logins and end their sessions
  enable USER            let them log in again
  revoke USER [--yes]    end their sessions (they log in again with the password)
  delete USER [--yes]    delete the account, its sessions and its queue
  stats                  the server's counters
  invite [--count N] [--expires DURATION]
                         single-use sign-up codes (for serve --signup invite)

Flags:
`

func cmdAdmin(args []string) error {
	fs := flag.NewFlagSet("admin", flag.ContinueOnError)
	addr := fs.String("admin", defaultAdminAddr(), "the admin listener, host:port (or SFC_ADMIN)")
	data := fs.String("data", serverDataDir(), "the server's data directory (or SFC_DATA), whose admin.token is used when SFC_ADMIN_TOKEN is not set")
	yes := fs.Bool("yes", false, "do not ask before a destructive command")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	count := fs.Int("count", 1, "invite: how many codes")
	expires := fs.Duration("expires", 7*24*time.Hour, "invite: how long the codes are valid")
	fs.Usage = func() { fmt.Fprint(fs.Output(), adminUsage); printFlags(fs.Output(), fs) }
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		fs.Usage()
		return usagef("admin needs a command")
	}
	a := adminClient(*addr, *data)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd, rest := pos[0], pos[1:]
	user := ""
	switch cmd {
	case "disable", "enable", "revoke", "delete":
		if len(rest) != 1 {
			return usagef("admin %s takes one user name", cmd)
		}
		if user, err = proto.CanonicalUsername(rest[0]); err != nil {
			return usagef("%q is not a user name", rest[0])
		}
	case "users", "stats", "invite":
		if len(rest) != 0 {
			return usagef("admin %s takes no arguments", cmd)
		}
	default:
		return usagef("unknown admin command %q (see 'securefastchat admin --help')", cmd)
	}
	out := func(v any) error {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	switch cmd {
	case "users":
		var us []admin.User
		if err := a.JSON(ctx, "GET", "/v1/users", nil, &us); err != nil {
			return adminErr(err, *data)
		}
		if *asJSON {
			return out(us)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "USER\tDISPLAY\tCREATED\tSTATE\tQUEUED")
		for _, u := range us {
			state := "offline"
			switch {
			case u.Disabled:
				state = "DISABLED"
			case u.Online:
				state = "online"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", u.Name, u.Display, u.Created.Local().Format("2006-01-02 15:04"), state, u.Queued)
		}
		return tw.Flush()
	case "stats":
		var st admin.Stats
		if err := a.JSON(ctx, "GET", "/v1/stats", nil, &st); err != nil {
			return adminErr(err, *data)
		}
		return out(st)
	case "invite":
		var res admin.InviteResponse
		if err := a.JSON(ctx, "POST", "/v1/invites", admin.InviteRequest{Count: *count, Expires: expires.String()}, &res); err != nil {
			return adminErr(err, *data)
		}
		if *asJSON {
			return out(res)
		}
		for _, c := range res.Codes {
			fmt.Println(c)
		}
		fmt.Fprintf(os.Stderr, "Single-use; valid until %s. Sign up with: securefastchat signup --user NAME --invite CODE\n", res.Expires.Local().Format(time.RFC1123))
		switch res.Signup {
		case "open":
			fmt.Fprintln(os.Stderr, "Note: this server signs up anyone (serve --signup open), so nobody needs a code; they count once it runs with --signup invite.")
		case "closed":
			fmt.Fprintln(os.Stderr, "Note: this server takes no sign-ups (serve --signup closed): codes work only once it runs with --signup invite.")
		}
		return nil
	}
	method, path := "POST", "/v1/users/"+user+"/"+cmd
	switch cmd {
	case "delete":
		method, path = "DELETE", "/v1/users/"+user
		err = confirm(*yes, cmd, "Delete "+user+": the account, its sessions and every message queued for it. This cannot be undone", user)
	case "disable":
		err = confirm(*yes, cmd, "Disable "+user+": their logins are refused and they are disconnected", user)
	case "revoke":
		err = confirm(*yes, cmd, "Revoke every session of "+user+": they are disconnected and must log in with their password", user)
	}
	if err != nil {
		return err
	}
	var res admin.ActionResult
	if err := a.JSON(ctx, method, path, nil, &res); err != nil {
		return adminErr(err, *data)
	}
	if *asJSON {
		return out(res)
	}
	fmt.Printf("%s: %s done (%d sessions revoked, disconnected: %v)\n", res.User, res.Action, res.Sessions, res.Kicked)
	return nil
}

func cmdBackup(args []string) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	addr := fs.String("admin", defaultAdminAddr(), "the admin listener, host:port (or SFC_ADMIN)")
	data := fs.String("data", serverDataDir(), "the server's data directory (or SFC_DATA), whose admin.token is used when SFC_ADMIN_TOKEN is not set")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: securefastchat backup [--admin ADDR] OUT\n\nTakes a consistent backup of a running server (its store and its key) into\nthe file OUT, without stopping it. 'securefastchat restore OUT --data DIR'\nbrings it back. Keep backups safe: the server key is in them.\n\n")
		printFlags(fs.Output(), fs)
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("backup takes the output file")
	}
	outPath := pos[0]
	if _, err := os.Stat(outPath); err == nil {
		return fmt.Errorf("%s exists; choose a new file", outPath)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	n, m, err := adminClient(*addr, *data).Backup(ctx, outPath)
	if err != nil {
		return adminErr(err, *data)
	}
	fmt.Printf("Backed up to %s (%d bytes; store %d bytes; server key %s)\n", outPath, n, m.Sizes["securefastchat.db"], m.Fingerprint)
	return nil
}

func cmdRestore(args []string) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	data := fs.String("data", "", "the new data directory: empty or not existing (required)")
	maxStore := fs.Int64("max-store-size", 0, "refuse a backup whose store is larger than this many bytes (0: any that fits on the disk with 64 MiB to spare)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: securefastchat restore BACKUP --data DIR\n\nLays a backup into an empty data directory and checks it; then\n'securefastchat serve --data DIR' serves it with the same key.\n\n")
		printFlags(fs.Output(), fs)
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *data == "" {
		return usagef("restore takes the backup file and --data DIR")
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := backup.Restore(f, *data, backup.Limits{MaxStore: *maxStore})
	if err != nil {
		return err
	}
	fmt.Printf("Restored the backup of %s into %s. Server key %s: clients see no change.\nStart it with: securefastchat serve --data %s\n",
		m.Created.Local().Format(time.RFC1123), *data, m.Fingerprint, *data)
	return nil
}

func cmdHealth(args []string) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	serverAddr := fs.String("server", defaultHealthAddr(), "the chat port to check: a handshake and a ping")
	adminAddr := fs.String("admin", "", "check the admin listener's /readyz instead")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: securefastchat health [--server ADDR | --admin ADDR]\n\nExits 0 if the server answers: on the chat port, an encrypted handshake\nand a ping (no account needed); with --admin, its readiness probe.\nDocker's HEALTHCHECK uses it.\n\n")
		printFlags(fs.Output(), fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if *adminAddr != "" {
		resp, err := (&admin.Client{Addr: *adminAddr}).Do(ctx, "GET", "/readyz", nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		fmt.Println("ready")
		return nil
	}
	conn, err := client.Dial(ctx, *serverAddr, client.DialOptions{})
	if err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	defer conn.Close()
	if err := conn.Ping(ctx); err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	fmt.Println("ok", conn.ServerKey().Fingerprint())
	return nil
}

// defaultHealthAddr is the address serve listens on (SFC_LISTEN), with an
// unspecified host made loopback.
func defaultHealthAddr() string {
	a := os.Getenv("SFC_LISTEN")
	if a == "" {
		return server.DefaultListen
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return a
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
