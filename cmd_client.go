package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/proto"
	"securefastchat/termtext"
)

// clientFlags are the flags every client command shares.
type clientFlags struct {
	fs        *flag.FlagSet
	server    *string
	user      *string
	home      *string
	serverKey *string
	maxFile   *int64
}

func newClientFlags(name, synopsis, about string) *clientFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	cf := &clientFlags{
		fs:        fs,
		server:    fs.String("server", server.DefaultListen, "server address host:port"),
		user:      fs.String("user", "", "your user name (required)"),
		home:      fs.String("home", defaultHome(), "client home directory: keys and pins (or SFC_HOME)"),
		serverKey: fs.String("server-key", "", "the server key fingerprint to require (from 'securefastchat fingerprint')"),
		maxFile:   fs.Int64("max-file", 100<<20, "largest file to send or receive, in bytes"),
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: securefastchat %s\n\n%s\nThe password comes from SFC_PASSWORD or, on a terminal, a prompt.\n\n", synopsis, about)
		printFlags(fs.Output(), fs)
	}
	return cf
}

func (cf *clientFlags) parse(args []string) error {
	if err := parseFlags(cf.fs, args); err != nil {
		return err
	}
	if *cf.user == "" {
		return usagef("--user is required")
	}
	if !proto.ValidUsername([]byte(*cf.user)) {
		return usagef("--user %q is not a valid name: use 1 to 32 characters of a-z A-Z 0-9 _", *cf.user)
	}
	if *cf.serverKey != "" {
		if _, err := proto.NormalizeFingerprint(*cf.serverKey); err != nil {
			return usagef("--server-key: %v", err)
		}
	}
	return nil
}

// parseWords parses a command whose words (a subcommand and its
// arguments) may come before, between or after the flags, and returns the
// words.
func (cf *clientFlags) parseWords(args []string) ([]string, error) {
	var words []string
	for {
		if err := parseFlags(cf.fs, args); err != nil {
			return nil, err
		}
		if cf.fs.NArg() == 0 {
			return words, nil
		}
		words = append(words, cf.fs.Arg(0))
		args = cf.fs.Args()[1:]
	}
}

func (cf *clientFlags) config() client.Config {
	return client.Config{Addr: *cf.server, Home: *cf.home, ServerKey: *cf.serverKey, MaxFileSize: *cf.maxFile}
}

// warnKeyChange tells of a contact whose keys changed.
func warnKeyChange(ev client.Event) {
	fmt.Fprintf(os.Stderr, "WARNING: %s's keys have CHANGED (was %s, now %s).\n"+
		"WARNING: they may have reinstalled, or someone may be intercepting your messages. Verify with them out of band.\n", ev.User, ev.OldFingerprint, ev.Fingerprint)
}

// warnDevice tells of a contact's device list that changed.
func warnDevice(ev client.Event) {
	what := "added a device"
	if ev.Op == proto.DeviceRemove {
		what = "removed a device"
	}
	fmt.Fprintf(os.Stderr, "%s %s: %s\n", ev.User, what, termtext.Line(ev.Text))
}

// warnRejected tells of a delivery that failed its checks and was dropped.
func warnRejected(ev client.Event) {
	fmt.Fprintf(os.Stderr, "WARNING: dropped a message from %s: %v\n", ev.User, ev.Err)
}

// senderClient is the client of a command that only sends and asks: what
// it is told (a contact's key change) goes to standard error.
type senderClient struct {
	*client.Client
	told chan struct{} // closed once every event has been told
}

// tell prints the client's warnings until it is closed; keyChanges false
// leaves key changes to the command (send reports the hold as its error).
func (c *senderClient) tell(keyChanges bool) {
	defer close(c.told)
	for ev := range c.Events() {
		switch {
		case ev.Kind == client.EventKeyChange && keyChanges:
			warnKeyChange(ev)
		case ev.Kind == client.EventRejected:
			warnRejected(ev)
		case ev.Kind == client.EventPasswordMoved:
			fmt.Fprintln(os.Stderr, ev.Text)
		}
	}
}

// Close closes the client and waits until its warnings are printed.
func (c *senderClient) Close() error {
	err := c.Client.Close()
	<-c.told
	return err
}

// meetServer pins a server met for the first time before any credential
// or password prompt, and tells the user which key it presented.
func (cf *clientFlags) meetServer(cfg client.Config) error {
	pinned, err := client.Pinned(cfg.Home, cfg.Addr)
	if err != nil || pinned {
		return err
	}
	ctx, cancel := timeout()
	defer cancel()
	fc, err := client.PinServer(ctx, cfg)
	if err != nil {
		return err
	}
	if fc != nil {
		noteFirstContact(fc)
	}
	return nil
}

