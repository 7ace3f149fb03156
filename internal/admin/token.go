package admin

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// TokenFileName is the file in the data directory that holds the admin
// token a server made for itself (mode 0600).
const TokenFileName = "admin.token"

// MinTokenLen is the shortest token accepted: 32 characters. A token the
// server makes is 43 (256 random bits in base64url).
const MinTokenLen = 32

// LoadOrCreateToken returns the admin token kept in dataDir, making it
// (256 random bits, mode 0600) if there is none.
func LoadOrCreateToken(dataDir string) (tok string, created bool, err error) {
	if tok, err := ReadToken(dataDir); err == nil {
		return tok, false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", false, err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", false, err
	}
	tok = base64.RawURLEncoding.EncodeToString(b[:])
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", false, fmt.Errorf("admin: %w", err)
	}
	path := filepath.Join(dataDir, TokenFileName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", false, fmt.Errorf("admin: making the token: %w", err)
	}
	_, werr := f.WriteString(tok + "\n")
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(path)
		return "", false, fmt.Errorf("admin: making the token: %w", err)
	}
	return tok, true, nil
}

// ReadToken reads the admin token kept in dataDir.
func ReadToken(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, TokenFileName))
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < MinTokenLen {
		return "", fmt.Errorf("admin: %s holds no usable token", filepath.Join(dataDir, TokenFileName))
	}
	return tok, nil
}
