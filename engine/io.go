package engine

import "time"

// Input is anything that moves a state machine: a client call, a message, a
// data-DB result or the passing of time. Every input carries the caller's
// current time.
type Input interface {
	At() Instant
	isInput()
}

// Start begins a node incarnation after its log was folded in with Apply.
type Start struct {
	Now Instant
	// NewCluster is the cluster id the coordinator adopts when its log has
	// none yet (the driver makes it up, so the engine stays deterministic).
	NewCluster string
	// PreparedGIDs and Markers are, for a participant, the GIDs found in the
	// data database's pg_prepared_xacts and outcome-marker table (commit
	// markers); Tombstones are the decider branches settled as aborted.
	PreparedGIDs []string
	Markers      []string
	Tombstones   []string
	// MarkerKeys are the idempotency keys stored with the commit markers of
	// Markers, by GID (none for a marker without keys).
	MarkerKeys map[string][]string
	// PreparedXids are the transaction ids of PreparedGIDs, by GID.
	PreparedXids map[string]uint64
	// CommittedXids are those of Participant.BranchXids that PostgreSQL's
	// commit log shows committed.
	CommittedXids []uint64
}

// Tick tells the machine time has passed; timeouts and retries fire here.
type Tick struct{ Now Instant }

// Receive delivers a message from another node.
type Receive struct {
	Now Instant
	Msg Message
}

// SendFailed reports that a message could not be handed to its destination.
// It may still have been delivered; handlers must not assume either way.
type SendFailed struct {
	Now Instant
	To  NodeID
	Msg Message
}

// Client inputs (coordinator only). Req is echoed in the Respond effect.

// ClientBegin starts an explicit transaction.
type ClientBegin struct {
	Now Instant
	Req ReqID
	// Key is the client's idempotency key for the transaction, optional:
	// a begin repeated with the key of a running transaction is answered
	// with that transaction; status answers by key.
	Key string
}

// ClientExec runs one statement of an explicit transaction on a participant.
type ClientExec struct {
	Now  Instant
	Req  ReqID
	TxID TxID
	Node NodeID
	SQL  string
	Args []any
	// ParamTypes declare the arguments' type OIDs (ExecRequest.ParamTypes).
	ParamTypes []uint32
	// Describe asks for the statement's parameter and result types
	// instead of running it (ExecRequest.Describe).
	Describe bool
}

// ClientCommit asks to commit an explicit transaction.
type ClientCommit struct {
	Now  Instant
	Req  ReqID
	TxID TxID
	// Direct are the branches whose statements the client sent the
	// participants itself (ExecRequest.Direct), which the coordinator
	// never saw: each is prepared (or, as the decider, committed) with
	// the count the client gives, and a participant that ran another
	// number votes no. The client names every participant it sent such a
	// statement, counting those that answered ok; it sends none after
	// asking to commit.
	Direct []DirectBranch
	// PromptAcks: the client will wait for the commit to be applied on
	// every participant (StatusReply.Applied) before its next statement,
	// as a session of the PostgreSQL front door does; the decision asks
	// the participants to acknowledge at once (DecisionRequest.PromptAck)
	// rather than hold their acks for company.
	PromptAcks bool
}

// DirectBranch is a client's account of the statements it sent one
// participant directly: how many succeeded, and whether any of them
// wrote (the decider is chosen among the branches that wrote).
type DirectBranch struct {
	Node  NodeID `json:"node"`
	Stmts int    `json:"stmts"`
	Wrote bool   `json:"wrote,omitempty"`
}

// ClientRollback asks to abort an explicit transaction.
type ClientRollback struct {
	Now  Instant
	Req  ReqID
	TxID TxID
	// Direct are the participants the client sent statements directly,
	// which hear the abort with the others.
	Direct []NodeID
}

// ClientStatus asks where a transaction stands, by id or, with TxID 0, by
// the key its client gave it.
type ClientStatus struct {
	Now  Instant
	Req  ReqID
	TxID TxID
	Key  string
}

// ClientResolve is an operator's request to retry, now, what an in-doubt
// transaction waits for: resend its decision to the participants that have
// not acknowledged it, or ask its decider again. It changes no outcome.
type ClientResolve struct {
	Now  Instant
	Req  ReqID
	TxID TxID
}

