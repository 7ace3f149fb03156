package client

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"securefastchat/proto"
)

// The known_servers file pins server keys, one line per server:
//
//	host:port x25519:<hex key> SHA256:<fingerprint>
//
// Lines starting with # are comments. A pin is changed only by editing
// the file: a changed key is never re-pinned automatically.

func lookupPin(st Storage, addr string) (*proto.PublicKey, string, error) {
	path := where(st, knownServers)
	b, err := st.Read(knownServers)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("client: reading %s: %w", path, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
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

func addPin(st Storage, addr string, k proto.PublicKey) error {
	if err := st.Append(knownServers, fmt.Appendf(nil, "%s x25519:%s %s\n", addr, k.String(), k.Fingerprint())); err != nil {
		return fmt.Errorf("client: pinning server key: %w", err)
	}
	return nil
}

// Pinned reports whether a server key is pinned for addr in home.
func Pinned(home, addr string) (bool, error) { return PinnedIn(Dir(home), addr) }

// PinnedIn reports whether a server key is pinned for addr in a home.
func PinnedIn(st Storage, addr string) (bool, error) {
	k, _, err := lookupPin(st, addr)
	return k != nil, err
}
