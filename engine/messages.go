package engine

import "fmt"

// Message travels between the coordinator and a participant. Messages are
// one-way and may be lost, duplicated, delayed or reordered; every handler
// tolerates that. Method is the JSON-RPC method that carries the message.
type Message interface {
	Method() string
	// Tx is the transaction the message is about.
	Tx() TxID
	isMessage()
}

// Header is carried by every coordinator-to-participant message. It tells
// which cluster and which coordinator incarnation sent it (fencing).
type Header struct {
	Cluster string `json:"cluster"`
	Epoch   Epoch  `json:"epoch"`
}

// ExecRequest asks a participant to run one statement of a transaction.
// Statements of one transaction on one participant are numbered from 0 so
// duplicates and gaps can be recognised. Then, set on the last statement
// of a transaction whose commit was asked for with its statements, has the
// participant prepare (with Decider, as a PrepareRequest would) or commit
// its branch as the decider right after the statement, in the same round
// trip to its database; the vote follows the result.
type ExecRequest struct {
	Header
	TxID TxID   `json:"tx"`
	Stmt int    `json:"stmt"`
	SQL  string `json:"sql"`
	Args Args   `json:"args,omitempty"`
	// ParamTypes declare the arguments' type OIDs (0: inferred), as the
	// client gave them.
	ParamTypes []uint32 `json:"param_types,omitempty"`
	Batch      bool     `json:"batch,omitempty"`
	Then       Then     `json:"then,omitempty"`
	Decider    *NodeID  `json:"decider,omitempty"`
	// Describe asks for the statement's parameter and result types
	// without running it (what a PostgreSQL client learns from Parse and
	// Describe before it binds values).
	Describe bool `json:"describe,omitempty"`
	// Keys, with Then commit, are the transaction's idempotency keys: the
	// decider stores them with its marker, so that a coordinator that
	// lost the transaction in a crash still recognises a repeated call.
	Keys []string `json:"keys,omitempty"`
	// VoteToDecider, with Then prepare, sends a yes (or read-only) vote
	// to the decider instead of the coordinator, the statement's result
	// with it: the decider commits once every such vote is in
	// (CommitBranchRequest.Voters) and hands the results on with its
	// answer, sparing a hop through the coordinator. A failure still
	// goes to the coordinator.
	VoteToDecider bool `json:"vote_to_decider,omitempty"`
	// Direct marks a statement the client sent the participant itself,
	// sparing the hop through the coordinator: its result goes back to
	// the client (ClientNode), and the client tells the coordinator at
	// commit how many statements succeeded here (ClientCommit.Direct),
	// which the prepare checks as it checks the coordinator's own count.
	// A direct statement never carries Then.
	Direct bool `json:"direct,omitempty"`
}

// Then is what a participant does right after a statement.
type Then uint8

const (
	// ThenNothing: the statement alone (the zero value: absent).
	ThenNothing Then = iota
	// ThenPrepare: prepare the branch, and vote.
	ThenPrepare
	// ThenCommit: commit the branch as the decider (one-phase commit).
	ThenCommit
)

func (t Then) String() string {
	switch t {
	case ThenPrepare:
		return "prepare"
	case ThenCommit:
		return "commit"
	}
	return ""
}

// MarshalText encodes a Then by name.
func (t Then) MarshalText() ([]byte, error) {
	switch t {
	case ThenNothing, ThenPrepare, ThenCommit:
		return []byte(t.String()), nil
	}
	return nil, fmt.Errorf("engine: invalid then %d", t)
}

// UnmarshalText decodes a Then name.
func (t *Then) UnmarshalText(b []byte) error {
	switch string(b) {
	case "":
		*t = ThenNothing
	case "prepare":
		*t = ThenPrepare
	case "commit":
		*t = ThenCommit
	default:
		return fmt.Errorf("engine: invalid then %q", b)
	}
	return nil
}

// PrepareRequest asks a participant to prepare. Stmts is the number of
// statements the coordinator saw succeed there; a participant that has a
// different count lost work and must vote no. Decider, when set, names the
// participant whose own COMMIT will decide the transaction: the prepared
// branch's GID names it, and a branch in doubt asks it. VoteToDecider, with
// Decider, sends a yes (or read-only) vote to the decider, as
// ExecRequest.VoteToDecider does; a no still goes to the coordinator.
type PrepareRequest struct {
	Header
	TxID          TxID    `json:"tx"`
	Stmts         int     `json:"stmts"`
	Decider       *NodeID `json:"decider,omitempty"`
	VoteToDecider bool    `json:"vote_to_decider,omitempty"`
}

