package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"securefastchat/proto"
)

// ConnState is where a Client's session stands.
type ConnState uint8

// Connection states.
const (
	// StateOffline: loaded from the home, not connected, and not trying
	// (Connect or Start has not been called).
	StateOffline ConnState = iota
	// StateConnecting: not connected; trying with backoff (the first
	// connection after Start, or again after the connection dropped).
	// Requests wait for the connection.
	StateConnecting
	// StateConnected: a session is open.
	StateConnected
	// StateReplaced: another program or machine opened the user's
	// receiving session, and the server closed this one. The client does
	// not reconnect by itself (the two would take turns); TakeOver takes
	// the session back. Requests wait.
	StateReplaced
	// StateStopped: the client will not reconnect: the session was
	// revoked, the server's key changed, the password no longer works...
	// Err says why and what to do. Requests fail with it.
	StateStopped
)

func (s ConnState) String() string {
	return [...]string{"offline", "connecting", "connected", "replaced", "stopped"}[s]
}

// Client is a user's end of the service: their identity, their contacts'
// pinned keys, and one session with the server, kept up across
// reconnects.
type Client struct {
	// Static after Load.
	cfg      Config
	user     string // canonical
	id       *Identity
	contacts *contacts
	sessions *sessionFile // session tokens kept in the home, sealed
	password []byte       // for a password login when the token is refused; nil if unknown

	// Guarded by mu: the connection and the session.
	mu       sync.Mutex
	conn     *Conn // nil until the first connection
	display  string
	token    []byte
	state    ConnState
	stateErr error         // why the state is not StateConnected
	changed  chan struct{} // closed (and made anew) when conn or state changes
	closing  bool          // Close has begun: no new connection may start

	groupsMu    sync.Mutex // guards groupsM, the views in it, and groupsShown
	groupsM     map[string]*groupView
	groupsShown map[string]int // statements of each group reported as events
	changeMu    sync.Mutex     // one group change at a time

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
	idPath := IdentityPath(cfg.Home, canon)
	if _, err := os.Stat(idPath); err == nil {
		return nil, fmt.Errorf("client: %s already holds an identity for %s; log in instead", idPath, canon)
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
	if err == nil && (len(pw) < proto.MinPasswordLen || len(pw) > proto.MaxPasswordLen) {
		err = &proto.RemoteError{Code: proto.CodeInvalidPassword, Message: fmt.Sprintf("a password is %d to %d bytes", proto.MinPasswordLen, proto.MaxPasswordLen)}
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
	ok, err := conn.SignupInvite(ctx, user, pw, id.PublicKeys(canon), cfg.Invite)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := SaveIdentity(idPath, id, []byte(pw), cfg.KDF); err != nil {
		conn.Close()
		return nil, err
	}
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
	ok, err := conn.LoginWith(ctx, user, password, cfg.loginFlags())
	if err != nil {
		conn.Close()
		return nil, err
	}
	id, err := LoadIdentity(IdentityPath(cfg.Home, canon), []byte(password))
	if err != nil {
		conn.Close()
		return nil, err
	}
	c, err := newClient(cfg, canon, id, password)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, c.installNew(conn, ok)
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
	id, err := LoadIdentity(IdentityPath(cfg.Home, canon), []byte(password))
	if err != nil {
		return nil, err
	}
	c, err := newClient(cfg, canon, id, password)
	if err != nil {
		return nil, err
	}
	c.token, _ = c.sessions.get(cfg.Addr) // a damaged file only costs a password login
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

func newClient(cfg Config, canon string, id *Identity, password string) (*Client, error) {
	dir := UserDir(cfg.Home, canon)
	ct, err := loadContacts(filepath.Join(dir, "contacts"), localKey(id, canon, "contacts"))
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg: cfg, user: canon, display: canon, id: id, contacts: ct,
		password: []byte(password),
		changed:  make(chan struct{}),
		events:   newEvents(cfg.Events),
		stop:     make(chan struct{}),
		receipts: newReceipts(),
	}
	c.sessions = &sessionFile{path: filepath.Join(dir, "session"), key: c.LocalKey("session")}
	c.live.ch = make(chan push, liveQueue)
	if !cfg.SendOnly {
		seen, err := openSeenLog(filepath.Join(dir, "seen"), localKey(id, canon, "seen"))
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
func (c *Client) Connect(ctx context.Context) error {
	conn, ok, err := c.connect(ctx)
	if err != nil {
		return err
	}
	return c.install(conn, ok)
}

// Start connects in the background: the client stays offline
// (StateConnecting) until the server answers, trying again with backoff,
// and every change is posted as an EventConnection. What is sent meanwhile
// waits for the connection. The chat starts this way, so it opens with
// its history while the server is down.
func (c *Client) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.conn != nil || c.state != StateOffline {
		return
	}
	c.setStateLocked(StateConnecting, nil)
	c.goTracked(c.reconnect)
}

// TakeOver opens the user's receiving session here again after another
// program or machine took it (StateReplaced); that one is closed in turn.
func (c *Client) TakeOver(ctx context.Context) error {
	conn, ok, err := c.connect(ctx)
	if err != nil {
		return err
	}
	return c.install(conn, ok)
}

// Reconnect dials again (a full new handshake) and resumes the session.
func (c *Client) Reconnect(ctx context.Context) error { return c.TakeOver(ctx) }

// State returns the connection's state and, when not connected, why.
func (c *Client) State() (ConnState, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, c.stateErr
}

// connect dials and logs in: with the session token if there is one, and
// with the password if there is none or the server refuses it (expired,
// revoked, or newer than a backup the server was restored from). A new
// session is kept in the home.
func (c *Client) connect(ctx context.Context) (*Conn, *proto.LoginOK, error) {
	conn, err := Dial(ctx, c.cfg.Addr, c.cfg.dialOptions())
	if err != nil {
		return nil, nil, err
	}
	flags := c.cfg.loginFlags()
	if tok := c.Token(); tok != nil {
		ok, err := conn.ResumeWith(ctx, c.user, tok, flags)
		if err == nil {
			return conn, ok, nil
		}
		if !errors.Is(err, proto.CodeInvalidToken) || len(c.password) == 0 {
			conn.Close()
			return nil, nil, err
		}
	}
	if len(c.password) == 0 {
		conn.Close()
		return nil, nil, ErrNeedPassword
	}
	ok, err := conn.LoginWith(ctx, c.user, string(c.password), flags)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, ok, nil
}

// installNew is install for a client just made around its first
// connection: it closes the client if that fails.
func (c *Client) installNew(conn *Conn, ok *proto.LoginOK) error {
	if err := c.install(conn, ok); err != nil {
		c.Close()
		return err
	}
	return nil
}

// install makes conn the client's connection and starts serving it; the
// connection it replaces, if any, is closed. A new session token is kept
// in the home.
func (c *Client) install(conn *Conn, ok *proto.LoginOK) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		conn.Close()
		return ErrClosed
	}
	old := c.conn
	c.conn, c.display = conn, string(ok.User)
	renewed := string(ok.Token) != string(c.token)
	c.token = append([]byte(nil), ok.Token...)
	c.startConn(conn) // under mu, so Close cannot miss it
	c.setStateLocked(StateConnected, nil)
	c.mu.Unlock()
	if old != nil {
		old.Close()
	}
	if renewed {
		if err := c.sessions.put(c.cfg.Addr, ok.Token); err != nil {
			return err
		}
	}
	c.notify()
	return nil
}

// startConn starts the goroutines that serve one connection; c.mu is held.
func (c *Client) startConn(conn *Conn) {
	conn.OnPush(c.onPush)
	if c.recv != nil {
		c.goTracked(func() { c.recv.run(conn) })
	}
	c.goTracked(func() { c.watch(conn) })
	if c.cfg.PingInterval > 0 {
		c.goTracked(func() {
			t := time.NewTicker(c.cfg.PingInterval)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					_ = conn.Ping(ctx)
					cancel()
				case <-conn.Done():
					return
				case <-c.stop:
					return
				}
			}
		})
	}
}

