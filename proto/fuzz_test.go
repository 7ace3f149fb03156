package proto

import (
	"bytes"
	"crypto/ed25519"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the fuzz seed corpora in testdata/fuzz")

// reencode parses a message by its type and encodes it again.
func reencode(msg []byte) ([]byte, error) {
	t, id, body, err := ParseHeader(msg)
	if err != nil {
		return nil, err
	}
	switch t {
	case TSignup:
		var m Signup
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TSignupInvite:
		var m Signup
		err = m.ParseInvite(body)
		return m.Append(nil, id), err
	case TLogin:
		var m Login
		err = m.ParseV1(body)
		return m.AppendV1(nil, id, TLogin), err
	case TLoginWith:
		var m Login
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TResume:
		var m Resume
		err = m.ParseV1(body)
		return m.AppendV1(nil, id, TResume), err
	case TResumeWith:
		var m Resume
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TCheckUsername, TGetKeys:
		var m UserReq
		err = m.Parse(body)
		return m.Append(nil, t, id), err
	case TSendDM:
		var m SendDM
		err = m.ParseV1(body)
		return m.AppendV1(nil, id), err
	case TSendDMFor:
		var m SendDM
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TAck:
		var m Ack
		if err = m.Parse(body); err != nil {
			return nil, err
		}
		ids, err := ParseAckIDs(body)
		if err != nil || ids.Len() != len(m.ServerIDs) || ids.At(0) != m.ServerIDs[0] {
			return nil, fmt.Errorf("ParseAckIDs disagrees with Parse: %v", err)
		}
		return m.Append(nil, id), nil
	case TPing, TPong:
		var m Ping
		err = m.Parse(body)
		return m.Append(nil, t, id), err
	case TClose:
		var m Close
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TError:
		var m Error
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TLoginOK:
		var m LoginOK
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TKeys, TKeysChanged:
		var m KeysReply
		err = m.Parse(body)
		return m.AppendType(nil, t, id), err
	case TSent:
		var m Sent
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TSentDevices:
		var m SentDevices
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TDeliver, TDeliverRequest:
		m := Deliver{Request: t == TDeliverRequest}
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TRelation:
		var m Relation
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TBlocked:
		var m Blocked
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TGroupJoin:
		var m GroupJoin
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TGroupInvitesReply:
		var m GroupInvitesReply
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TAvailable:
		var m Available
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TOK, TLogout, TGroupList, TBlockedList, TGroupInvites:
		return AppendEmpty(nil, t, id), ParseEmpty(body)
	case TGroupChange:
		var m GroupChange
		err = m.ParseAs(t, body)
		return m.AppendV1(nil, id), err
	case TGroupChangeV2, TGroupChangeV3:
		var m GroupChange
		err = m.ParseAs(t, body)
		return m.Append(nil, id), err
	case TGroupBadEpoch, TGroupBadEpochV2:
		var m BadEpoch
		err = m.ParseAs(t, body)
		return m.Append(nil, id), err
	case TGroupChain, TGroupKeys, TGroupChanged:
		var m GroupReq
		err = m.Parse(body)
		return m.Append(nil, t, id), err
	case TSendGroup, TSendGroupFile:
		var m SendGroup
		err = m.Parse(body)
		m.File = t == TSendGroupFile
		return m.Append(nil, id), err
	case TGroups:
		var m Groups
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TGroupChainReply:
		var m GroupChainReply
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TLoginDevice:
		var m LoginDevice
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TDeviceChain, TDevicesChanged:
		var m DeviceReq
		err = m.Parse(body)
		return m.Append(nil, t, id), err
	case TDeviceAppend:
		var m DeviceAppend
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TDeviceChainReply:
		var m DeviceChainReply
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TLinkOpen:
		var m LinkOpen
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TLinkData, TLinkRelay:
		var m LinkData
		err = m.Parse(body)
		return m.Append(nil, t, id), err
	case TLinkJoined, TLinkClosed, TDeviceSeen:
		return AppendEmpty(nil, t, id), ParseEmpty(body)
	case TDeviceSeenReply:
		var m DeviceSeenReply
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TRecover:
		var m Recover
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TChangePassword:
		var m ChangePassword
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TSendDMDevices, TSendDMDevicesDetail:
		m := SendDMDevices{Detail: t == TSendDMDevicesDetail}
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TDevicesMismatch:
		var m DevicesMismatch
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TDeliverDevices:
		var m DeliverDevices
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TGroupKeysReply, TGroupKeysReplyV2, TGroupKeysReplyV3:
		var m GroupKeysReply
		err = m.ParseAs(t, body)
		return m.Append(nil, t, id), err
	case TDeliverGroup, TDeliverGroupV2:
		var m DeliverGroup
		err = m.ParseAs(t, body)
		return m.Append(nil, id), err
	case TSignal:
		var m Signal
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TSignalMsg:
		var m SignalMsg
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TSignalDevices:
		var m SignalDevices
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TSignalDevicesMsg:
		var m SignalDevicesMsg
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TPresence:
		var m Presence
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TBroadcast:
		var m Broadcast
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TBroadcastSent:
		var m BroadcastSent
		err = m.Parse(body)
		return m.Append(nil, id), err
	case TBroadcastMsg:
		var m BroadcastMsg
		err = m.Parse(body)
		return m.Append(nil, id), err
	}
	return nil, ErrUnknownType
}

func seedMessages() [][]byte {
	id16 := bytes.Repeat([]byte{0xab}, 16)
	k32 := bytes.Repeat([]byte{1}, 32)
	keys := Keys{BoxKey: k32, SignKey: k32, KeySig: bytes.Repeat([]byte{2}, 64)}
	return [][]byte{
		(&Signup{User: []byte("alice"), Password: []byte("password1"), Keys: keys}).Append(nil, 1),
		(&Login{User: []byte("alice"), Password: []byte("password1")}).AppendV1(nil, 2, TLogin),
		(&Login{User: []byte("alice"), Password: []byte("password1"), Flags: LoginNoDeliveries}).Append(nil, 2),
		(&Signup{User: []byte("alice"), Password: []byte("password1"), Keys: keys, Invite: []byte("K7Q2-MX4P-9TZA")}).Append(nil, 25),
		(&Resume{User: []byte("alice"), Token: k32}).AppendV1(nil, 3, TResume),
		(&Resume{User: []byte("alice"), Token: k32, Flags: LoginNoDeliveries}).Append(nil, 3),
		(&UserReq{User: []byte("bob")}).Append(nil, TCheckUsername, 4),
		(&UserReq{User: []byte("bob")}).Append(nil, TGetKeys, 5),
		(&SendDM{To: []byte("bob"), MsgID: id16, Kind: KindText, Body: []byte("sealed")}).AppendV1(nil, 6),
		(&SendDM{To: []byte("bob"), KeyID: 0x0102030405060708, MsgID: id16, Kind: KindText, Body: []byte("sealed")}).Append(nil, 6),
		(&Ack{ServerIDs: []uint64{77}}).Append(nil, 0),
		(&Ack{ServerIDs: []uint64{1, 2, 3}}).Append(nil, 0),
		(&Ping{Data: []byte("hi")}).Append(nil, TPing, 7),
		(&Ping{}).Append(nil, TPong, 7),
		(&Close{Reason: CloseShutdown}).Append(nil, 0),
		(&Error{Code: CodeRateLimited, Message: []byte("slow down")}).Append(nil, 8),
		(&LoginOK{User: []byte("Alice"), Token: k32, Expires: 1700000000}).Append(nil, 9),
		(&KeysReply{User: []byte("bob"), Keys: keys}).Append(nil, 10),
		(&KeysReply{User: []byte("bob"), Keys: keys}).AppendType(nil, TKeysChanged, 0),
		(&Sent{ServerID: 1, Time: 2, Status: StatusDelivered}).Append(nil, 11),
		(&Deliver{ServerID: 1, Time: 2, From: []byte("alice"), MsgID: id16, Kind: KindFile, Body: []byte("sealed")}).Append(nil, 0),
		(&Deliver{ServerID: 3, Time: 4, From: []byte("mallory"), MsgID: id16, Kind: KindText, Body: []byte("sealed"), Request: true}).Append(nil, 0),
		(&Relation{User: []byte("mallory"), Action: RelationBlock}).Append(nil, 30),
		(&Relation{User: []byte("carol"), Action: RelationAccept}).Append(nil, 31),
		AppendEmpty(nil, TBlockedList, 32),
		(&Blocked{Users: [][]byte{[]byte("mallory"), []byte("spam1")}}).Append(nil, 32),
		(&Blocked{}).Append(nil, 33),
		(&GroupJoin{Group: []byte("prize")}).Append(nil, 34),
		AppendEmpty(nil, TGroupInvites, 35),
		(&GroupInvitesReply{Invites: []GroupInvite{{Group: []byte("prize"), By: []byte("mallory")}}}).Append(nil, 35),
		(&Available{Available: true}).Append(nil, 12),
		AppendEmpty(nil, TOK, 13),
		AppendEmpty(nil, TLogout, 14),
		(&GroupChange{Group: []byte("team"), Statement: []byte("stmt"), Epoch: 2, RosterSeq: 1, Part: 1, Parts: 1,
			Keys: []WrappedFor{{Member: []byte("ann"), Wrapped: []byte("w1")}, {Member: []byte("bob"), Wrapped: []byte("w2")}}}).AppendV1(nil, 15),
		(&GroupChange{Group: []byte("team"), Statement: []byte("stmt"), EpochStmt: []byte("epoch statement"), Epoch: 2, RosterSeq: 1, Part: 1, Parts: 1,
			Keys: []WrappedFor{{Member: []byte("ann"), Wrapped: []byte("w1")}, {Member: []byte("bob"), Wrapped: []byte("w2")}}}).Append(nil, 15),
		(&GroupChange{PerDevice: true, Group: []byte("team"), Statement: []byte("stmt"), EpochStmt: []byte("epoch statement"), Epoch: 2, RosterSeq: 1, Part: 1, Parts: 2,
			Keys: []WrappedFor{{Member: []byte("ann"), Device: 7, Wrapped: []byte("w1")}, {Member: []byte("ann"), Device: 9, Wrapped: []byte("w2")}}}).Append(nil, 15),
		(&BadEpoch{Group: []byte("team"), Epoch: 3, Sig: bytes.Repeat([]byte{6}, 64)}).Append(nil, 27),
		(&BadEpoch{Group: []byte("team"), Epoch: 3, Device: 7, Sig: bytes.Repeat([]byte{6}, 64)}).Append(nil, 27),
		AppendEmpty(nil, TGroupList, 16),
		(&GroupReq{Group: []byte("team"), From: 3}).Append(nil, TGroupChain, 17),
		(&GroupReq{Group: []byte("team"), From: 1}).Append(nil, TGroupKeys, 18),
		(&GroupReq{Group: []byte("team"), From: 4}).Append(nil, TGroupChanged, 0),
		(&SendGroup{Group: []byte("team"), Epoch: 2, MsgID: id16, Body: []byte("sealed"), Sig: bytes.Repeat([]byte{5}, 64)}).Append(nil, 19),
		(&SendGroup{File: true, Group: []byte("team"), Epoch: 2, MsgID: id16, Body: []byte("sealed chunk"), Sig: bytes.Repeat([]byte{5}, 64)}).Append(nil, 26),
		(&Groups{Names: [][]byte{[]byte("team"), []byte("ops")}}).Append(nil, 20),
		(&GroupChainReply{Group: []byte("team"), More: true, Statements: [][]byte{[]byte("s0"), []byte("s1")}}).Append(nil, 21),
		(&DeviceReq{User: []byte("ann"), Seq: 2}).Append(nil, TDeviceChain, 22),
		(&DeviceReq{User: []byte("ann"), Seq: 3}).Append(nil, TDevicesChanged, 0),
		(&LoginDevice{User: []byte("ann"), DeviceID: 9, Flags: LoginNoDeliveries, Sig: bytes.Repeat([]byte{6}, 64)}).Append(nil, 25),
		(&DeviceAppend{Statement: seedDeviceStatements()[0]}).Append(nil, 23),
		(&DeviceChainReply{User: []byte("ann"), More: true, Statements: [][]byte{[]byte("d0"), []byte("d1")}}).Append(nil, 24),
		(&LinkOpen{Channel: [LinkChannelLen]byte{1, 2, 3}, Role: LinkOffer}).Append(nil, 28),
		(&LinkOpen{Channel: [LinkChannelLen]byte{1, 2, 3}, Role: LinkJoin}).Append(nil, 29),
		(&LinkData{Data: []byte("sealed frame")}).Append(nil, TLinkData, 0),
		(&LinkData{Data: []byte("sealed frame")}).Append(nil, TLinkRelay, 0),
		AppendEmpty(nil, TLinkJoined, 0),
		AppendEmpty(nil, TLinkClosed, 0),
		AppendEmpty(nil, TDeviceSeen, 30),
		(&DeviceSeenReply{Devices: []DeviceSeen{{DeviceID: 7, Idle: 60}, {DeviceID: 9, Idle: 2_600_000}}}).Append(nil, 30),
		(&SendDMDevices{To: []byte("bob"), MsgID: id16, Kind: KindText, Copies: []DeviceCopy{{Device: 7, Wrap: bytes.Repeat([]byte{8}, WrapLen)}, {Device: 9, Wrap: bytes.Repeat([]byte{9}, WrapLen)}},
			Own: []DeviceCopy{{Device: 3, Wrap: bytes.Repeat([]byte{3}, WrapLen)}}, Payload: []byte("sealed")}).Append(nil, 31),
		(&SendDMDevices{To: []byte("bob"), MsgID: id16, Kind: KindFile, Copies: []DeviceCopy{{Device: 7, Wrap: bytes.Repeat([]byte{8}, WrapLen)}}, Payload: []byte("chunk")}).Append(nil, 32),
		(&Recover{User: []byte("ann"), Password: []byte("the password"), Keys: Keys{BoxKey: bytes.Repeat([]byte{1}, 32), SignKey: bytes.Repeat([]byte{2}, 32), KeySig: bytes.Repeat([]byte{3}, 64)},
			Statement: seedDeviceStatements()[0]}).Append(nil, 33),
		(&ChangePassword{Old: []byte("the old login key"), New: []byte("the new login key")}).Append(nil, 34),
		(&SendDMDevices{To: []byte("bob"), MsgID: id16, Kind: KindText, Copies: []DeviceCopy{{Device: 7, Wrap: bytes.Repeat([]byte{8}, WrapLen)}}, Payload: []byte("sealed"), Detail: true}).Append(nil, 36),
		(&SentDevices{Sent: Sent{ServerID: 9, Time: 1700000000000, Status: StatusDelivered}, Devices: []DeviceStatus{{Device: 7, Status: StatusDelivered}, {Device: 8, Status: StatusQueued}, {Device: 9, Status: StatusNotSent}}}).Append(nil, 35),
		(&DevicesMismatch{Users: []DevicesDiff{{User: []byte("bob"), Missing: []uint64{7}, Extra: []uint64{9, 10}}, {User: []byte("ann"), Extra: []uint64{3}}}}).Append(nil, 31),
		(&DeliverDevices{ServerID: 5, Time: 1700000000000, Flags: DeliverFlagRequest, From: []byte("ann"), FromDevice: 3, To: []byte("bob"), MsgID: id16, Kind: KindText,
			Wrap: bytes.Repeat([]byte{8}, WrapLen), Payload: []byte("sealed")}).Append(nil, 0),
		(&GroupKeysReply{Group: []byte("team"), Current: 2, Keys: []EpochKeyMsg{{Epoch: 2, RosterSeq: 1, Created: 1700000000000, Wrapper: []byte("ann"), Wrapped: []byte("w")}}}).Append(nil, TGroupKeysReply, 22),
		(&GroupKeysReply{Group: []byte("team"), Current: 2, Keys: []EpochKeyMsg{{Epoch: 2, RosterSeq: 1, Created: 1700000000000, Wrapper: []byte("ann"), Wrapped: []byte("w"),
			Stmt: []byte("statement"), BadBy: []byte("bob"), BadSig: bytes.Repeat([]byte{7}, 64)}}}).Append(nil, TGroupKeysReplyV2, 22),
		(&GroupKeysReply{Group: []byte("team"), Current: 2, Keys: []EpochKeyMsg{{Epoch: 2, RosterSeq: 1, Created: 1700000000000, Wrapper: []byte("ann"), WrapperDevice: 7, Wrapped: []byte("w"),
			Stmt: []byte("statement"), BadBy: []byte("bob"), BadDevice: 9, BadSig: bytes.Repeat([]byte{7}, 64)}}}).Append(nil, TGroupKeysReplyV3, 22),
		(&DeliverGroup{ServerID: 9, Time: 8, Group: []byte("team"), From: []byte("ann"), Epoch: 2, MsgID: id16, Body: []byte("sealed"), Sig: bytes.Repeat([]byte{5}, 64)}).Append(nil, 0),
		(&DeliverGroup{ServerID: 9, Time: 8, Group: []byte("team"), From: []byte("ann"), FromDevice: 7, Epoch: 2, MsgID: id16, Body: []byte("sealed"), Sig: bytes.Repeat([]byte{5}, 64)}).Append(nil, 0),
		(&Signal{To: []byte("bob"), Body: []byte("sealed")}).Append(nil, 23),
		(&SignalMsg{From: []byte("alice"), Body: []byte("sealed")}).Append(nil, 0),
		(&SignalDevices{To: []byte("bob"), Copies: []DeviceCopy{{Device: 7, Wrap: bytes.Repeat([]byte{8}, WrapLen)}, {Device: 9, Wrap: bytes.Repeat([]byte{9}, WrapLen)}}, Payload: []byte("sealed")}).Append(nil, 0),
		(&SignalDevicesMsg{From: []byte("alice"), FromDevice: 3, Wrap: bytes.Repeat([]byte{8}, WrapLen), Payload: []byte("sealed")}).Append(nil, 0),
		(&Presence{Reset: true, Entries: []PresenceEntry{{User: []byte("ann"), Online: true}, {User: []byte("bob")}}}).Append(nil, 0),
		(&Presence{Entries: []PresenceEntry{{User: []byte("ann")}}}).Append(nil, 0),
		(&Broadcast{Text: []byte("fire drill at 3 \u00e9")}).Append(nil, 24),
		(&BroadcastSent{Count: 12}).Append(nil, 24),
		(&BroadcastMsg{Time: 1700000000000, From: []byte("ann"), Text: []byte("hello all")}).Append(nil, 0),
	}
}

func seedLiveBodies() [][]byte {
	id16 := bytes.Repeat([]byte{0xab}, 16)
	return [][]byte{
		append([]byte{KindReceipt}, (&Receipt{Type: ReceiptDelivered, MsgIDs: [][]byte{id16}}).Append(nil)...),
		append([]byte{KindReceipt}, (&Receipt{Type: ReceiptRead, Group: []byte("team"), MsgIDs: [][]byte{id16, id16}}).Append(nil)...),
		append([]byte{KindTyping}, (&Typing{Active: true}).Append(nil)...),
		append([]byte{KindTyping}, (&Typing{Group: []byte("team")}).Append(nil)...),
	}
}

// reencodeLive parses a receipt or typing body (after its kind byte) and
// encodes it again.
func reencodeLive(in []byte) ([]byte, error) {
	if len(in) == 0 {
		return nil, ErrMalformed
	}
	switch in[0] {
	case KindReceipt:
		var r Receipt
		err := r.Parse(in[1:])
		return r.Append([]byte{in[0]}), err
	case KindTyping:
		var t Typing
		err := t.Parse(in[1:])
		return t.Append([]byte{in[0]}), err
	}
	return nil, ErrMalformed
}

func FuzzLiveBody(f *testing.F) {
	seeds := seedLiveBodies()
	writeCorpus(f, "FuzzLiveBody", seeds)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := reencodeLive(in)
		if err != nil {
			return
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("round trip changed the body:\n in %x\nout %x", in, out)
		}
		checkPrefixes(t, in, func(b []byte) error { _, err := reencodeLive(b); return err })
	})
}

