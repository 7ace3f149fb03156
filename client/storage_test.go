package client_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"securefastchat/client"
	"securefastchat/internal/testserver"
)

// TestClientWithoutFileSystem: the client core keeps its home and its
// downloads through the Storage and Downloads interfaces alone. A user
// whose home and downloads live in memory (as in a browser) signs up,
// pins the server, receives a text and a file, and opens again from the
// same storage: the session is resumed, the contact's keys are still
// pinned, and nothing is shown twice.
func TestClientWithoutFileSystem(t *testing.T) {
	s := testserver.Start(t, nil)
	st, dl, saved := client.MemoryStorageForTest()
	cfg := testserver.ClientConfig(t, s)
	cfg.Home, cfg.OutDir = "", ""
	cfg.Storage, cfg.Downloads = st, dl
	alice, err := client.Signup(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	bob := testserver.Signup(t, s, "bob")
	testserver.Acquaint(t, alice, bob)
	if _, err := bob.SendText(ctxT(t), "alice", "in memory"); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, alice); m.Text != "in memory" {
		t.Fatalf("alice got %q", m.Text)
	}
	content := bytes.Repeat([]byte("chunk of a report "), 10000)
	path := filepath.Join(t.TempDir(), "report.txt")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.SendFile(ctxT(t), "alice", path, nil); err != nil {
		t.Fatal(err)
	}
	m := recvOne(t, alice)
	if m.File == nil || m.File.Name != "report.txt" {
		t.Fatalf("alice got %+v", m)
	}
	if got, ok := saved("report.txt"); !ok || !bytes.Equal(got, content) {
		t.Fatalf("the file saved in the downloads: %d bytes, want %d", len(got), len(content))
	}
	token := alice.Token()
	alice.Close()

	// Open again from the same storage.
	alice, err = client.Open(ctxT(t), cfg, "alice", pw)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	if !bytes.Equal(alice.Token(), token) {
		t.Fatal("the session kept in the storage was not resumed")
	}
	pk, err := alice.PeerKeys(ctxT(t), "bob")
	if err != nil || pk.Changed {
		t.Fatalf("bob's keys after reopening: %+v %v", pk, err)
	}
	if _, err := bob.SendText(ctxT(t), "alice", "after reopening"); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, alice); m.Text != "after reopening" {
		t.Fatalf("alice got %q after reopening (a message shown twice?)", m.Text)
	}
	if pinned, err := client.PinnedIn(st, cfg.Addr); err != nil || !pinned {
		t.Fatalf("the server is not pinned in the storage: %v %v", pinned, err)
	}
}
