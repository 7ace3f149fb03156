package shard

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"runtime"
	"testing"
	"time"

	"securefastchat/proto"
	"securefastchat/store"
)

// devicesBench is a set where alice (one device, speaking version v)
// writes to bob, whose three devices are logged in on both shards.
type devicesBench struct {
	s        *Set
	sender   *conn
	sendC    *proto.Session
	devs     []*conn
	devC     []*proto.Session
	devIDs   []uint64
	bobFirst uint64
}

func newDevicesBench(b *testing.B, v uint8, devices int) *devicesBench {
	s, st, static := benchSet(b)
	login := func(shard int, user string, dev uint64, v uint8) (*conn, *proto.Session) {
		return benchLogin(b, s, &static, shard, user, dev, v)
	}
	user := func(name string) (*store.User, ed25519.PrivateKey) { return benchUser(b, st, name) }
	d := &devicesBench{s: s}
	alice, _ := user("alice")
	d.sender, d.sendC = login(0, "alice", store.FirstDevice(alice), v)
	bob, master := user("bob")
	d.bobFirst = store.FirstDevice(bob)
	stmt := &proto.DeviceStatement{User: []byte("bob"), Op: proto.DeviceAdd, DeviceID: d.bobFirst, Name: []byte("first"), BoxKey: bob.BoxKey, SignKey: bob.SignKey, Time: time.Now().Unix()}
	for seq := 0; seq < devices; seq++ {
		if seq > 0 {
			pub, _, _ := ed25519.GenerateKey(rand.Reader)
			next := &proto.DeviceStatement{User: stmt.User, Seq: uint32(seq), Prev: stmt.Hash(), Op: proto.DeviceAdd, Name: []byte(fmt.Sprint("device ", seq+1)),
				BoxKey: bob.BoxKey, SignKey: pub, Time: time.Now().Unix()}
			next.DeviceID = proto.KeyRecordID(&proto.Keys{BoxKey: next.BoxKey, SignKey: next.SignKey})
			stmt = next
		}
		stmt.Sign(master)
		if err := st.AppendDevice("bob", stmt.Seq, stmt.Append(nil)); err != nil {
			b.Fatal(err)
		}
		c, cs := login(seq%2, "bob", stmt.DeviceID, proto.MaxVersion)
		d.devs, d.devC, d.devIDs = append(d.devs, c), append(d.devC, cs), append(d.devIDs, stmt.DeviceID)
	}
	for _, pair := range [][2]string{{"bob", "alice"}, {"alice", "bob"}} {
		if err := st.AddContact(pair[0], pair[1]); err != nil {
			b.Fatal(err)
		}
	}
	d.sender.loadContacts()
	for _, c := range d.devs {
		c.loadContacts()
	}
	return d
}

// BenchmarkDevicesPath measures a direct message to an account with three
// devices through the server, as BenchmarkDMPath does for one: sealed for
// devices (a copy and a wrap per device, version 4), and as one body
// shared by the devices (the form before version 4, which a version 3
// sender still sends).
func BenchmarkDevicesPath(b *testing.B) {
	const devices = 3
	for _, form := range []string{"sealed", "shared"} {
		b.Run(form, func(b *testing.B) {
			v := uint8(proto.MaxVersion)
			if form == "shared" {
				v = 3
			}
			d := newDevicesBench(b, v, devices)
			payload := make([]byte, 256+proto.PayloadOverhead)
			msgID := make([]byte, 16)
			var build func(b []byte, id uint32) []byte
			if form == "sealed" {
				m := proto.SendDMDevices{To: []byte("bob"), MsgID: msgID, Kind: proto.KindText, Payload: payload}
				for _, id := range d.devIDs {
					m.Copies = append(m.Copies, proto.DeviceCopy{Device: id, Wrap: make([]byte, proto.WrapLen)})
				}
				build = func(b []byte, id uint32) []byte { return m.Append(b, id) }
			} else {
				m := proto.SendDM{To: []byte("bob"), KeyID: d.bobFirst, MsgID: msgID, Kind: proto.KindText, Body: make([]byte, 256+proto.SealedOverhead)}
				build = func(b []byte, id uint32) []byte { return m.Append(b, id) }
			}
			var msg, frame []byte
			plain := make([]byte, 0, proto.MaxFrameLen)
			run := func(c *conn, cs *proto.Session) {
				frame, _ = cs.Seal(frame[:0], msg)
				p, err := c.sess.Open(plain[:0], frame[proto.FrameHeaderLen:])
				if err != nil {
					b.Fatal(err)
				}
				c.handle(p)
			}
			const window = 16
			sent := make([][window]uint64, devices)
			var ids [1]uint64
			ack := func(i int, id uint64) {
				for d.devs[i].acks.waiting.Load() == 0 {
					runtime.Gosched()
				}
				ids[0] = id
				msg = (&proto.Ack{ServerIDs: ids[:]}).Append(msg[:0], 0)
				run(d.devs[i], d.devC[i])
			}
			n := 0
			base := make([]uint64, devices) // each device numbers each message, one after the other
			for i, c := range d.devs {
				base[i] = c.seq.Load()
			}
			one := func() {
				if n >= window {
					for i := range d.devs {
						ack(i, sent[i][n%window])
					}
				}
				msg = build(msg[:0], uint32(n))
				run(d.sender, d.sendC)
				for i, c := range d.devs {
					want := base[i] + uint64(n) + 1
					for c.seq.Load() < want { // numbered as it is routed (or written)
						runtime.Gosched()
					}
					sent[i][n%window] = want
				}
				n++
			}
			for i := 0; i < 1000; i++ {
				one()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				one()
			}
			b.StopTimer()
			for k := n - window; k < n; k++ {
				for i := range d.devs {
					ack(i, sent[i][k%window])
				}
			}
			waitDelivered(b, d.s, int64(n*devices))
		})
	}
}
