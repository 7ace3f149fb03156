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
	cfg.OnReject = func(from string, err error) { rejected <- err }
	bob, err := client.Signup(ctxT(t), cfg, "bob", pw)
	if err != nil {
		t.Fatal(err)
	}
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
	defer bob.Close()
	if left, _ := filepath.Glob(filepath.Join(cfg.OutDir, ".incoming-*")); len(left) != 0 {
		t.Fatalf("stalled transfers left after a restart: %v", left)
	}
}
