package proto

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"
)

// device makes a device's keys and the statement that adds or removes it,
// the next of l, signed by master.
func deviceStmt(t *testing.T, l *DeviceList, op uint8, name string, master ed25519.PrivateKey) *DeviceStatement {
	t.Helper()
	box := mustKey(t, "device box "+name)
	sign, _, _ := ed25519.GenerateKey(&detRand{seed: "device sign " + name})
	s := &DeviceStatement{User: []byte("ann"), Op: op, Name: []byte(name), BoxKey: box.Public.Bytes(), SignKey: sign, Time: 1_800_000_000}
	s.DeviceID = KeyRecordID(&Keys{BoxKey: s.BoxKey, SignKey: s.SignKey})
	if l != nil {
		s.Seq, s.Prev = l.Seq+1, l.Last
	}
	s.Sign(master)
	return s
}

// TestDeviceChainRules: a chain starts with an add, grows by statements
// that follow it, signed by the account's master key; a device is added
// once, removed only with its keys, the last one stays, and an account
// has at most MaxDevices.
func TestDeviceChainRules(t *testing.T) {
	_, master, _ := ed25519.GenerateKey(&detRand{seed: "ann master"})
	_, other, _ := ed25519.GenerateKey(&detRand{seed: "mallory"})
	pub := master.Public().(ed25519.PublicKey)

	var l *DeviceList
	if _, err := l.Apply(deviceStmt(t, nil, DeviceRemove, "phone", master), pub); !errors.Is(err, ErrBadChain) {
		t.Fatalf("a chain starting with a remove: %v", err)
	}
	first := deviceStmt(t, nil, DeviceAdd, "phone", master)
	l, err := l.Apply(first, pub)
	if err != nil || len(l.Devices) != 1 || l.Devices[0].Name != "phone" || l.Seq != 0 || l.Last != first.Hash() {
		t.Fatalf("first device: %+v %v", l, err)
	}
	// Signed by anyone else: refused, the list unchanged.
	if _, err := l.Apply(deviceStmt(t, l, DeviceAdd, "laptop", other), pub); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("an add signed by another key: %v", err)
	}
	laptop := deviceStmt(t, l, DeviceAdd, "laptop", master)
	l2, err := l.Apply(laptop, pub)
	if err != nil || len(l2.Devices) != 2 || len(l.Devices) != 1 {
		t.Fatalf("second device: %+v %v (before: %d)", l2, err, len(l.Devices))
	}
	// A statement that does not follow the chain (a fork, a replay).
	if _, err := l2.Apply(laptop, pub); !errors.Is(err, ErrBadChain) {
		t.Fatalf("a replayed statement: %v", err)
	}
	fork := deviceStmt(t, l, DeviceAdd, "tablet", master) // also follows statement 0
	if _, err := l2.Apply(fork, pub); !errors.Is(err, ErrBadChain) {
		t.Fatalf("a fork: %v", err)
	}
	// The same device twice.
	again := deviceStmt(t, l2, DeviceAdd, "laptop", master)
	if _, err := l2.Apply(again, pub); !errors.Is(err, ErrDeviceNotAllowed) {
		t.Fatalf("a device added twice: %v", err)
	}
	// A device id that is not its keys' id.
	bad := deviceStmt(t, l2, DeviceAdd, "tablet", master)
	bad.DeviceID++
	bad.Sign(master)
	if _, err := l2.Apply(bad, pub); !errors.Is(err, ErrBadDeviceStatement) {
		t.Fatalf("a wrong device id: %v", err)
	}
	// Remove the laptop; the phone, the last, stays.
	rm := deviceStmt(t, l2, DeviceRemove, "laptop", master)
	l3, err := l2.Apply(rm, pub)
	if err != nil || len(l3.Devices) != 1 || l3.Devices[0].Name != "phone" {
		t.Fatalf("remove: %+v %v", l3, err)
	}
	// The list remembers the removed laptop, its keys and when; the list
	// before is unchanged.
	if r := l3.RemovedDevice(laptop.DeviceID); r == nil || r.Name != "laptop" || !bytes.Equal(r.SignKey, laptop.SignKey) || r.At != rm.Time ||
		l2.RemovedDevice(laptop.DeviceID) != nil || l3.RemovedDevice(first.DeviceID) != nil {
		t.Fatalf("the removed laptop: %+v", l3.Removed)
	}
	if _, err := l3.Apply(deviceStmt(t, l3, DeviceRemove, "phone", master), pub); !errors.Is(err, ErrDeviceNotAllowed) {
		t.Fatalf("removing the last device: %v", err)
	}
	// At most MaxDevices.
	full := l3
	for i := 1; i < MaxDevices; i++ {
		if full, err = full.Apply(deviceStmt(t, full, DeviceAdd, fmt.Sprint("d", i), master), pub); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := full.Apply(deviceStmt(t, full, DeviceAdd, "one too many", master), pub); !errors.Is(err, ErrTooManyDevices) {
		t.Fatalf("device %d: %v", MaxDevices+1, err)
	}
	// A list remembers the newest MaxRemembered removed devices.
	churn := l3
	for i := range MaxRemembered + 3 {
		name := fmt.Sprint("c", i)
		if churn, err = churn.Apply(deviceStmt(t, churn, DeviceAdd, name, master), pub); err != nil {
			t.Fatal(err)
		}
		if churn, err = churn.Apply(deviceStmt(t, churn, DeviceRemove, name, master), pub); err != nil {
			t.Fatal(err)
		}
	}
	if len(churn.Removed) != MaxRemembered || churn.Removed[MaxRemembered-1].Name != fmt.Sprint("c", MaxRemembered+2) || churn.Removed[0].Name != "c3" {
		t.Fatalf("%d removed remembered, the oldest %q", len(churn.Removed), churn.Removed[0].Name)
	}
	// Replayed whole from the wire form.
	var chain []*DeviceStatement
	for _, s := range []*DeviceStatement{first, laptop, rm} {
		var p DeviceStatement
		if err := p.Parse(s.Append(nil)); err != nil {
			t.Fatal(err)
		}
		chain = append(chain, &p)
	}
	if got, err := ReplayDevices(chain, pub); err != nil || got.Last != l3.Last || len(got.Devices) != 1 {
		t.Fatalf("replay: %+v %v", got, err)
	}
	if _, err := ReplayDevices(chain, other.Public().(ed25519.PublicKey)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("replay under another master key: %v", err)
	}
}