// senderConfig is config for a command that only sends and asks: its
// session takes no deliveries, so it neither takes what is queued for the
// user nor replaces the user's chat or recv elsewhere.
func (cf *clientFlags) senderConfig() client.Config {
	cfg := cf.config()
	cfg.SendOnly = true
	return cfg
}

// defaultHome is SFC_HOME, or the user config directory's securefastchat.
func defaultHome() string {
	if h := os.Getenv("SFC_HOME"); h != "" {
		return h
	}
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "securefastchat")
	}
	return ".securefastchat"
}

// password reads SFC_PASSWORD, or prompts on a terminal (twice if confirm).
func password(confirm bool) (string, error) {
	return secret("SFC_PASSWORD", "Password", confirm)
}

// secret reads the environment variable env, or prompts on a terminal
// with label (twice if confirm).
func secret(env, label string, confirm bool) (string, error) {
	if p, ok := os.LookupEnv(env); ok {
		return p, nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", fmt.Errorf("no %s: set %s or run on a terminal", strings.ToLower(label), env)
	}
	fmt.Fprintf(os.Stderr, "%s: ", label)
	p, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", strings.ToLower(label), err)
	}
	if confirm {
		fmt.Fprintf(os.Stderr, "%s again: ", label)
		q, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return "", fmt.Errorf("reading %s: %w", strings.ToLower(label), err)
		}
		if string(p) != string(q) {
			return "", errors.New("the passwords do not match")
		}
	}
	return string(p), nil
}

func timeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 60*time.Second)
}

// noteFirstContact tells the user, before anything else goes to a server
// met for the first time, which key it presented and that it is now
// pinned.
func noteFirstContact(fc *client.FirstContact) {
	if fc.Checked {
		fmt.Fprintf(os.Stderr, "First contact with %s: its key %s matches --server-key and is now pinned.\n", fc.Addr, fc.Fingerprint)
		return
	}
	fmt.Fprintf(os.Stderr, "First contact with %s: its key is %s\n"+
		"  Pinned. Compare it with the operator's 'securefastchat fingerprint'; if it differs, someone may be in between.\n", fc.Addr, fc.Fingerprint)
}

func cmdSignup(args []string) error {
	cf := newClientFlags("signup", "signup --server ADDR --user NAME [--invite CODE]", "Creates an account and a new identity key in the home directory.\nOn a server that signs up by invitation, --invite gives the code its\noperator made with 'securefastchat admin invite'.")
	invite := cf.fs.String("invite", "", "invite code (servers with --signup invite)")
	if err := cf.parse(args); err != nil {
		return err
	}
	if cf.fs.NArg() != 0 {
		return usagef("signup takes no arguments")
	}
	cfg := cf.config()
	cfg.Invite = *invite
	if err := cf.meetServer(cfg); err != nil {
		return err
	}
	ctx, cancel := timeout()
	defer cancel()
	// The name is checked first, so nobody types a password twice for a
	// taken name; the check and the sign-up share one connection and one
	// of the server's sign-up tokens.
	c, err := client.SignupChecked(ctx, cfg, *cf.user, func() (string, error) { return password(true) })
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Printf("Signed up as %s. Identity key saved in %s\n", c.Display(), client.IdentityPath(*cf.home, c.User()))
	return nil
}