func seedInner() [][]byte {
	in := Inner{Kind: KindText, From: []byte("alice"), To: []byte("bob"), MsgID: bytes.Repeat([]byte{9}, 16), SentAt: 42, Body: []byte("hello")}
	a, _ := in.Append(nil)
	in.Body = bytes.Repeat([]byte("x"), 300)
	b, _ := in.Append(nil)
	g := Inner{Kind: KindText, From: []byte("alice"), To: []byte("team"), MsgID: bytes.Repeat([]byte{9}, 16), SentAt: 42, Body: []byte("hello team"),
		Roster: &RosterPos{Seq: 3, Head: [32]byte{1, 2, 3}}}
	c, _ := g.Append(nil)
	return [][]byte{a, b, c}
}

func seedEpochStatements() [][]byte {
	st := EpochStatement{Group: []byte("team"), Epoch: 4, RosterSeq: 2, Head: [32]byte{5}, Commit: [32]byte{6}, Maker: []byte("ann"), Sig: bytes.Repeat([]byte{7}, 64)}
	byDevice := st
	byDevice.Device = 9
	return [][]byte{st.Append(nil), byDevice.Append(nil)}
}

func FuzzEpochStatement(f *testing.F) {
	seeds := seedEpochStatements()
	writeCorpus(f, "FuzzEpochStatement", seeds)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var m EpochStatement
		if m.Parse(in) != nil {
			return
		}
		if out := m.Append(nil); !bytes.Equal(out, in) {
			t.Fatal("round trip changed the statement")
		}
		checkPrefixes(t, in, func(b []byte) error { var m EpochStatement; return m.Parse(b) })
	})
}

