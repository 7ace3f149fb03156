package client

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/nacl/secretbox"
)

// Files in the home directory that name contacts, keys, senders or file
// names are sealed with a key derived from the identity (Client.LocalKey),
// which nothing the server has seen can give. A sealed file is
//
//	magic (7 bytes, its last a version digit) "\n" | nonce 24 | secretbox(content, key)
//
// Files written before sealing (plain text, no magic) are read once and
// written again sealed; a file of a later version is refused with a
// message that says so.

// ErrNewerFile: a file in the home directory was written by a newer
// securefastchat.
var ErrNewerFile = errors.New("client: a file in the home directory was written by a newer securefastchat; run that version (or newer)")

// sealAtRest seals content under magic (e.g. "SFCCON1").
func sealAtRest(key *[32]byte, magic string, content []byte) ([]byte, error) {
	var nonce [24]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	b := append([]byte(magic+"\n"), nonce[:]...)
	return secretbox.Seal(b, content, &nonce, key), nil
}

// openAtRest opens what sealAtRest made. A file without the magic's
// family (its first six bytes) is plain, from before sealing: plain is
// true and content is b. A later version of the family is ErrNewerFile.
func openAtRest(key *[32]byte, magic string, b []byte, path string) (content []byte, plain bool, err error) {
	family := magic[:len(magic)-1]
	if !bytes.HasPrefix(b, []byte(family)) {
		return b, true, nil
	}
	if len(b) < len(magic)+1 || b[len(family)] > magic[len(magic)-1] {
		return nil, false, fmt.Errorf("%w: %s", ErrNewerFile, path)
	}
	if !bytes.HasPrefix(b, []byte(magic+"\n")) || len(b) < len(magic)+1+24 {
		return nil, false, fmt.Errorf("client: %s is damaged", path)
	}
	var nonce [24]byte
	copy(nonce[:], b[len(magic)+1:])
	content, ok := secretbox.Open(nil, b[len(magic)+1+24:], &nonce, key)
	if !ok {
		return nil, false, fmt.Errorf("client: %s does not open with this identity (damaged, or another user's)", path)
	}
	return content, false, nil
}

// records is what sealed records are kept in: a Storage or a Downloads.
type records interface {
	Read(name string) ([]byte, error)
	Replace(name string, data []byte) error
}

// writeSealed seals content and replaces the record name with it.
func writeSealed(st records, key *[32]byte, magic, name string, content []byte) error {
	b, err := sealAtRest(key, magic, content)
	if err != nil {
		return err
	}
	return st.Replace(name, b)
}

// readSealed reads a record sealed under magic; a missing one is
// fs.ErrNotExist, and plain reports one from before sealing.
func readSealed(st records, key *[32]byte, magic, name string) (content []byte, plain bool, err error) {
	b, err := st.Read(name)
	if err != nil {
		return nil, false, err
	}
	if s, ok := st.(Storage); ok {
		name = where(s, name)
	}
	return openAtRest(key, magic, b, name)
}