// CommitBranchRequest asks the decider to commit its branch with an
// ordinary COMMIT, its outcome marker inside: that commit is the decision
// of the whole transaction. The coordinator sends it once every other
// branch is prepared (or finished read-only), or, when their votes go to
// the decider (Voters), with their prepares; never waiting for its own
// coord.preparing: the marker carries the transaction's idempotency keys,
// and a restarted coordinator learns of every marker it does not know
// (ReconcileRequest). The answer is a VoteMessage: committed, or no.
type CommitBranchRequest struct {
	Header
	TxID  TxID     `json:"tx"`
	Stmts int      `json:"stmts"`
	Keys  []string `json:"keys,omitempty"`
	// Voters are the participants asked to vote to the decider
	// (ExecRequest.VoteToDecider, PrepareRequest.VoteToDecider): the
	// branch commits once each of them voted yes or read-only here, and is
	// never committed otherwise.
	Voters []NodeID `json:"voters,omitempty"`
}

// ReconcileRequest asks a participant, from a coordinator that restarted,
// for the commit markers it keeps as the decider of transactions of
// earlier incarnations. A decider may have committed before the
// coordinator's log held the transaction; until every participant has
// answered, the coordinator says nothing about a transaction or key it
// does not know. The participant answers once no branch of an earlier
// incarnation can still commit there.
type ReconcileRequest struct {
	Header
}

// ReconcileAnswer lists a participant's commit markers of transactions of
// earlier coordinator incarnations (Epoch is the incarnation that asked).
type ReconcileAnswer struct {
	Cluster string   `json:"cluster"`
	From    NodeID   `json:"from"`
	Epoch   Epoch    `json:"epoch"`
	Markers []Marker `json:"markers,omitempty"`
}

// Marker is a decider's commit marker as a ReconcileAnswer reports it.
type Marker struct {
	TxID    TxID     `json:"tx"`
	TxEpoch Epoch    `json:"tx_epoch"`
	Keys    []string `json:"keys,omitempty"`
}

// SettleRequest asks a decider for the outcome of a transaction it
// decides: from a branch in doubt, or from the coordinator that lost track
// of the decider's answer. The decider answers only once its own branch
// can no longer commit unless it did: it settles an undecided branch as
// aborted, durably (a tombstone where its outcome marker would be), before
// it says abort.
type SettleRequest struct {
	Cluster string `json:"cluster"`
	From    NodeID `json:"from"`
	TxID    TxID   `json:"tx"`
	TxEpoch Epoch  `json:"tx_epoch"`
}

// SettleAnswer is the decider's answer to a SettleRequest: the outcome its
// own database holds.
type SettleAnswer struct {
	Cluster string  `json:"cluster"`
	From    NodeID  `json:"from"`
	TxID    TxID    `json:"tx"`
	Outcome Outcome `json:"outcome"`
	// Results, in a commit told to the coordinator, are the votes and
	// results the decider's voters sent it, as in its committed vote
	// (which this answer stands in for when that was lost).
	Results []VoterResult `json:"results,omitempty"`
	// Reason, with an abort, is why the decider rolled its branch back,
	// when it did so itself.
	Reason string `json:"reason,omitempty"`
}

// DecisionRequest tells a participant the outcome. Presumed marks an abort
// answered for a transaction the coordinator has no record of; such an answer
// is stale when the participant already knows the transaction committed.
// PromptAck asks for the acknowledgement at once: the client waits for the
// commit to be applied everywhere before its next statement
// (ClientCommit.PromptAcks).
type DecisionRequest struct {
	Header
	TxID      TxID    `json:"tx"`
	TxEpoch   Epoch   `json:"tx_epoch"`
	Outcome   Outcome `json:"outcome"`
	Presumed  bool    `json:"presumed,omitempty"`
	PromptAck bool    `json:"prompt_ack,omitempty"`
}

// ExecResult answers an ExecRequest.
type ExecResult struct {
	// Cluster is the cluster of the transaction the message is about, as
	// in every participant-to-coordinator message: a coordinator drops
	// what concerns another cluster's transaction of the same id.
	Cluster string      `json:"cluster"`
	From    NodeID      `json:"from"`
	TxID    TxID        `json:"tx"`
	Stmt    int         `json:"stmt"`
	Result  *StmtResult `json:"result,omitempty"`
	Err     string      `json:"error,omitempty"`
	// SQLErr is what PostgreSQL said when the statement failed there;
	// nil for other failures.
	SQLErr *SQLError `json:"sql_error,omitempty"`
}

// VoteMessage answers a PrepareRequest (to the coordinator, or with
// VoteToDecider to the decider: then TxEpoch is the branch's epoch) or an
// ExecRequest with VoteToDecider (to the decider: then TxEpoch, Stmt and
// Result are the branch's epoch, its last statement and that statement's
// result). The decider's answer to a CommitBranchRequest is one too:
// committed, with the voters' results in Results, or no.
type VoteMessage struct {
	Cluster string        `json:"cluster"`
	From    NodeID        `json:"from"`
	TxID    TxID          `json:"tx"`
	Vote    Vote          `json:"vote"`
	Reason  string        `json:"reason,omitempty"`
	TxEpoch Epoch         `json:"tx_epoch,omitempty"`
	Stmt    int           `json:"stmt,omitempty"`
	Result  *StmtResult   `json:"result,omitempty"`
	Results []VoterResult `json:"results,omitempty"`
}

