package shard

import "securefastchat/proto"

// Device chains are the account service's (Accounts.DeviceChain and
// AppendDevice); a connection only carries the requests and replies.

func (c *conn) deviceChain(id uint32, body []byte) {
	var m proto.DeviceReq
	if err := m.Parse(body); err != nil {
		c.replyBad(id, err)
		return
	}
	user, stmts, more, err := c.set.opts.Accounts.DeviceChain(c.user, m.User, m.Seq, c.freeLookup(m.User))
	if err != nil {
		c.replyFailure(id, err)
		return
	}
	c.reply((&proto.DeviceChainReply{User: []byte(user), More: more, Statements: stmts}).Append(nil, id))
}

func (c *conn) appendDevice(id uint32, body []byte) {
	var m proto.DeviceAppend
	if err := m.Parse(body); err != nil {
		c.replyBad(id, err)
		return
	}
	seq, err := c.set.opts.Accounts.AppendDevice(c.user, m.Statement)
	if err != nil {
		c.replyFailure(id, err)
		return
	}
	// Messages to the account go to the new list from now on: before the
	// answer, so that whatever the device that changed the list does next
	// finds it (a message right after a device is added reaches it), and a
	// removed device's sessions are over by then.
	c.set.devsets.drop(c.user)
	var st proto.DeviceStatement
	if st.Parse(m.Statement) == nil && st.Op == proto.DeviceRemove {
		c.set.endDevice(c.user, st.DeviceID)
	}
	c.reply(proto.AppendEmpty(nil, proto.TOK, id))
	c.set.devicesChanged(c.user, seq)
}

// endDevice closes the connections of a device removed from its
// account's list: at once, as an admin's revocation does. What it had
// not acknowledged is not queued for it again (its inbox is gone).
func (s *Set) endDevice(user string, dev uint64) {
	for _, c := range s.dir.sessions(user) {
		if c.dev == dev {
			c.logger().Info("closing: the device was removed from its account's list")
			c.closeGraceful(CloseRevoked)
		}
	}
}

// devicesSeen answers DeviceSeen: when each device of c's account last
// logged in.
func (c *conn) devicesSeen(id uint32, body []byte) {
	if err := proto.ParseEmpty(body); err != nil {
		c.replyBad(id, err)
		return
	}
	seen, err := c.set.opts.Accounts.OwnDevicesSeen(c.user)
	if err != nil {
		c.replyFailure(id, err)
		return
	}
	c.reply((&proto.DeviceSeenReply{Devices: seen}).Append(nil, id))
}
