package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"securefastchat/proto"
)

// A device's own keys (its Identity) are apart from its account's: the
// master key that signs the account's device list, and the key record the
// account publishes (the first device's keys, which contacts pin and
// compare safety numbers over). On the account's first device they are
// the same keys, and that device holds the master key. A device added
// through a link (AddDevice) keeps, beside its own keys, the account's
// published keys in its "account" record (sealed at rest). It holds the
// master key only if the link made it manage the account's devices (code
// version 4); otherwise it reads and checks the list, but does not change
// it.

// The account record: published box key 32 | master (published sign key)
// 32 | key_sig 64, and in version 2, the master key's seed 32 (a device
// that manages the account's devices). A device that does not manage
// keeps writing version 1, which the build before reads.
const (
	accountMagic   = "SFCACC1"
	accountMagicV2 = "SFCACC2"
)

// account is what a device knows of its account beyond its own keys.
// Static after Load.
type account struct {
	keys      proto.Keys         // the account's published key record
	masterKey ed25519.PrivateKey // the master key, on the device that manages the list; else nil
	linked    bool               // this device was added through a link
}

// master returns the account's master key: the sign key of its published
// record.
func (a *account) master() ed25519.PublicKey { return ed25519.PublicKey(a.keys.SignKey) }

// loadAccount returns the account of the device whose keys are id: its
// "account" record, or, on the first device (which has none), id's own.
func loadAccount(st Storage, canon string, id *Identity) (*account, error) {
	name := userRecord(canon, "account")
	raw, err := st.Read(name)
	if errors.Is(err, fs.ErrNotExist) {
		return &account{keys: id.PublicKeys(canon), masterKey: id.Sign}, nil
	}
	magic, size := accountMagic, proto.KeyLen+ed25519.PublicKeySize+ed25519.SignatureSize
	if bytes.HasPrefix(raw, []byte(accountMagicV2)) {
		magic, size = accountMagicV2, size+ed25519.SeedSize
	}
	var b []byte
	if err == nil {
		b, _, err = openAtRest(localKey(id, canon, "account"), magic, raw, where(st, name))
	}
	if err != nil {
		return nil, fmt.Errorf("client: reading the account record: %w", err)
	}
	if len(b) != size {
		return nil, fmt.Errorf("client: the account record (%s) is damaged", where(st, name))
	}
	k := proto.Keys{BoxKey: b[:32], SignKey: b[32:64], KeySig: b[64:128]}
	if err := proto.VerifyKeys([]byte(canon), &k); err != nil {
		return nil, fmt.Errorf("client: the account record (%s): %w", where(st, name), err)
	}
	a := &account{keys: k, linked: true}
	if len(b) > 128 {
		m := proto.LinkManage{Seed: b[128:]}
		if a.masterKey, err = m.Key(a.master()); err != nil {
			return nil, fmt.Errorf("client: the account record (%s): %w", where(st, name), err)
		}
	}
	return a, nil
}

// saveAccount writes a linked device's account record, with the master
// key if the device manages the account's devices (else nil).
func saveAccount(st Storage, canon string, id *Identity, k *proto.Keys, master ed25519.PrivateKey) error {
	b := append(append(append([]byte(nil), k.BoxKey...), k.SignKey...), k.KeySig...)
	magic := accountMagic
	if master != nil {
		b, magic = append(b, master.Seed()...), accountMagicV2
	}
	err := writeSealed(st, localKey(id, canon, "account"), magic, userRecord(canon, "account"), b)
	clear(b)
	return err
}

// manages reports whether this device manages the account's devices,
// whose list is list: it holds the master key and is on the list.
func (c *Client) manages(list *proto.DeviceList) bool {
	return c.acct.masterKey != nil && list.Index(c.selfDevice()) >= 0
}

// Manages reports whether this device holds the account's master key:
// it adds and removes devices, and changes group memberships.
func (c *Client) Manages() bool { return c.acct.masterKey != nil }