func seedChunks() [][]byte {
	c := FileChunk{FileID: bytes.Repeat([]byte{3}, 16), Name: []byte("a.txt"), Size: 5, Index: 0, Count: 1, Data: []byte("hello")}
	return [][]byte{c.Append(nil)}
}

func seedHellos(t testing.TB) (client, server [][]byte) {
	s := mustKey(t, "server static")
	for _, pinned := range []*PublicKey{&s.Public, nil} {
		ch, _ := NewClientHandshake(ClientConfig{ServerKey: pinned, Rand: &detRand{seed: "c"}})
		reply, _, err := ServerHandshake(ServerConfig{Static: &s, Rand: &detRand{seed: "s"}}, ch.Hello())
		if err != nil {
			t.Fatal(err)
		}
		client = append(client, ch.Hello())
		server = append(server, reply)
	}
	return client, server
}

// writeCorpus keeps the seeds as files in testdata/fuzz/NAME, the form
// `go test -fuzz` reads.
func writeCorpus(t testing.TB, name string, seeds [][]byte, extra ...string) {
	if !*updateCorpus {
		return
	}
	dir := filepath.Join("testdata", "fuzz", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range seeds {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		for _, e := range extra {
			content += e + "\n"
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkPrefixes fails if any strict prefix of a valid input parses.
func checkPrefixes(t *testing.T, in []byte, parse func([]byte) error) {
	for n := 0; n < len(in); n++ {
		if parse(in[:n]) == nil {
			t.Fatalf("strict prefix of %d/%d bytes parses: %x", n, len(in), in)
		}
	}
}

func FuzzMessage(f *testing.F) {
	seeds := seedMessages()
	writeCorpus(f, "FuzzMessage", seeds)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := reencode(in)
		if err != nil {
			return
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("round trip changed the message:\n in %x\nout %x", in, out)
		}
		checkPrefixes(t, in, func(b []byte) error { _, err := reencode(b); return err })
	})
}

func FuzzClientHello(f *testing.F) {
	ch, _ := seedHellos(f)
	writeCorpus(f, "FuzzClientHello", ch)
	for _, s := range ch {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := ParseClientHello(in)
		if err != nil {
			return
		}
		if !bytes.Equal(h.Marshal(), in) {
			t.Fatalf("round trip changed the hello")
		}
		checkPrefixes(t, in, func(b []byte) error { _, err := ParseClientHello(b); return err })
	})
}

func FuzzServerHello(f *testing.F) {
	_, sh := seedHellos(f)
	writeCorpus(f, "FuzzServerHello", sh)
	for _, s := range sh {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := ParseServerHello(in)
		if err != nil {
			return
		}
		if !bytes.Equal(h.Marshal(), in) {
			t.Fatalf("round trip changed the hello")
		}
		checkPrefixes(t, in, func(b []byte) error { _, err := ParseServerHello(b); return err })
	})
}