func cmdRecover(args []string) error {
	cf := newClientFlags("recover", "recover --server ADDR --user NAME",
		"Starts your account again from this home when all its devices are lost:\n"+
			"new keys, with this device the first and only one of your list. Your\n"+
			"other devices' sessions end and what waited for them is dropped; your\n"+
			"contacts see a key change and hold what they write to you until they\n"+
			"accept it (compare safety numbers with them again). Your name, contacts,\n"+
			"blocks and groups stay: each group is told that your key changed, naming\n"+
			"the one before, so its members still check what you signed in it.")
	asIs := cf.fs.Bool("password-as-is", false, "send the password itself, for an account not used since before login keys (then change it: 'securefastchat password')")
	if err := cf.parse(args); err != nil {
		return err
	}
	if cf.fs.NArg() != 0 {
		return usagef("recover takes no arguments")
	}
	cfg := cf.config()
	if err := cf.meetServer(cfg); err != nil {
		return err
	}
	pw, err := password(false)
	if err != nil {
		return err
	}
	ctx, cancel := timeout()
	defer cancel()
	recoverWith := client.Recover
	if *asIs {
		recoverWith = client.RecoverPasswordAsIs
	}
	c, err := recoverWith(ctx, cfg, *cf.user, pw)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Printf("%s starts again from this device, with new keys (%s) saved in %s.\n", c.Display(), c.Fingerprint(), client.IdentityPath(*cf.home, c.User()))
	fmt.Println("Your other devices are off your list. Your contacts see a key change: compare safety numbers with them again.")
	if *asIs {
		fmt.Println("The server has seen your password: change it now ('securefastchat password').")
	}
	told, failed := c.GroupsToldOfRecovery()
	if len(told) > 0 {
		fmt.Printf("Your groups were told that your key changed, with the one before, so their members still check what you signed in them: %s.\n", termtext.Line(strings.Join(told, ", ")))
	}
	if err := failed[""]; err != nil {
		fmt.Printf("Your groups could not be listed (%v): what you signed in them was signed with your old key; run 'recover' again later, or make them again.\n", err)
	}
	for g, err := range failed {
		if g != "" {
			fmt.Printf("%s: not told that your key changed (%v): make it again, and leave it.\n", termtext.Line(g), err)
		}
	}
	return nil
}

func cmdPassword(args []string) error {
	cf := newClientFlags("password", "password --server ADDR --user NAME",
		"Changes your account's password, from its first device: on the server,\n"+
			"which is sent only a key made from it and never the password, and in\n"+
			"this home, which opens with the new password from then on. The new\n"+
			"password comes from SFC_NEW_PASSWORD or, on a terminal, a prompt\n"+
			"(twice). Other sessions' tokens are revoked and their connections\n"+
			"closed: your devices log in again at once with their own keys, and a\n"+
			"session that was only a token (a stolen one, say) is over.")
	if err := cf.parse(args); err != nil {
		return err
	}
	if cf.fs.NArg() != 0 {
		return usagef("password takes no arguments")
	}
	cfg := cf.config()
	if err := cf.meetServer(cfg); err != nil {
		return err
	}
	current, err := password(false)
	if err != nil {
		return err
	}
	ctx, cancel := timeout()
	defer cancel()
	c, err := client.Open(ctx, cfg, *cf.user, current)
	if err != nil {
		return err
	}
	defer c.Close()
	next, err := secret("SFC_NEW_PASSWORD", "New password", true)
	if err != nil {
		return err
	}
	if err := c.ChangePassword(ctx, current, next); err != nil {
		return err
	}
	fmt.Printf("Password changed for %s. This home opens with the new password from now on.\n", c.Display())
	return nil
}

// login opens the user's identity with the password and connects,
// resuming the session kept in the home (sealed) and logging in with the
// password only when there is none or the server refuses it: scripts cost
// the server no password hashing and leave no new sessions behind.
func login(cf *clientFlags, cfg client.Config) (*client.Client, error) {
	if err := cf.meetServer(cfg); err != nil {
		return nil, err
	}
	pw, err := password(false)
	if err != nil {
		return nil, err
	}
	ctx, cancel := timeout()
	defer cancel()
	return client.Open(ctx, cfg, *cf.user, pw)
}

// loginSender is login for a command that only sends and asks
// (senderConfig); with keyChanges, a contact's key change is warned of.
func loginSender(cf *clientFlags, keyChanges bool) (*senderClient, error) {
	return loginSenderWith(cf, keyChanges, nil)
}

// loginSenderWith is loginSender with set changing the configuration.
func loginSenderWith(cf *clientFlags, keyChanges bool, set func(*client.Config)) (*senderClient, error) {
	cfg := cf.senderConfig()
	cfg.HoldOnKeyChange = !keyChanges
	if set != nil {
		set(&cfg)
	}
	c, err := login(cf, cfg)
	if err != nil {
		return nil, err
	}
	sc := &senderClient{Client: c, told: make(chan struct{})}
	go sc.tell(keyChanges)
	return sc, nil
}

