package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"securefastchat/proto"
)

// Client is a user's end of the service: their identity, their contacts'
// pinned keys, and one session with the server, kept up across
// reconnects.
type Client struct {
	// Static after Load.
	cfg      Config
	user     string // canonical
	id       *Identity
	contacts *contacts
	s        *session // the connection, the login, reconnects and requests

	groups *groupBook // views of the groups, and changes to them

	devMu       sync.Mutex  // one device chain made at a time (devices.go)
	devicesMade atomic.Bool // this account's chain exists
	moveTried   atomic.Bool // movePassword ran (once a client)
	// recovered is what Recover told the user's groups (account.go).
	recovered struct {
		told   []string
		failed map[string]error
	}
	devHeads   *deviceHeads // the heads of the device chains seen
	hold       *deviceHold  // the hold on contacts' new devices
	devLists   deviceLists  // the lists last checked, for sealing (devsealed.go)
	acct       *account     // the account's keys beside this device's (account.go)
	silentMu   sync.Mutex
	silentTold map[uint64]bool // devices EventDeviceSilent told of

	// linked is the history a link copied to this new device (AddDevice),
	// for its caller to keep (LinkedHistory); set before the client is
	// returned.
	linked struct {
		entries []proto.LinkHistoryEntry
		copied  HistoryCopied
	}

	requestsMu sync.Mutex      // guards requests
	requests   map[string]bool // senders of unaccepted requests (requests.go)

	events   *events
	recv     *receiver // nil for a SendOnly client
	live     live
	receipts *receipts
	stop     chan struct{}
	wg       sync.WaitGroup // every goroutine the client starts
	closed   sync.Once
}

// Signup makes a new identity, creates the account with it, and saves the
// identity (encrypted with the password) and the session in the home
// directory.
func Signup(ctx context.Context, cfg Config, user, password string) (*Client, error) {
	return signup(ctx, cfg, user, false, func() (string, error) { return password, nil })
}

// SignupChecked first asks the server whether user is free, then asks
// password for the password (a prompt: nobody types a password twice for
// a taken name) and signs up on the same connection, so the check and the
// sign-up spend one of the server's per-address sign-up tokens.
func SignupChecked(ctx context.Context, cfg Config, user string, password func() (string, error)) (*Client, error) {
	return signup(ctx, cfg, user, true, password)
}

