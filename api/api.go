package api

import (
	"encoding/json"
	"errors"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// Client-facing JSON-RPC methods of the coordinator (and MethodPing, which
// every node serves). The package comment lists their params and results.
const (
	MethodBegin    = "begin"
	MethodExec     = "exec"
	MethodCommit   = "commit"
	MethodRollback = "rollback"
	MethodStatus   = "status"
	MethodExecute  = "execute"
	MethodNodes    = "nodes"
	// MethodTransact runs several statements of one explicit transaction
	// in a single call and, if asked, commits it: an application that knows
	// its statements up front pays one round trip for the whole
	// transaction.
	MethodTransact = "transact"
	// MethodPing is served by every node; the coordinator pings its
	// participants with it to report their health (MethodNodes). Package
	// rpc names it too, because either token may call it.
	MethodPing = rpc.PingMethod
)

// TxParams names a transaction (commit, rollback, status).
type TxParams struct {
	TxID engine.TxID `json:"tx"`
}

// ExecParams runs a statement in an explicit transaction. TxID 0 begins a
// new transaction with the statement; the reply names it.
type ExecParams struct {
	TxID engine.TxID `json:"tx"`
	// Node is required; a pointer so that a missing node is told apart
	// from participant 0.
	Node *engine.NodeID `json:"node"`
	SQL  string         `json:"sql"`
	// Args are the statement's $1-style parameters. Without them the SQL
	// goes over PostgreSQL's simple protocol and may hold several
	// statements.
	Args []any `json:"args,omitempty"`
	// Describe asks for the statement's parameter types and result
	// columns (StmtResult's Params, Columns and Types) instead of running
	// it. It is parsed in the transaction, so it sees the tables the
	// transaction's earlier statements created there.
	Describe bool `json:"describe,omitempty"`
}

// ExecuteParams is the seed form: a statement that joins the current batch
// transaction.
type ExecuteParams struct {
	Node *engine.NodeID `json:"node"`
	SQL  string         `json:"sql"`
	Args []any          `json:"args,omitempty"`
}

// TransactParams are the statements MethodTransact runs, in order, in
// transaction TxID (0: a new one), and whether to commit after them.
type TransactParams struct {
	TxID       engine.TxID       `json:"tx"`
	Statements []StatementParams `json:"statements"`
	Commit     bool              `json:"commit"`
}

// StatementParams is one statement of MethodTransact: a node and its SQL,
// the shape the seed form's execute takes.
type StatementParams = ExecuteParams

// TransactReply answers MethodTransact: the statements' results in the
// order given, and the outcome when the call committed. (A result may be
// null when the statement's answer was lost yet the transaction
// committed: the commit says every statement ran.)
type TransactReply = engine.TransactReply

// NodeHealth is one participant as the coordinator sees it (MethodNodes).
type NodeHealth struct {
	Node      engine.NodeID `json:"node"`
	Address   string        `json:"address"`
	Reachable bool          `json:"reachable"`
	Epoch     engine.Epoch  `json:"epoch,omitempty"`
	LastError string        `json:"last_error,omitempty"`
	// LastSeenMillis is the age in milliseconds of the last successful
	// contact, -1 if never.
	LastSeenMillis int64 `json:"last_seen_ms"`
}

// PingReply answers MethodPing.
type PingReply struct {
	// Role is "coordinator" or "participant".
	Role string `json:"role"`
	// Node is the node's name: CoordinatorName or ParticipantName(id).
	Node    string       `json:"node"`
	Cluster string       `json:"cluster,omitempty"`
	Epoch   engine.Epoch `json:"epoch,omitempty"`
	// Participants, from a coordinator, are its participants' addresses by
	// node id: a participant reaches the decider of a transaction in doubt
	// with them.
	Participants []string `json:"participants,omitempty"`
}

// StatementErrorData is the data of the JSON-RPC error a statement that
// PostgreSQL refused answers with (rpc.CodeAborted): its SQLSTATE, message,
// detail and hint as the participant's server gave them.
type StatementErrorData struct {
	SQL *engine.SQLError `json:"sql"`
}

// SQLErrorOf returns what PostgreSQL said about a failed statement, if err
// is an *rpc.Error that carries it.
func SQLErrorOf(err error) (*engine.SQLError, bool) {
	var re *rpc.Error
	if !errors.As(err, &re) || len(re.Data) == 0 {
		return nil, false
	}
	var d StatementErrorData
	if json.Unmarshal(re.Data, &d) != nil || d.SQL == nil || d.SQL.Code == "" {
		return nil, false
	}
	return d.SQL, true
}

// Ack is the empty reply to node-to-node messages: they are one-way, and
// the answer only says the message reached the node's queue.
type Ack struct{}
