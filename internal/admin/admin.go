// Package admin is the operator's HTTP listener: health and readiness
// probes, Prometheus metrics, pprof, and the admin API (users, sessions,
// invites, stats, hot backups) that 'securefastchat admin' and
// 'securefastchat backup' call, and the client they call it with.
//
// Everything but /healthz and /readyz needs the admin token, on loopback
// too (every local user and process, and any web page the operator opens,
// can reach loopback). Requests must name the listener in their Host
// header (an IP address, localhost, or a configured name: a DNS rebinding
// page cannot), changes must be JSON (a browser form cannot send it across
// origins), failed tokens are throttled per address and logged, and the
// listener bounds its connections and the time each may take.
package admin

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"time"

	"securefastchat/internal/backup"
	"securefastchat/internal/metrics"
	"securefastchat/internal/server"
	"securefastchat/proto"
	"securefastchat/store"
)

// ErrTokenRequired: the listener has no token.
var ErrTokenRequired = errors.New("admin: the admin listener needs a token (SFC_ADMIN_TOKEN, or the one the server keeps in its data directory)")

// Config configures the listener.
type Config struct {
	// Addr is where to listen, host:port. Required.
	Addr string
	// Token is required as "Authorization: Bearer TOKEN" on every path but
	// /healthz and /readyz, at least MinTokenLen characters. Required.
	Token string
	// StallTimeout cuts off a backup download that makes no progress for
	// that long. If zero, 30 s.
	StallTimeout time.Duration
	// Hosts are names, besides IP addresses and localhost, that requests
	// may give in their Host header (a name the operator reaches the
	// listener by).
	Hosts []string
	// Server is the running server. Required.
	Server *server.Server
	// Metrics serves /metrics. Required.
	Metrics *metrics.Metrics
	// Logger receives the admin actions. If nil, slog.Default().
	Logger *slog.Logger
	// Listener, if set, is used instead of listening on Addr (so the port
	// can be taken before the server starts).
	Listener net.Listener
}

// Admin is a running admin listener.
type Admin struct {
	cfg      Config
	ln       net.Listener
	http     *http.Server
	done     chan error
	failures *failures     // failed tokens per address
	backups  chan struct{} // one backup at a time (each stages a copy of the store)
}

// IsLoopback reports whether a listen address is on loopback only.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckAccess checks that a listener's token is set and long enough.
func CheckAccess(addr, token string) error {
	if token == "" {
		return ErrTokenRequired
	}
	if len(token) < MinTokenLen {
		return fmt.Errorf("admin: the token (SFC_ADMIN_TOKEN) must be at least %d characters", MinTokenLen)
	}
	return nil
}

