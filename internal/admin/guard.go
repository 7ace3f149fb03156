package admin

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// MaxConns bounds the admin listener's connections at once.
const MaxConns = 64

// guard checks every request before its route: the Host header names the
// listener (an IP address, localhost, or one of Config.Hosts: a page that
// rebinds a DNS name to this address cannot), and a change (any method but
// GET and HEAD) is JSON, which a browser form cannot send across origins.
// /healthz and /readyz, which reveal nothing, take any Host.
func (a *Admin) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && r.URL.Path != "/readyz" && !a.hostAllowed(r.Host) {
			writeErr(w, http.StatusMisdirectedRequest, "the Host header must name this listener (an IP address or localhost, or a name given with serve --admin-host)")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				writeErr(w, http.StatusUnsupportedMediaType, "changes must be sent as JSON (Content-Type: application/json) with the token")
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

func (a *Admin) hostAllowed(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if host == "localhost" || net.ParseIP(host) != nil {
		return true
	}
	for _, h := range a.cfg.Hosts {
		if strings.EqualFold(h, host) {
			return true
		}
	}
	return false
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Failed tokens: maxFailures from one address within failWindow block it
// until the window has passed.
const (
	maxFailures = 10
	failWindow  = time.Minute
)

// failures counts failed tokens per address. Safe for concurrent use.
type failures struct {
	mu sync.Mutex
	m  map[string]*failRecord
}

type failRecord struct {
	n      int
	first  time.Time
	logged time.Time
}

func newFailures() *failures { return &failures{m: map[string]*failRecord{}} }

// blocked returns how long ip must wait, or 0.
func (f *failures) blocked(ip string) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.m[ip]
	if r == nil {
		return 0
	}
	left := failWindow - time.Since(r.first)
	if left <= 0 {
		delete(f.m, ip)
		return 0
	}
	if r.n >= maxFailures {
		return left
	}
	return 0
}

// fail counts a failure from ip and reports whether to log it (at most
// once every ten seconds per address).
func (f *failures) fail(ip string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.m) > 10_000 {
		clear(f.m) // a flood from many addresses: start over rather than grow
	}
	r := f.m[ip]
	now := time.Now()
	if r == nil || now.Sub(r.first) > failWindow {
		r = &failRecord{first: now}
		f.m[ip] = r
	}
	r.n++
	if now.Sub(r.logged) < 10*time.Second {
		return false
	}
	r.logged = now
	return true
}

// limitListener accepts at most n connections at once; the next waits
// until one closes.
func limitListener(ln net.Listener, n int) net.Listener {
	return &limited{Listener: ln, sem: make(chan struct{}, n)}
}

type limited struct {
	net.Listener
	sem chan struct{}
}

func (l *limited) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.sem }}, nil
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