func cmdSend(args []string) error {
	cf := newClientFlags("send", "send --server ADDR --user NAME --to PEER [TEXT... | - | --file PATH] | --group NAME [TEXT... | -]",
		"Sends an end-to-end encrypted direct message or file. It returns once the\nreceiver's client has it, or once the server has stored it on disk for them\n(when they are away, or have not written to you yet: a first message is\nstored either way, so nobody learns from it whether they are online). With - as TEXT, or no TEXT and a pipe on standard input,\nthe message is read from standard input.")
	to := cf.fs.String("to", "", "the receiver")
	group := cf.fs.String("group", "", "send TEXT to this group instead")
	file := cf.fs.String("file", "", "send this file instead of text")
	acceptChange := cf.fs.Bool("accept-key-change", false, "send even though the receiver's keys changed (after comparing safety numbers with them): accepts their new keys")
	perDevice := cf.fs.Bool("per-device", false, "say what became of a text on each of the receiver's devices (delivered, stored, refused, or not sent to a device silent for 30 days)")
	if err := cf.parse(args); err != nil {
		return err
	}
	text := strings.Join(cf.fs.Args(), " ")
	if *file == "" && (text == "-" || text == "" && !term.IsTerminal(int(os.Stdin.Fd()))) {
		var err error
		if text, err = readMessage(os.Stdin); err != nil {
			return err
		}
	}
	if *group != "" {
		if *to != "" || *file != "" || text == "" {
			return usagef("--group takes TEXT, and neither --to nor --file")
		}
		c, err := loginSender(cf, true)
		if err != nil {
			return err
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		r, err := c.SendGroupText(ctx, *group, text)
		if err != nil {
			return err
		}
		if r.Status == proto.StatusQueued {
			fmt.Printf("Sent to %s (id %d): delivered to the members online, stored for the others.\n", *group, r.ServerID)
		} else {
			fmt.Printf("Delivered to every member of %s (id %d).\n", *group, r.ServerID)
		}
		return nil
	}
	if *to == "" {
		return usagef("--to (or --group) is required")
	}
	if (*file == "") == (text == "") {
		return usagef("give either TEXT or --file PATH")
	}
	if *file != "" {
		if _, err := os.Stat(*file); err != nil {
			return fmt.Errorf("cannot read --file: %w", err)
		}
	}
	if max := client.MaxTextLen(strings.ToLower(*cf.user), strings.ToLower(*to)); *file == "" && len(text) > max {
		return fmt.Errorf("the message is %d bytes; the limit is %d (send long text as a file)", len(text), max)
	}
	// A change of the receiver's keys holds the message: the error says
	// so, with what to do.
	c, err := loginSenderWith(cf, false, func(cfg *client.Config) { cfg.PerDevice = *perDevice })
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if *acceptChange {
		if err := acceptKeyChange(ctx, c.Client, *to); err != nil {
			return err
		}
	}
	if *file != "" {
		r, err := c.SendFile(ctx, *to, *file, nil)
		if err != nil {
			return heldErr(c.Client, err)
		}
		fmt.Printf("Sent %s (%d bytes) to %s.\n", r.Name, r.Size, *to)
		return nil
	}
	r, err := c.SendText(ctx, *to, text)
	if err != nil {
		return heldErr(c.Client, err)
	}
	if r.Status == proto.StatusQueued {
		fmt.Printf("Queued for %s (id %d): stored on the server until their client takes it (they are away, or have not written to you yet).\n", *to, r.ServerID)
	} else {
		fmt.Printf("Delivered to %s (id %d).\n", *to, r.ServerID)
	}
	if *perDevice {
		return printPerDevice(ctx, c.Client, *to, r)
	}
	return nil
}

// deviceStatusText words what became of a message on one device.
var deviceStatusText = map[uint8]string{
	proto.StatusDelivered: "delivered",
	proto.StatusQueued:    "stored for it until it connects",
	proto.StatusRefused:   "refused: its queue is full",
	proto.StatusNotSent:   "not sent: it has not connected for 30 days",
}

// printPerDevice says what became of a sent message on each of to's
// devices, by name.
func printPerDevice(ctx context.Context, c *client.Client, to string, r *client.Receipt) error {
	if r.Devices == nil {
		fmt.Printf("  %s has one device, or the server is older than protocol version 6: that is all it says.\n", to)
		return nil
	}
	names := map[uint64]string{}
	if l, err := c.Devices(ctx, to); err == nil {
		for _, d := range l.Devices {
			names[d.ID] = d.Name
		}
	}
	for _, d := range r.Devices {
		what := deviceStatusText[d.Status]
		if what == "" {
			what = fmt.Sprintf("status %d", d.Status)
		}
		fmt.Printf("  %016x  %-20s %s\n", d.Device, termtext.Line(names[d.Device]), what)
	}
	return nil
}

// acceptKeyChange accepts to's current keys if they changed since they
// were pinned, and says so.
func acceptKeyChange(ctx context.Context, c *client.Client, to string) error {
	pk, err := c.PeerKeys(ctx, to)
	if err != nil {
		return err
	}
	old, held := c.KeyChangeHeld(pk.User)
	if !held {
		return nil
	}
	if err := c.AcceptKeyChange(pk.User); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "Accepted %s's new keys %s (were %s).\n", pk.User, pk.Fingerprint(), old)
	return nil
}

