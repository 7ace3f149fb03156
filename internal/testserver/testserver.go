// Package testserver starts real securefastchat servers on loopback for
// tests, and makes client configurations that reach them. Password hashing
// uses cheap argon2 parameters (passwd.Weak) unless a test asks otherwise.
package testserver

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/passwd"
	"securefastchat/internal/server"
	"securefastchat/shard"
)

// Start runs a server in t.TempDir() on 127.0.0.1:0 and shuts it down at
// the end of the test, then checks the store and that no goroutine of the
// server is left. mod may change the configuration first.
func Start(t testing.TB, mod func(*server.Config)) *server.Server {
	t.Helper()
	cfg := Config(t, t.TempDir())
	if mod != nil {
		mod(&cfg)
	}
	s, err := server.Start(cfg)
	if err != nil {
		t.Fatalf("starting server: %v", err)
	}
	t.Cleanup(func() { Stop(t, s) })
	return s
}

// Config is the test configuration for a server in dir.
func Config(t testing.TB, dir string) server.Config {
	return server.Config{
		DataDir:         dir,
		Listen:          "127.0.0.1:0",
		Shard:           shard.Options{Shards: 2},
		Argon2:          passwd.Weak,
		AllowWeakArgon2: true,
		Logger:          Logger(t),
	}
}

// Stop shuts s down and checks the store file afterwards.
func Stop(t testing.TB, s *server.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	CheckNoLeaks(t)
}

// CheckNoLeaks fails if goroutines of the server packages are still running
// a few seconds after shutdown.
func CheckNoLeaks(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		var leaked []string
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "securefastchat/shard.") || strings.Contains(g, "securefastchat/balancer.") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d server goroutines leaked; first:\n%s", len(leaked), leaked[0])
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testKDF is the clients' cheap argon2 setting.
var testKDF = client.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// ClientConfig returns a client configuration for s with its own home
// directory and cheap identity-file hashing.
func ClientConfig(t testing.TB, s *server.Server) client.Config {
	return client.Config{
		Addr:         s.Addr(),
		Home:         t.TempDir(),
		OutDir:       t.TempDir(),
		KDF:          testKDF,
		PingInterval: -1,
	}
}

// Logger logs through t.Log when the test runs with -v, else discards.
func Logger(t testing.TB) *slog.Logger {
	if !testing.Verbose() || os.Getenv("SFC_TEST_LOGS") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Password is the password Signup signs up with.
const Password = "correct horse battery"

// LoginKey returns what a client sends for user's Password (with
// ClientConfig's hashing): for a test that logs in on a raw connection
// to an account a client signed up.
func LoginKey(t testing.TB, user string) string {
	t.Helper()
	k, err := client.LoginKey(user, Password, testKDF)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Signup signs up user with a fresh home directory and fails the test on
// error.
func Signup(t testing.TB, s *server.Server, user string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Signup(ctx, ClientConfig(t, s), user, Password)
	if err != nil {
		t.Fatalf("signup %s: %v", user, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Buffer is a bytes.Buffer safe for a writer (a logger, a process's
// output) and a reader at once.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Acquaint has to write to from once and from read it, so that what from
// sends to is no longer a stranger's request (which the server always
// stores first and answers "queued"): as two people who talk.
func Acquaint(t testing.TB, from, to *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	text := "hello " + from.User() + ", from " + to.User()
	if _, err := to.SendText(ctx, from.User(), text); err != nil {
		t.Fatalf("acquainting %s with %s: %v", from.User(), to.User(), err)
	}
	for {
		select {
		case m := <-Messages(from):
			if m.Text == text {
				return
			}
		case <-ctx.Done():
			t.Fatalf("%s never got %s's hello", from.User(), to.User())
		}
	}
}

// Join has c accept its invitation to group, if it has one: someone added
// by a user they had not accepted is only invited, and gets nothing of
// the group's messages until they join, as a user who wants to be in the
// group does.
func Join(t testing.TB, c *client.Client, group string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	invs, err := c.GroupInvites(ctx)
	if err != nil {
		t.Fatalf("%s: invitations: %v", c.User(), err)
	}
	for _, inv := range invs {
		if inv.Group == group {
			if err := c.JoinGroup(ctx, group); err != nil {
				t.Fatalf("%s joining %s: %v", c.User(), group, err)
			}
		}
	}
}
