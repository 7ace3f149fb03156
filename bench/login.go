package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"securefastchat/client"
	"securefastchat/proto"
)

// loginLoops is how many connections log in at once.
const loginLoops = 32

// login runs the login scenario: for the window, loops that each connect,
// shake hands, resume a session by token and close; then, for half the
// window again, the same with a password login (argon2 at the server's
// cost).
func (r *run) login(ctx context.Context, res *Result) error {
	cfg := r.cfg
	res.Unit = "resumes/s"
	users := r.t.users
	var errs atomic.Int64
	var mu sync.Mutex
	var first error
	loop := func(d time.Duration, what string, password bool) (n int64, secs float64) {
		var count atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for l := 0; l < min(loginLoops, len(users)); l++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := l; ; i += loginLoops {
					select {
					case <-stop:
						return
					default:
					}
					u := users[i%len(users)]
					err := r.loginOnce(ctx, i, u, password)
					if err != nil {
						errs.Add(1)
						mu.Lock()
						if first == nil {
							first = err
						}
						mu.Unlock()
						return
					}
					count.Add(1)
				}
			}()
		}
		start := time.Now()
		r.watch(ctx, d, what, count.Load)
		n = count.Load()
		secs = time.Since(start).Seconds()
		close(stop)
		wg.Wait()
		return n, secs
	}
	loop(cfg.Warmup, "warming up", false)
	w := r.t.begin()
	res.Count, _ = loop(cfg.Duration, "resuming sessions", false)
	w.end(res)
	pw, secs := loop(cfg.Duration/2, "password logins", true)
	res.PasswordLogins = float64(pw) / secs
	res.Errors = errs.Load()
	res.Notes = append(res.Notes, fmt.Sprintf("%d password logins in %.1f s at argon2 %s", pw, secs, r.t.settings.Argon2),
		fmt.Sprintf("%d connections logging in at once, each a new TCP connection and handshake", loginLoops))
	if first != nil {
		return fmt.Errorf("%d errors; first: %w", res.Errors, first)
	}
	return nil
}

func (r *run) loginOnce(ctx context.Context, i int, u *user, password bool) error {
	c, err := r.t.dial(ctx, i, client.DialOptions{})
	if err != nil {
		return err
	}
	defer c.Close()
	if password {
		if _, err := c.Login(ctx, u.name, u.password); err != nil {
			return fmt.Errorf("bench: password login of %s: %w", u.name, err)
		}
		return nil
	}
	_, err = c.Resume(ctx, u.name, u.token)
	var re *proto.RemoteError
	if errors.As(err, &re) && re.Code == proto.CodeRateLimited {
		return fmt.Errorf("bench: resuming %s: %w (the server's per-address limit)", u.name, err)
	}
	if err != nil {
		return fmt.Errorf("bench: resuming %s: %w", u.name, err)
	}
	return nil
}