// Linked reports whether this device was added to its account through a
// link (it holds the master key only if the link made it manage: see
// Manages).
func (c *Client) Linked() bool { return c.acct.linked }

// ErrGroupsOnFirstDevice: what only the account's first device does in
// groups: membership changes (create, add, remove, promote, leave), which
// the account's key signs and only that device holds; and, with a server
// before protocol version 5, which keeps group keys for each member's
// first device alone, everything.
var ErrGroupsOnFirstDevice = errors.New("client: this is done on your account's first device, or one linked with 'device link --manage': group membership changes are signed by the account's key, which only those hold (and a server before protocol version 5 keeps group keys for first devices only)")

// ErrLinkedLogin: a device added through a link logs in with its own key
// (Open), never with the account's password.
var ErrLinkedLogin = errors.New("client: this device was added through a link and logs in with its own key; open it instead of logging in with the password")

// groupsHere refuses group work on a linked device when the server (conn,
// if known) keeps group keys for each member's first device only.
func (c *Client) groupsHere(conn *Conn) error {
	if c.acct.linked && conn != nil && conn.Version() < 5 {
		return ErrGroupsOnFirstDevice
	}
	return nil
}

// membershipHere refuses a group membership change on a device without
// the account's key, which signs them.
func (c *Client) membershipHere() error {
	if c.acct.masterKey == nil {
		return ErrGroupsOnFirstDevice
	}
	return nil
}

// AddDevice makes this home a new device of an existing account: it joins
// the link whose code the account's managing device shows (see JoinLink;
// shown gets the new device's id for the user to compare), keeps the
// device's keys sealed with passphrase (which never goes to the server:
// the device logs in with its key), the account's published keys, and the
// session, and returns the device's client. The server is the one the code
// names, at the address the code gives unless cfg.Addr is set.
func AddDevice(ctx context.Context, cfg Config, code, name, passphrase string, shown func(deviceID uint64)) (*Client, error) {
	lc, err := proto.ParseLinkCode(code)
	if err != nil {
		return nil, err
	}
	addr := cfg.Addr
	if addr == "" {
		cfg.Addr = lc.Addr
	}
	canon, err := prepare(&cfg, string(lc.User))
	if err != nil {
		return nil, err
	}
	if len(passphrase) < proto.MinPasswordLen {
		return nil, fmt.Errorf("client: a passphrase for this device's keys is at least %d bytes", proto.MinPasswordLen)
	}
	idName := userRecord(canon, "identity")
	if _, err := cfg.Storage.Read(idName); err == nil {
		return nil, fmt.Errorf("client: %s already holds an identity for %s: this home is one of its devices already", where(cfg.Storage, idName), canon)
	}
	dev, err := joinLink(ctx, code, addr, name, cfg.dialOptions(), shown)
	if err != nil {
		return nil, err
	}
	conn := dev.Conn
	// The account's published keys, which contacts pin: their sign key
	// must be the master key the code names.
	m := proto.UserReq{User: []byte(canon)}
	t, body, err := conn.Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, proto.TGetKeys, id) })
	var kr proto.KeysReply
	if err = expect(t, proto.TKeys, err); err == nil {
		err = kr.Parse(body)
	}
	if err == nil && (string(kr.User) != canon || proto.VerifyKeys([]byte(canon), &kr.Keys) != nil || !bytes.Equal(kr.SignKey, dev.Master)) {
		err = fmt.Errorf("%w: the account's published keys are not those of the master key in the code", ErrPeerKey)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("client: reading the account's keys: %w", err)
	}
	id := &Identity{Box: dev.Box, Sign: dev.Sign}
	if err := saveIdentity(cfg.Storage, idName, id, []byte(passphrase), cfg.KDF); err != nil {
		conn.Close()
		return nil, err
	}
	if err := saveAccount(cfg.Storage, canon, id, &kr.Keys, dev.MasterKey); err != nil {
		conn.Close()
		return nil, err
	}
	c, err := newClient(cfg, canon, id, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.contacts.adopt(dev.Contacts); err != nil {
		conn.Close()
		c.Close()
		return nil, err
	}
	if err := c.hold.adopt(&dev.Hold); err != nil {
		conn.Close()
		c.Close()
		return nil, err
	}
	c.linked.entries = dev.History
	c.linked.copied = HistoryCopied{Asked: lc.CopiesHistory(), Copied: len(dev.History), Total: dev.HistoryTotal}
	if err := c.installNew(conn, dev.Login); err != nil {
		return nil, err
	}
	return c, nil
}