// VoterResult is a voter's vote and the result of its last statement, as
// the decider passes them on to the coordinator.
type VoterResult struct {
	Node   NodeID      `json:"node"`
	Vote   Vote        `json:"vote"`
	Stmt   int         `json:"stmt"`
	Result *StmtResult `json:"result,omitempty"`
}

// AckMessage acknowledges that a decision was applied. Prompt, which does
// not travel, tells the driver that somebody waits for it (the decision
// asked for a PromptAck): it must not be held back for company.
type AckMessage struct {
	Cluster string  `json:"cluster"`
	From    NodeID  `json:"from"`
	TxID    TxID    `json:"tx"`
	Outcome Outcome `json:"outcome"`
	Prompt  bool    `json:"-"`
}

// InquireMessage asks the coordinator for the decision on an in-doubt
// transaction; the answer is a DecisionRequest.
type InquireMessage struct {
	Cluster string `json:"cluster"`
	From    NodeID `json:"from"`
	TxID    TxID   `json:"tx"`
	TxEpoch Epoch  `json:"tx_epoch"`
}

// StmtResult is what a statement returned.
type StmtResult struct {
	Columns []string `json:"columns,omitempty"`
	// Types are the columns' PostgreSQL type OIDs, in the order of
	// Columns (absent from participants older than the field).
	Types        []uint32 `json:"types,omitempty"`
	Rows         [][]any  `json:"rows,omitempty"`
	RowsAffected int64    `json:"rows_affected"`
	Tag          string   `json:"tag,omitempty"`
	// Params are the parameter type OIDs of a described statement
	// (ExecRequest.Describe), which has no rows and no tag.
	Params []uint32 `json:"params,omitempty"`
}

// SQLError is what PostgreSQL reported about a statement that failed on a
// participant, so that a client can act on the SQLSTATE rather than on the
// message's text.
type SQLError struct {
	Code     string `json:"sqlstate"`
	Severity string `json:"severity,omitempty"`
	Message  string `json:"message"`
	Detail   string `json:"detail,omitempty"`
	Hint     string `json:"hint,omitempty"`
	// Position is the 1-based character offset in the statement that
	// the error points at, 0 if none.
	Position int32 `json:"position,omitempty"`
}

func (ExecRequest) Method() string         { return "tpcd.exec" }
func (PrepareRequest) Method() string      { return "tpcd.prepare" }
func (DecisionRequest) Method() string     { return "tpcd.decide" }
func (ExecResult) Method() string          { return "tpcd.exec_result" }
func (VoteMessage) Method() string         { return "tpcd.vote" }
func (AckMessage) Method() string          { return "tpcd.ack" }
func (InquireMessage) Method() string      { return "tpcd.inquire" }
func (CommitBranchRequest) Method() string { return "tpcd.commit_branch" }
func (SettleRequest) Method() string       { return "tpcd.settle" }
func (SettleAnswer) Method() string        { return "tpcd.settled" }
func (ReconcileRequest) Method() string    { return "tpcd.reconcile" }
func (ReconcileAnswer) Method() string     { return "tpcd.reconciled" }

func (m ExecRequest) Tx() TxID         { return m.TxID }
func (m PrepareRequest) Tx() TxID      { return m.TxID }
func (m DecisionRequest) Tx() TxID     { return m.TxID }
func (m ExecResult) Tx() TxID          { return m.TxID }
func (m VoteMessage) Tx() TxID         { return m.TxID }
func (m AckMessage) Tx() TxID          { return m.TxID }
func (m InquireMessage) Tx() TxID      { return m.TxID }
func (m CommitBranchRequest) Tx() TxID { return m.TxID }
func (m SettleRequest) Tx() TxID       { return m.TxID }
func (m SettleAnswer) Tx() TxID        { return m.TxID }
func (ReconcileRequest) Tx() TxID      { return 0 }
func (ReconcileAnswer) Tx() TxID       { return 0 }

func (ExecRequest) isMessage()         {}
func (PrepareRequest) isMessage()      {}
func (DecisionRequest) isMessage()     {}
func (ExecResult) isMessage()          {}
func (VoteMessage) isMessage()         {}
func (AckMessage) isMessage()          {}
func (InquireMessage) isMessage()      {}
func (CommitBranchRequest) isMessage() {}
func (SettleRequest) isMessage()       {}
func (SettleAnswer) isMessage()        {}
func (ReconcileRequest) isMessage()    {}
func (ReconcileAnswer) isMessage()     {}
