// Package client is the securefastchat client library: it connects with a
// pinned server key, signs up and logs in, looks up and pins other users'
// keys, seals direct messages end to end and opens the ones it receives.
// The command line, the tests and the benchmarks all use it.
package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"securefastchat/proto"
)

// Config configures a Client.
type Config struct {
	// Addr is the server's host:port. Required.
	Addr string
	// Home is the client's home directory: pinned server keys, identity
	// keys and pinned contact keys. Required.
	Home string
	// ServerKey, if set, is the fingerprint the server must present.
	ServerKey string
	// NoPinNew refuses a server whose key is not pinned yet.
	NoPinNew bool
	// KDF protects the identity file. If zero, DefaultKDF.
	KDF KDFParams
	// OutDir receives files. If empty, the current directory.
	OutDir string
	// MaxFileSize caps files sent and received. If zero, 100 MiB.
	MaxFileSize int64
	// Dial opens the byte stream. If nil, TCP.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// OnPeerKeyChange is called when a contact's published keys differ
	// from the pinned ones. The new keys are pinned after the call.
	OnPeerKeyChange func(user, oldFingerprint, newFingerprint string)
	// OnReject is called for a received message that fails its checks
	// (it is acknowledged and dropped: it can never open).
	OnReject func(from string, err error)
	// PingInterval is how often an idle connection is pinged. If zero,
	// 60 s; negative turns pings off.
	PingInterval time.Duration
	// Messages is the capacity of the Messages channel. If zero, 256.
	Messages int
}

func (c *Config) setDefaults() error {
	if c.Addr == "" {
		return errors.New("client: no server address")
	}
	if c.Home == "" {
		return errors.New("client: no home directory")
	}
	if c.KDF == (KDFParams{}) {
		c.KDF = DefaultKDF
	}
	if c.OutDir == "" {
		c.OutDir = "."
	}
	if c.MaxFileSize == 0 {
		c.MaxFileSize = 100 << 20
	}
	if c.PingInterval == 0 {
		c.PingInterval = time.Minute
	}
	if c.Messages == 0 {
		c.Messages = 256
	}
	return nil
}

// UserDir returns the directory of a user's keys inside a home directory.
func UserDir(home, canonUser string) string { return filepath.Join(home, "users", canonUser) }

// IdentityPath returns where a user's identity key lives.
func IdentityPath(home, canonUser string) string {
	return filepath.Join(UserDir(home, canonUser), "identity")
}

// KnownServersPath returns the server pin file of a home directory.
func KnownServersPath(home string) string { return filepath.Join(home, "known_servers") }

// Client is a logged-in user.
type Client struct {
	// Static after login.
	cfg      Config
	user     string // canonical
	display  string
	id       *Identity
	contacts *contacts

	mu    sync.Mutex
	conn  *Conn
	token []byte

	msgs   chan *Message
	recv   *receiver
	stop   chan struct{}
	wg     sync.WaitGroup
	closed sync.Once
}

// Receipt is the server's acknowledgement of a sent message: the receiver's
// client has it.
type Receipt struct {
	ServerID uint64
	Time     time.Time
	Status   uint8
}

func (cfg *Config) dialOptions() DialOptions {
	return DialOptions{KnownServers: KnownServersPath(cfg.Home), ServerKey: cfg.ServerKey, NoPinNew: cfg.NoPinNew, Dial: cfg.Dial}
}

// Signup makes a new identity, saves it in the home directory (encrypted
// with the password) and creates the account.
func Signup(ctx context.Context, cfg Config, user, password string) (*Client, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	canon, err := proto.CanonicalUsername(user)
	if err != nil {
		return nil, &proto.RemoteError{Code: proto.CodeInvalidUsername, Message: err.Error()}
	}
	if n := len(password); n < proto.MinPasswordLen || n > proto.MaxPasswordLen {
		return nil, &proto.RemoteError{Code: proto.CodeInvalidPassword, Message: fmt.Sprintf("a password is %d to %d bytes", proto.MinPasswordLen, proto.MaxPasswordLen)}
	}
	idPath := IdentityPath(cfg.Home, canon)
	if _, err := os.Stat(idPath); err == nil {
		return nil, fmt.Errorf("client: %s already holds an identity for %s; log in instead", idPath, canon)
	}
	id, err := NewIdentity()
	if err != nil {
		return nil, err
	}
	conn, err := Dial(ctx, cfg.Addr, cfg.dialOptions())
	if err != nil {
		return nil, err
	}
	keys := id.PublicKeys(canon)
	m := proto.Signup{User: []byte(user), Password: []byte(password), Keys: keys}
	ok, err := loginRequest(ctx, conn, func(b []byte, rid uint32) []byte { return m.Append(b, rid) })
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := SaveIdentity(idPath, id, []byte(password), cfg.KDF); err != nil {
		conn.Close()
		return nil, err
	}
	return newClient(cfg, canon, id, conn, ok)
}

