package testserver

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/proto"
)

// AddDevice adds a device to c's own account, as a managing device does:
// a statement for the device's keys signed with c's master key, appended
// through c's connection. box is the device's box key pair (nil: a new
// one); its sign key is always new. It returns the statement and the
// device's sign key, with which it logs in (client.Conn.LoginDevice).
func AddDevice(t testing.TB, c *client.Client, name string, box *proto.KeyPair) (*proto.DeviceStatement, ed25519.PrivateKey) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := c.Devices(ctx, c.User())
	if err != nil {
		t.Fatalf("%s's devices: %v", c.User(), err)
	}
	if box == nil {
		kp, err := proto.NewKeyPair(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		box = &kp
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	st := &proto.DeviceStatement{User: []byte(c.User()), Seq: list.Seq + 1, Prev: list.Last, Op: proto.DeviceAdd, Name: []byte(name),
		BoxKey: box.Public.Bytes(), SignKey: pub, Time: time.Now().Unix()}
	st.DeviceID = proto.KeyRecordID(&proto.Keys{BoxKey: st.BoxKey, SignKey: st.SignKey})
	st.Sign(c.Identity().Sign)
	if err := AppendDevice(ctx, c, st); err != nil {
		t.Fatalf("adding %s's %s: %v", c.User(), name, err)
	}
	return st, priv
}

// RemoveDevice removes a device from c's own account.
func RemoveDevice(t testing.TB, c *client.Client, dev *proto.DeviceStatement) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := c.Devices(ctx, c.User())
	if err != nil {
		t.Fatal(err)
	}
	rm := *dev
	rm.Seq, rm.Prev, rm.Op, rm.Time = list.Seq+1, list.Last, proto.DeviceRemove, time.Now().Unix()
	rm.Sign(c.Identity().Sign)
	if err := AppendDevice(ctx, c, &rm); err != nil {
		t.Fatalf("removing %s's %s: %v", c.User(), dev.Name, err)
	}
}

// AppendDevice sends a DeviceAppend on c's connection, as any client
// speaking the protocol could.
func AppendDevice(ctx context.Context, c *client.Client, st *proto.DeviceStatement) error {
	m := proto.DeviceAppend{Statement: st.Append(nil)}
	typ, _, err := c.Conn().Request(ctx, func(b []byte, id uint32) []byte { return m.Append(b, id) })
	if err == nil && typ != proto.TOK {
		return fmt.Errorf("reply %#x", uint8(typ))
	}
	return err
}

// OpenCopy opens a device's copy of a message sealed for devices with the
// device's box key pair and the sending device's box key, as the device's
// client does.
func OpenCopy(d *proto.DeliverDevices, box *proto.KeyPair, from proto.PublicKey) (*proto.Inner, error) {
	key, err := proto.OpenWrap(d.Wrap, d.Payload, proto.SharedKey(&box.Private, from))
	if err != nil {
		return nil, fmt.Errorf("the wrap: %w", err)
	}
	plain, err := proto.OpenPayload(nil, d.Payload, key)
	if err != nil {
		return nil, fmt.Errorf("the payload: %w", err)
	}
	var in proto.Inner
	if err := in.Parse(plain); err != nil {
		return nil, err
	}
	return &in, nil
}
