package client

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
)

// sessionFile keeps a user's session tokens in the home directory, one per
// server, so commands resume the session instead of logging in with the
// password each time (no argon2 work on the server, no new session). It is
// sealed with a key derived from the identity (Client.LocalKey), which
// nothing the server has seen can give:
//
//	sealed (atrest.go) "SFCSES1": lines "host:port <token hex>\n"
//
// Writes replace the file atomically; a read-modify-write under mu keeps
// one process's writes whole (another process's concurrent write may win:
// the loser logs in with the password next time).
type sessionFile struct {
	st   Storage
	name string
	key  *[32]byte
	mu   sync.Mutex
}

// sessionMagic: the session file has been sealed since its first version.
const sessionMagic = "SFCSES1"

func (f *sessionFile) read() (map[string][]byte, error) {
	out := map[string][]byte{}
	plain, old, err := readSealed(f.st, f.key, sessionMagic, f.name)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err == nil && old {
		err = fmt.Errorf("client: %s is damaged", where(f.st, f.name))
	}
	if err != nil {
		return out, err
	}
	for _, line := range strings.Split(string(plain), "\n") {
		addr, tok, ok := strings.Cut(line, " ")
		if t, err := hex.DecodeString(tok); ok && err == nil && len(t) > 0 {
			out[addr] = t
		}
	}
	return out, nil
}

func (f *sessionFile) write(m map[string][]byte) error {
	var plain strings.Builder
	for addr, tok := range m {
		fmt.Fprintf(&plain, "%s %x\n", addr, tok)
	}
	return writeSealed(f.st, f.key, sessionMagic, f.name, []byte(plain.String()))
}

// get returns the token kept for addr, or nil.
func (f *sessionFile) get(addr string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, err := f.read()
	return m[addr], err
}

// put keeps token for addr.
func (f *sessionFile) put(addr string, token []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, _ := f.read() // a damaged file is replaced
	m[addr] = append([]byte(nil), token...)
	return f.write(m)
}

// del forgets the token for addr.
func (f *sessionFile) del(addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, _ := f.read()
	if _, ok := m[addr]; !ok {
		return nil
	}
	delete(m, addr)
	return f.write(m)
}
