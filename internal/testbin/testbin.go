// Package testbin runs the securefastchat binary for tests that need a
// real process: it builds the binary once per test binary, and keeps a
// server running as a child process that a test can kill and restart on
// the same data directory.
package testbin

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"securefastchat/internal/testserver"
)

// Build builds the binary into a fresh directory; cleanup removes it.
func Build() (path string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "sfc-bin")
	if err != nil {
		return "", nil, err
	}
	path = filepath.Join(dir, "securefastchat")
	if out, err := exec.Command("go", "build", "-o", path, "securefastchat").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("building the binary: %v\n%s", err, out)
	}
	return path, func() { os.RemoveAll(dir) }, nil
}

// Result is what a command printed and its exit code.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Run runs binary bin with args, the environment plus env, and stdin.
func Run(t testing.TB, bin string, env []string, stdin string, args ...string) Result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return Result{out.String(), errb.String(), code}
}

// Child is the server binary running as a child process, on a loopback
// address and a data directory of its own. The test kills it at the end.
type Child struct {
	T    testing.TB
	Bin  string
	Addr string
	Data string
	Cmd  *exec.Cmd
	Logs *testserver.Buffer // the server's log of its last start
	Args []string           // more serve flags
}

// NewChild prepares a server child of binary bin on a free loopback port
// and a fresh data directory.
func NewChild(t testing.TB, bin string) *Child {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := &Child{T: t, Bin: bin, Addr: addr, Data: t.TempDir()}
	t.Cleanup(func() {
		if c.Cmd != nil && c.Cmd.ProcessState == nil {
			c.Cmd.Process.Kill()
			c.Cmd.Wait()
		}
	})
	return c
}

func (c *Child) serveArgs() []string {
	return append([]string{"serve", "--listen", c.Addr, "--data", c.Data, "--shards", "2",
		"--argon2", "t=1,m=64,p=1", "--insecure-weak-argon2", "--msg-every", "0"}, c.Args...)
}

// Start starts the server and waits until it accepts.
func (c *Child) Start() time.Duration { return c.StartWith("") }

// Spawn starts the server without waiting for it.
func (c *Child) Spawn() *exec.Cmd {
	cmd := exec.Command(c.Bin, c.serveArgs()...)
	if err := cmd.Start(); err != nil {
		c.T.Fatal(err)
	}
	return cmd
}

// StartWith starts the server, through "bash -c 'PREFIX binary ...'" when
// prefix is set (to set limits), and waits until it accepts.
func (c *Child) StartWith(prefix string) time.Duration {
	c.T.Helper()
	start := time.Now()
	args := c.serveArgs()
	if prefix == "" {
		c.Cmd = exec.Command(c.Bin, args...)
	} else {
		c.Cmd = exec.Command("bash", append([]string{"-c", prefix + ` "$0" "$@"`, c.Bin}, args...)...)
	}
	c.Logs = &testserver.Buffer{}
	c.Cmd.Stderr = c.Logs
	if err := c.Cmd.Start(); err != nil {
		c.T.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if nc, err := net.Dial("tcp", c.Addr); err == nil {
			nc.Close()
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			c.T.Fatalf("server did not start:\n%s", c.Logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Kill kills the server with SIGKILL.
func (c *Child) Kill() { c.Stop(syscall.SIGKILL) }

// Stop sends sig and waits for the process; after SIGTERM it must exit 0.
func (c *Child) Stop(sig syscall.Signal) {
	c.Cmd.Process.Signal(sig)
	err := c.Cmd.Wait()
	if sig == syscall.SIGTERM && err != nil {
		c.T.Errorf("exit after SIGTERM: %v\n%s", err, c.Logs)
	}
}
