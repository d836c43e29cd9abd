// Package node runs tpcd's engines against the real world. A loop owns one
// engine from one goroutine, like etcd raft's node.go around rawnode.go: it
// steps inputs, appends the events each step produced to the PostgreSQL log
// (group commit: one round trip, and one row, for the events of many
// concurrent transactions), and performs effects only once the events they
// wait for are durable. Compaction (compaction.go, rowindex.go) removes the
// events of ended transactions: a row goes once all its transactions ended,
// and until then the events of those that did are cut out of it. The
// coordinator and participant types wire that loop to the JSON-RPC
// transport and, for a participant, to its data database.
//
// The contract the coordinator serves (method names, params and result
// types) is package api's; node holds only the handlers behind it, so a
// client never links the server.
//
// The loop reaches its log through eventLog and tells time through clock.
// Both interfaces live here, with the code that consumes them, rather than
// in logstore: they name what the loop needs (append a batch as one row and
// learn its seq, scan a node's log, remove ended transactions' events; the
// time, a timer, a ticker), not everything a log offers. Nodes run on
// logstore.Store and wallClock. The loop's own tests (loop_test.go,
// compaction_test.go) run it on logstore/memlog, whose appends they hold
// back, fail or release, with a fake clock and a scripted machine, and
// check the ordering rule above without PostgreSQL.
package node
