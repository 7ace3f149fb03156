package client

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/crypto/argon2"

	"securefastchat/proto"
)

// An account's password never goes to the server. What goes where a
// password goes (sign-up, a password login, recovery, a password change)
// is its login key: argon2id over the password, salted with the
// account's name. The server keeps and checks the login key as it would
// a password. The identity file, and through it everything the home
// keeps, is sealed with a key argon2id makes from the password under a
// random salt of its own, which the login key does not give: the server
// would have to guess the password, at an argon2 run a guess, to open a
// home it got hold of.
//
// An account signed up before login keys has a password the server has
// seen. Its first device moves it to its login key as soon as it connects
// to a server of protocol version 6 (movePassword) and says so
// (EventPasswordMoved); what the home keeps is safe from the server only
// once the password is changed (ChangePassword).

// loginKeySalt starts the salt of every login key; the canonical user
// name follows it.
const loginKeySalt = "securefastchat login key\x00"

// loginKey is user's (canonical) login key for password under p.
func loginKey(password []byte, canon string, p KDFParams) []byte {
	return argon2.IDKey(password, append([]byte(loginKeySalt), canon...), p.Time, p.MemoryKiB, p.Threads, 32)
}

// LoginKey returns what this package sends for user's password, with the
// argon2 parameters p (DefaultKDF if zero): for a caller that speaks the
// protocol on a Conn to an account a Client signed up.
func LoginKey(user, password string, p KDFParams) (string, error) {
	canon, err := proto.CanonicalUsername(user)
	if err != nil {
		return "", err
	}
	if p == (KDFParams{}) {
		p = DefaultKDF
	}
	return string(loginKey([]byte(password), canon, p)), nil
}

// checkPasswordLen refuses a password no server would take, before any
// work is spent on it.
func checkPasswordLen(pw string) error {
	if len(pw) < proto.MinPasswordLen || len(pw) > proto.MaxPasswordLen {
		return &proto.RemoteError{Code: proto.CodeInvalidPassword, Message: fmt.Sprintf("a password is %d to %d bytes", proto.MinPasswordLen, proto.MaxPasswordLen)}
	}
	return nil
}

// accountPassword is the password of the account as its first device
// logs in with it. Owner: the session; its methods are safe from any
// goroutine.
type accountPassword struct {
	canon string
	kdf   KDFParams // the identity file's, which its login key uses

	mu  sync.Mutex
	raw []byte
	v1  bool   // the server knows the password itself (a home from before login keys)
	key []byte // the login key, once made
}

func newAccountPassword(canon, raw string, f identityFile) *accountPassword {
	return &accountPassword{canon: canon, kdf: f.kdf, raw: []byte(raw), v1: f.v1}
}

// known reports whether there is a password to log in with.
func (p *accountPassword) known() bool { return p != nil && len(p.raw) > 0 }

// loginKey returns the login key, making it the first time.
func (p *accountPassword) loginKey() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.key == nil {
		p.key = loginKey(p.raw, p.canon, p.kdf)
	}
	return p.key
}

// secret returns what a password login sends: the login key or, until
// the account is moved to it, the password.
func (p *accountPassword) secret() []byte {
	p.mu.Lock()
	v1 := p.v1
	p.mu.Unlock()
	if v1 {
		return p.raw
	}
	return p.loginKey()
}

// unmoved reports whether the server still knows the password itself.
func (p *accountPassword) unmoved() bool {
	if !p.known() {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.v1
}

// moved records that the server has the login key for the password.
func (p *accountPassword) moved() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.v1 = false
}

// set makes next the password, with its login key.
func (p *accountPassword) set(next []byte, key []byte, kdf KDFParams) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.raw, p.key, p.kdf, p.v1 = next, key, kdf, false
}

// is reports whether pw is the password.
func (p *accountPassword) is(pw string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return subtle.ConstantTimeCompare(p.raw, []byte(pw)) == 1
}

// changePassword asks the server on conn to replace the password old
// with next (both as a login sends them).
func changePassword(ctx context.Context, conn *Conn, old, next []byte) error {
	if conn.Version() < 6 {
		return fmt.Errorf("client: the server speaks protocol version %d; changing a password needs 6: upgrade it", conn.Version())
	}
	m := proto.ChangePassword{Old: old, New: next}
	t, _, err := conn.Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
	return expect(t, proto.TOK, err)
}

// ErrNotFirstDevice: what needs the account's password was asked of a
// linked device, which has a passphrase of its own instead.
var ErrNotFirstDevice = errors.New("client: this home is a linked device, whose passphrase is its own: change the account's password from its first device")

// ErrWrongPassword: the current password given is not this home's.
var ErrWrongPassword = errors.New("client: the current password is wrong")

// ChangePassword replaces the account's password, old, with next: on the
// server (as its login key) and in the home, whose identity file is
// sealed again with next. It is how an account moved from before login
// keys (EventPasswordMoved) gets a password the server has never seen.
// If the home cannot be written after the server took next, the error
// says so: the home still opens with old, and the account logs in with
// next.
func (c *Client) ChangePassword(ctx context.Context, old, next string) error {
	pw := c.s.password
	if c.acct.linked || !pw.known() {
		return ErrNotFirstDevice
	}
	if !pw.is(old) {
		return ErrWrongPassword
	}
	if err := checkPasswordLen(next); err != nil {
		return err
	}
	if old == next {
		return errors.New("client: the new password is the current one")
	}
	conn := c.Conn()
	if conn == nil {
		return ErrNotConnected
	}
	kdf := c.cfg.KDF
	key := loginKey([]byte(next), c.user, kdf)
	file, err := sealIdentity(identityMagic, c.id, []byte(next), kdf)
	if err != nil {
		return err
	}
	if err := changePassword(ctx, conn, pw.secret(), key); err != nil {
		return fmt.Errorf("client: changing the password: %w", err)
	}
	pw.set([]byte(next), key, kdf)
	name := userRecord(c.user, "identity")
	if err := c.cfg.Storage.Replace(name, file); err != nil {
		return fmt.Errorf("client: the server has the new password, but %s could not be written (%w): this home still opens with the old one", where(c.cfg.Storage, name), err)
	}
	return nil
}

// movePassword moves an account whose server still knows its password
// (a home from before login keys) to its login key, on conn: the server
// takes the login key for the password, and the identity file says so
// from then on. An earlier run may have moved the server and not the
// file: then the login key is already the password. If the move fails,
// the next client of the home tries again.
func (c *Client) movePassword(conn *Conn) {
	pw := c.s.password
	// Once a client: a move the server refuses (both forms of the
	// password wrong) would otherwise count a failed login at every
	// reconnect.
	if !pw.unmoved() || conn.Version() < 6 || !c.moveTried.CompareAndSwap(false, true) {
		return
	}
	c.onConnectTask(func(ctx context.Context) {
		key := pw.loginKey()
		err := changePassword(ctx, conn, pw.secret(), key)
		if errors.Is(err, proto.CodeInvalidCredentials) {
			err = changePassword(ctx, conn, key, key)
		}
		if err != nil {
			return
		}
		if err := markIdentityV2(c.cfg.Storage, userRecord(c.user, "identity")); err != nil {
			return
		}
		pw.moved()
		c.post(Event{Kind: EventPasswordMoved, Text: "your password no longer goes to the server; it did until now, so change it ('securefastchat password') and what this home keeps is sealed with a password the server has never seen"})
	})
}
