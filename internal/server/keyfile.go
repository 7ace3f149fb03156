package server

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"securefastchat/proto"
)

// KeyFileName is the server key's file in the data directory.
const KeyFileName = "server.key"

const keyFileHeader = "securefastchat server key v1\n"

// LoadKey reads the server key from dir.
func LoadKey(dir string) (*proto.KeyPair, error) {
	path := filepath.Join(dir, KeyFileName)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("server: reading key: %w", err)
	}
	rest, ok := bytes.CutPrefix(b, []byte(keyFileHeader))
	raw, err := hex.DecodeString(string(bytes.TrimSpace(rest)))
	if !ok || err != nil {
		return nil, fmt.Errorf("server: %s is not a server key file", path)
	}
	kp, err := proto.KeyPairFromPrivate(raw)
	clear(raw)
	if err != nil {
		return nil, fmt.Errorf("server: %s: %w", path, err)
	}
	return &kp, nil
}

// LoadOrCreateKey reads the server key from dir, making one (mode 0600)
// on first start.
func LoadOrCreateKey(dir string) (kp *proto.KeyPair, created bool, err error) {
	kp, err = LoadKey(dir)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return kp, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("server: creating data directory: %w", err)
	}
	k, err := proto.NewKeyPair(rand.Reader)
	if err != nil {
		return nil, false, err
	}
	path := filepath.Join(dir, KeyFileName)
	tmp, err := os.CreateTemp(dir, ".server.key.*")
	if err != nil {
		return nil, false, fmt.Errorf("server: writing key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("server: writing key: %w", err)
	}
	_, werr := fmt.Fprintf(tmp, "%s%s\n", keyFileHeader, hex.EncodeToString(k.Private.Bytes()))
	if err := errors.Join(werr, tmp.Sync(), tmp.Close()); err != nil {
		return nil, false, fmt.Errorf("server: writing key: %w", err)
	}
	// Link rather than rename, so two first starts cannot both win.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			kp, err := LoadKey(dir)
			return kp, false, err
		}
		return nil, false, fmt.Errorf("server: writing key: %w", err)
	}
	return &k, true, nil
}
