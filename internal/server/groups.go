package server

import (
	"securefastchat/groups"
	"securefastchat/proto"
	"securefastchat/shard"
	"securefastchat/store"
)

// shardGroups gives the shards the group rules through their own small
// interface (shard.GroupRules).
type shardGroups struct{ *groups.Rules }

var _ shard.GroupRules = shardGroups{}

func (g shardGroups) Plan(user string, device uint64, group string, m *proto.GroupChange) (shard.GroupPlan, *proto.RemoteError) {
	p, refusal := g.Rules.Plan(user, device, group, m)
	if refusal != nil {
		return nil, refusal
	}
	return p, nil
}

func (g shardGroups) Commit(user string, p shard.GroupPlan, keys map[store.WrapFor][]byte) (*shard.GroupChange, *proto.RemoteError) {
	ch, refusal := g.Rules.Commit(user, p.(*groups.Plan), keys)
	if refusal != nil {
		return nil, refusal
	}
	return &shard.GroupChange{Group: ch.Group, ChainLen: ch.ChainLen, Members: ch.Members, Added: ch.Added, Gone: ch.Gone}, nil
}

func (g shardGroups) ReportBad(user string, device uint64, gs *store.GroupState, m *proto.BadEpoch) *proto.RemoteError {
	return g.Rules.ReportBad(user, device, gs, m)
}