func signup(ctx context.Context, cfg Config, user string, check bool, password func() (string, error)) (*Client, error) {
	canon, err := prepare(&cfg, user)
	if err != nil {
		return nil, err
	}
	idName := userRecord(canon, "identity")
	if _, err := cfg.Storage.Read(idName); err == nil {
		return nil, fmt.Errorf("client: %s already holds an identity for %s; log in instead", where(cfg.Storage, idName), canon)
	}
	conn, err := Dial(ctx, cfg.Addr, cfg.dialOptions())
	if err != nil {
		return nil, err
	}
	if check {
		free, err := conn.available(ctx, user)
		if err == nil && !free {
			err = proto.CodeUsernameTaken
		}
		if err != nil {
			conn.Close()
			return nil, err
		}
	}
	pw, err := password()
	if err == nil {
		err = checkPasswordLen(pw)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	if conn.Err() != nil {
		// The server's login deadline passed while the password was typed:
		// sign up on a fresh connection (the name is checked again there).
		if conn, err = Dial(ctx, cfg.Addr, cfg.dialOptions()); err != nil {
			return nil, err
		}
	}
	id, err := NewIdentity()
	if err != nil {
		conn.Close()
		return nil, err
	}
	apw := &accountPassword{canon: canon, kdf: cfg.KDF, raw: []byte(pw)}
	ok, err := conn.SignupInvite(ctx, user, string(apw.loginKey()), id.PublicKeys(canon), cfg.Invite)
	if err != nil {
		conn.Close()
		return nil, err
	}
	c, err := keepFirstDevice(cfg, canon, id, apw, conn, ok)
	if err != nil {
		return nil, err
	}
	// The account's device list, with this device first, from the start;
	// if the server cannot take it now, the next connection makes it.
	if conn.Version() >= 3 {
		if _, err := c.ensureDevices(ctx); err == nil {
			c.devicesMade.Store(true)
		}
	}
	return c, nil
}

// keepFirstDevice keeps the identity of an account's new first device in
// the home, sealed with its password (pw, made with cfg.KDF), and returns
// its client on conn, logged in (ok). conn is closed if that fails.
func keepFirstDevice(cfg Config, canon string, id *Identity, pw *accountPassword, conn *Conn, ok *proto.LoginOK) (*Client, error) {
	magic := identityMagic
	if pw.unmoved() {
		magic = identityMagicV1
	}
	if err := saveIdentityAs(cfg.Storage, userRecord(canon, "identity"), magic, id, pw.raw, cfg.KDF); err != nil {
		conn.Close()
		return nil, err
	}
	return clientOn(cfg, canon, id, pw, conn, ok)
}

// clientOn makes the client of identity id on conn, logged in (ok); conn
// is closed if that fails.
func clientOn(cfg Config, canon string, id *Identity, pw *accountPassword, conn *Conn, ok *proto.LoginOK) (*Client, error) {
	c, err := newClient(cfg, canon, id, pw)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, c.installNew(conn, ok)
}

// Login logs in with the password (one argon2 hash on the server), opens
// the user's identity with it, and keeps the new session in the home for
// Open. Most callers want Open, which resumes the kept session instead.
func Login(ctx context.Context, cfg Config, user, password string) (*Client, error) {
	canon, err := prepare(&cfg, user)
	if err != nil {
		return nil, err
	}
	conn, err := Dial(ctx, cfg.Addr, cfg.dialOptions())
	if err != nil {
		return nil, err
	}
	if _, err := cfg.Storage.Read(userRecord(canon, "account")); err == nil {
		conn.Close()
		return nil, ErrLinkedLogin
	}
	// What the home's identity file says of the password (its form, its
	// argon2 parameters) decides what goes to the server; the file opens
	// only after the login, as it did before login keys. Without one the
	// login key is made as a new home's.
	name := userRecord(canon, "identity")
	_, f, err := readIdentity(cfg.Storage, name)
	if errors.Is(err, ErrNoIdentity) {
		f, err = identityFile{kdf: cfg.KDF}, nil
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	pw := newAccountPassword(canon, password, f)
	ok, err := conn.LoginWith(ctx, user, string(pw.secret()), cfg.loginFlags())
	if err != nil {
		conn.Close()
		return nil, firstDeviceLogin(err)
	}
	id, _, err := loadIdentity(cfg.Storage, name, []byte(password))
	if err != nil {
		conn.Close()
		return nil, err
	}
	return clientOn(cfg, canon, id, pw, conn, ok)
}

// Load opens the user's identity in the home directory with the password,
// with what the home keeps for the user (contacts' keys, the messages
// seen, the session). Nothing goes to the server: Connect or Start does
// that. A wrong password fails here, at no cost to the server.
func Load(cfg Config, user, password string) (*Client, error) {
	canon, err := prepare(&cfg, user)
	if err != nil {
		return nil, err
	}
	id, f, err := loadIdentity(cfg.Storage, userRecord(canon, "identity"), []byte(password))
	if err != nil {
		return nil, err
	}
	c, err := newClient(cfg, canon, id, newAccountPassword(canon, password, f))
	if err != nil {
		return nil, err
	}
	c.s.token, _ = c.s.tokens.get(cfg.Addr) // a damaged file only costs a password login
	return c, nil
}

// Open is Load, then Connect: a client with an open session, or an error.
// The session kept in the home is resumed (no password hashing on the
// server, no new session); the password logs in only when there is none
// or the server refuses it.
func Open(ctx context.Context, cfg Config, user, password string) (*Client, error) {
	c, err := Load(cfg, user, password)
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// prepare fills in cfg's defaults and returns the canonical user name.
func prepare(cfg *Config, user string) (string, error) {
	if err := cfg.setDefaults(); err != nil {
		return "", err
	}
	canon, err := proto.CanonicalUsername(user)
	if err != nil {
		return "", &proto.RemoteError{Code: proto.CodeInvalidUsername, Message: err.Error()}
	}
	return canon, nil
}

func newClient(cfg Config, canon string, id *Identity, pw *accountPassword) (*Client, error) {
	acct, err := loadAccount(cfg.Storage, canon, id)
	if err != nil {
		return nil, err
	}
	if acct.linked {
		pw = nil // a linked device logs in with its key: its passphrase is its own
	}
	ct, err := loadContacts(cfg.Storage, userRecord(canon, "contacts"), localKey(id, canon, "contacts"))
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg: cfg, user: canon, id: id, contacts: ct, acct: acct,
		events:   newEvents(cfg.Events),
		stop:     make(chan struct{}),
		receipts: newReceipts(),
	}
	c.s = &session{
		cfg: &c.cfg, user: canon, password: pw,
		tokens: &sessionFile{st: cfg.Storage, name: userRecord(canon, "session"), key: c.LocalKey("session")},
		post:   c.post, serve: c.serve, device: c.thisDevice, goTracked: c.goTracked, stop: c.stop,
		ownKeys: func() proto.Keys { return acct.keys }, linked: acct.linked,
		display: canon, changed: make(chan struct{}),
	}
	c.groups = &groupBook{user: canon, id: id, self: acct.master(), master: acct.masterKey, device: c.selfDevice(), s: c.s, peers: c.PeerKeys, former: c.contacts.formerKey,
		devices: c.memberDevices, shared: c.sharedWith, held: c.checkHeld, holdOn: c.HoldNewDevices, send: c.sendRequest, post: c.post, grace: cfg.ChangeGrace}
	c.devHeads = &deviceHeads{st: cfg.Storage, name: userRecord(canon, "devices"), key: c.LocalKey("devices")}
	c.hold = &deviceHold{st: cfg.Storage, name: userRecord(canon, "devicehold"), key: c.LocalKey("devicehold")}
	c.live.ch = make(chan push, liveQueue)
	if !cfg.SendOnly {
		seen, err := openSeenLog(cfg.Storage, userRecord(canon, "seen"), localKey(id, canon, "seen"))
		if err != nil {
			return nil, err
		}
		c.recv = newReceiver(c, seen)
	}
	c.goTracked(func() { c.events.run(c.stop) })
	c.goTracked(c.liveLoop)
	c.goTracked(c.receiptLoop)
	return c, nil
}

// serve starts what the client runs on a new connection besides the
// session's own watch and pings: the pushes and, unless the client only
// sends, the receiver.
func (c *Client) serve(conn *Conn) {
	conn.OnPush(c.onPush)
	// A list change pushed while no connection was up was missed: the
	// lists are read again as they are next needed.
	c.devLists.reset()
	c.makeDevicesOnConnect(conn)
	c.checkSilentDevices(conn)
	c.movePassword(conn)
	if c.recv != nil {
		c.goTracked(func() { c.recv.run(conn) })
	}
}

// goTracked starts a goroutine that Close waits for.
func (c *Client) goTracked(fn func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn()
	}()
}

// Connect makes one attempt to connect: it resumes the session kept in
// the home or, if there is none or the server refuses it, logs in with the
// password and keeps the new session. From then on the client reconnects
// by itself when the connection drops.
func (c *Client) Connect(ctx context.Context) error { return c.s.Connect(ctx) }

// Start connects in the background: the client stays offline
// (StateConnecting) until the server answers, trying again with backoff,
// and every change is posted as an EventConnection. What is sent meanwhile
// waits for the connection. The chat starts this way, so it opens with
// its history while the server is down.
func (c *Client) Start() { c.s.start() }

// TakeOver opens the user's receiving session here again after another
// program or machine took it (StateReplaced); that one is closed in turn.
func (c *Client) TakeOver(ctx context.Context) error { return c.s.Connect(ctx) }

// Reconnect dials again (a full new handshake) and resumes the session.
func (c *Client) Reconnect(ctx context.Context) error { return c.TakeOver(ctx) }

// installNew is install for a client just made around its first
// connection: it closes the client if that fails.
func (c *Client) installNew(conn *Conn, ok *proto.LoginOK) error {
	if err := c.s.install(conn, ok); err != nil {
		c.Close()
		return err
	}
	return nil
}

// final reports errors that connecting again cannot fix.
func final(err error) bool {
	for _, e := range []error{ErrServerKeyChanged, ErrUnknownServer, ErrNotServer, proto.ErrUnsupportedVersion,
		ErrNeedPassword, proto.CodeInvalidCredentials, proto.CodeInvalidToken, proto.CodeUnsupportedFeature, ErrAccountRecovered, ErrDeviceRemoved, ErrFirstDeviceRemoved} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// State returns the connection's state and, when not connected, why.
func (c *Client) State() (ConnState, error) { return c.s.State() }

// Display returns the user name as signed up (the canonical name until
// the first connection).
func (c *Client) Display() string { return c.s.Display() }

// Token returns the session token (for Resume), or nil if none is known.
func (c *Client) Token() []byte { return c.s.Token() }

// Conn returns the current connection, or nil before the first.
func (c *Client) Conn() *Conn { return c.s.Conn() }

// Identity returns the user's keys.
func (c *Client) Identity() *Identity { return c.id }

// ServerKey returns the server's key, or the zero key before the first
// connection.
func (c *Client) ServerKey() proto.PublicKey {
	if conn := c.Conn(); conn != nil {
		return conn.ServerKey()
	}
	return proto.PublicKey{}
}

// Logout revokes the session token, forgets it in the home and closes
// the client.
func (c *Client) Logout(ctx context.Context) error {
	conn := c.Conn()
	if conn == nil {
		return ErrNotConnected
	}
	t, _, err := conn.Request(ctx, func(b []byte, id uint32) []byte { return proto.AppendEmpty(b, proto.TLogout, id) })
	if err := expect(t, proto.TOK, err); err != nil {
		return err
	}
	if err := c.s.tokens.del(c.cfg.Addr); err != nil {
		return err
	}
	return c.Close()
}

// Close closes the connection and stops the client's goroutines.
func (c *Client) Close() error {
	c.closed.Do(func() {
		c.s.close()
		close(c.stop)
		c.wg.Wait()
		if c.recv != nil {
			c.recv.close()
		}
		c.events.close()
	})
	return nil
}