// watch waits for conn to end and decides what comes next: nothing if
// this side closed it, StateReplaced if another session took over,
// StateStopped if the session was revoked (or reconnecting is off), and
// otherwise reconnecting with backoff.
func (c *Client) watch(conn *Conn) {
	select {
	case <-conn.Done():
	case <-c.stop:
		return
	}
	if c.Conn() != conn {
		return // replaced by a newer connection of this client
	}
	err := conn.Err()
	var ce *ClosedError
	switch {
	case errors.Is(err, ErrClosed):
		return
	case errors.As(err, &ce) && ce.Reason == proto.CloseReplaced:
		c.setState(StateReplaced, err)
		return
	case errors.As(err, &ce) && ce.Reason == proto.CloseRevoked, c.cfg.NoReconnect:
		c.setState(StateStopped, err)
		return
	}
	c.setState(StateConnecting, err)
	c.reconnect()
}

// reconnect tries to connect with backoff until it succeeds, the client
// closes, or an error says trying again cannot help (StateStopped).
func (c *Client) reconnect() {
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-c.stop:
			return
		case <-time.After(backoff):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, ok, err := c.connect(ctx)
		cancel()
		if err == nil {
			_ = c.install(conn, ok)
			return
		}
		if final(err) {
			c.setState(StateStopped, err)
			return
		}
		c.setState(StateConnecting, err)
		backoff = min(backoff*2, 5*time.Second)
	}
}