// FuzzServerHandshake feeds arbitrary hellos to the server side: it must
// never panic, and a hello it accepts must be one a client could finish.
func FuzzServerHandshake(f *testing.F) {
	ch, _ := seedHellos(f)
	for _, s := range ch {
		f.Add(s)
	}
	s := mustKey(f, "server static")
	f.Fuzz(func(t *testing.T, in []byte) {
		reply, sess, err := ServerHandshake(ServerConfig{Static: &s}, in)
		if err == nil && (sess == nil || reply == nil) {
			t.Fatal("success without a session")
		}
	})
}

func FuzzFrames(f *testing.F) {
	seeds := [][]byte{frameBytes([]byte("a"), []byte("bc")), frameBytes(bytes.Repeat([]byte{1}, 1000)), {0, 0}, {0xff, 0xff, 1}}
	writeCorpus(f, "FuzzFrames", seeds, "uint16(1)")
	for _, s := range seeds {
		f.Add(s, uint16(1))
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint16) {
		read := func(r io.Reader) ([][]byte, int, error) {
			fr := NewFrameReader(r, 0)
			var frames [][]byte
			used := 0
			for {
				p, err := fr.Next()
				if err != nil {
					return frames, used, err
				}
				if len(p) == 0 || len(p) > MaxFrameLen {
					t.Fatalf("frame of %d bytes", len(p))
				}
				frames = append(frames, append([]byte(nil), p...))
				used += FrameHeaderLen + len(p)
			}
		}
		whole, used, errWhole := read(bytes.NewReader(in))
		// Round trip: the frames re-encode to the bytes they came from.
		if !bytes.Equal(frameBytes(whole...), in[:used]) {
			t.Fatal("frames do not re-encode to their input")
		}
		// Split delivery gives the same frames and the same error.
		cut := int(split) % (len(in) + 1)
		r := io.MultiReader(iotest.OneByteReader(bytes.NewReader(in[:cut])), bytes.NewReader(in[cut:]))
		parts, _, errSplit := read(r)
		if len(parts) != len(whole) || (errWhole == nil) != (errSplit == nil) {
			t.Fatalf("split delivery: %d frames (%v), whole: %d (%v)", len(parts), errSplit, len(whole), errWhole)
		}
		for i := range parts {
			if !bytes.Equal(parts[i], whole[i]) {
				t.Fatalf("frame %d differs when split", i)
			}
		}
		// A strict prefix of the complete frames never yields the last one.
		if used > 0 {
			got, _, _ := read(bytes.NewReader(in[:used-1]))
			if len(got) == len(whole) {
				t.Fatal("a strict prefix yields every frame")
			}
		}
	})
}

