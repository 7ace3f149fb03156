package store

import (
	"bytes"
	"reflect"
	"testing"
	"time"
)

// FuzzRecords feeds arbitrary bytes to every record decoder of the store
// (users, sessions, queued messages, group states, epoch headers):
// none may panic, and what decodes re-encodes to the same bytes.
func FuzzRecords(f *testing.F) {
	u := testUser("alice")
	u.Created = time.Unix(1_700_000_000, 5)
	f.Add(uint8(0), u.marshal())
	ss := &Session{User: "alice", Created: time.Unix(1, 2), LastSeen: time.Unix(3, 4), Device: 5}
	f.Add(uint8(1), ss.marshal())
	v1 := ss.marshal()
	v1[0] = 1
	f.Add(uint8(1), v1[:len(v1)-8]) // a session from before devices
	q := qmsg("bob", "alice", 7, "sealed body", time.Unix(1_700_000_000, 9))
	f.Add(uint8(2), q.marshal())
	qg := qmsg("bob", "alice", 8, "group body", time.Unix(1_700_000_000, 9))
	qg.Group, qg.Epoch, qg.Sig = "team", 3, make([]byte, 64)
	f.Add(uint8(2), qg.marshal())
	qgd := qmsg("bob", "alice", 10, "group body", time.Unix(1_700_000_000, 9))
	qgd.Group, qgd.Epoch, qgd.Sig, qgd.FromDevice = "team", 3, make([]byte, 64), 12
	f.Add(uint8(2), qgd.marshal())
	qd := qmsg("bob", "alice", 9, "payload", time.Unix(1_700_000_000, 9))
	qd.FromDevice, qd.Peer, qd.Wrap = 11, "carol", make([]byte, 104)
	f.Add(uint8(2), qd.marshal())
	g := &GroupState{Name: "team", Seq: 3, Epoch: 2, DevGen: 4, EpochDevGen: 3, Created: time.Unix(5, 6), Members: []GroupMember{{Name: "ann", Admin: true}, {Name: "bob"}}}
	f.Add(uint8(3), g.marshal())
	h := &epochHeader{rosterSeq: 2, created: time.Unix(7, 8), wrapper: "ann", wrapperDevice: 9, stmt: []byte("statement"), badBy: "bob", badDevice: 10, badSig: make([]byte, 64)}
	f.Add(uint8(4), h.marshal())
	f.Fuzz(func(t *testing.T, kind uint8, b []byte) {
		switch kind % 5 {
		case 0:
			u, err := unmarshalUser("alice", b)
			if err == nil && !bytes.Equal(u.marshal(), b) {
				t.Fatal("user record does not round trip")
			}
		case 1:
			s, err := unmarshalSession([32]byte{}, b)
			if err != nil {
				return
			}
			// A record of the current version round trips; one of version
			// 1 reads as what it is written as now, with no device.
			again := s.marshal()
			if b[0] == 2 && !bytes.Equal(again, b) {
				t.Fatal("session record does not round trip")
			}
			if s2, err := unmarshalSession([32]byte{}, again); err != nil || *s2 != *s {
				t.Fatalf("session record read back differs: %v", err)
			}
		case 2:
			q, err := unmarshalQueued(Inbox{User: "bob"}, idKey(7), b)
			if err == nil && !bytes.Equal(q.marshal(), b) {
				t.Fatal("queued record does not round trip")
			}
		case 3:
			g, err := unmarshalGroup("team", b)
			if err != nil {
				return
			}
			// A record of the current version round trips; one of version
			// 1 reads as what it is written as now.
			again := g.marshal()
			if b[0] == 3 && !bytes.Equal(again, b) {
				t.Fatal("group record does not round trip")
			}
			if g2, err := unmarshalGroup("team", again); err != nil || !reflect.DeepEqual(g, g2) {
				t.Fatalf("group record read back differs: %v", err)
			}
		case 4:
			h, ok := parseEpochHeader(b)
			if !ok || !h.withStatement {
				return
			}
			// A header with devices round trips; one from before reads
			// as what it is written as now.
			again := h.marshal()
			if len(again) == len(b) && !bytes.Equal(again, b) {
				t.Fatal("epoch header does not round trip")
			}
			if h2, ok := parseEpochHeader(again); !ok || !reflect.DeepEqual(h, h2) {
				t.Fatal("epoch header read back differs")
			}
		}
	})
}