// ClientExecute is the seed project's form: one statement that joins the
// current batch; every BatchSize statements form one transaction.
type ClientExecute struct {
	Now  Instant
	Req  ReqID
	Node NodeID
	SQL  string
	Args []any
	// Key, optional, names the statement: repeated with the same key, it
	// does not run again but is answered with its batch's outcome.
	Key string
}

// ClientTransact runs a transaction's statements, in order per
// participant and at once across participants, and commits it when Commit
// is set, all in one call. TxID 0 begins a transaction. Asking for the
// commit together with the statements lets the coordinator have each
// participant prepare (or, alone, commit) right after its last statement.
type ClientTransact struct {
	Now    Instant
	Req    ReqID
	TxID   TxID
	Stmts  []Statement
	Commit bool
	// Key, optional and only with TxID 0, names the transaction the call
	// begins: a call repeated with the same key never commits its
	// statements again; it is answered with the first call's outcome once
	// known. (Its statements may run while the key is looked up, and are
	// then rolled back.)
	Key string
	// PromptAcks, with Commit, is ClientCommit.PromptAcks.
	PromptAcks bool
}

// Statement is one statement of a ClientTransact.
type Statement struct {
	Node       NodeID
	SQL        string
	Args       []any
	ParamTypes []uint32
}

// DataDone reports the result of a Data effect (participant only).
type DataDone struct {
	Now  Instant
	Op   DataOp
	TxID TxID
	Stmt int
	// Result is set for a successful DataExec.
	Result *StmtResult
	// ReadOnly is set for a successful DataPrepare that found the
	// transaction wrote nothing and so committed it at once.
	ReadOnly bool
	// Xid is the transaction id of a branch a DataPrepare (or a DataExec's
	// Then) prepared.
	Xid uint64
	// Committed is a DataSettle's finding: the decider's branch committed
	// (its marker is there). Otherwise it is settled as aborted.
	Committed bool
	// Keys are the idempotency keys a DataSettle found with the marker.
	Keys []string
	// Err is empty on success.
	Err string
	// SQLErr is what PostgreSQL said when a DataExec's statement failed.
	SQLErr *SQLError
	// Then is the operation that ran right after a DataExec's statement
	// (Data.Then), and ThenErr its error; ReadOnly, Committed and Retry
	// then describe it. A failed statement leaves Then unrun (0).
	Then    DataOp
	ThenErr string
	// Retry marks an error that says nothing about the transaction (the data
	// database was unreachable); the engine tries the operation again later.
	// It applies to DataCommitPrepared, DataRollbackPrepared and
	// DataDeleteMarker only: the other operations lose their open data
	// transaction with the connection, so their errors are final.
	Retry bool
}

// KeyLookedUp answers LookupKey: Found with the transaction the key named
// and its outcome, or not found (the key is new, or was forgotten after the
// retention window). Err is set when the lookup failed: the calls waiting
// for it are refused, to be retried.
type KeyLookedUp struct {
	Now     Instant
	Key     string
	Found   bool
	TxID    TxID
	Outcome Outcome
	Reason  string
	Err     string
}

// CoordinatorAnswered reports, to a participant, what its configured
// coordinator said when asked who it is (the AskCoordinator effect). The
// driver makes it from the answer to a call it placed itself, never from a
// message it was sent: anyone can send a message, while only the
// configured coordinator answers at its address. Err is set when the call
// failed; the engine asks again later.
type CoordinatorAnswered struct {
	Now     Instant
	Cluster string
	Epoch   Epoch
	// Participants are the participants' addresses, by node id.
	Participants []string
	Err          string
}

func (i KeyLookedUp) At() Instant         { return i.Now }
func (i Start) At() Instant               { return i.Now }
func (i Tick) At() Instant                { return i.Now }
func (i Receive) At() Instant             { return i.Now }
func (i SendFailed) At() Instant          { return i.Now }
func (i ClientBegin) At() Instant         { return i.Now }
func (i ClientExec) At() Instant          { return i.Now }
func (i ClientCommit) At() Instant        { return i.Now }
func (i ClientRollback) At() Instant      { return i.Now }
func (i ClientStatus) At() Instant        { return i.Now }
func (i ClientResolve) At() Instant       { return i.Now }
func (i ClientExecute) At() Instant       { return i.Now }
func (i ClientTransact) At() Instant      { return i.Now }
func (i DataDone) At() Instant            { return i.Now }
func (i CoordinatorAnswered) At() Instant { return i.Now }