func FuzzOpen(f *testing.F) {
	s := mustKey(f, "server static")
	f.Add([]byte("0123456789abcdef0123"))
	f.Fuzz(func(t *testing.T, in []byte) {
		_, ss, _, _ := handshake(t, s, &s.Public)
		if _, err := ss.Open(nil, in); err == nil {
			t.Fatal("a frame not sealed with the session key opened")
		}
	})
}

func FuzzOpenWrap(f *testing.F) {
	k := &MessageKey{1, 2, 3}
	payload := []byte("a payload")
	var shared [32]byte
	hash := PayloadHash(payload)
	good, err := WrapKey(nil, k, &hash, &shared, bytes.NewReader(make([]byte, 24)))
	if err != nil {
		f.Fatal(err)
	}
	seeds := [][]byte{good, good[:WrapLen-1], bytes.Repeat([]byte{0}, WrapLen)}
	writeCorpus(f, "FuzzOpenWrap", seeds)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := OpenWrap(in, payload, &shared)
		if err == nil && (!bytes.Equal(in, good) || *got != *k) {
			t.Fatal("a wrap that was not made for this payload opened")
		}
		if _, err := OpenWrap(in, []byte("another payload"), &shared); err == nil {
			t.Fatal("a wrap opened for another payload")
		}
	})
}

