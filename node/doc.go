// Package node runs tpcd's engines against the real world. A loop owns one
// engine from one goroutine, like etcd raft's node.go around rawnode.go: it
// steps inputs, appends the events each step produced to the PostgreSQL log
// (group commit: one round trip for the events of many concurrent
// transactions), and performs effects only once the events they wait for are
// durable. The coordinator and participant types wire that loop to the
// JSON-RPC transport and, for a participant, to its data database.
//
// The contract the coordinator serves (method names, params and result
// types) is package api's; node holds only the handlers behind it, so a
// client never links the server.
package node