func (Start) isInput()               {}
func (Tick) isInput()                {}
func (ClientResolve) isInput()       {}
func (Receive) isInput()             {}
func (SendFailed) isInput()          {}
func (ClientBegin) isInput()         {}
func (ClientExec) isInput()          {}
func (ClientCommit) isInput()        {}
func (ClientRollback) isInput()      {}
func (ClientStatus) isInput()        {}
func (ClientExecute) isInput()       {}
func (ClientTransact) isInput()      {}
func (DataDone) isInput()            {}
func (CoordinatorAnswered) isInput() {}
func (KeyLookedUp) isInput()         {}

// Ready is the to-do list a Step hands its caller.
type Ready struct {
	// Events must be appended to the log in this order. Event i has LSN
	// FirstLSN+i.
	Events   []Event
	FirstLSN LSN
	// Effects must be performed in order, each only after every event with
	// an LSN up to its WaitLSN is durable.
	Effects []Effect
}

// Empty reports whether the step produced nothing.
func (r Ready) Empty() bool { return len(r.Events) == 0 && len(r.Effects) == 0 }

// output is what a state machine hands its driver: the events and effects
// of the step it is taking, and the LSN of its last event. A Coordinator
// and a Participant each embed one.
type output struct {
	lsn LSN
	rd  Ready
}

// queue adds e, already applied, to the step's events for the log and
// returns its LSN.
func (o *output) queue(e Event) LSN {
	if len(o.rd.Events) == 0 {
		o.rd.FirstLSN = o.lsn + 1
	}
	o.rd.Events = append(o.rd.Events, e)
	o.lsn++
	return o.lsn
}

// take hands over what the step produced and starts the next empty.
func (o *output) take() Ready {
	rd := o.rd
	o.rd = Ready{}
	return rd
}

// Effect is something the caller must do for the machine.
type Effect interface {
	// After is the LSN that must be durable before the effect runs (0: none).
	After() LSN
	isEffect()
}

// Send hands a message to another node.
type Send struct {
	To      NodeID
	Msg     Message
	WaitLSN LSN
	// Lazy marks a message nobody waits for: the driver sends it once its
	// WaitLSN is durable but does not write the log early for it.
	Lazy bool
}

// Respond answers a client request. Exactly one of Reply and Err is set.
type Respond struct {
	Req     ReqID
	Reply   Reply
	Err     *Error
	WaitLSN LSN
}

// DataOp names an operation on a participant's data database.
type DataOp uint8

const (
	// DataExec runs a statement in the transaction's open data transaction,
	// beginning it if needed.
	DataExec DataOp = 1 + iota
	// DataPrepare inserts the outcome marker and runs PREPARE TRANSACTION.
	// If the transaction wrote nothing the driver may commit it instead and
	// report ReadOnly.
	DataPrepare
	// DataRollback rolls back the open (unprepared) data transaction.
	DataRollback
	// DataCommitPrepared runs COMMIT PREPARED. A GID that no longer exists
	// counts as success only when the outcome marker is present.
	DataCommitPrepared
	// DataRollbackPrepared runs ROLLBACK PREPARED. A GID that no longer exists
	// counts as success only when the outcome marker is absent.
	DataRollbackPrepared
	// DataDeleteMarker deletes the outcome marker (or tombstone) of an ended
	// transaction.
	DataDeleteMarker
	// DataCommitBranch inserts the outcome marker into the open data
	// transaction and commits it with an ordinary COMMIT: the decider's
	// branch, whose commit decides the transaction. An error may leave the
	// outcome unknown (the connection broke during COMMIT); the engine then
	// settles.
	DataCommitBranch
	// DataSettle makes the outcome of the decider's branch final and reports
	// it: a tombstone is inserted under the marker's name unless the marker
	// is there (DataDone.Committed). The marker's primary key decides the
	// race with a commit still running: whichever row commits first wins,
	// and the other fails or waits for it, so nobody concludes abort while
	// the branch could still commit.
	DataSettle
)