// Start listens and serves.
func Start(cfg Config) (*Admin, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StallTimeout == 0 {
		cfg.StallTimeout = 30 * time.Second
	}
	if err := CheckAccess(cfg.Addr, cfg.Token); err != nil {
		return nil, err
	}
	ln := cfg.Listener
	var err error
	if ln == nil {
		ln, err = net.Listen("tcp", cfg.Addr)
	}
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	a := &Admin{cfg: cfg, ln: ln, done: make(chan error, 1), failures: newFailures(), backups: make(chan struct{}, 1)}
	a.http = &http.Server{
		Handler:           a.guard(a.routes()),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second, // a backup download extends its own, as it makes progress
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	go func() { a.done <- a.http.Serve(limitListener(ln, MaxConns)) }()
	cfg.Logger.Info("admin listener", "addr", ln.Addr().String(), "token", cfg.Token != "")
	return a, nil
}

// Addr returns the address the listener is on.
func (a *Admin) Addr() string { return a.ln.Addr().String() }

// Close stops the listener, letting requests in flight finish until ctx
// ends.
func (a *Admin) Close(ctx context.Context) error {
	err := a.http.Shutdown(ctx)
	<-a.done
	return err
}

func (a *Admin) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !a.cfg.Server.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", a.auth(a.cfg.Metrics.Handler()))
	mux.Handle("/debug/pprof/", a.auth(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/cmdline", a.auth(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("/debug/pprof/profile", a.auth(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/symbol", a.auth(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("/debug/pprof/trace", a.auth(http.HandlerFunc(pprof.Trace)))
	mux.Handle("GET /v1/users", a.auth(http.HandlerFunc(a.users)))
	mux.Handle("POST /v1/users/{name}/disable", a.auth(a.userAction("disable")))
	mux.Handle("POST /v1/users/{name}/enable", a.auth(a.userAction("enable")))
	mux.Handle("POST /v1/users/{name}/revoke", a.auth(a.userAction("revoke")))
	mux.Handle("DELETE /v1/users/{name}", a.auth(a.userAction("delete")))
	mux.Handle("GET /v1/stats", a.auth(http.HandlerFunc(a.stats)))
	mux.Handle("POST /v1/invites", a.auth(http.HandlerFunc(a.invites)))
	mux.Handle("GET /v1/backup", a.auth(http.HandlerFunc(a.backup)))
	return mux
}

// auth requires the token; failures are throttled per address and
// logged.
func (a *Admin) auth(h http.Handler) http.Handler {
	want := []byte("Bearer " + a.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip := remoteIP(r)
		if wait := a.failures.blocked(ip); wait > 0 {
			w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
			writeErr(w, http.StatusTooManyRequests, fmt.Sprintf("too many wrong tokens from this address; retry in %s", wait.Round(time.Second)))
			return
		}
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			if a.failures.fail(ip) {
				a.cfg.Logger.Warn("admin: a request with a wrong or missing token", "remote", r.RemoteAddr, "path", r.URL.Path)
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="securefastchat admin"`)
			writeErr(w, http.StatusUnauthorized, "a valid admin token is required (Authorization: Bearer ...)")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// APIError is the body of every error the API returns.
type APIError struct {
	Error string `json:"error"`
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, APIError{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// User is one row of GET /v1/users.
type User struct {
	Name        string    `json:"name"`
	Display     string    `json:"display"`
	Created     time.Time `json:"created"`
	Disabled    bool      `json:"disabled"`
	Online      bool      `json:"online"`
	Queued      int64     `json:"queued"`
	QueuedBytes int64     `json:"queued_bytes"`
}

func (a *Admin) users(w http.ResponseWriter, r *http.Request) {
	us, err := a.cfg.Server.Store.ListUsers()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := make([]User, 0, len(us))
	for _, u := range us {
		out = append(out, User{Name: u.Name, Display: u.Display, Created: u.Created, Disabled: u.Disabled,
			Online: a.cfg.Server.Set.IsOnline(u.Name), Queued: u.Queued, QueuedBytes: u.QueuedBytes})
	}
	writeJSON(w, http.StatusOK, out)
}

// ActionResult answers a user action.
type ActionResult struct {
	User     string `json:"user"`
	Action   string `json:"action"`
	Sessions int    `json:"sessions_revoked"`
	Kicked   bool   `json:"disconnected"`
}

func (a *Admin) userAction(action string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, err := proto.CanonicalUsername(r.PathValue("name"))
		if err != nil {
			writeErr(w, http.StatusBadRequest, "not a user name")
			return
		}
		s := a.cfg.Server
		res := ActionResult{User: name, Action: action}
		switch action {
		case "disable":
			err = s.Store.SetDisabled(name, true)
		case "enable":
			err = s.Store.SetDisabled(name, false)
		case "delete":
			err = s.Store.DeleteUser(name)
		case "revoke":
			if ok, e := s.Store.UserExists(name); e != nil {
				err = e
			} else if !ok {
				err = store.ErrNotFound
			}
		}
		if err == nil && action != "enable" {
			if action != "delete" {
				res.Sessions, err = s.Store.DeleteUserSessions(name)
			}
			res.Kicked = s.Set.Kick(name)
		}
		switch {
		case errors.Is(err, store.ErrNotFound):
			writeErr(w, http.StatusNotFound, "no such user")
			return
		case err != nil:
			writeErr(w, http.StatusInternalServerError, err.Error())
			return
		}
		a.cfg.Logger.Info("admin", "action", action, "user", name, "sessions_revoked", res.Sessions, "disconnected", res.Kicked, "remote", r.RemoteAddr)
		writeJSON(w, http.StatusOK, res)
	})
}

// Stats is GET /v1/stats.
type Stats struct {
	Addr          string           `json:"addr"`
	Fingerprint   string           `json:"fingerprint"`
	Ready         bool             `json:"ready"`
	Signup        string           `json:"signup"`
	Users         int              `json:"users"`
	Online        int              `json:"online"`
	Unauth        int              `json:"unauthenticated_connections"`
	ShardConns    []int64          `json:"shard_connections"`
	QueuedMsgs    int64            `json:"queued_messages"`
	QueuedBytes   int64            `json:"queued_bytes"`
	Counters      map[string]int64 `json:"counters"`
	Goroutines    int              `json:"goroutines"`
	HeapInuseByte uint64           `json:"heap_inuse_bytes"`
}

func (a *Admin) stats(w http.ResponseWriter, r *http.Request) {
	s := a.cfg.Server
	st := &s.Set.Stats
	out := Stats{Addr: s.Addr(), Fingerprint: s.Key.Public.Fingerprint(), Ready: s.Ready(), Signup: string(s.Accounts.SignupPolicy()),
		Online: s.Set.Online(), Unauth: s.Set.Unauthenticated(), Goroutines: runtime.NumGoroutine()}
	if us, err := s.Store.ListUsers(); err == nil {
		out.Users = len(us)
	}
	for i := 0; i < s.Set.Len(); i++ {
		out.ShardConns = append(out.ShardConns, s.Set.Shard(i).Conns())
	}
	out.QueuedMsgs, out.QueuedBytes, _ = s.Store.QueueTotals()
	out.Counters = map[string]int64{
		"connections_accepted": st.Accepted.Load(), "connections_refused": st.Refused.Load(),
		"logins_ok": st.LoginsOK.Load(), "logins_failed": st.LoginsFailed.Load(),
		"messages_routed": st.Routed.Load(), "messages_delivered": st.Delivered.Load(), "messages_queued": st.Queued.Load(),
		"messages_from_queue": st.FromQueue.Load(), "messages_expired": s.Expired.Load() + st.ExpiredAtFetch.Load(),
		"queue_full": st.QueueFull.Load(), "store_errors": st.StoreErrors.Load(), "slow_consumers": st.SlowConsumers.Load(),
		"protocol_errors": st.ProtocolErrors.Load(), "panics": st.Panics.Load(), "broadcasts": st.Broadcasts.Load(),
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	out.HeapInuseByte = ms.HeapInuse
	writeJSON(w, http.StatusOK, out)
}

// InviteRequest is the body of POST /v1/invites.
type InviteRequest struct {
	Count   int    `json:"count"`   // 1 if zero, at most 100
	Expires string `json:"expires"` // a duration ("72h"); 7 days if empty
}

// InviteResponse lists the new codes.
type InviteResponse struct {
	Codes   []string  `json:"codes"`
	Expires time.Time `json:"expires"`
	// Signup is the server's sign-up policy: codes are needed only under
	// "invite".
	Signup string `json:"signup"`
}

// newInviteCode is 80 random bits in base32, in groups of four.
func newInviteCode() string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("admin: no randomness: " + err.Error())
	}
	s := base32.StdEncoding.EncodeToString(b[:])
	return s[0:4] + "-" + s[4:8] + "-" + s[8:12] + "-" + s[12:16]
}

func (a *Admin) invites(w http.ResponseWriter, r *http.Request) {
	var req InviteRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4096))
	if err == nil && len(body) > 0 {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		writeErr(w, http.StatusBadRequest, "the body must be JSON: {\"count\": N, \"expires\": \"72h\"}")
		return
	}
	if req.Count == 0 {
		req.Count = 1
	}
	ttl := 7 * 24 * time.Hour
	if req.Expires != "" {
		d, err := time.ParseDuration(req.Expires)
		if err != nil || d <= 0 || d > 365*24*time.Hour {
			writeErr(w, http.StatusBadRequest, "expires must be a duration between 1s and 8760h")
			return
		}
		ttl = d
	}
	if req.Count < 1 || req.Count > 100 {
		writeErr(w, http.StatusBadRequest, "count must be 1 to 100")
		return
	}
	res := InviteResponse{Expires: time.Now().Add(ttl).UTC().Truncate(time.Second), Signup: string(a.cfg.Server.Accounts.SignupPolicy())}
	for i := 0; i < req.Count; i++ {
		code := newInviteCode()
		if err := a.cfg.Server.Store.AddInvite(code, res.Expires); err != nil {
			writeErr(w, http.StatusInternalServerError, err.Error())
			return
		}
		res.Codes = append(res.Codes, code)
	}
	a.cfg.Logger.Info("admin", "action", "invite", "count", req.Count, "expires", res.Expires, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, res)
}

// backup takes a snapshot of the store into a file in the data directory
// (the store's read transaction lasts only as long as a local copy, so
// writers are never held up by the client), then streams that file; a
// client that stops reading for Config.StallTimeout is cut off.
func (a *Admin) backup(w http.ResponseWriter, r *http.Request) {
	select {
	case a.backups <- struct{}{}:
		defer func() { <-a.backups }()
	default:
		writeErr(w, http.StatusConflict, "a backup is already running; try again when it is done")
		return
	}
	f, err := os.CreateTemp(a.cfg.Server.DataDir(), ".backup-*.tar")
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "cannot stage the backup: "+err.Error())
		return
	}
	defer os.Remove(f.Name())
	defer f.Close()
	m, err := backup.Write(f, a.cfg.Server)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		a.cfg.Logger.Error("backup failed", "err", err, "remote", r.RemoteAddr)
		writeErr(w, http.StatusInternalServerError, "backup failed: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Disposition", `attachment; filename="securefastchat-backup.tar"`)
	rc := http.NewResponseController(w)
	buf := make([]byte, 64<<10)
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(a.cfg.StallTimeout))
			if _, err := w.Write(buf[:n]); err != nil {
				a.cfg.Logger.Warn("backup download cut off: the client stopped reading", "remote", r.RemoteAddr, "err", err)
				return
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			a.cfg.Logger.Error("backup failed", "err", rerr, "remote", r.RemoteAddr)
			return
		}
	}
	a.cfg.Logger.Info("admin", "action", "backup", "store_bytes", m.Sizes[server.DBFileName], "remote", r.RemoteAddr)
}
