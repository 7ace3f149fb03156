// Package shard runs securefastchat's connections. A Set holds N shards;
// each shard is a goroutine that owns its connections and the messages
// routed to them, and shards hand messages to each other over channels.
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
// (Shard.deliver) writes it with the receiver's number and keeps it
// pending until the receiver's client acknowledges it. A receiver who is
// offline, has a backlog, or cannot keep up, and a stranger's message
// (requests.go), get it through the store instead (Set.persist): it is
// committed (group commit, fsync) before its outcome is told queued.
// Either way nothing acknowledged is lost.
//
// # Who owns what
//
// A conn's fields are owned by its reader goroutine (login state), its
// shard loop (pending deliveries, backlog, barrier, fetch cursor), liveMu
// (contacts, requests, blocks) or wmu (the output queue). Lock order: a
// Shard's mu before a conn's wmu (closing the shard's connections);
// otherwise no lock of this package is taken while another is held.
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