// heldErr turns the server's report that the receiver's keys changed
// under a send into the hold it now is.
func heldErr(c *client.Client, err error) error {
	var kc *client.KeysChangedError
	if errors.As(err, &kc) {
		if old, held := c.KeyChangeHeld(kc.User); held {
			return &client.KeyChangeHeldError{User: kc.User, Old: old, New: kc.Fingerprint}
		}
	}
	return err
}

// maxStdinMessage bounds what send reads from standard input: more than
// any message can carry, so the exact limit can be named.
const maxStdinMessage = proto.MaxBodyLen + 1

// readMessage reads a message's text from r (a pipe).
func readMessage(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxStdinMessage))
	if err != nil {
		return "", fmt.Errorf("reading the message from standard input: %w", err)
	}
	if len(b) == 0 {
		return "", usagef("standard input was empty: nothing to send")
	}
	if !utf8.Valid(b) {
		return "", usagef("standard input is not UTF-8 text; send it with --file")
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

// recvJSON is one line of recv --json.
type recvJSON struct {
	ID     uint64 `json:"id"`
	Sender string `json:"sender"`
	Group  string `json:"group,omitempty"`
	Kind   string `json:"kind"`
	Text   string `json:"text,omitempty"`
	File   string `json:"file,omitempty"`
	Size   int64  `json:"size,omitempty"`
	Time   string `json:"time"`
	Sent   string `json:"sent"`
	// KeyChanged: the sender's keys changed since they were pinned.
	KeyChanged bool `json:"key_changed,omitempty"`
	// Request: from someone you have not accepted (a message request).
	Request bool `json:"request,omitempty"`
	// To: set on what you sent from another of your devices, to whom.
	To string `json:"to,omitempty"`
	// RemovedDevice: the sender's device that sent it, removed from their
	// list since (it sent it before).
	RemovedDevice string `json:"from_removed_device,omitempty"`
}

func cmdRecv(args []string) error {
	cf := newClientFlags("recv", "recv --server ADDR --user NAME [--wait DURATION] [--json] [--out DIR]",
		"Prints the messages you receive, decrypted. With --wait it stays connected\nthat long; without, it leaves once nothing has arrived for a second.")
	wait := cf.fs.Duration("wait", 0, "stay connected this long")
	asJSON := cf.fs.Bool("json", false, "print one JSON object per line")
	out := cf.fs.String("out", ".", "folder for received files")
	if err := cf.parse(args); err != nil {
		return err
	}
	if cf.fs.NArg() != 0 {
		return usagef("recv takes no arguments")
	}
	if st, err := os.Stat(*out); err != nil || !st.IsDir() {
		return usagef("--out %s is not a folder", *out)
	}
	cfg := cf.config()
	cfg.OutDir = *out
	c, err := login(cf, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	var end <-chan time.Time
	if *wait > 0 {
		end = time.After(*wait)
	}
	// Without --wait, recv leaves once no message has come for a second.
	const quiet = time.Second
	idle := time.NewTimer(quiet)
	defer idle.Stop()
	if *wait > 0 {
		idle.Stop()
	}
	dropped := false
	told := map[string]bool{} // senders of requests explained once
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				return nil
			}
			switch ev.Kind {
			case client.EventMessage:
				if *wait == 0 {
					idle.Reset(quiet)
				}
				if err := printReceived(ev.Message, *asJSON, told); err != nil {
					return err
				}
			case client.EventKeyChange:
				warnKeyChange(ev)
			case client.EventRejected:
				warnRejected(ev)
			case client.EventDevice:
				warnDevice(ev)
			case client.EventDeviceSilent:
				fmt.Fprintf(os.Stderr, "your device %s: %s\n", termtext.Line(ev.Text), client.DeviceSilence(ev.Text, ev.Idle))
			case client.EventPasswordMoved:
				fmt.Fprintln(os.Stderr, ev.Text)
			case client.EventConnection:
				// A recv that waits reconnects by itself and goes on; it
				// stops when another program takes the session, or when
				// reconnecting cannot succeed.
				if err := connChanged(c, ev, &dropped); err != nil {
					return err
				}
			}
		case <-end:
			return nil
		case <-idle.C:
			return nil
		}
	}
}

