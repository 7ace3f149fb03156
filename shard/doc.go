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
// # Direct messages
//
//	sender's reader --route--> receiver's shard --seal, queue--> receiver
//	receiver's reader --ack--> receiver's shard --Sent(delivered)--> sender
//
// The sender's reader stamps the message with a server id and time, looks the
// receiver up in the directory and passes the message to the receiver's
// shard. That shard queues it on the receiver's connection and remembers it
// as pending until the receiver's client acknowledges it; only then does the
// sender get Sent with StatusDelivered. A receiver who is offline, has a
// backlog, or cannot keep up gets the message through the store instead: it
// is committed (group commit, fsync) before the sender gets
// Sent(StatusQueued). Either way nothing acknowledged is lost.
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
