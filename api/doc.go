// Package api is the wire contract of tpcd's client-facing JSON-RPC
// methods: their names, the types of their parameters and of the results
// that are not the engine's own, the names nodes go by, and the helpers a
// client needs to use them. It holds no server code, so a client, a load
// generator or a test links only the contract (and the engine's and the
// transport's types it names), never the node that serves it.
//
// # Methods
//
// The coordinator serves every method below but direct_exec and
// plain_transact, which the participants serve; MethodPing is served by
// every node. docs/API.md shows
// each with example params and results.
//
//	method          params          result
//	begin           BeginParams     engine.BeginReply
//	exec            ExecParams      engine.ExecReply
//	transact        TransactParams  TransactReply
//	commit          TxParams        engine.OutcomeReply
//	rollback        TxParams        engine.OutcomeReply
//	status          StatusParams    engine.StatusReply
//	execute         ExecuteParams   engine.ExecReply
//	nodes           {}              []NodeHealth
//	indoubt         {}              []InDoubtTx
//	resolve         TxParams        engine.StatusReply
//	direct_exec     DirectExecParams engine.ExecResult
//	plain_transact  TransactParams  TransactReply
//	tpcd.ping       {}              PingReply
//
// The results named engine.* are the engine's reply types, encoded as they
// are: the coordinator hands the engine's answer to the transport
// unchanged, so they stay in package engine (BeginReply, ExecReply with its
// StmtResult, OutcomeReply, StatusReply, whose State is an engine.Phase's
// name, "forgotten" or "unknown"; docs/API.md explains each).
//
// # Errors
//
// Errors are JSON-RPC error objects with the codes of package rpc
// (rpc.Code*). Any method may answer rpc.CodeParseError,
// rpc.CodeInvalidRequest or rpc.CodeMethodNotFound (the request itself is
// wrong), rpc.CodeInvalidParams (params missing, of the wrong type, or
// with unknown fields: decoding is strict), rpc.CodeUnauthorized (no valid
// token), rpc.CodeUnavailable (the node is starting or stopping; retry)
// and rpc.CodeInternal. Beyond those:
//
//   - begin: rpc.CodeLimit when the client already holds as many undecided
//     transactions as it may; rpc.CodeKeyUsed when its key named a
//     transaction that has ended.
//   - begin, transact, execute with a key: rpc.CodeUnavailable when the
//     coordinator could not tell whether the key was used before (its
//     outcome store did not answer); retry.
//   - exec, execute, transact: rpc.CodeUnknownTx for a transaction never
//     issued, rpc.CodeTxNotActive for one that no longer takes statements,
//     rpc.CodeBadNode for a node out of range, rpc.CodeAborted when the
//     statement failed or the transaction can only abort, rpc.CodeLimit for
//     a statement beyond the transaction's limit (the transaction stays
//     usable) or, without a transaction id, as begin. transact's messages
//     start with "statements[i]: ", naming the statement.
//   - commit, rollback: rpc.CodeUnknownTx, or rpc.CodeTxNotActive for a
//     transaction ended so long ago that its outcome is forgotten. An
//     abort is an outcome, not an error.
//   - direct_exec: rpc.CodeAborted when the statement failed or the
//     participant will not run it (out of order, its transaction ended
//     there or belongs to a coordinator incarnation since replaced): the
//     transaction can then only abort; rpc.CodeUnavailable when no answer
//     came in time, which leaves the same; rpc.CodeInvalidParams for a
//     statement whose number another call is running.
//   - plain_transact: rpc.CodeBadNode for a statement of another
//     participant; rpc.CodeAborted, with the SQLSTATE, when PostgreSQL
//     refused a statement or the COMMIT (rolled back); rpc.CodeUnavailable
//     when nothing committed; rpc.CodeInternal "whether it committed is
//     unknown" when the connection broke once the COMMIT may have been
//     sent, or the COMMIT lacks its synchronous standby.
//   - resolve: rpc.CodeUnknownTx for a transaction never issued,
//     rpc.CodeTxNotActive for one not in doubt (still taking statements,
//     or ended).
//   - status: only the common codes; an unknown transaction is the state
//     "unknown", one whose outcome is no longer kept "forgotten".
//
// # Node-to-node messages
//
// Messages between nodes are the engine's message types (engine.Message,
// whose Method names the JSON-RPC method, "tpcd.exec" and so on); this
// package does not restate them. DecodeMessage decodes their params as a
// node does before its engine sees them. Their JSON-RPC result is Ack.
package api
