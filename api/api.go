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
	// MethodInDoubt lists the transactions past their statements that
	// have not ended, with what each waits for; MethodResolve retries one
	// now. They are an operator's: the coordinator logs every resolve.
	MethodInDoubt = "indoubt"
	MethodResolve = "resolve"
	// MethodPing is served by every node; the coordinator pings its
	// participants with it to report their health (MethodNodes). Package
	// rpc names it too, because either token may call it.
	MethodPing = rpc.PingMethod
)

// TxParams names a transaction (commit, rollback). Direct, from a client
// that sent statements to participants itself (MethodDirectExec), names
// every participant it sent one, with how many answered ok there
// (rollback needs only the nodes).
type TxParams struct {
	TxID   engine.TxID           `json:"tx"`
	Direct []engine.DirectBranch `json:"direct,omitempty"`
}

// MethodDirectExec is served by participants: one statement of a
// transaction begun at the coordinator, sent straight to the participant
// that runs it, sparing the hop through the coordinator. Its params are
// DirectExecParams, its result an engine.ExecResult. The client numbers
// its statements to each participant from 0, sends the next only once the
// last one answered, and tells the coordinator at commit what it sent
// (TxParams.Direct); it sends no statement of the transaction through the
// coordinator to that participant (to others it may).
const MethodDirectExec = "direct_exec"

// MethodPlainTransact is served by participants: statements that all name
// this participant, run as one plain transaction on its data server and
// committed there (BEGIN, the statements, COMMIT, in one round trip when
// their arguments allow). The coordinator, the logs and the outcome marker
// stay out of it: it costs what the same transaction sent to PostgreSQL
// straight would, plus the hop to the participant. Its params are
// TransactParams with commit true and neither tx nor key; its result is a
// TransactReply whose tx is 0 (the transaction has no id in the cluster,
// and status knows nothing of it). A statement that fails rolls the
// transaction back; a call whose answer is lost leaves its outcome
// unknown, as with any PostgreSQL client, so a transaction that must be
// told apart from its repeat goes to the coordinator with a key.
const MethodPlainTransact = "plain_transact"

// DirectExecParams are a direct statement's: Cluster and Epoch from the
// transaction's begin (engine.BeginReply, or the engine.ExecReply of the
// exec that began it), its number at this participant, the statement.
type DirectExecParams struct {
	Cluster string       `json:"cluster"`
	Epoch   engine.Epoch `json:"epoch"`
	TxID    engine.TxID  `json:"tx"`
	Stmt    int          `json:"stmt"`
	SQL     string       `json:"sql"`
	Args    engine.Args  `json:"args,omitempty"`
}

// MaxKeyBytes bounds an idempotency key. A key is kept with its
// transaction's outcome for the retention window, so it must stay small;
// a UUID or a request id fits many times over.
const MaxKeyBytes = 200

// BeginParams are begin's optional params. Key is the client's
// idempotency key for the transaction: a begin repeated with the key of a
// transaction still open is answered with that transaction (Repeated set);
// with the key of one that ended, it is refused (rpc.CodeKeyUsed).
type BeginParams struct {
	Key string `json:"key,omitempty"`
}

// StatusParams name the transaction status asks about: by id, or by the
// key its client gave it (exactly one of the two).
type StatusParams struct {
	TxID engine.TxID `json:"tx,omitempty"`
	Key  string      `json:"key,omitempty"`
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
	Args engine.Args `json:"args,omitempty"`
	// ParamTypes, optional, declare the arguments' PostgreSQL type OIDs
	// (0: inferred from the statement, as without them): a timestamptz
	// declared for a timestamp column is converted to the participant's
	// time zone, where text alone would have its offset dropped.
	ParamTypes []uint32 `json:"param_types,omitempty"`
	// Describe asks for the statement's parameter types and result
	// columns (StmtResult's Params, Columns and Types) instead of running
	// it. It is parsed in the transaction, so it sees the tables the
	// transaction's earlier statements created there.
	Describe bool `json:"describe,omitempty"`
}

// ExecuteParams is the seed form: a statement that joins the current batch
// transaction. Key, optional, names the statement: repeated with the same
// key, it does not run again but is answered with its batch's outcome
// (Repeated set).
type ExecuteParams struct {
	Node *engine.NodeID `json:"node"`
	SQL  string         `json:"sql"`
	Args engine.Args    `json:"args,omitempty"`
	Key  string         `json:"key,omitempty"`
}

// TransactParams are the statements MethodTransact runs, in order, in
// transaction TxID (0: a new one), and whether to commit after them. Key,
// optional and only without TxID, is the client's idempotency key for the
// transaction the call begins: a call repeated with the same key never
// runs its statements again, and is answered with the first call's
// outcome (Repeated set) once it is known.
type TransactParams struct {
	TxID       engine.TxID       `json:"tx"`
	Statements []StatementParams `json:"statements"`
	Commit     bool              `json:"commit"`
	Key        string            `json:"key,omitempty"`
}

// StatementParams is one statement of MethodTransact: a node, its SQL and
// its arguments. ParamTypes, optional, declare the arguments' PostgreSQL
// type OIDs (0: inferred from the statement), as a PostgreSQL client's
// Parse does.
type StatementParams struct {
	Node       *engine.NodeID `json:"node"`
	SQL        string         `json:"sql"`
	Args       engine.Args    `json:"args,omitempty"`
	ParamTypes []uint32       `json:"param_types,omitempty"`
}

// TransactReply answers MethodTransact: the statements' results in the
// order given, and the outcome when the call committed. (A result may be
// null when the statement's answer was lost yet the transaction
// committed: the commit says every statement ran.)
type TransactReply = engine.TransactReply

// InDoubtTx is a transaction past its statements that has not ended
// (MethodInDoubt): how long since it began, what it waits for and from
// whom, and when the coordinator tries again by itself.
type InDoubtTx struct {
	engine.StatusReply
	// AgeMillis is the time since the transaction began.
	AgeMillis int64 `json:"age_ms"`
	// Waiting says what it waits for: "votes", "acknowledgements of the
	// commit decision", the decider's answer.
	Waiting   string       `json:"waiting"`
	WaitingOn []NodeHealth `json:"waiting_on,omitempty"`
	// NextTryMillis is the time until the coordinator acts on it again by
	// itself (resends, asks, or gives up on votes); 0 when due.
	NextTryMillis int64 `json:"next_try_ms"`
}

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
	// Coordinator, from a participant, is the coordinator address it was
	// given, so that a client pointed at a participant can say where to go.
	Coordinator string `json:"coordinator,omitempty"`
	// Slot and Slots, from a coordinator of a cluster with several slots,
	// are the slot it holds and how many there are; Address is where it
	// serves, so that a participant that asked another coordinator about
	// the slot sends the slot's messages straight to it.
	Slot    int    `json:"slot,omitempty"`
	Slots   int    `json:"slots,omitempty"`
	Address string `json:"address,omitempty"`
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