func FuzzInner(f *testing.F) {
	seeds := seedInner()
	writeCorpus(f, "FuzzInner", seeds)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var m Inner
		if m.Parse(in) != nil {
			return
		}
		out, err := m.Append(nil)
		if err != nil || !bytes.Equal(out, in) {
			t.Fatalf("round trip: %v", err)
		}
		checkPrefixes(t, in, func(b []byte) error { var m Inner; return m.Parse(b) })
	})
}

func FuzzFileChunk(f *testing.F) {
	seeds := seedChunks()
	writeCorpus(f, "FuzzFileChunk", seeds)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var c FileChunk
		if c.Parse(in) != nil {
			return
		}
		if !bytes.Equal(c.Append(nil), in) {
			t.Fatal("round trip changed the chunk")
		}
		checkPrefixes(t, in, func(b []byte) error { var c FileChunk; return c.Parse(b) })
	})
}

func FuzzUsername(f *testing.F) {
	seeds := [][]byte{[]byte("Alice"), []byte("a_1"), []byte("\xc3\x28"), []byte("ａｌｉｃｅ"), []byte("a\x00b"), []byte("\u202eevil")}
	writeCorpus(f, "FuzzUsername", seeds)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := AppendCanonicalUsername(nil, in)
		if err != nil {
			return
		}
		if !ValidUsername(c) || !bytes.Equal(bytes.ToLower(in), c) {
			t.Fatalf("canonical form %q of %q", c, in)
		}
		if c2, _ := AppendCanonicalUsername(nil, c); !bytes.Equal(c, c2) {
			t.Fatal("canonicalisation is not idempotent")
		}
	})
}

