package proto

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

// A message sealed for devices: each wrap opens only between its two
// devices' keys and only for its payload; a reader of the message cannot
// make another payload a wrap vouches for.
func TestDeviceSealed(t *testing.T) {
	kp := func() KeyPair {
		k, err := NewKeyPair(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	sender, phone, laptop := kp(), kp(), kp()
	in := Inner{Kind: KindText, From: []byte("ann"), To: []byte("bob"), MsgID: bytes.Repeat([]byte{1}, MsgIDLen), SentAt: 7, Body: []byte("hello")}
	plain, err := in.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	payload, k, err := SealPayload(plain, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(payload) != len(plain)+PayloadOverhead {
		t.Fatalf("payload of %d bytes for %d", len(payload), len(plain))
	}
	hash := PayloadHash(payload)
	wrapFor := func(to KeyPair) []byte {
		w, err := WrapKey(nil, k, &hash, SharedKey(&sender.Private, to.Public), nil)
		if err != nil || len(w) != WrapLen {
			t.Fatalf("wrap: %v, %d bytes", err, len(w))
		}
		return w
	}
	wPhone, wLaptop := wrapFor(phone), wrapFor(laptop)

	got, err := OpenWrap(wPhone, payload, SharedKey(&phone.Private, sender.Public))
	if err != nil || *got != *k {
		t.Fatalf("the phone's wrap: %v", err)
	}
	out, err := OpenPayload(nil, payload, got)
	if err != nil || !bytes.Equal(out, plain) {
		t.Fatalf("the payload: %v", err)
	}
	if _, err := OpenWrap(wLaptop, payload, SharedKey(&phone.Private, sender.Public)); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("the laptop's wrap opened on the phone: %v", err)
	}
	if _, err := OpenWrap(wPhone, payload, SharedKey(&phone.Private, laptop.Public)); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("a wrap opened as from another device: %v", err)
	}
	// The phone knows the message key: it seals another payload under it,
	// which the sender's wrap for the laptop does not vouch for.
	in.Body = []byte("forged")
	plain2, _ := in.Append(nil)
	forged, _, _ := SealPayload(plain2, bytes.NewReader(k[:]))
	if _, err := OpenWrap(wLaptop, forged, SharedKey(&laptop.Private, sender.Public)); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("a wrap opened for a payload it was not made for: %v", err)
	}
	if _, err := OpenPayload(nil, append([]byte{payload[0] ^ 1}, payload[1:]...), k); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("an altered payload opened: %v", err)
	}
}

// The messages' bounds: at least one copy for the receiver, at most
// MaxDevices, at most MaxDevices-1 of the sender's own, and the largest
// message fits a frame.
func TestSendDMDevicesBounds(t *testing.T) {
	copies := func(n int) []DeviceCopy {
		cs := make([]DeviceCopy, n)
		for i := range cs {
			cs[i] = DeviceCopy{Device: uint64(i + 1), Wrap: make([]byte, WrapLen)}
		}
		return cs
	}
	id := bytes.Repeat([]byte{2}, MsgIDLen)
	to := bytes.Repeat([]byte{'a'}, MaxUsernameLen)
	big := SendDMDevices{To: to, MsgID: id, Kind: KindText, Copies: copies(MaxDevices), Own: copies(MaxDevices - 1), Payload: make([]byte, MaxBodyLen)}
	b := big.Append(nil, 1)
	if len(b) > MaxFrameLen-SealOverhead {
		t.Fatalf("the largest send is %d bytes, over a frame", len(b))
	}
	var m SendDMDevices
	if err := m.Parse(b[MsgHeaderLen:]); err != nil || len(m.Copies) != MaxDevices || len(m.Own) != MaxDevices-1 {
		t.Fatalf("the largest send: %v", err)
	}
	for name, bad := range map[string]SendDMDevices{
		"no copy":         {To: to, MsgID: id, Payload: []byte("p")},
		"too many":        {To: to, MsgID: id, Copies: copies(MaxDevices + 1), Payload: []byte("p")},
		"too many own":    {To: to, MsgID: id, Copies: copies(1), Own: copies(MaxDevices), Payload: []byte("p")},
		"empty payload":   {To: to, MsgID: id, Copies: copies(1)},
		"payload too big": {To: to, MsgID: id, Copies: copies(1), Payload: make([]byte, MaxBodyLen+1)},
	} {
		if err := m.Parse(bad.Append(nil, 1)[MsgHeaderLen:]); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	d := DeliverDevices{ServerID: 1, From: to, To: to, MsgID: id, Wrap: make([]byte, WrapLen), Payload: make([]byte, MaxBodyLen)}
	if n := len(d.Append(nil, 0)); n > MaxFrameLen-SealOverhead {
		t.Fatalf("the largest delivery is %d bytes, over a frame", n)
	}
}