// Login opens the user's identity with the password and logs in.
func Login(ctx context.Context, cfg Config, user, password string) (*Client, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	canon, err := proto.CanonicalUsername(user)
	if err != nil {
		return nil, &proto.RemoteError{Code: proto.CodeInvalidUsername, Message: err.Error()}
	}
	conn, err := Dial(ctx, cfg.Addr, cfg.dialOptions())
	if err != nil {
		return nil, err
	}
	m := proto.Login{User: []byte(user), Password: []byte(password)}
	ok, err := loginRequest(ctx, conn, func(b []byte, rid uint32) []byte { return m.Append(b, rid) })
	if err != nil {
		conn.Close()
		return nil, err
	}
	id, err := LoadIdentity(IdentityPath(cfg.Home, canon), []byte(password))
	if err != nil {
		conn.Close()
		return nil, err
	}
	return newClient(cfg, canon, id, conn, ok)
}

func loginRequest(ctx context.Context, conn *Conn, build func([]byte, uint32) []byte) (*proto.LoginOK, error) {
	t, body, err := conn.Request(ctx, build)
	if err := expect(t, proto.TLoginOK, err); err != nil {
		return nil, err
	}
	ok := new(proto.LoginOK)
	if err := ok.Parse(body); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return ok, nil
}

func newClient(cfg Config, canon string, id *Identity, conn *Conn, ok *proto.LoginOK) (*Client, error) {
	ct, err := loadContacts(filepath.Join(UserDir(cfg.Home, canon), "contacts"))
	if err != nil {
		conn.Close()
		return nil, err
	}
	c := &Client{
		cfg: cfg, user: canon, display: string(ok.User), id: id, contacts: ct,
		conn: conn, token: append([]byte(nil), ok.Token...),
		msgs: make(chan *Message, cfg.Messages),
		stop: make(chan struct{}),
	}
	c.recv = newReceiver(c)
	c.startConn(conn)
	return c, nil
}

// startConn starts the goroutines that serve one connection.
func (c *Client) startConn(conn *Conn) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.recv.run(conn)
	}()
	if c.cfg.PingInterval > 0 {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
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
		}()
	}
}

// User returns the canonical user name.
func (c *Client) User() string { return c.user }

// Display returns the user name as signed up.
func (c *Client) Display() string { return c.display }

// Identity returns the user's keys.
func (c *Client) Identity() *Identity { return c.id }

// Token returns the session token (for Resume).
func (c *Client) Token() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.token...)
}

// Conn returns the current connection.
func (c *Client) Conn() *Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

// ServerKey returns the server's key.
func (c *Client) ServerKey() proto.PublicKey { return c.Conn().ServerKey() }

// Messages returns decrypted, verified messages. It is closed by Close.
func (c *Client) Messages() <-chan *Message { return c.msgs }

// Reconnect dials again (a full new handshake) and resumes the session
// with its token; no password hash is spent.
func (c *Client) Reconnect(ctx context.Context) error {
	conn, err := Dial(ctx, c.cfg.Addr, c.cfg.dialOptions())
	if err != nil {
		return err
	}
	m := proto.Resume{User: []byte(c.user), Token: c.Token()}
	if _, err := loginRequest(ctx, conn, func(b []byte, rid uint32) []byte { return m.Append(b, rid) }); err != nil {
		conn.Close()
		return err
	}
	c.mu.Lock()
	old := c.conn
	c.conn = conn
	c.mu.Unlock()
	old.Close()
	c.startConn(conn)
	return nil
}

// Logout revokes the session token and closes the connection.
func (c *Client) Logout(ctx context.Context) error {
	t, _, err := c.Conn().Request(ctx, func(b []byte, id uint32) []byte { return proto.AppendEmpty(b, proto.TLogout, id) })
	if err := expect(t, proto.TOK, err); err != nil {
		return err
	}
	return c.Close()
}