var dataOpNames = [...]string{"", "exec", "prepare", "rollback", "commit-prepared", "rollback-prepared", "delete-marker", "commit-branch", "settle"}

func (o DataOp) String() string { return enumName(dataOpNames[:], o, "dataop(?)") }

// Data asks a participant's driver to work on its data database.
type Data struct {
	Op   DataOp
	TxID TxID
	GID  string
	Stmt int
	SQL  string
	Args []any
	// ParamTypes declare the arguments' type OIDs (ExecRequest.ParamTypes).
	ParamTypes []uint32
	WaitLSN    LSN
	// Then, on a DataExec, is DataPrepare or DataCommitBranch to run right
	// after the statement succeeds, on GID, best in the same round trip;
	// it is not run when the statement fails.
	Then DataOp
	// Describe, on a DataExec, asks for the statement's parameter and
	// result types instead of running it.
	Describe bool
	// Xid, on DataCommitPrepared and DataRollbackPrepared, is the
	// branch's transaction id (0 if unknown: a branch of an earlier
	// version, which has a marker instead): when the GID is no longer
	// prepared, its status in the commit log tells what became of it.
	Xid uint64
	// Keys, on a DataCommitBranch (or a DataExec whose Then is one), are
	// the transaction's idempotency keys, stored with the marker.
	Keys []string
}

// Violation reports evidence that atomicity was broken. It must be made loud:
// logged at error level and counted; it is never expected.
type Violation struct {
	TxID   TxID
	Detail string
}

// Forget tells a participant's driver that a transaction's events may be
// compacted away: a committed transaction's once its marker is deleted, and
// at the start step those of every transaction the log shows ended. (A
// running participant's aborted transactions are over once their
// PartAborted is durable.)
type Forget struct {
	TxID    TxID
	WaitLSN LSN
}

// AskCoordinator asks a participant's driver to call its configured
// coordinator, ask who it is (cluster and epoch), and report the answer as
// a CoordinatorAnswered input. A participant asks before it acts on a
// message that names a cluster or an epoch it has not confirmed, so a
// forged message can neither take it over nor fence its coordinator off.
type AskCoordinator struct{}

// LookupKey asks the coordinator's driver for the transaction a client's
// idempotency key named, among the outcomes it keeps after the coordinator
// forgot them (CoordEnded); the answer is a KeyLookedUp input. Calls with
// the key wait for it. The lookup waits for WaitLSN, so that the store
// holds every transaction the coordinator forgot before asking.
type LookupKey struct {
	Key     string
	WaitLSN LSN
}

// Warning is something an operator must hear of that is not a violation,
// such as work refused from a coordinator of another cluster. The driver
// logs it at warning level.
type Warning struct {
	Detail string
}

func (e Send) After() LSN         { return e.WaitLSN }
func (e Respond) After() LSN      { return e.WaitLSN }
func (e Data) After() LSN         { return e.WaitLSN }
func (e Violation) After() LSN    { return 0 }
func (e Forget) After() LSN       { return e.WaitLSN }
func (AskCoordinator) After() LSN { return 0 }
func (e LookupKey) After() LSN    { return e.WaitLSN }
func (Warning) After() LSN        { return 0 }
func (Send) isEffect()            {}
func (Respond) isEffect()         {}
func (Data) isEffect()            {}
func (Violation) isEffect()       {}
func (Forget) isEffect()          {}
func (AskCoordinator) isEffect()  {}
func (LookupKey) isEffect()       {}
func (Warning) isEffect()         {}

// Reply is the answer to a client request.
type Reply interface{ isReply() }

// BeginReply answers ClientBegin. Repeated says the begin's key named a
// transaction already running, whose id it is.
type BeginReply struct {
	TxID     TxID `json:"tx"`
	Repeated bool `json:"repeated,omitempty"`
	// Cluster and Epoch are the header a statement sent to a participant
	// directly carries (ExecRequest.Direct): the transaction's.
	Cluster string `json:"cluster,omitempty"`
	Epoch   Epoch  `json:"epoch,omitempty"`
}