// LinkedHistory returns the history the link copied to this new device
// (a client AddDevice returned), oldest first, for the caller to keep
// where it keeps conversations, and how much of the other device's
// history that is. The client keeps no copy of its own.
func (c *Client) LinkedHistory() ([]proto.LinkHistoryEntry, HistoryCopied) {
	return c.linked.entries, c.linked.copied
}

// Recover starts user's account again from this home when all its devices
// are lost: it makes new keys, and with the account's password makes them
// the account's published keys and this device its first (and only) one.
// The server drops the old devices' sessions and what waits for them;
// contacts see a key change, as when an account is made again, and hold
// what they write until they accept it. Name, contacts, blocks and groups
// stay: before the recovery the account's key until now is read (with the
// password), and after it each group is told that the key changed, naming
// that one (GroupsToldOfRecovery says which were). The home must not hold
// an identity for user.
//
// The password goes as its login key. An account whose password the
// server still knows itself (not used from a client of protocol version 6
// since before login keys) refuses it as invalid_credentials; the error
// says to use RecoverPasswordAsIs.
func Recover(ctx context.Context, cfg Config, user, password string) (*Client, error) {
	return recoverAccount(ctx, cfg, user, password, false)
}

// RecoverPasswordAsIs is Recover for an account whose server still knows
// the password itself: the password goes as it is, and then, on a server
// of protocol version 6, the account moves to its login key at once. The
// server has seen the password: change it afterwards (ChangePassword).
func RecoverPasswordAsIs(ctx context.Context, cfg Config, user, password string) (*Client, error) {
	return recoverAccount(ctx, cfg, user, password, true)
}

// ErrPasswordRefused: a recovery's password was refused, as its login key.
var ErrPasswordRefused = errors.New("client: the server refused the password. If the account has not been used since before login keys (protocol version 6), its server still knows the password itself: recover with the password as it is ('recover --password-as-is'), then change it")

