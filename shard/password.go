package shard

import (
	"context"

	"securefastchat/proto"
)

// changePassword answers ChangePassword (version 6). The account service
// checks the current password as a login does, keeps the new one and
// revokes the account's other sessions' tokens; their connections are
// closed (CloseLoginAgain), so one that held a token and nothing else
// cannot go on, while a device logs in again with its key. It takes
// argon2 work, bounded by the login deadline, on this connection's
// reader alone.
func (c *conn) changePassword(id uint32, body []byte) {
	if c.sess.Version < 6 {
		c.replyErr(id, proto.CodeUnsupported, "password changes need protocol version 6")
		return
	}
	var m proto.ChangePassword
	if err := m.Parse(body); err != nil {
		c.replyBad(id, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.set.opts.LoginTimeout)
	defer cancel()
	if err := c.set.opts.Accounts.ChangePassword(ctx, c.ip, c.user, c.token, m.Old, m.New); err != nil {
		c.replyFailure(id, err)
		return
	}
	c.reply(proto.AppendEmpty(nil, proto.TOK, id))
	for _, o := range c.set.dir.sessions(c.user) {
		if o != c {
			o.logger().Info("closing: the account's password changed")
			o.closeGraceful(CloseLoginAgain)
		}
	}
}
