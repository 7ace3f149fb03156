package shard

import (
	"securefastchat/proto"
	"securefastchat/store"
)

// endpoint names where a message goes: a device of a user (the user's
// canonical name and the device's id in the account's list). It is a
// value, so naming one costs nothing.
type endpoint struct {
	name [proto.MaxUsernameLen]byte
	n    uint8
	dev  uint64
}

// deviceEndpoint is the endpoint of one device of a user.
func deviceEndpoint(canon []byte, dev uint64) endpoint {
	e := endpoint{dev: dev}
	e.n = uint8(copy(e.name[:], canon))
	return e
}

// inbox is the store's name of the endpoint's queue.
func (e *endpoint) inbox() store.Inbox { return store.Inbox{User: string(e.name[:e.n]), Device: e.dev} }

// router finds where a recipient endpoint (a device of a user) is
// connected, and hands it envelopes. The
// directory of this process's shards is the router there is; a cluster's
// would hand an envelope to the node its endpoint is connected to. What no
// connection takes is stored (Set.persist), whoever routes it.
type router interface {
	// lookup returns the endpoint's connection, or nil if none is
	// online.
	find(to endpoint) *conn
	// route hands env to rc's shard loop, which delivers it or stores it;
	// it reports false if that shard has stopped.
	route(rc *conn, env *envelope) bool
}

var _ router = (*directory)(nil)

func (d *directory) find(to endpoint) *conn { return d.lookup(to.name[:to.n], to.dev) }

func (d *directory) route(rc *conn, env *envelope) bool {
	return rc.sh.post(event{kind: evDeliver, c: rc, env: env})
}

// route hands a direct message to its receiving device's connection, or
// stores it if that shard has stopped.
func (s *Set) route(rc *conn, env *envelope) {
	if !s.router.route(rc, env) {
		s.persist(rc.box(), env, nil)
	}
}