func seedDeviceStatements() [][]byte {
	s := DeviceStatement{User: []byte("ann"), Seq: 1, Prev: [32]byte{4}, Op: DeviceAdd, DeviceID: 7, Name: []byte("laptop"),
		BoxKey: bytes.Repeat([]byte{9}, 32), SignKey: bytes.Repeat([]byte{8}, 32), Time: 1_800_000_000, Sig: bytes.Repeat([]byte{7}, 64)}
	return [][]byte{s.Append(nil)}
}

func FuzzDeviceStatement(f *testing.F) {
	seeds := seedDeviceStatements()
	writeCorpus(f, "FuzzDeviceStatement", seeds)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var m DeviceStatement
		if m.Parse(in) != nil {
			return
		}
		if out := m.Append(nil); !bytes.Equal(out, in) {
			t.Fatal("round trip changed the statement")
		}
		checkPrefixes(t, in, func(b []byte) error { var m DeviceStatement; return m.Parse(b) })
		var l *DeviceList
		l.Apply(&m, make(ed25519.PublicKey, 32)) // must not panic
	})
}

// TestLoginDeviceBound: both ends of a connection share its binding, no
// two connections do, and a device's login signed for one connection
// does not verify on another or under another key.
func TestLoginDeviceBound(t *testing.T) {
	server := mustKey(t, "server static")
	cs1, ss1, _, _ := handshake(t, server, &server.Public)
	cs2, ss2, _, _ := handshake(t, server, nil)
	if cs1.Binding() != ss1.Binding() || cs2.Binding() != ss2.Binding() {
		t.Fatal("the two ends of a connection disagree on its binding")
	}
	if cs1.Binding() == cs2.Binding() {
		t.Fatal("two connections share a binding")
	}
	pub, priv, _ := ed25519.GenerateKey(&detRand{seed: "device"})
	other, _, _ := ed25519.GenerateKey(&detRand{seed: "other device"})
	m := LoginDevice{User: []byte("ann"), DeviceID: 7}
	m.Sign(priv, cs1.Binding())
	var p LoginDevice
	if err := p.Parse(m.Append(nil, 1)[MsgHeaderLen:]); err != nil {
		t.Fatal(err)
	}
	if !p.Verify(pub, ss1.Binding()) {
		t.Fatal("the login does not verify on its connection")
	}
	if p.Verify(pub, ss2.Binding()) {
		t.Fatal("the login verifies on another connection")
	}
	if p.Verify(other, ss1.Binding()) {
		t.Fatal("the login verifies under another key")
	}
	p.Flags = LoginNoDeliveries
	if p.Verify(pub, ss1.Binding()) {
		t.Fatal("the login verifies with other flags")
	}
}
