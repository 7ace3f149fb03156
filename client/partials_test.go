package client_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"securefastchat/client"
	"securefastchat/internal/server"
	"securefastchat/internal/testserver"
	"securefastchat/proto"
)

// A sender cannot fill the receiver's disk with files it never finishes:
// past four unfinished files from one sender the next is refused (and
// reported once); transfers that stalled for a day are deleted at start.
func TestPartialFilesBounded(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Shard.MsgEvery = -1 })
	mallory := testserver.Signup(t, s, "mallory")
	rejected := make(chan error, 100)
	cfg := testserver.ClientConfig(t, s)
	bob, err := client.Signup(ctxT(t), cfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	onReject := func(c *client.Client) {
		testserver.OnEvent(c, func(ev client.Event) {
			if ev.Kind == client.EventRejected {
				rejected <- ev.Err
			}
		})
	}
	onReject(bob)
	// The first of two chunks of six files, then the rest of one of them.
	firstChunk := func(i int) {
		id := client.NewMsgID()
		ch := proto.FileChunk{FileID: id[:], Name: []byte("junk.bin"), Size: 2 * proto.FileChunkData, Index: 0, Count: 2,
			Data: make([]byte, proto.FileChunkData)}
		out, err := mallory.Prepare(ctxT(t), "bob", proto.KindFile, ch.Append(nil))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mallory.Send(ctxT(t), out); err != nil {
			t.Fatalf("chunk of file %d: %v", i, err)
		}
	}
	for i := 0; i < 6; i++ {
		firstChunk(i)
	}
	select {
	case err := <-rejected:
		if !errors.Is(err, client.ErrTooManyPartials) || !strings.Contains(err.Error(), "at most 4") {
			t.Fatalf("refusal: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the fifth unfinished file was not refused")
	}
	// Every chunk is taken (the sixth is refused too, silently) before
	// bob closes: one not acknowledged yet would come again after the
	// restart, as a transfer begun then.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		n, _, err := s.Store.QueueLen("bob")
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d chunks still queued for bob", n)
		}
	}
	parts, _ := filepath.Glob(filepath.Join(cfg.OutDir, ".incoming-*.part"))
	if len(parts) != 4 {
		t.Fatalf("%d partial files on disk, want 4", len(parts))
	}
	bob.Close()
	// A day later, at the next start, the stalled transfers are gone.
	old := time.Now().Add(-25 * time.Hour)
	all, _ := filepath.Glob(filepath.Join(cfg.OutDir, ".incoming-*"))
	for _, p := range all {
		os.Chtimes(p, old, old)
	}
	bob, err = client.Open(ctxT(t), cfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	onReject(bob)
	defer bob.Close()
	if left, _ := filepath.Glob(filepath.Join(cfg.OutDir, ".incoming-*")); len(left) != 0 {
		t.Fatalf("stalled transfers left after a restart: %v", left)
	}
}

// TestHostileFileNames: a stranger's file names cannot act on a terminal
// or hide their extension (C1 controls such as U+009B and bidirectional
// marks such as U+200F are replaced), and two files with the same
// 255-byte name are both saved, the second as "... (1)", with no partial
// file left.
func TestHostileFileNames(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Shard.MsgEvery = -1 })
	mallory := testserver.Signup(t, s, "mallory")
	cfg := testserver.ClientConfig(t, s)
	bob, err := client.Signup(ctxT(t), cfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	sendNamed := func(name string, body string) {
		t.Helper()
		id := client.NewMsgID()
		ch := proto.FileChunk{FileID: id[:], Name: []byte(name), Size: uint64(len(body)), Index: 0, Count: 1, Data: []byte(body)}
		out, err := mallory.Prepare(ctxT(t), "bob", proto.KindFile, ch.Append(nil))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mallory.Send(ctxT(t), out); err != nil {
			t.Fatalf("sending %q: %v", name, err)
		}
	}
	long := strings.Repeat("é", 125) + ".txt" // 254 bytes
	long += "x"                               // 255
	names := []string{"csi\u009b31mred.txt", "invoice\u200fcod.exe", "\u202etxt.exe", long, long}
	for i, n := range names {
		sendNamed(n, "file "+string(rune('a'+i)))
	}
	var got []*client.ReceivedFile
	timeout := time.After(10 * time.Second)
	for len(got) < len(names) {
		select {
		case m := <-testserver.Messages(bob):
			if m.File != nil {
				got = append(got, m.File)
			}
		case <-timeout:
			t.Fatalf("got %d of %d files", len(got), len(names))
		}
	}
	for _, f := range got {
		for _, r := range f.Name + filepath.Base(f.Path) {
			if r == 0x9b || r == 0x200f || r == 0x202e || r < 0x20 {
				t.Errorf("saved name %q holds %U", f.Path, r)
			}
		}
		if len(filepath.Base(f.Path)) > 255 {
			t.Errorf("saved name of %d bytes", len(filepath.Base(f.Path)))
		}
		b, err := os.ReadFile(f.Path)
		if err != nil || !strings.HasPrefix(string(b), "file ") {
			t.Errorf("%s: %q %v", f.Path, b, err)
		}
	}
	if !strings.Contains(filepath.Base(got[4].Path), " (1)") {
		t.Errorf("the second long file was saved as %s", got[4].Path)
	}
	if got[3].Path == got[4].Path {
		t.Error("two files saved under one name")
	}
	if parts, _ := filepath.Glob(filepath.Join(cfg.OutDir, ".incoming-*")); len(parts) != 0 {
		t.Errorf("partial files left: %v", parts)
	}
}

// TestHomeSealedAtRest: after real use (a contact pinned, a key change
// held, messages received, a file half received) no file the client keeps
// names a contact, holds their keys, or names a file being received.
func TestHomeSealedAtRest(t *testing.T) {
	s := testserver.Start(t, func(c *server.Config) { c.Shard.MsgEvery = -1 })
	cfg := testserver.ClientConfig(t, s)
	alice, err := client.Signup(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	zebediah := testserver.Signup(t, s, "zebediah")
	if _, err := zebediah.SendText(ctxT(t), "alice", "hello"); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, alice); m.Text != "hello" {
		t.Fatalf("got %q", m.Text)
	}
	id := client.NewMsgID()
	ch := proto.FileChunk{FileID: id[:], Name: []byte("quarterly-secrets.pdf"), Size: 2 * proto.FileChunkData, Index: 0, Count: 2,
		Data: make([]byte, proto.FileChunkData)}
	out, err := zebediah.Prepare(ctxT(t), "alice", proto.KindFile, ch.Append(nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zebediah.Send(ctxT(t), out); err != nil {
		t.Fatal(err)
	}
	// alice's client writes the state when it acknowledges the chunk;
	// closing makes everything durable.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if st, _ := filepath.Glob(filepath.Join(cfg.OutDir, ".incoming-*.state")); len(st) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no state written for the partial file")
		}
		time.Sleep(20 * time.Millisecond)
	}
	alice.Close()
	for _, root := range []string{cfg.Home, cfg.OutDir} {
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasSuffix(p, ".part") {
				return err
			}
			b, _ := os.ReadFile(p)
			for _, secret := range []string{"zebediah", "quarterly-secrets", "x25519", "ed25519"} {
				if filepath.Base(p) == "known_servers" && strings.HasSuffix(secret, "25519") {
					continue // the servers' keys, which are public
				}
				if strings.Contains(string(b), secret) {
					t.Errorf("%s holds %q in plain text", p, secret)
				}
			}
			return nil
		})
	}
}
