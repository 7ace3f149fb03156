package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
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

// session is a client's one session with the server: its connection, the
// login (the session token kept in the home, or the password), keeping it
// up across drops with backoff, its state, and requests that wait for a
// connection and are sent again after a reconnect. Owner: the Client,
// which gives it serve (what else runs on each new connection: the
// receiver, the pushes) and closes it. The fields above mu are set once.
type session struct {
	cfg      *Config
	user     string           // canonical
	password *accountPassword // for a password login when the token is refused; nil if unknown
	tokens   *sessionFile     // session tokens kept in the home, sealed
	post     func(Event)
	serve    func(*Conn) // called with mu held for each new connection
	// device returns this device's id and sign key if the account's
	// device list has it, for a login without the password.
	device func() (id uint64, key ed25519.PrivateKey, ok bool)
	// ownKeys returns the account's published keys as this device knows
	// them, checked after a password login.
	ownKeys func() proto.Keys
	// linked: the device was added through a link; it logs in with its
	// key alone.
	linked    bool
	goTracked func(func())
	stop      <-chan struct{}

	mu       sync.Mutex // guards what follows
	conn     *Conn      // nil until the first connection
	display  string
	token    []byte
	state    ConnState
	stateErr error         // why the state is not StateConnected
	changed  chan struct{} // closed (and made anew) when conn or state changes
	closing  bool          // Close has begun: no new connection may start
}

// Connect makes one attempt to connect and, if it succeeds, makes the
// connection the session's (see Client.Connect).
func (s *session) Connect(ctx context.Context) error {
	conn, ok, err := s.connect(ctx)
	if err != nil {
		return err
	}
	return s.install(conn, ok)
}

// start connects in the background (see Client.Start).
func (s *session) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || s.conn != nil || s.state != StateOffline {
		return
	}
	s.setStateLocked(StateConnecting, nil)
	s.goTracked(s.reconnect)
}