// connChanged tells of a change of recv's connection; an error ends recv.
func connChanged(c *client.Client, ev client.Event, dropped *bool) error {
	switch ev.State {
	case client.StateConnecting:
		if !*dropped {
			fmt.Fprintf(os.Stderr, "Connection lost (%v); reconnecting...\n", ev.Err)
		}
		*dropped = true
	case client.StateConnected:
		if *dropped {
			fmt.Fprintln(os.Stderr, "Reconnected.")
		}
		*dropped = false
	case client.StateReplaced:
		return fmt.Errorf("%s is now receiving in another program or on another machine (a chat, or another recv); this recv stops, and what arrives goes there", c.User())
	case client.StateStopped:
		return ev.Err
	}
	return nil
}

// printReceived prints one received message, as a line or as JSON; the
// first request from each sender is explained once (told).
func printReceived(m *client.Message, asJSON bool, told map[string]bool) error {
	if m.Request && !told[m.From] {
		told[m.From] = true
		fmt.Fprintf(os.Stderr, "%s is not in your contacts: their message is a request (nothing goes back to them).\n"+
			"  Reply, or 'securefastchat contact accept %s', to accept; 'securefastchat contact block %s' to block.\n", m.From, m.From, m.From)
	}
	if !asJSON {
		printMessage(os.Stdout, m)
		return nil
	}
	j := recvJSON{ID: m.ServerID, Sender: m.From, Group: m.Group, Kind: "text", Text: m.Text,
		Time: m.ServerTime.UTC().Format(time.RFC3339Nano), Sent: m.SentAt.UTC().Format(time.RFC3339Nano), KeyChanged: m.PeerKeyChanged, Request: m.Request}
	if m.Mine && m.Group == "" {
		j.To = m.To
	}
	j.RemovedDevice = m.FromRemovedDevice
	if m.File != nil {
		j.Kind, j.File, j.Size = "file", m.File.Path, m.File.Size
	}
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(termtext.EscapeJSON(b), '\n'))
	return err
}

// printMessage prints a received message as a line of recv's output.
// What the sender chose (text, group and file names) is cleaned for the
// terminal, and the lines after a text's first are indented, so no
// sender can write escape sequences or a line that looks like another
// message.
func printMessage(w io.Writer, m *client.Message) {
	ts := m.ServerTime.Local().Format("2006-01-02 15:04:05")
	text := strings.ReplaceAll(termtext.Clean(m.Text), "\n", "\n    ")
	group := termtext.Line(m.Group)
	switch {
	case m.Mine && m.Group != "" && m.File != nil:
		fmt.Fprintf(w, "[%s] you, in %s from another device, sent a file: %s (%d bytes), saved as %s\n", ts, group, termtext.Line(m.File.Name), m.File.Size, termtext.Line(m.File.Path))
	case m.Mine && m.Group != "":
		fmt.Fprintf(w, "[%s] you, in %s from another device: %s\n", ts, group, text)
	case m.Mine && m.File != nil:
		fmt.Fprintf(w, "[%s] you, to %s from another device, sent a file: %s (%d bytes), saved as %s\n", ts, m.To, termtext.Line(m.File.Name), m.File.Size, termtext.Line(m.File.Path))
	case m.Mine:
		fmt.Fprintf(w, "[%s] you, to %s from another device: %s\n", ts, m.To, text)
	case m.File != nil:
		fmt.Fprintf(w, "[%s] %s sent a file: %s (%d bytes), saved as %s\n", ts, m.From, termtext.Line(m.File.Name), m.File.Size, termtext.Line(m.File.Path))
	case m.Group != "" && m.BeforeChange:
		fmt.Fprintf(w, "[%s] %s in %s (sent before they left): %s\n", ts, m.From, group, text)
	case m.Group != "":
		fmt.Fprintf(w, "[%s] %s in %s: %s\n", ts, m.From, group, text)
	case m.Request:
		fmt.Fprintf(w, "[%s] %s (request): %s\n", ts, m.From, text)
	default:
		fmt.Fprintf(w, "[%s] %s: %s\n", ts, m.From, text)
	}
	if m.FromRemovedDevice != "" {
		fmt.Fprintf(w, "    (sent from %s's device %q before it was removed from the account's devices)\n", m.From, termtext.Line(m.FromRemovedDevice))
	}
}
