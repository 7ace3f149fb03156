package client_test

import (
	"context"
	"testing"
	"time"

	"securefastchat/internal/testserver"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestDirectMessageAcrossShards(t *testing.T) {
	s := testserver.Start(t, nil)
	alice := testserver.Signup(t, s, "Alice")
	bob := testserver.Signup(t, s, "bob")
	if s.Set.Shard(0).Conns() != 1 || s.Set.Shard(1).Conns() != 1 {
		t.Fatalf("want one connection per shard, got %d and %d", s.Set.Shard(0).Conns(), s.Set.Shard(1).Conns())
	}
	ctx := ctxT(t)
	r, err := alice.SendText(ctx, "BOB", "hello bob")
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	select {
	case m := <-bob.Messages():
		if m.Text != "hello bob" || m.From != "alice" || m.ServerID != r.ServerID {
			t.Fatalf("got %+v, receipt %+v", m, r)
		}
	case <-ctx.Done():
		t.Fatal("no message")
	}
}