func FuzzVerifyKeys(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(&detRand{seed: "sign"})
	box := mustKey(f, "box")
	sig := ed25519.Sign(priv, KeySigMessage([]byte("alice"), box.Public.Bytes()))
	f.Add([]byte("alice"), box.Public.Bytes(), []byte(pub), sig)
	f.Fuzz(func(t *testing.T, user, boxKey, signKey, sig []byte) {
		k := Keys{BoxKey: boxKey, SignKey: signKey, KeySig: sig}
		if VerifyKeys(user, &k) == nil {
			if _, err := ParsePublicKey(boxKey); err != nil {
				t.Fatal("a low-order box key verified")
			}
		}
	})
}

func TestStrictPrefixesOfSeeds(t *testing.T) {
	for _, s := range seedMessages() {
		checkPrefixes(t, s, func(b []byte) error { _, err := reencode(b); return err })
	}
	for _, s := range seedInner() {
		checkPrefixes(t, s, func(b []byte) error { var m Inner; return m.Parse(b) })
	}
	for _, s := range seedLiveBodies() {
		if _, err := reencodeLive(s); err != nil {
			t.Fatalf("seed %x: %v", s, err)
		}
		checkPrefixes(t, s, func(b []byte) error { _, err := reencodeLive(b); return err })
	}
	ch, sh := seedHellos(t)
	for _, s := range ch {
		checkPrefixes(t, s, func(b []byte) error { _, err := ParseClientHello(b); return err })
	}
	for _, s := range sh {
		checkPrefixes(t, s, func(b []byte) error { _, err := ParseServerHello(b); return err })
	}
}

func TestUnknownType(t *testing.T) {
	if _, err := reencode(AppendHeader(nil, 0x7e, 1)); err != ErrUnknownType {
		t.Fatalf("got %v", err)
	}
}
