// Package shard runs securefastchat's connections. A Set holds N shards;
// each shard is a goroutine that owns its connections and the messages
// routed to them, and shards hand messages to each other over channels.
// It reaches accounts through the Accounts interface it defines, and the
// store through package store; the balancer hands it connections.
//
// Files: set.go (the Set, its options and limits), shard.go (a shard's
// loop and events), inbox.go (what the loop does for one connection:
// deliver, persist, fetch, ack), conn.go (a connection's reader: the
// handshake, login and requests), outq.go (its output), envelope.go and
// router.go (the message path), devsend.go (messages sealed for devices),
// groups.go, live.go, requests.go, devices.go and password.go (device
// lists and password changes, carried to Accounts), links.go (device
// links), directory.go (who is online where, and the admission gate),
// reasons.go.
//
// # Connections
//
// Every connection has one reader goroutine: it runs the handshake under an
// absolute deadline, then login under another, then reads, decrypts and
// handles requests. It holds a read buffer only while input is pending, so
// an idle connection holds none. Output goes through a per-connection queue
// guarded by a mutex: frames are sealed into a pooled buffer, and a writer
// goroutine, started only while there is output, writes everything queued in
// one call. An idle connection therefore costs one parked goroutine and no
// buffers.
//
// # Messages: one envelope, one route, one persist
//
//	sender's reader --router--> receiver's shard --seal, queue--> receiver
//	receiver's reader --ack--> receiver's shard --outcome: Sent(delivered)--> sender
//	            (or) --Set.persist--> committer --outcome: Sent(queued)--> sender
//
// A routed message, direct or group, is an envelope (envelope.go) from the
// moment the sender's frame is parsed: the frame its receivers get, the
// fields the store keeps, and an outcome that is told, per receiver,
// delivered, queued or refused (a direct message's answers its sender; a
// group message's groupAck collects its members'). The sender's reader
// checks and stamps it, finds the receiver's endpoint through the router
// (router.go: the directory of this process's shards; a cluster's router
// would be another) and hands it to the receiver's shard, whose loop
// (Shard.deliver) writes it with the receiving device's number and keeps it
// pending until the receiver's client acknowledges it. A receiver who is
// offline, has a backlog, or cannot keep up, and a stranger's message
// (requests.go), get it through the store instead (Set.persist): it is
// committed (group commit, fsync) before its outcome is told queued.
// Either way nothing acknowledged is lost.
//
// # Devices
//
// The receiver is a device: an endpoint is a user and one of its devices
// (the ids of its device list, which the account service proves; an
// account without one has its first device). Each device has one
// receiving connection in the directory, its own delivery sequence
// (seqs.go) and its own inbox in the store, so devices of one account
// receive side by side and one device's backlog or full queue holds back
// nothing of another's. A direct message to an account with several
// devices is one shared envelope whose outcome (devicesReply) answers the
// sender once every device has it: delivered if one acknowledged it. A
// group message goes to every device of each member. Where an account's
// messages go is cached per account (devsets.go) and dropped when its list
// changes here; a device removed from the list is closed at once.
//
// # Who owns what
//
// A conn's fields are owned by its reader goroutine (login state), its
// shard loop (pending deliveries, backlog, barrier, fetch cursor), liveMu
// (contacts, requests, blocks) or wmu (the output queue). Lock order: a
// Shard's mu before a conn's wmu (closing the shard's connections);
// otherwise no lock of this package is taken while another is held.
//
// # The login barrier and the mailbox
//
// A receiving connection that logs in delivers nothing until a barrier has
// passed through the committer (every message accepted for its device
// before the login is on disk); then its stored queue goes first, at most
// MaxUnacked unacknowledged at a time, and only then does anything routed
// live. Until then, and whenever the store may hold something for the
// device (a backlog, or a message of its still committing), what is routed
// to the connection is stored instead, so the device's messages stay in
// order.
// The committer never blocks on a shard: it leaves notes (the barrier
// passed, a message committed, something was stored: fetch) in the shard's
// mailbox, a mutex-guarded list the loop drains when kicked.
//
// # Groups
//
// The group rules (who may change a roster, the key epoch rules, the
// limits, invitations) are package groups', reached through GroupRules;
// this package carries a change's parts, the replies and the news to the
// members (groups.go). Groups are kept in the store, whose cache of each
// group's state means a group message reads no bbolt page. A group message is one shared envelope: one event
// per shard carries that shard's members, and a member away gets it
// through the store. A member only invited (someone they had not accepted
// added them) gets nothing until they join (requests.go).
//
// # Presence, requests and live signals
//
// Two users are contacts once each has written to the other (or accepted
// the other), or they share a joined group; contacts see each other come
// and go (live.go). A direct message from someone the receiver has not
// accepted is a request: always stored first, pushed as DeliverRequest,
// and the receiver's client sends nothing back; typing passes only between
// people who have both accepted each other; a block drops, in the store,
// what the blocked user sends (requests.go). Live signals (presence,
// typing, broadcasts) are never stored and are dropped for a receiver far
// behind. What is closed or dropped is counted by typed reason
// (reasons.go).
//
// # Slow consumers
//
// A connection's queued output is capped (Options.MaxPending, 4 MiB) and
// every write has a deadline (Options.WriteTimeout, 10 s). At most
// Options.MaxUnacked deliveries (128) may wait for the receiver's ack, and
// none longer than Options.AckTimeout (10 s). A message that would pass the
// byte cap or the unacked cap is queued in the store. A receiver past the
// byte cap, the write deadline or the ack timeout is disconnected as a slow
// consumer, and every message still pending for it is queued, its sender
// getting Sent(queued) once it is on disk. A slow receiver never blocks its
// shard or a sender.
package shard