func recoverAccount(ctx context.Context, cfg Config, user, password string, asIs bool) (*Client, error) {
	canon, err := prepare(&cfg, user)
	if err != nil {
		return nil, err
	}
	idName := userRecord(canon, "identity")
	if _, err := cfg.Storage.Read(idName); err == nil {
		return nil, fmt.Errorf("client: %s already holds an identity for %s: recover from a new home (this one can log in)", where(cfg.Storage, idName), canon)
	}
	id, err := NewIdentity()
	if err != nil {
		return nil, err
	}
	keys := id.PublicKeys(canon)
	st := &proto.DeviceStatement{User: []byte(canon), Op: proto.DeviceAdd, DeviceID: proto.KeyRecordID(&keys),
		Name: []byte(cfg.DeviceName), BoxKey: keys.BoxKey, SignKey: keys.SignKey, Time: time.Now().Unix()}
	st.Sign(id.Sign)
	conn, err := Dial(ctx, cfg.Addr, cfg.dialOptions())
	if err != nil {
		return nil, err
	}
	if conn.Version() < 4 {
		conn.Close()
		return nil, fmt.Errorf("client: the server cannot recover accounts (it speaks version %d; 4 is needed): upgrade it", conn.Version())
	}
	pw := &accountPassword{canon: canon, kdf: cfg.KDF, raw: []byte(password), v1: asIs}
	refused := func(err error) error {
		if !asIs && errors.Is(err, proto.CodeInvalidCredentials) {
			err = fmt.Errorf("%w (%w)", ErrPasswordRefused, err)
		}
		return err
	}
	former, err := formerKey(ctx, cfg, canon, pw)
	if errors.Is(err, proto.CodeInvalidCredentials) {
		conn.Close()
		return nil, refused(err)
	}
	m := proto.Recover{User: []byte(user), Password: pw.secret(), Keys: keys, Statement: st.Append(nil)}
	ok, err := loginRequest(ctx, conn, func(b []byte, rid uint32) []byte { return m.Append(b, rid) })
	if err != nil {
		conn.Close()
		return nil, refused(err)
	}
	if asIs && conn.Version() >= 6 {
		if err := changePassword(ctx, conn, pw.secret(), pw.loginKey()); err == nil {
			pw.moved()
		} // else the next connection moves it
	}
	c, err := keepFirstDevice(cfg, canon, id, pw, conn, ok)
	if err != nil {
		return nil, err
	}
	if _, err := c.ensureDevices(ctx); err == nil {
		c.devicesMade.Store(true)
	}
	c.tellGroupsKeyChanged(ctx, former)
	return c, nil
}

// formerKey reads, before a recovery replaces them, the account's
// published sign key (its master key until now): with the password, on a
// session that takes no deliveries. nil if there is none to read (the
// account's first device was removed, so no password login, or the
// server is older); an error only when the password is refused.
func formerKey(ctx context.Context, cfg Config, canon string, pw *accountPassword) (ed25519.PublicKey, error) {
	conn, err := Dial(ctx, cfg.Addr, cfg.dialOptions())
	if err != nil {
		return nil, nil
	}
	defer conn.Close()
	if conn.Version() < 6 {
		return nil, nil
	}
	if _, err := conn.LoginWith(ctx, canon, string(pw.secret()), proto.LoginNoDeliveries); err != nil {
		if errors.Is(err, proto.CodeInvalidCredentials) {
			return nil, err
		}
		return nil, nil
	}
	req := proto.UserReq{User: []byte(canon)}
	t, body, err := conn.Request(ctx, func(b []byte, id uint32) []byte { return req.Append(b, proto.TGetKeys, id) })
	var kr proto.KeysReply
	if expect(t, proto.TKeys, err) != nil || kr.Parse(body) != nil || string(kr.User) != canon || proto.VerifyKeys([]byte(canon), &kr.Keys) != nil {
		return nil, nil
	}
	return ed25519.PublicKey(kr.SignKey), nil
}

// tellGroupsKeyChanged says, in each group the recovered user is in, that
// their key changed from former (announceKeyChange), and keeps what came
// of it for GroupsToldOfRecovery.
func (c *Client) tellGroupsKeyChanged(ctx context.Context, former ed25519.PublicKey) {
	groups, err := c.Groups(ctx)
	c.recovered.failed = map[string]error{}
	for _, g := range groups {
		err := errors.New("client: the account's key before the recovery could not be read (its first device was removed, or the server is older)")
		if former != nil {
			err = c.groups.announceKeyChange(ctx, g, former)
		}
		if err != nil {
			c.recovered.failed[g] = err
		} else {
			c.recovered.told = append(c.recovered.told, g)
		}
	}
	if err != nil {
		c.recovered.failed[""] = fmt.Errorf("client: listing your groups: %w", err)
	}
}

// GroupsToldOfRecovery returns, after Recover, the groups in which the
// recovered account said that its key changed (so their members check
// what it signed before), and those it could not, with why (under "" if
// the groups could not be listed). Each of the latter has to be made
// again.
func (c *Client) GroupsToldOfRecovery() (told []string, failed map[string]error) {
	return c.recovered.told, c.recovered.failed
}
