package server

import (
	"context"
	"crypto/ed25519"

	"securefastchat/internal/account"
	"securefastchat/proto"
	"securefastchat/shard"
)

// shardAccounts gives the shards the account service through their own
// small interface (shard.Accounts), so shard does not import account.
type shardAccounts struct{ *account.Service }

var _ shard.Accounts = shardAccounts{}

func session(r *account.Result, err error) (*shard.Session, error) {
	if err != nil {
		return nil, err
	}
	return &shard.Session{User: r.User, Display: r.Display, Token: r.Token, Expires: r.Expires, Device: r.Device}, nil
}

func (a shardAccounts) Signup(ctx context.Context, addr string, user, password []byte, keys *proto.Keys, invite []byte, checked bool) (*shard.Session, error) {
	return session(a.Service.Signup(ctx, addr, user, password, keys, invite, checked))
}

func (a shardAccounts) Login(ctx context.Context, addr string, user, password []byte) (*shard.Session, error) {
	return session(a.Service.Login(ctx, addr, user, password))
}

func (a shardAccounts) Resume(addr string, user, token []byte) (*shard.Session, error) {
	return session(a.Service.Resume(addr, user, token))
}

func (a shardAccounts) DeviceChain(requester string, user []byte, from uint32, free bool) (string, [][]byte, bool, error) {
	return a.Service.DeviceChain(requester, user, from, free)
}

func (a shardAccounts) AppendDevice(requester string, statement []byte) (uint32, error) {
	return a.Service.AppendDevice(requester, statement)
}

func (a shardAccounts) LoginDevice(addr string, user []byte, deviceID uint64, verify func(ed25519.PublicKey) bool) (*shard.Session, error) {
	return session(a.Service.LoginDevice(addr, user, deviceID, verify))
}

func (a shardAccounts) Recover(ctx context.Context, addr string, user, password []byte, keys *proto.Keys, statement []byte) (*shard.Session, error) {
	return session(a.Service.Recover(ctx, addr, user, password, keys, statement))
}

func (a shardAccounts) Devices(canon string) (*shard.DeviceSet, error) {
	key, all, ids, ok, err := a.Service.Devices(canon)
	if err != nil || !ok {
		return nil, err
	}
	return &shard.DeviceSet{Key: key, All: all, IDs: ids}, nil
}