// ExecReply answers ClientExec and ClientExecute. The execute that closes
// its batch is answered after the batch committed, with Outcome set.
type ExecReply struct {
	TxID    TxID        `json:"tx"`
	Node    NodeID      `json:"node"`
	Result  *StmtResult `json:"result"`
	Outcome *Outcome    `json:"outcome,omitempty"`
	// Repeated says the execute's key named a statement that had run: it
	// did not run again (Result is absent) and Outcome is its batch's.
	Repeated bool `json:"repeated,omitempty"`
	// Cluster and Epoch, in the answer to an exec that began its
	// transaction, are the header its statements sent straight to other
	// participants carry (BeginReply).
	Cluster string `json:"cluster,omitempty"`
	Epoch   Epoch  `json:"epoch,omitempty"`
}

// OutcomeReply answers ClientCommit and ClientRollback.
type OutcomeReply struct {
	TxID    TxID    `json:"tx"`
	Outcome Outcome `json:"outcome"`
	Reason  string  `json:"reason,omitempty"`
}

// TransactReply answers ClientTransact: every statement's result, and the
// outcome when the commit was asked for.
type TransactReply struct {
	TxID    TxID          `json:"tx"`
	Results []*StmtResult `json:"results"`
	Outcome *Outcome      `json:"outcome,omitempty"`
	Reason  string        `json:"reason,omitempty"`
	// Repeated says the call's key named a transaction that had run: its
	// statements did not run again (Results is empty) and Outcome is the
	// first call's.
	Repeated bool `json:"repeated,omitempty"`
}

// StatusReply answers ClientStatus.
type StatusReply struct {
	TxID TxID `json:"tx"`
	// Key is the key asked about, when status was asked by key.
	Key   string `json:"key,omitempty"`
	State string `json:"state"`
	// Outcome is set once decided.
	Outcome      Outcome  `json:"outcome,omitempty"`
	Reason       string   `json:"reason,omitempty"`
	Participants []NodeID `json:"participants,omitempty"`
	// Pending lists participants that have not acknowledged the decision.
	Pending []NodeID `json:"pending,omitempty"`
	// Applied: the commit is applied on every participant's data, so that
	// a read anywhere sees it, while the transaction may still be
	// committing. Only the decider, whose own commit was the decision, is
	// left to acknowledge (it deletes its marker once the prepared
	// branches committed and the decision is durable).
	Applied bool `json:"applied,omitempty"`
}

func (BeginReply) isReply()    {}
func (ExecReply) isReply()     {}
func (OutcomeReply) isReply()  {}
func (TransactReply) isReply() {}
func (StatusReply) isReply()   {}

// ErrorCode classifies a client error.
type ErrorCode uint8

const (
	ErrUnknownTx ErrorCode = 1 + iota
	ErrTxNotActive
	ErrBadNode
	ErrAborted
	ErrStatement
	ErrBadRequest
	// ErrKeyUsed refuses a key that already names a transaction that
	// cannot take the request (a begin after that transaction ended).
	ErrKeyUsed
	// ErrUnavailable refuses a call the coordinator cannot serve now (its
	// driver could not look its key up); the call may be retried as is.
	ErrUnavailable
)

var errorCodeNames = [...]string{"", "unknown transaction", "transaction not active", "bad node", "aborted", "statement failed", "bad request", "key used", "unavailable"}

func (c ErrorCode) String() string { return enumName(errorCodeNames[:], c, "error(?)") }

// Error is a client-visible failure.
type Error struct {
	Code    ErrorCode
	Message string
	// SQL is what PostgreSQL said when a statement failed (ErrStatement),
	// nil otherwise.
	SQL *SQLError
}

func (e *Error) Error() string { return "engine: " + e.Message }

// Durations the machines use; zero fields take the defaults below.
const (
	DefaultVoteTimeout   = 5 * time.Second
	DefaultExecTimeout   = 30 * time.Second
	DefaultIdleTimeout   = 60 * time.Second
	DefaultRetryMin      = 100 * time.Millisecond
	DefaultRetryMax      = 5 * time.Second
	DefaultBatchFlush    = time.Second
	DefaultRememberEnded = 100000
	DefaultMaxStatements = 10000
)