// close marks the session closing and closes its connection; no new one
// starts after it.
func (s *session) close() {
	s.mu.Lock()
	s.closing = true
	conn := s.conn
	s.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

// connect dials and logs in: with the session token if there is one, and
// with the password if there is none or the server refuses it (expired,
// revoked, or newer than a backup the server was restored from). A new
// session is kept in the home.
func (s *session) connect(ctx context.Context) (*Conn, *proto.LoginOK, error) {
	conn, err := Dial(ctx, s.cfg.Addr, s.cfg.dialOptions())
	if err != nil {
		return nil, nil, err
	}
	flags := s.cfg.loginFlags()
	var tokErr error
	if tok := s.Token(); tok != nil {
		ok, err := conn.ResumeWith(ctx, s.user, tok, flags)
		if err == nil {
			return conn, ok, nil
		}
		if !errors.Is(err, proto.CodeInvalidToken) {
			conn.Close()
			return nil, nil, err
		}
		tokErr = err
	}
	// This device's own key, if the account's device list has it: the
	// password does not go to the server.
	refused := false
	if id, key, ok := s.device(); ok && conn.Version() >= 3 {
		lok, err := conn.LoginDevice(ctx, s.user, id, key, flags)
		if err == nil {
			return conn, lok, nil
		}
		if !errors.Is(err, proto.CodeInvalidCredentials) {
			conn.Close()
			return nil, nil, err
		}
		refused = true
	}
	if !s.password.known() {
		conn.Close()
		if refused && s.linked {
			return nil, nil, ErrDeviceRemoved
		}
		if tokErr != nil {
			return nil, nil, tokErr
		}
		return nil, nil, ErrNeedPassword
	}
	// A password login is bound to the account's first device: this must
	// be it (an account recovered elsewhere has another). It is checked
	// on a session that takes no deliveries, so a home that is not the
	// first device never takes the first device's place; then the new
	// session is resumed as asked.
	check := s.ownKeys != nil && conn.Version() >= 3
	lflags := flags
	if check {
		lflags |= proto.LoginNoDeliveries
	}
	ok, err := conn.LoginWith(ctx, s.user, string(s.password.secret()), lflags)
	if err != nil {
		conn.Close()
		return nil, nil, firstDeviceLogin(err)
	}
	if !check {
		return conn, ok, nil
	}
	if err := checkOwnKeys(ctx, conn, s.user, s.ownKeys()); err != nil {
		conn.Close()
		return nil, nil, err
	}
	if lflags == flags {
		return conn, ok, nil
	}
	conn.Close()
	if conn, err = Dial(ctx, s.cfg.Addr, s.cfg.dialOptions()); err != nil {
		return nil, nil, err
	}
	rok, err := conn.ResumeWith(ctx, s.user, ok.Token, flags)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	rok.Token = ok.Token // (a resume keeps the token it was given)
	return conn, rok, nil
}

// ErrFirstDeviceRemoved: this home is its account's first device, and a
// device that manages the account removed it from the list.
var ErrFirstDeviceRemoved = errors.New("client: this home was the account's first device, and a device that manages the account removed it from the list: use a device on the list, or make this machine a device again with 'securefastchat device add' in a new home")

// firstDeviceLogin is err of a password login, which is the first
// device's: ErrFirstDeviceRemoved if the server refused it for that.
func firstDeviceLogin(err error) error {
	if errors.Is(err, proto.CodeForbidden) {
		return fmt.Errorf("%w (%w)", ErrFirstDeviceRemoved, err)
	}
	return err
}

// ErrDeviceRemoved: a device added through a link is no longer on its
// account's list (removed, or the account was recovered).
var ErrDeviceRemoved = errors.New("client: this device is no longer on the account's device list (it was removed, or the account recovered elsewhere): link it again with 'securefastchat device add'")

// ErrAccountRecovered: the account's keys on the server are not this
// device's account's: it was recovered (or made again) with new keys
// elsewhere, and this home's keys no longer open what is sent to it.
var ErrAccountRecovered = errors.New("client: the account's keys on the server are not this home's: it was recovered on another device (or made again), so this home can no longer use it")

// checkOwnKeys checks that the account's published keys are want.
func checkOwnKeys(ctx context.Context, conn *Conn, user string, want proto.Keys) error {
	m := proto.UserReq{User: []byte(user)}
	t, body, err := conn.Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, proto.TGetKeys, id) })
	if err := expect(t, proto.TKeys, err); err != nil {
		return err
	}
	var r proto.KeysReply
	if err := r.Parse(body); err != nil {
		return fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	if !bytes.Equal(r.BoxKey, want.BoxKey) || !bytes.Equal(r.SignKey, want.SignKey) {
		return ErrAccountRecovered
	}
	return nil
}

// install makes conn the client's connection and starts serving it; the
// connection it replaces, if any, is closed. A new session token is kept
// in the home.
func (s *session) install(conn *Conn, ok *proto.LoginOK) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		conn.Close()
		return ErrClosed
	}
	old := s.conn
	s.conn, s.display = conn, string(ok.User)
	renewed := string(ok.Token) != string(s.token)
	s.token = append([]byte(nil), ok.Token...)
	s.startConn(conn) // under mu, so Close cannot miss it
	s.setStateLocked(StateConnected, nil)
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
	if renewed {
		if err := s.tokens.put(s.cfg.Addr, ok.Token); err != nil {
			return err
		}
	}
	s.notify()
	return nil
}

