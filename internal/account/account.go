// Package account signs users up, logs them in and resumes their sessions:
// password hashing with bounded concurrency, session tokens, and the
// throttles against guessing and enumeration. One Service serves all
// shards, so every limit is global.
//
// Refusals are returned as proto.ErrorCode values (which are errors), so
// the caller can send them to the client as they are. Login gives the same
// code, proto.CodeInvalidCredentials, for an unknown user, a wrong password,
// a disabled account and a throttled account, after the same argon2 work.
package account

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"securefastchat/internal/passwd"
	"securefastchat/proto"
	"securefastchat/ratelimit"
	"securefastchat/store"
)

// Limits are the throttles. The zero value of a field means its default.
type Limits struct {
	LoginBurst, SignupBurst, LookupBurst, ResumeBurst int
	LoginEvery, SignupEvery, LookupEvery, ResumeEvery time.Duration
	// FailuresBeforeThrottle failures per account within FailureWindow
	// throttle the account for ThrottleFor.
	FailuresBeforeThrottle int
	FailureWindow          time.Duration
	ThrottleFor            time.Duration
}

// DefaultLimits are the production throttles.
var DefaultLimits = Limits{
	LoginBurst: 20, LoginEvery: 3 * time.Second, // 20 a minute per address
	SignupBurst: 6, SignupEvery: 30 * time.Second, // per address
	LookupBurst: 100, LookupEvery: 9 * time.Second, // per user: 100 per 15 min
	// Resumes spend no password hash and a 256-bit token cannot be guessed;
	// after a restart every client behind one address reconnects at once.
	ResumeBurst: 200, ResumeEvery: 50 * time.Millisecond,
	FailuresBeforeThrottle: 10, FailureWindow: 15 * time.Minute, ThrottleFor: 15 * time.Minute,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	pick := func(v, def int) int {
		if v == 0 {
			return def
		}
		return v
	}
	pickD := func(v, def time.Duration) time.Duration {
		if v == 0 {
			return def
		}
		return v
	}
	return Limits{
		LoginBurst: pick(l.LoginBurst, d.LoginBurst), LoginEvery: pickD(l.LoginEvery, d.LoginEvery),
		SignupBurst: pick(l.SignupBurst, d.SignupBurst), SignupEvery: pickD(l.SignupEvery, d.SignupEvery),
		LookupBurst: pick(l.LookupBurst, d.LookupBurst), LookupEvery: pickD(l.LookupEvery, d.LookupEvery),
		ResumeBurst: pick(l.ResumeBurst, d.ResumeBurst), ResumeEvery: pickD(l.ResumeEvery, d.ResumeEvery),
		FailuresBeforeThrottle: pick(l.FailuresBeforeThrottle, d.FailuresBeforeThrottle),
		FailureWindow:          pickD(l.FailureWindow, d.FailureWindow),
		ThrottleFor:            pickD(l.ThrottleFor, d.ThrottleFor),
	}
}

// Session lifetimes. A session's last use is recorded at most once per
// TouchEvery, so the idle expiry is exact to within that.
// A user has at most MaxSessions stored sessions (programs and machines
// logged in): a new one past it revokes the least recently used. Expired
// sessions are deleted by the server's sweeper.
const (
	SessionIdle = 30 * 24 * time.Hour
	SessionMax  = 90 * 24 * time.Hour
	TouchEvery  = time.Hour
	MaxSessions = 20
)

// SignupPolicy says who may create an account.
type SignupPolicy string

// Sign-up policies.
const (
	SignupOpen   SignupPolicy = "open"   // anyone
	SignupInvite SignupPolicy = "invite" // whoever has an unused invite code (admin invite)
	SignupClosed SignupPolicy = "closed" // no one; the operator creates no accounts either
)

// ParseSignupPolicy checks a policy's name.
func ParseSignupPolicy(s string) (SignupPolicy, error) {
	switch p := SignupPolicy(s); p {
	case SignupOpen, SignupInvite, SignupClosed:
		return p, nil
	}
	return "", fmt.Errorf("unknown sign-up policy %q: use open, invite or closed", s)
}

// Options configure a Service.
type Options struct {
	// Signup is who may sign up. If empty, SignupOpen.
	Signup SignupPolicy
	// Hasher hashes passwords. Required.
	Hasher *passwd.Hasher
	// Limits are the throttles; zero fields take DefaultLimits.
	Limits Limits
	// Now is the clock. If nil, time.Now is used.
	Now func() time.Time
	// Logger logs what fails after a change is made (cleanup). If nil,
	// nothing is logged.
	Logger *slog.Logger
}

