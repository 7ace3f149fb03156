package client

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"securefastchat/proto"
)

// The known_servers file pins server keys, one line per server:
//
//	host:port x25519:<hex key> SHA256:<fingerprint>
//
// Lines starting with # are comments. A pin is changed only by editing
// the file: a changed key is never re-pinned automatically.

func lookupPin(path, addr string) (*proto.PublicKey, string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("client: reading %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] != addr {
			continue
		}
		raw, err := hex.DecodeString(strings.TrimPrefix(fields[1], "x25519:"))
		if err != nil || !strings.HasPrefix(fields[1], "x25519:") {
			return nil, "", fmt.Errorf("client: %s line %d: malformed pin", path, n)
		}
		k, err := proto.ParsePublicKey(raw)
		if err != nil {
			return nil, "", fmt.Errorf("client: %s line %d: %w", path, n, err)
		}
		return &k, k.Fingerprint(), nil
	}
	return nil, "", sc.Err()
}

func addPin(path, addr string, k proto.PublicKey) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("client: pinning server key: %w", err)
	}
	_, werr := fmt.Fprintf(f, "%s x25519:%s %s\n", addr, k.String(), k.Fingerprint())
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("client: pinning server key: %w", err)
	}
	return nil
}

// Pinned reports whether a server key is pinned for addr in home.
func Pinned(home, addr string) (bool, error) {
	k, _, err := lookupPin(KnownServersPath(home), addr)
	return k != nil, err
}