// startConn starts the goroutines that serve one connection; s.mu is held.
func (s *session) startConn(conn *Conn) {
	s.serve(conn)
	s.goTracked(func() { s.watch(conn) })
	if s.cfg.PingInterval > 0 {
		s.goTracked(func() {
			t := time.NewTicker(s.cfg.PingInterval)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					_ = conn.Ping(ctx)
					cancel()
				case <-conn.Done():
					return
				case <-s.stop:
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
func (s *session) watch(conn *Conn) {
	select {
	case <-conn.Done():
	case <-s.stop:
		return
	}
	if s.Conn() != conn {
		return // replaced by a newer connection of this client
	}
	err := conn.Err()
	var ce *ClosedError
	switch {
	case errors.Is(err, ErrClosed):
		return
	case errors.As(err, &ce) && ce.Reason == proto.CloseReplaced:
		s.setState(StateReplaced, err)
		return
	case errors.As(err, &ce) && ce.Reason == proto.CloseRevoked, s.cfg.NoReconnect:
		s.setState(StateStopped, err)
		return
	}
	s.setState(StateConnecting, err)
	s.reconnect()
}

// reconnect tries to connect with backoff until it succeeds, the client
// closes, or an error says trying again cannot help (StateStopped).
func (s *session) reconnect() {
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-s.stop:
			return
		case <-time.After(backoff):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, ok, err := s.connect(ctx)
		cancel()
		if err == nil {
			_ = s.install(conn, ok)
			return
		}
		if final(err) {
			s.setState(StateStopped, err)
			return
		}
		s.setState(StateConnecting, err)
		backoff = min(backoff*2, 5*time.Second)
	}
}

// setState records a state and posts EventConnection if it changed.
func (s *session) setState(st ConnState, err error) {
	s.mu.Lock()
	changed := s.state != st || fmt.Sprint(s.stateErr) != fmt.Sprint(err)
	if changed {
		s.setStateLocked(st, err)
	}
	s.mu.Unlock()
	if changed {
		s.notify()
	}
}

// setStateLocked records a state and wakes requests waiting on a change;
// s.mu is held.
func (s *session) setStateLocked(st ConnState, err error) {
	s.state, s.stateErr = st, err
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *session) notify() {
	st, err := s.State()
	if s.isClosing() {
		return
	}
	s.post(Event{Kind: EventConnection, State: st, Err: err, Time: time.Now()})
}

func (s *session) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// waitReconnect waits until the client has a connection other than old
// (or ctx ends, or the client stops for good).
func (s *session) waitReconnect(ctx context.Context, old *Conn) error {
	for {
		s.mu.Lock()
		cur, ch, st, serr := s.conn, s.changed, s.state, s.stateErr
		s.mu.Unlock()
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
		case <-s.stop:
			return ErrClosed
		}
	}
}

// Token returns the session token (for Resume), or nil if none is known.
func (s *session) Token() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == nil {
		return nil
	}
	return append([]byte(nil), s.token...)
}

// Conn returns the current connection, or nil before the first.
func (s *session) Conn() *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

// liveConn returns the current connection, waiting for one while the
// client is connecting.
func (s *session) liveConn(ctx context.Context) (*Conn, error) {
	for {
		if conn := s.Conn(); conn != nil {
			return conn, nil
		}
		if err := s.waitReconnect(ctx, nil); err != nil {
			return nil, err
		}
	}
}

// State returns the connection's state and, when not connected, why.
func (s *session) State() (ConnState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.stateErr
}

// Display returns the user name as signed up (the canonical name until
// the first connection).
func (s *session) Display() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.display
}

// request sends a request that is safe to repeat (a read, or a message the
// server de-duplicates by its msg_id) and returns the reply. If the
// connection drops or the server says it is stopping before the reply, it
// waits for the client to reconnect and sends it again, until ctx ends.
// While the client is offline it waits for the connection first.
func (s *session) request(ctx context.Context, build func(b []byte, id uint32) []byte) (proto.MsgType, []byte, error) {
	for {
		conn := s.Conn()
		if conn == nil {
			if err := s.waitReconnect(ctx, nil); err != nil {
				return 0, nil, err
			}
			continue
		}
		t, rb, err := conn.Request(ctx, build)
		var re *proto.RemoteError
		retry := errors.Is(err, ErrConnectionLost) ||
			errors.As(err, &re) && re.Code == proto.CodeServerShuttingDown
		if !retry || ctx.Err() != nil {
			return t, rb, err
		}
		if werr := s.waitReconnect(ctx, conn); werr != nil {
			return 0, nil, fmt.Errorf("%w (reconnecting: %v)", err, werr)
		}
	}
}
