package shard

import (
	"securefastchat/proto"
	"securefastchat/store"
)

// GroupRules is what the shards need of the group rules (package groups):
// a roster change or rekey is planned and checked at its first part and
// committed with its wrapped keys at its last; a member's report of a bad
// epoch is checked and kept. A refusal is the code and text the client
// gets. The shards carry the parts, the replies and the news to the
// members.
type GroupRules interface {
	Plan(user string, device uint64, group string, m *proto.GroupChange) (GroupPlan, *proto.RemoteError)
	Commit(user string, p GroupPlan, keys map[store.WrapFor][]byte) (*GroupChange, *proto.RemoteError)
	ReportBad(user string, device uint64, g *store.GroupState, m *proto.BadEpoch) *proto.RemoteError
}

// GroupPlan is a change planned and checked, waiting for its keys.
type GroupPlan interface {
	Group() string
	Epoch() uint32             // the new key epoch; 0: none
	RosterSeq() uint32         // the roster statement the epoch is for
	Member(member string) bool // the new epoch's key is to be wrapped for member's devices
	// Mismatch names the members whose devices keys does not match, with
	// the devices missing and extra; nil if they match.
	Mismatch(keys map[store.WrapFor][]byte) []proto.DevicesDiff
}

// GroupChange is what a committed change did.
type GroupChange struct {
	Group    string
	ChainLen uint32 // the roster's new length; 0: only the keys changed
	Members  []store.GroupMember
	Added    string // a member added (joined, or only invited)
	Gone     string // a member removed, or who left
}
