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
	c.reply(proto.AppendEmpty(nil, proto.TOK, id))
	c.set.devicesChanged(c.user, seq)
}
