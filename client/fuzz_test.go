package client

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"testing"

	"securefastchat/proto"
)

// fuzzID is the identity whose local keys seal the fuzzed account records.
func fuzzID() *Identity {
	box, _ := proto.KeyPairFromPrivate(bytes.Repeat([]byte{7}, 32))
	return &Identity{Box: box, Sign: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))}
}

// fuzzKey is the local key the fuzz target opens sealed files with.
var fuzzKey = [32]byte{1, 2, 3}

// FuzzHomeFiles feeds arbitrary bytes to every file decoder of the client
// (identity, server pins, contacts, seen log, partial-transfer state, plain
// and sealed): none may panic, and a damaged identity file is
// ErrBadIdentity, never a key.
func FuzzHomeFiles(f *testing.F) {
	f.Add(uint8(0), []byte("SFCID1\x00\x00\x00\x01\x00\x00\x00\x40\x01"))
	f.Add(uint8(0), []byte("SFCID2\x00\x00\x00\x01\x00\x00\x00\x40\x01"))
	f.Add(uint8(0), []byte("SFCID3\x00\x00\x00\x01\x00\x00\x00\x40\x01"))
	f.Add(uint8(1), []byte("127.0.0.1:7878 x25519:0900000000000000000000000000000000000000000000000000000000000000 SHA256:x\n"))
	f.Add(uint8(2), []byte("bob x25519:0900000000000000000000000000000000000000000000000000000000000000 ed25519:00\n"))
	f.Add(uint8(3), []byte("1700000000 alice 00112233445566778899aabbccddeeff\n"))
	var sealed []byte
	sealed, _ = sealAtRest(&fuzzKey, contactsMagic, []byte("bob x25519:0900000000000000000000000000000000000000000000000000000000000000 ed25519:00\n"))
	f.Add(uint8(2), sealed)
	f.Add(uint8(2), []byte("SFCCON9\n"))
	f.Add(uint8(3), []byte(seenMagic+"\n00112233\n"))
	f.Add(uint8(4), []byte("bob\nreport.pdf\n100000\n4\n1000\n"))
	sealed, _ = sealAtRest(&fuzzKey, stateMagic, []byte("bob\nreport.pdf\n100000\n4\n1000\n"))
	f.Add(uint8(4), sealed)
	// Account records (a linked device's), sealed as fuzzID's.
	id := fuzzID()
	keys := id.PublicKeys("alice")
	plainAcct := append(append(append([]byte(nil), keys.BoxKey...), keys.SignKey...), keys.KeySig...)
	for _, c := range []struct {
		magic   string
		content []byte
	}{{accountMagic, plainAcct}, {accountMagicV2, append(plainAcct, id.Sign.Seed()...)}, {accountMagicV2, append(plainAcct, make([]byte, 32)...)}, {accountMagic, plainAcct[:100]}} {
		sealed, _ = sealAtRest(localKey(id, "alice", "account"), c.magic, c.content)
		f.Add(uint8(5), sealed)
	}
	f.Fuzz(func(t *testing.T, kind uint8, b []byte) {
		st := memStorage{"f": b, knownServers: b}
		switch kind % 6 {
		case 0:
			// The file names its own argon2 cost (up to 64 passes of 4 GiB):
			// costs above a test's are parsed but not run, or one input
			// stalls the fuzzer for seconds.
			if o := len(identityMagic); len(b) >= o+9 && bytes.HasPrefix(b, []byte(identityMagic[:o-1])) &&
				(binary.BigEndian.Uint32(b[o:]) > 2 || binary.BigEndian.Uint32(b[o+4:]) > 1<<10) {
				b = append(b[:o:o], make([]byte, len(b)-o)...)
				st["f"] = b
			}
			if id, _, err := loadIdentity(st, "f", []byte("password")); err == nil && id == nil {
				t.Fatal("no identity and no error")
			}
		case 1:
			lookupPin(st, "127.0.0.1:7878")
		case 2:
			loadContacts(st, "f", &fuzzKey)
		case 3:
			if l, err := openSeenLog(st, "f", &fuzzKey); err == nil {
				l.close()
			}
		case 4:
			if content, err := readState(memDownloads{memStorage: st}, &fuzzKey, "f"); err == nil {
				stateHead(content)
			}
		case 5:
			st := memStorage{userRecord("alice", "account"): b}
			if a, err := loadAccount(st, "alice", id); err == nil && (a == nil || a.masterKey != nil && !a.masterKey.Public().(ed25519.PublicKey).Equal(a.master())) {
				t.Fatalf("an account record gave %+v", a)
			}
		}
	})
}
