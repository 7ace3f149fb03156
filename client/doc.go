// Package client is the securefastchat client library: it connects with a
// pinned server key, signs up and logs in, looks up and pins other users'
// keys, seals direct messages end to end and opens the ones it receives.
// The command line, the chat, the tests and the benchmarks all use it.
//
// # The parts of a Client
//
// A Client is a user's end of the service. Its state is split by owner:
//
//   - session (session.go): the one session with the server. It owns the
//     connection, the login (the session token sealed in the home, the
//     device's key, or the password's login key: password.go),
//     reconnecting with backoff, the connection's state, and
//     requests that wait for a connection and are sent again after a
//     reconnect. Its mutex guards the connection and the state.
//   - groupBook (groups.go): what the client knows of its groups, each
//     view checked against the signed roster chain and the epoch keys, and
//     the changes it makes (roster statements, rekeying). Its mutex guards
//     the views; a second one lets one change run at a time.
//   - receiver (recv.go): opens and checks deliveries, drops repeats (the
//     seen log), assembles files, and hands messages to the application,
//     acknowledging each only once it is handed over and recorded.
//   - live (live.go): presence as the server last told it, and the pushes
//     (presence, typing, broadcasts, group news) handled off the
//     connection's reader.
//   - receipts (receipts.go): delivery and read receipts waiting to go.
//   - events (events.go): the one way to the application.
//
// Lock order: session.mu, groupBook.changeMu and groupBook.mu are never
// held while another of them is taken, except changeMu, which is held
// across a whole change (and so across the other two).
//
// # The application's side
//
// Everything the client has to tell the application (messages, receipts,
// presence, typing, group changes, connection states, rejected
// deliveries, key changes, file progress) arrives one way: the channel
// Client.Events, in order. A server met for the first time is pinned by
// PinServer, which says what it pinned; a program that asks its user first
// sets Config.NoPinNew and pins the key the user accepted.
package client
