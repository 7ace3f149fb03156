package client

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/crypto/nacl/secretbox"
)

// sessionFile keeps a user's session tokens in the home directory, one per
// server, so commands resume the session instead of logging in with the
// password each time (no argon2 work on the server, no new session). It is
// sealed with a key derived from the identity (Client.LocalKey), which
// nothing the server has seen can give:
//
//	magic "SFCSES1\n" | nonce 24 | secretbox(lines "host:port <token hex>\n", key)
//
// Writes replace the file atomically; a read-modify-write under mu keeps
// one process's writes whole (another process's concurrent write may win:
// the loser logs in with the password next time).
type sessionFile struct {
	path string
	key  *[32]byte
	mu   sync.Mutex
}

const sessionMagic = "SFCSES1\n"

func (f *sessionFile) read() (map[string][]byte, error) {
	out := map[string][]byte{}
	b, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("client: reading %s: %w", f.path, err)
	}
	if len(b) < len(sessionMagic)+24 || !bytes.HasPrefix(b, []byte(sessionMagic)) {
		return out, fmt.Errorf("client: %s is damaged", f.path)
	}
	var nonce [24]byte
	copy(nonce[:], b[len(sessionMagic):])
	plain, ok := secretbox.Open(nil, b[len(sessionMagic)+24:], &nonce, f.key)
	if !ok {
		return out, fmt.Errorf("client: %s does not open with this identity", f.path)
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
	var nonce [24]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return err
	}
	b := append([]byte(sessionMagic), nonce[:]...)
	b = secretbox.Seal(b, []byte(plain.String()), &nonce, f.key)
	if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return writeFileAtomic(f.path, b)
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
