package shard

import "securefastchat/proto"

// endpoint names where a message goes: today a user (its canonical name),
// next a device of a user. It is a value, so naming one costs nothing.
type endpoint struct {
	name [proto.MaxUsernameLen]byte
	n    uint8
}

// userEndpoint is the endpoint of a user's receiving connection.
func userEndpoint(canon []byte) endpoint {
	var e endpoint
	e.n = uint8(copy(e.name[:], canon))
	return e
}

// router finds where a recipient endpoint (today a user's receiving
// connection, next a device) is connected, and hands it envelopes. The
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

func (d *directory) find(to endpoint) *conn { return d.lookup(to.name[:to.n]) }

func (d *directory) route(rc *conn, env *envelope) bool {
	return rc.sh.post(event{kind: evDeliver, c: rc, env: env})
}

// route hands a direct message to its receiver's connection, or stores
// it if that shard has stopped.
func (s *Set) route(rc *conn, env *envelope) {
	if !s.router.route(rc, env) {
		s.persist(rc.user, env, nil)
	}
}
