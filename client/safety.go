package client

import (
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"strings"

	"crypto/sha256"
	"golang.org/x/crypto/hkdf"
	"io"
)

// safetyIterations is how often each party's fingerprint is hashed, as in
// Signal's numeric fingerprints.
const safetyIterations = 5200

// displayFingerprint is one party's 30 digits: SHA-512 iterated over its
// keys (box key then signing key) and canonical user name, the first 30
// bytes read as six 5-byte numbers modulo 100000.
func displayFingerprint(user string, box, sign []byte) string {
	key := append(append([]byte(nil), box...), sign...)
	h := sha512.New()
	h.Write([]byte{0, 0}) // version
	h.Write(key)
	h.Write([]byte(user))
	sum := h.Sum(nil)
	for i := 0; i < safetyIterations; i++ {
		h.Reset()
		h.Write(sum)
		h.Write(key)
		sum = h.Sum(sum[:0])
	}
	var b strings.Builder
	for i := 0; i < 6; i++ {
		var v [8]byte
		copy(v[3:], sum[i*5:i*5+5])
		fmt.Fprintf(&b, "%05d", binary.BigEndian.Uint64(v[:])%100000)
	}
	return b.String()
}

// SafetyNumber is the 60-digit number two users compare out of band (read
// aloud, or side by side) to be sure no one sits between them: both
// parties' fingerprints, the lower first, so both see the same digits.
// It is shown in twelve groups of five.
func (c *Client) SafetyNumber(peer *PeerKeys) string {
	mine := displayFingerprint(c.user, c.acct.keys.BoxKey, c.acct.keys.SignKey) // the account's, the same on each device
	theirs := displayFingerprint(peer.User, peer.Box.Bytes(), peer.Sign)
	digits := mine + theirs
	if theirs < mine {
		digits = theirs + mine
	}
	groups := make([]string, 0, 12)
	for i := 0; i < len(digits); i += 5 {
		groups = append(groups, digits[i:i+5])
	}
	return strings.Join(groups, " ")
}

// LocalKey derives a 32-byte key for this user's local data (such as an
// encrypted history) from the identity's private key, so it is as safe as
// the identity file and needs no other secret.
func (c *Client) LocalKey(purpose string) *[32]byte { return localKey(c.id, c.user, purpose) }

func localKey(id *Identity, user, purpose string) *[32]byte {
	var k [32]byte
	r := hkdf.New(sha256.New, id.Box.Private.Bytes(), []byte(user), []byte("securefastchat local v1 "+purpose))
	if _, err := io.ReadFull(r, k[:]); err != nil {
		panic("client: hkdf: " + err.Error())
	}
	return &k
}