// Service runs account operations. It is safe for concurrent use.
type Service struct {
	st     *store.Store
	hasher *passwd.Hasher
	now    func() time.Time
	signup SignupPolicy
	log    *slog.Logger

	loginIP  *ratelimit.Limiter
	resumeIP *ratelimit.Limiter
	signupIP *ratelimit.Limiter
	lookups  *ratelimit.Limiter
	failures *ratelimit.Throttle

	devices deviceLists // devices.go
}

// New returns a Service over st.
func New(st *store.Store, o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	l := o.Limits.withDefaults()
	if o.Signup == "" {
		o.Signup = SignupOpen
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{
		st: st, hasher: o.Hasher, now: o.Now, signup: o.Signup, log: o.Logger,
		loginIP:  ratelimit.New(l.LoginBurst, l.LoginEvery, o.Now),
		resumeIP: ratelimit.New(l.ResumeBurst, l.ResumeEvery, o.Now),
		signupIP: ratelimit.New(l.SignupBurst, l.SignupEvery, o.Now),
		lookups:  ratelimit.New(l.LookupBurst, l.LookupEvery, o.Now),
		failures: ratelimit.NewThrottle(l.FailuresBeforeThrottle, l.FailureWindow, l.ThrottleFor, o.Now),
	}
}

// Hasher returns the password hasher in use.
func (s *Service) Hasher() *passwd.Hasher { return s.hasher }

// Result is a successful signup, login or resume.
type Result struct {
	User    string // canonical
	Display string
	Token   []byte // nil for a resume: the presented token stays valid
	Expires time.Time
	KeyID   uint64 // proto.KeyRecordID of the user's published keys
	// Device is the device logged in: the one a device login named, the
	// one a resumed session was made for, or, for a sign-up or a password
	// login, the account's first device (store.FirstDevice).
	Device uint64
}

// KeyID returns proto.KeyRecordID of a user's published keys: the id of
// the account's first device.
func KeyID(u *store.User) uint64 { return store.FirstDevice(u) }

// SignupPolicy returns who may sign up.
func (s *Service) SignupPolicy() SignupPolicy { return s.signup }

// Signup creates an account with its public keys and logs it in. Under
// SignupInvite, invite must be an unused code; it is used up in the same
// transaction that creates the account, and it is checked before anything
// about the name is said. checked says the same connection has just asked
// whether the name is free (Available), which spent the address's sign-up
// token for both: one sign-up costs one token.
func (s *Service) Signup(ctx context.Context, addr string, user, password []byte, keys *proto.Keys, invite []byte, checked bool) (*Result, error) {
	switch s.signup {
	case SignupClosed:
		return nil, proto.CodeSignupClosed
	case SignupInvite:
		if len(invite) == 0 {
			return nil, proto.CodeInvalidInvite
		}
	}
	if !checked {
		if err := ratelimit.Refuse(s.signupIP.Take(addr), "too many sign-ups from this address"); err != nil {
			return nil, err
		}
	}
	canon, err := proto.AppendCanonicalUsername(nil, user)
	if err != nil {
		return nil, proto.CodeInvalidUsername
	}
	if len(password) < proto.MinPasswordLen || len(password) > proto.MaxPasswordLen {
		return nil, proto.CodeInvalidPassword
	}
	if err := proto.VerifyKeys(canon, keys); err != nil {
		return nil, proto.CodeInvalidKey
	}
	if s.signup == SignupInvite {
		// Checked before the name and the hash, so a wrong code learns
		// nothing and costs no argon2 work; used up only with the account,
		// below.
		if ok, err := s.st.InviteValid(string(invite)); err != nil {
			return nil, storageErr("signup", err)
		} else if !ok {
			return nil, proto.CodeInvalidInvite
		}
	}
	if taken, err := s.st.UserExists(string(canon)); err != nil {
		return nil, fmt.Errorf("account: signup: %w", err)
	} else if taken {
		return nil, proto.CodeUsernameTaken
	}
	phc, err := s.hasher.Hash(ctx, password)
	if err != nil {
		return nil, fmt.Errorf("account: hashing: %w", err)
	}
	u := &store.User{
		Name: string(canon), Display: string(user), PasswordHash: phc,
		BoxKey: copyB(keys.BoxKey), SignKey: copyB(keys.SignKey), KeySig: copyB(keys.KeySig),
		Created: s.now(),
	}
	if s.signup == SignupInvite {
		err = s.st.CreateUserWithInvite(u, string(invite))
	} else {
		err = s.st.CreateUser(u)
	}
	if err != nil {
		switch {
		case errors.Is(err, store.ErrUserExists):
			return nil, proto.CodeUsernameTaken
		case errors.Is(err, store.ErrInvalidInvite):
			return nil, proto.CodeInvalidInvite
		}
		return nil, storageErr("signup", err)
	}
	return s.newSession(u, KeyID(u))
}

// ErrFirstDeviceRemoved: a password login, which is the account's first
// device's, for an account whose managing device removed that device.
var ErrFirstDeviceRemoved = &proto.RemoteError{Code: proto.CodeForbidden,
	Message: "this account's first device was removed from its device list: log in on a device on the list, with its own key, or recover the account"}

// Login checks a password and opens a session for the account's first
// device, while that device is on the account's list.
func (s *Service) Login(ctx context.Context, addr string, user, password []byte) (*Result, error) {
	u, err := s.checkPassword(ctx, addr, user, password)
	if err != nil {
		return nil, err
	}
	if on, err := s.onList(u, KeyID(u)); err != nil {
		return nil, storageErr("login", err)
	} else if !on {
		return nil, ErrFirstDeviceRemoved
	}
	return s.newSession(u, KeyID(u))
}

// checkPassword returns the account whose password this is: within the
// address's rate, at the same cost whether the name exists or not, and
// held by the account's failure throttle. A hash made with older
// parameters is made again.
func (s *Service) checkPassword(ctx context.Context, addr string, user, password []byte) (*store.User, error) {
	if err := ratelimit.Refuse(s.loginIP.Take(addr), "too many password logins from this address"); err != nil {
		return nil, err
	}
	canon, err := proto.AppendCanonicalUsername(nil, user)
	if err != nil || len(password) > proto.MaxPasswordLen {
		// No account can match: spend the same work as a wrong password.
		if _, _, err := s.hasher.Verify(ctx, "", password[:min(len(password), proto.MaxPasswordLen)]); err != nil {
			return nil, err
		}
		return nil, proto.CodeInvalidCredentials
	}
	name := string(canon)
	u, err := s.st.GetUser(name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("account: login: %w", err)
	}
	phc := ""
	if u != nil {
		phc = u.PasswordHash
	}
	ok, rehash, err := s.hasher.Verify(ctx, phc, password)
	if err != nil {
		return nil, fmt.Errorf("account: verifying: %w", err)
	}
	if s.failures.Throttled(name) {
		return nil, proto.CodeInvalidCredentials
	}
	if !ok || u == nil || u.Disabled {
		s.failures.Fail(name)
		return nil, proto.CodeInvalidCredentials
	}
	s.failures.Succeed(name)
	if rehash {
		if phc, err := s.hasher.Hash(ctx, password); err == nil {
			_ = s.st.SetPasswordHash(name, phc) // best effort: the old hash still works
		}
	}
	return u, nil
}

// ChangePassword replaces the password of user (canonical, logged in on
// the session of token) with next, given the current one: checked as a
// login's is, within the address's password rate and the account's
// failure throttle, so a session cannot guess the password faster than a
// login could. Every other session's token is revoked with it: a
// connection open on one goes on, and its next login is by a device key
// or the new password.
func (s *Service) ChangePassword(ctx context.Context, addr, user string, token, old, next []byte) error {
	if len(next) < proto.MinPasswordLen || len(next) > proto.MaxPasswordLen {
		return proto.CodeInvalidPassword
	}
	if _, err := s.checkPassword(ctx, addr, []byte(user), old); err != nil {
		return err
	}
	phc, err := s.hasher.Hash(ctx, next)
	if err != nil {
		return fmt.Errorf("account: hashing: %w", err)
	}
	if _, err := s.st.ChangePassword(user, phc, store.HashToken(token)); err != nil {
		return storageErr("change password", err)
	}
	return nil
}

// Resume checks a session token presented after a fresh handshake.
func (s *Service) Resume(addr string, user, token []byte) (*Result, error) {
	if err := ratelimit.Refuse(s.resumeIP.Take(addr), "too many logins from this address"); err != nil {
		return nil, err
	}
	canon, err := proto.AppendCanonicalUsername(nil, user)
	if err != nil || len(token) != proto.TokenLen {
		return nil, proto.CodeInvalidToken
	}
	h := store.HashToken(token)
	ss, err := s.st.GetSession(h)
	if errors.Is(err, store.ErrNotFound) {
		return nil, proto.CodeInvalidToken
	} else if err != nil {
		return nil, fmt.Errorf("account: resume: %w", err)
	}
	now := s.now()
	if ss.User != string(canon) {
		return nil, proto.CodeInvalidToken
	}
	if now.Sub(ss.LastSeen) > SessionIdle || now.Sub(ss.Created) > SessionMax {
		_ = s.st.DeleteSession(h)
		return nil, proto.CodeInvalidToken
	}
	u, err := s.st.GetUser(ss.User)
	if err != nil || u.Disabled {
		return nil, proto.CodeInvalidToken
	}
	if on, err := s.onList(u, ss.Device); err != nil {
		return nil, err
	} else if !on {
		_ = s.st.DeleteSession(h) // its device was removed
		return nil, proto.CodeInvalidToken
	}
	// last_seen only measures idleness in days: write it (a synced
	// transaction) at most once per TouchEvery, not on every reconnect.
	if now.Sub(ss.LastSeen) >= TouchEvery {
		if err := s.st.TouchSession(h, now); err != nil && !errors.Is(err, store.ErrUnavailable) {
			return nil, storageErr("resume", err)
		} // when the disk is full, last_seen is not updated; the login goes on
	}
	return &Result{User: u.Name, Display: u.Display, Expires: expiry(ss.Created, now), KeyID: KeyID(u), Device: ss.Device}, nil
}

// Logout revokes the session of token.
func (s *Service) Logout(token []byte) error {
	if err := s.st.DeleteSession(store.HashToken(token)); err != nil {
		return storageErr("logout", err)
	}
	return nil
}

// Available reports whether a name can be signed up. It shares the signup
// limit, since it reveals the same thing. On an invite-only server it
// says every valid name is free (the sign-up, with its code, says
// otherwise), and on a closed one it refuses.
func (s *Service) Available(addr string, user []byte) (bool, error) {
	if s.signup == SignupClosed {
		return false, proto.CodeSignupClosed
	}
	if err := ratelimit.Refuse(s.signupIP.Take(addr), "too many sign-up checks from this address"); err != nil {
		return false, err
	}
	canon, err := proto.AppendCanonicalUsername(nil, user)
	if err != nil {
		return false, proto.CodeInvalidUsername
	}
	if s.signup == SignupInvite {
		// Whether a name exists is told only with a valid code, at the
		// sign-up itself: without one, names cannot be listed.
		return true, nil
	}
	taken, err := s.st.UserExists(string(canon))
	if err != nil {
		return false, fmt.Errorf("account: checking name: %w", err)
	}
	return !taken, nil
}

// Keys returns another user's public keys for requester. Lookups are
// limited per requester, except (free) those of users who share a group
// with the requester, which reveal nothing new and which group members
// need for every key they wrap.
func (s *Service) Keys(requester string, user []byte, free bool) (*store.User, error) {
	if !free {
		if err := ratelimit.Refuse(s.lookups.Take(requester), "too many key lookups"); err != nil {
			return nil, err
		}
	}
	canon, err := proto.AppendCanonicalUsername(nil, user)
	if err != nil {
		return nil, proto.CodeInvalidUsername
	}
	u, err := s.st.GetUser(string(canon))
	if errors.Is(err, store.ErrNotFound) || (err == nil && u.Disabled) {
		return nil, proto.CodeNoSuchUser
	} else if err != nil {
		return nil, fmt.Errorf("account: lookup: %w", err)
	}
	return u, nil
}

// FirstContact charges requester's lookup budget for a message to
// someone it has no relation with, before anything about the name is
// known: a name that exists and one that does not cost the same, so sends
// cannot list who has an account.
func (s *Service) FirstContact(requester string) error {
	return ratelimit.Refuse(s.lookups.Take(requester), "too many first messages to people you have not written to (they share the key-lookup budget)")
}

// newSession opens a session of u's device dev.
func (s *Service) newSession(u *store.User, dev uint64) (*Result, error) {
	token := make([]byte, proto.TokenLen)
	if _, err := rand.Read(token); err != nil {
		return nil, fmt.Errorf("account: reading randomness: %w", err)
	}
	now := s.now()
	if _, err := s.st.PutSessionCapped(&store.Session{TokenHash: store.HashToken(token), User: u.Name, Created: now, LastSeen: now, Device: dev}, MaxSessions); err != nil {
		if !errors.Is(err, store.ErrUnavailable) {
			return nil, storageErr("session", err)
		}
		// The disk is full: let the user in (to read what is queued) with
		// a token that is not stored; resuming will ask for the password.
	}
	return &Result{User: u.Name, Display: u.Display, Token: token, Expires: expiry(now, now), KeyID: KeyID(u), Device: dev}, nil
}

func expiry(created, now time.Time) time.Time {
	idle, abs := now.Add(SessionIdle), created.Add(SessionMax)
	if idle.Before(abs) {
		return idle
	}
	return abs
}

func storageErr(op string, err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		return fmt.Errorf("account: %s: %w (%v)", op, proto.CodeStorageUnavailable, err)
	}
	return fmt.Errorf("account: %s: %w", op, err)
}

func copyB(b []byte) []byte { return append([]byte(nil), b...) }