// Close closes the connection and stops the client's goroutines.
func (c *Client) Close() error {
	c.closed.Do(func() {
		close(c.stop)
		c.Conn().Close()
		c.wg.Wait()
		c.recv.close()
		close(c.msgs)
	})
	return nil
}

// Available reports whether a user name can be signed up.
func Available(ctx context.Context, cfg Config, user string) (bool, error) {
	if err := cfg.setDefaults(); err != nil {
		return false, err
	}
	conn, err := Dial(ctx, cfg.Addr, cfg.dialOptions())
	if err != nil {
		return false, err
	}
	defer conn.Close()
	m := proto.UserReq{User: []byte(user)}
	t, body, err := conn.Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, proto.TCheckUsername, id) })
	if err := expect(t, proto.TAvailable, err); err != nil {
		return false, err
	}
	var a proto.Available
	if err := a.Parse(body); err != nil {
		return false, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return a.Available, nil
}

// PeerKeys returns a user's verified keys. Keys are fetched from the
// server once per client, checked against their signature and against the
// pinned keys; a change calls Config.OnPeerKeyChange and re-pins.
func (c *Client) PeerKeys(ctx context.Context, user string) (*PeerKeys, error) {
	canon, err := proto.CanonicalUsername(user)
	if err != nil {
		return nil, &proto.RemoteError{Code: proto.CodeNoSuchRecipient, Message: err.Error()}
	}
	if k := c.contacts.fresh(canon); k != nil {
		return k, nil
	}
	m := proto.UserReq{User: []byte(canon)}
	t, body, err := c.Conn().Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, proto.TGetKeys, id) })
	if err := expect(t, proto.TKeys, err); err != nil {
		return nil, err
	}
	var r proto.KeysReply
	if err := r.Parse(body); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	if string(r.User) != canon {
		return nil, fmt.Errorf("%w: asked for %s, got keys for %q", ErrPeerKey, canon, r.User)
	}
	if err := proto.VerifyKeys([]byte(canon), &r.Keys); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrPeerKey, canon, err)
	}
	box, _ := proto.ParsePublicKey(r.BoxKey)
	pk := &PeerKeys{User: canon, Box: box, Sign: append([]byte(nil), r.SignKey...)}
	pk.shared = proto.SharedKey(&c.id.Box.Private, box)
	old, changed, err := c.contacts.pin(pk)
	if err != nil {
		return nil, err
	}
	if changed {
		pk.Changed = true
		if c.cfg.OnPeerKeyChange != nil {
			c.cfg.OnPeerKeyChange(canon, old, pk.Fingerprint())
		}
	}
	return pk, nil
}

// SendText seals text for user and sends it. It returns once the
// receiver's client has the message.
func (c *Client) SendText(ctx context.Context, to, text string) (*Receipt, error) {
	return c.sendBody(ctx, to, proto.KindText, []byte(text))
}

func (c *Client) sendBody(ctx context.Context, to string, kind uint8, body []byte) (*Receipt, error) {
	pk, err := c.PeerKeys(ctx, to)
	if err != nil {
		return nil, err
	}
	msgID := make([]byte, proto.MsgIDLen)
	if _, err := rand.Read(msgID); err != nil {
		return nil, err
	}
	in := proto.Inner{Kind: kind, From: []byte(c.user), To: []byte(pk.User), MsgID: msgID, SentAt: time.Now().UnixNano(), Body: body}
	plain, err := in.Append(nil)
	if err != nil {
		return nil, err
	}
	sealed, err := proto.SealBody(nil, plain, pk.shared, nil)
	if err != nil {
		return nil, err
	}
	m := proto.SendDM{To: []byte(pk.User), MsgID: msgID, Kind: kind, Body: sealed}
	t, rb, err := c.Conn().Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
	if err := expect(t, proto.TSent, err); err != nil {
		return nil, err
	}
	var s proto.Sent
	if err := s.Parse(rb); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return &Receipt{ServerID: s.ServerID, Time: time.UnixMilli(s.Time), Status: s.Status}, nil
}

// MaxTextLen is the longest text one message can carry for this pair of
// users.
func MaxTextLen(from, to string) int { return proto.MaxInnerBody([]byte(from), []byte(to)) }