// final reports errors that connecting again cannot fix.
func final(err error) bool {
	for _, e := range []error{ErrServerKeyChanged, ErrUnknownServer, ErrNotServer, proto.ErrUnsupportedVersion,
		ErrNeedPassword, proto.CodeInvalidCredentials, proto.CodeInvalidToken, proto.CodeUnsupportedFeature} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// setState records a state and posts EventConnection if it changed.
func (c *Client) setState(s ConnState, err error) {
	c.mu.Lock()
	changed := c.state != s || fmt.Sprint(c.stateErr) != fmt.Sprint(err)
	if changed {
		c.setStateLocked(s, err)
	}
	c.mu.Unlock()
	if changed {
		c.notify()
	}
}

// setStateLocked records a state and wakes requests waiting on a change;
// c.mu is held.
func (c *Client) setStateLocked(s ConnState, err error) {
	c.state, c.stateErr = s, err
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Client) notify() {
	st, err := c.State()
	if c.isClosing() {
		return
	}
	c.post(Event{Kind: EventConnection, State: st, Err: err, Time: time.Now()})
}

func (c *Client) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// waitReconnect waits until the client has a connection other than old
// (or ctx ends, or the client stops for good).
func (c *Client) waitReconnect(ctx context.Context, old *Conn) error {
	for {
		c.mu.Lock()
		cur, ch, st, serr := c.conn, c.changed, c.state, c.stateErr
		c.mu.Unlock()
		switch {
		case st == StateStopped:
			return serr
		case st == StateOffline:
			return ErrNotConnected
		case cur != old && cur != nil && st == StateConnected:
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.stop:
			return ErrClosed
		}
	}
}

// Display returns the user name as signed up (the canonical name until
// the first connection).
func (c *Client) Display() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.display
}

// Identity returns the user's keys.
func (c *Client) Identity() *Identity { return c.id }

// Token returns the session token (for Resume), or nil if none is known.
func (c *Client) Token() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token == nil {
		return nil
	}
	return append([]byte(nil), c.token...)
}

// Conn returns the current connection, or nil before the first.
func (c *Client) Conn() *Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

// liveConn returns the current connection, waiting for one while the
// client is connecting.
func (c *Client) liveConn(ctx context.Context) (*Conn, error) {
	for {
		if conn := c.Conn(); conn != nil {
			return conn, nil
		}
		if err := c.waitReconnect(ctx, nil); err != nil {
			return nil, err
		}
	}
}

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
	if err := c.sessions.del(c.cfg.Addr); err != nil {
		return err
	}
	return c.Close()
}

// Close closes the connection and stops the client's goroutines.
func (c *Client) Close() error {
	c.closed.Do(func() {
		c.mu.Lock()
		c.closing = true
		conn := c.conn
		c.mu.Unlock()
		close(c.stop)
		if conn != nil {
			conn.Close()
		}
		c.wg.Wait()
		if c.recv != nil {
			c.recv.close()
		}
		c.events.close()
	})
	return nil
}
