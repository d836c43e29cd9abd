package engine

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// CoordinatorConfig sets the coordinator's limits; zero durations take the
// Default values.
type CoordinatorConfig struct {
	// Participants is the number of participant nodes, ids 0..Participants-1.
	Participants int
	// VoteTimeout bounds the wait for votes after prepare went out (--timeout).
	VoteTimeout time.Duration
	// ExecTimeout bounds the wait for one statement's result.
	ExecTimeout time.Duration
	// IdleTimeout aborts an explicit transaction whose client made no call
	// for this long, counted from its last call or the last successful
	// answer to one of its statements, whichever came later: the client is
	// presumed gone. Statements a client sends participants directly
	// (ExecRequest.Direct) pass the coordinator by, so they do not count:
	// such a transaction has this long from begin to commit.
	IdleTimeout time.Duration
	// BatchSize is the number of seed-form execute calls per transaction.
	BatchSize int
	// BatchFlush commits a partial batch this long after it began.
	BatchFlush time.Duration
	// RetryMin and RetryMax bound the backoff of decision resends (a
	// decision only the decider has yet to acknowledge waits ten times
	// RetryMin, RetryMax at most, before its first resend).
	RetryMin, RetryMax time.Duration
	// RememberEnded is how many ended transactions' outcomes stay answerable
	// by status after the coordinator forgot them.
	RememberEnded int
	// ReserveBlock is how many transaction ids one reservation event covers.
	ReserveBlock int
	// MaxStatements bounds the statements of one transaction, across all
	// participants: a client cannot make the coordinator queue without end.
	// A statement beyond it is refused with ErrBadRequest and the
	// transaction stays usable. A batch is committed when it reaches it.
	MaxStatements int
	// Protocol is how transactions commit; the zero value takes
	// DefaultProtocol.
	Protocol Protocol
	// FirstTx is the smallest id this coordinator assigns (0: 1): the
	// start of its slot's range where several coordinators share a
	// cluster, each assigning ids of its own.
	FirstTx TxID
}

// Protocol is how the coordinator commits a transaction.
type Protocol uint8

const (
	// ProtocolDecider prepares every participant but one, the decider, then
	// has the decider commit its branch with an ordinary COMMIT that carries
	// its outcome marker: that commit is the decision, so no forced
	// coordinator write waits in the commit path, and a transaction that
	// wrote on one participant commits in one phase. Branches in doubt ask
	// the decider (Lampson and Sturgis' "last agent"; Gray and Reuter,
	// 12.5.3).
	ProtocolDecider Protocol = 1 + iota
	// ProtocolClassic prepares every participant, forces the decision to
	// the coordinator's log, then commits every branch (presumed abort).
	ProtocolClassic
)

// DefaultProtocol is the protocol of a coordinator that names none. (Classic
// until the node runs the decider's data operations.)
const DefaultProtocol = ProtocolDecider

var protocolNames = [...]string{"", "decider", "classic"}

func (p Protocol) String() string { return enumName(protocolNames[:], p, "protocol(?)") }

// ParseProtocol reads a protocol name.
func ParseProtocol(s string) (Protocol, error) {
	for i, n := range protocolNames {
		if n != "" && n == s {
			return Protocol(i), nil
		}
	}
	return 0, fmt.Errorf("engine: unknown protocol %q (decider or classic)", s)
}

// Filled returns c with every unset field at the default NewCoordinator
// would give it, for drivers that size their own limits by the engine's.
func (c CoordinatorConfig) Filled() CoordinatorConfig {
	c.fill()
	return c
}

func (c *CoordinatorConfig) fill() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.VoteTimeout, DefaultVoteTimeout)
	def(&c.ExecTimeout, DefaultExecTimeout)
	def(&c.IdleTimeout, DefaultIdleTimeout)
	def(&c.BatchFlush, DefaultBatchFlush)
	def(&c.RetryMin, DefaultRetryMin)
	def(&c.RetryMax, DefaultRetryMax)
	if c.BatchSize <= 0 {
		c.BatchSize = 1
	}
	if c.RememberEnded <= 0 {
		c.RememberEnded = DefaultRememberEnded
	}
	if c.ReserveBlock <= 0 {
		c.ReserveBlock = 1024
	}
	if c.MaxStatements <= 0 {
		c.MaxStatements = DefaultMaxStatements
	}
	if c.Protocol == 0 {
		c.Protocol = DefaultProtocol
	}
	c.BatchSize = min(c.BatchSize, c.MaxStatements)
}

// Phase is where a transaction stands at the coordinator.
type Phase uint8

const (
	// PhaseActive: statements may run; no prepare yet.
	PhaseActive Phase = 1 + iota
	// PhasePreparing: prepare sent, votes being collected.
	PhasePreparing
	// PhaseCommitting: commit decided, not yet acknowledged by everyone.
	PhaseCommitting
	// PhaseAborting: abort decided, not yet acknowledged by everyone.
	PhaseAborting
	// PhaseCommitted: commit applied everywhere.
	PhaseCommitted
	// PhaseAborted: abort applied everywhere.
	PhaseAborted
)

var phaseNames = [...]string{"", "active", "preparing", "committing", "aborting", "committed", "aborted"}

func (p Phase) String() string { return enumName(phaseNames[:], p, "phase(?)") }

// Coordinator is the coordinator's state machine. It is not safe for
// concurrent use; the driver owns it from one goroutine.
type Coordinator struct {
	cfg CoordinatorConfig

	cluster  string
	epoch    Epoch
	started  bool
	reserved TxID
	maxTx    TxID
	nextTx   TxID
	// reserveLSN is the LSN of the latest reservation; handing out an id
	// waits for it so a crash can never lead to reuse.
	reserveLSN LSN

	txs   map[TxID]*coordTx
	batch *coordTx

	// ended remembers recent outcomes in FIFO order for status queries.
	ended    []endedTx
	endedIdx map[TxID]endedTx
	// keys finds transactions in memory and remembered ended ones by the
	// idempotency keys their clients gave them.
	keys map[string]TxID
	// lookups holds the calls waiting for a LookupKey of their key, in
	// order; keyChecked marks the key whose lookup found nothing while its
	// first call runs.
	lookups    map[string][]Input
	keyChecked string
	// checking finds the transaction that runs while its key is looked
	// up, by that key.
	checking map[string]TxID
	// recalled keeps what lookups found, the latest maxRecalled of them.
	recalled     map[string]endedTx
	recalledFIFO []string
	// forgottenLSN is the newest coord.ended among the transactions whose
	// keys left memory. The driver's store learns of an outcome once its
	// coord.ended is durable, so a lookup waits for this LSN, and no more:
	// waiting for every pending event would force a log write before each
	// new key.
	forgottenLSN LSN
	// endedCount counts every transaction forgotten, so that a driver can
	// tell which entries of ended are new since it last looked.
	endedCount uint64

	// A decider may commit before this coordinator's log holds the
	// transaction, so after a restart an id or key the log does not know
	// may still name a commit, recorded only in a decider's marker.
	// unreconciled marks the participants that have not yet answered
	// ReconcileRequest (nil once all have); until then, calls about such
	// an id or key wait in awaiting. firstTx is this incarnation's first
	// id: later ones are all known.
	unreconciled     []bool
	reconcileAt      Instant
	reconcileBackoff time.Duration
	reconcileLSN     LSN
	firstTx          TxID
	awaiting         []awaitingCall

	output
}

// awaitingCall is a client call held until every participant reconciled.
type awaitingCall struct {
	in    Input
	since Instant
}

type endedTx struct {
	id      TxID
	outcome Outcome
	reason  string
	keys    []string
	// endLSN is its coord.ended event's, 0 when there is none to wait for
	// (read back at start, or never logged).
	endLSN LSN
}

type coordTx struct {
	id    TxID
	epoch Epoch
	phase Phase
	batch bool
	nodes []coordNode // indexed by NodeID
	// keys are its clients' idempotency keys; keyWaiters are calls that
	// repeated one and wait for the outcome.
	keys       []string
	keyWaiters []keyWaiter

	abortOnly       string
	commitRequested bool
	// promptAcks: a client waits for the commit to be applied
	// (ClientCommit.PromptAcks); its decision asks for prompt acks.
	promptAcks bool
	// unanswered marks a transaction begun by an exec without a
	// transaction id until a reply tells the client its id: before that
	// nobody could roll it back (see execFailed).
	unanswered    bool
	commitWaiters []ReqID
	batchCount    int
	stmts         int
	begun         Instant
	lastActivity  Instant
	voteDeadline  Instant

	outcome     Outcome
	reason      string
	decisionLSN LSN
	// decidedLSN is where coord.decided went. The decider hears the outcome
	// only once it is durable: dropping its marker drops the commit's one
	// record, which must then be the coordinator's.
	decidedLSN LSN
	nextRetry  Instant
	backoff    time.Duration

	// decider is the participant whose commit decides the transaction,
	// CoordinatorNode in the classic protocol. preparingLSN is its
	// coord.preparing, which a question to the decider (settle) waits for;
	// the request to commit does not.
	decider      NodeID
	preparingLSN LSN
	// branchAsked is set once the decider may have been asked to commit
	// (after a restart: may have been). From then on only the decider's
	// answer decides: the coordinator never concludes abort on its own,
	// and asks the decider (settle) when the answer is late.
	branchAsked   bool
	settleAt      Instant
	settleBackoff time.Duration

	// transact is the ClientTransact call whose statements run; piggyback
	// marks a transaction whose participants prepare (or, alone, commit)
	// right after their last statement, because the commit was asked for
	// with the statements.
	transact  *transactCall
	piggyback bool
	// voteToDecider marks a transaction whose other participants vote to
	// the decider, which commits once their votes are in: a piggybacked
	// one whose others all write, asked to commit as soon as its own
	// statements answered (commitDirect), or one whose commit came on its
	// own, asked with the prepares (tryPrepare). voters are the others, as
	// planned: in a piggybacked one not all of them may have been sent
	// their last statement yet when the decider is asked.
	voteToDecider bool
	voters        []NodeID

	// checking is the key of a transaction that runs while the key is
	// looked up (see speculates); until the answer comes nothing of the
	// transaction is logged, the decider is not asked to commit, and a
	// decision (an abort: nothing else can come before the commit is
	// asked for) waits in held.
	checking string
	held     *heldDecision
	// checkDeadline bounds the check: the branches hold their locks
	// meanwhile. heldAnswer is the call's failure, told once the key is
	// known to be new: a key that named an earlier transaction answers
	// with that one's outcome instead (the statements, run again, may
	// well fail on what it wrote).
	checkDeadline Instant
	heldAnswer    *heldAnswer
}

// heldDecision is a decision taken while a transaction's key was checked.
type heldDecision struct {
	outcome Outcome
	reason  string
}

// heldAnswer is a failure to tell a call once its key is checked.
type heldAnswer struct {
	req    ReqID
	code   ErrorCode
	sqlErr *SQLError
	text   string
}

// transactCall is a ClientTransact in progress: its statements' results
// as they arrive.
type transactCall struct {
	req     ReqID
	results []*StmtResult
	pending int
	commit  bool
	began   bool
	// failed is the statement error a decider reported for the statement
	// that carried its commit: said to the client if the decider's answer
	// is abort (an error may also come from a late copy of the statement,
	// after the branch committed, so only the answer decides).
	failed     string
	failedSQL  *SQLError
	failedIdx  int
	failedCode ErrorCode // ErrStatement when zero
	// execute marks the execute call that closed a batch: it carries the
	// batch's commit and is answered with its one result and the outcome
	// (ExecReply), so that its caller's next call sees the batch committed.
	execute bool
	node    NodeID
}

type coordNode struct {
	touched bool
	// wrote is set once a statement there answered with a tag other than
	// SELECT: the decider is chosen among the nodes that wrote.
	wrote    bool
	sent     int // statements sent, numbered 0..sent-1
	inflight *pendingExec
	queue    []pendingExec
	vote     Vote
	// inPhase2 marks a node that must acknowledge the decision.
	inPhase2 bool
	acked    bool
	// prepareSent marks a node asked to prepare with its last statement.
	prepareSent bool
	// votedIdx is that statement's place in the transact call when it
	// votes to the decider: the decider hands on its result, which answers
	// it even if the coordinator gave up on it meanwhile (a send reported
	// failed that still arrived).
	votedIdx int
}

// keyWaiter is a call repeated with the key of a transaction still
// running, answered with its outcome in the call's own form.
type keyWaiter struct {
	req  ReqID
	kind keyedCall
	node NodeID // of an execute
}

type keyedCall uint8

const (
	keyedTransact keyedCall = iota
	keyedExecute
)

type pendingExec struct {
	req        ReqID
	sql        string
	args       []any
	paramTypes []uint32
	stmt       int
	deadline   Instant
	batch      bool
	// inTransact marks statement idx of the transaction's ClientTransact,
	// answered with the call rather than on its own (req is 0).
	inTransact bool
	idx        int
	then       Then
	// describe asks for the statement's types instead of running it.
	describe bool
}

// NewCoordinator returns a coordinator with an empty state; fold its log in
// with Apply before the Start step.
func NewCoordinator(cfg CoordinatorConfig) *Coordinator {
	cfg.fill()
	return &Coordinator{cfg: cfg, txs: map[TxID]*coordTx{}, endedIdx: map[TxID]endedTx{}, keys: map[string]TxID{}, lookups: map[string][]Input{}, checking: map[string]TxID{}, recalled: map[string]endedTx{}}
}

// Cluster is the cluster id, known after Start or after folding a log.
func (c *Coordinator) Cluster() string { return c.cluster }

// Epoch is the current incarnation, known after Start.
func (c *Coordinator) Epoch() Epoch { return c.epoch }

// Reconciling reports whether a participant has not yet answered this
// incarnation's question about the commit markers of earlier ones.
func (c *Coordinator) Reconciling() bool { return c.unreconciled != nil }

// Apply folds one durable event into the state. Recovery calls it for every
// event of the log in order; Step calls it for every event it emits, so both
// paths reach the same state.
func (c *Coordinator) Apply(e Event) error {
	switch e := e.(type) {
	case CoordStarted:
		if c.cluster == "" {
			c.cluster = e.Cluster
		}
		c.epoch = max(c.epoch, e.Epoch)
	case CoordTxIDsReserved:
		c.reserved = max(c.reserved, e.Through)
	case CoordPreparing:
		tx := c.txOrNew(e.TxID, e.Epoch)
		tx.phase = PhasePreparing
		for _, k := range e.Keys {
			c.addKey(tx, k)
		}
		if e.Decider != nil {
			if err := c.checkNode(*e.Decider); err != nil {
				return fmt.Errorf("tx %d: decider: %w", e.TxID, err)
			}
			tx.decider = *e.Decider
		}
		for _, n := range e.Participants {
			if err := c.checkNode(n); err != nil {
				return fmt.Errorf("tx %d: %w", e.TxID, err)
			}
			tx.nodes[n].touched = true
		}
	case CoordDecided:
		tx := c.txOrNew(e.TxID, e.Epoch)
		tx.outcome, tx.reason = e.Outcome, e.Reason
		tx.phase = PhaseCommitting
		if e.Outcome == OutcomeAbort {
			tx.phase = PhaseAborting
		}
		for i := range tx.nodes {
			tx.nodes[i].inPhase2, tx.nodes[i].acked = false, false
		}
		for _, n := range e.Participants {
			if err := c.checkNode(n); err != nil {
				return fmt.Errorf("tx %d: %w", e.TxID, err)
			}
			tx.nodes[n].touched, tx.nodes[n].inPhase2 = true, true
		}
	case CoordEnded:
		tx := c.txs[e.TxID]
		c.maxTx = max(c.maxTx, e.TxID)
		if tx == nil {
			if e.Outcome != 0 {
				// Its other events were compacted away.
				c.remember(endedTx{id: e.TxID, outcome: e.Outcome, reason: e.Reason, keys: e.Keys, endLSN: c.appliedLSN()})
			}
			return nil
		}
		c.forget(tx, c.appliedLSN())
	default:
		return fmt.Errorf("engine: coordinator cannot apply %s", e.Kind())
	}
	return nil
}

func (c *Coordinator) checkNode(n NodeID) error {
	if n < 0 || int(n) >= c.cfg.Participants {
		return fmt.Errorf("engine: participant %d out of range 0..%d", n, c.cfg.Participants-1)
	}
	return nil
}

func (c *Coordinator) txOrNew(id TxID, epoch Epoch) *coordTx {
	c.maxTx = max(c.maxTx, id)
	tx := c.txs[id]
	if tx == nil {
		tx = &coordTx{id: id, epoch: epoch, nodes: make([]coordNode, c.cfg.Participants), decider: CoordinatorNode}
		c.txs[id] = tx
	}
	return tx
}

// forget drops a finished transaction, remembering its outcome.
// forget drops tx from the running transactions and remembers how it
// ended; endLSN is its coord.ended event's (0 if it has none).
func (c *Coordinator) forget(tx *coordTx, endLSN LSN) {
	delete(c.txs, tx.id)
	if c.batch == tx {
		c.batch = nil
	}
	c.remember(endedTx{id: tx.id, outcome: tx.outcome, reason: tx.reason, keys: tx.keys, endLSN: endLSN})
}

// appliedLSN is the LSN of the event being applied: emit applies an event
// before it counts it. Events read back at start were durable before the
// node served anything, so they need no LSN.
func (c *Coordinator) appliedLSN() LSN {
	if !c.started {
		return 0
	}
	return c.lsn + 1
}

// remember keeps an ended transaction's outcome (and keys) answerable,
// forgetting the oldest beyond RememberEnded.
func (c *Coordinator) remember(e endedTx) {
	if _, ok := c.endedIdx[e.id]; ok {
		return
	}
	for _, k := range e.keys {
		c.keys[k] = e.id
	}
	c.endedCount++
	c.ended = append(c.ended, e)
	c.endedIdx[e.id] = e
	if len(c.ended) > c.cfg.RememberEnded {
		old := c.ended[0]
		for _, k := range old.keys {
			if c.keys[k] == old.id {
				delete(c.keys, k)
			}
		}
		if len(old.keys) > 0 {
			c.forgottenLSN = max(c.forgottenLSN, old.endLSN)
		}
		delete(c.endedIdx, old.id)
		c.ended[0] = endedTx{}
		c.ended = c.ended[1:]
	}
}

// emit applies e and queues it for the log, returning its LSN.
func (c *Coordinator) emit(e Event) LSN {
	if err := c.Apply(e); err != nil {
		panic(fmt.Sprintf("engine: emitted event does not apply: %v", err))
	}
	return c.queue(e)
}

func (c *Coordinator) effect(e Effect) { c.rd.Effects = append(c.rd.Effects, e) }

func (c *Coordinator) reply(req ReqID, r Reply, wait LSN) {
	c.effect(Respond{Req: req, Reply: r, WaitLSN: wait})
}

func (c *Coordinator) fail(req ReqID, code ErrorCode, format string, args ...any) {
	c.failSQL(req, code, nil, format, args...)
}

// failSQL answers an error that carries what PostgreSQL said, if anything.
func (c *Coordinator) failSQL(req ReqID, code ErrorCode, sqlErr *SQLError, format string, args ...any) {
	c.effect(Respond{Req: req, Err: &Error{Code: code, Message: fmt.Sprintf(format, args...), SQL: sqlErr}})
}

func (c *Coordinator) header() Header { return Header{Cluster: c.cluster, Epoch: c.epoch} }

// Step feeds one input to the coordinator and returns what must be done.
func (c *Coordinator) Step(in Input) Ready {
	c.rd = Ready{}
	if _, ok := in.(Start); !ok && !c.started {
		if req, ok := reqOf(in); ok {
			c.fail(req, ErrBadRequest, "coordinator is still starting")
		}
		return c.take()
	}
	now := in.At()
	switch in := in.(type) {
	case Start:
		c.start(in)
	case Tick:
		c.tick(now)
	case ClientBegin, ClientExecute, ClientTransact:
		c.dispatchClient(in)
	case ClientExec:
		c.clientExec(in)
	case ClientCommit:
		c.clientCommit(in)
	case ClientRollback:
		c.clientRollback(in)
	case ClientStatus:
		c.clientStatus(in)
	case ClientResolve:
		c.clientResolve(now, in)
	case KeyLookedUp:
		c.keyLookedUp(in)
	case Receive:
		c.receive(now, in.Msg)
	case SendFailed:
		c.sendFailed(now, in.To, in.Msg)
	}
	return c.take()
}

func reqOf(in Input) (ReqID, bool) {
	switch in := in.(type) {
	case ClientBegin:
		return in.Req, true
	case ClientExec:
		return in.Req, true
	case ClientExecute:
		return in.Req, true
	case ClientCommit:
		return in.Req, true
	case ClientRollback:
		return in.Req, true
	case ClientStatus:
		return in.Req, true
	case ClientResolve:
		return in.Req, true
	case ClientTransact:
		return in.Req, true
	}
	return 0, false
}

// start opens a new incarnation and finishes what the previous one owed:
// decisions are resent until acknowledged, undecided transactions abort.
func (c *Coordinator) start(in Start) {
	if c.started {
		return
	}
	c.started = true
	cluster := c.cluster
	if cluster == "" {
		cluster = in.NewCluster
	}
	startedLSN := c.emit(CoordStarted{Cluster: cluster, Epoch: c.epoch + 1})
	c.nextTx = max(c.reserved, c.maxTx) + 1
	if c.nextTx < c.cfg.FirstTx {
		c.nextTx = c.cfg.FirstTx
	}
	c.firstTx = c.nextTx
	if c.epoch > 1 && c.cfg.Participants > 0 {
		c.unreconciled = make([]bool, c.cfg.Participants)
		for i := range c.unreconciled {
			c.unreconciled[i] = true
		}
		c.reconcileLSN = startedLSN
		c.askReconcile(in.Now)
	}
	for _, id := range c.sortedTxIDs() {
		tx := c.txs[id]
		switch {
		case tx.phase == PhasePreparing && tx.decider != CoordinatorNode:
			// The decider may have committed: only it can tell.
			tx.branchAsked = true
			c.settle(in.Now, tx)
		case tx.phase == PhasePreparing:
			c.decide(in.Now, tx, OutcomeAbort, "coordinator restarted before deciding")
		case tx.phase == PhaseCommitting || tx.phase == PhaseAborting:
			if c.allAcked(tx) {
				c.emitEnded(tx)
				continue
			}
			tx.branchAsked = tx.decider != CoordinatorNode
			tx.backoff = c.cfg.RetryMin
			tx.nextRetry = in.Now.Add(tx.backoff)
			c.sendDecision(in.Now, tx)
		}
	}
}

func (c *Coordinator) sortedTxIDs() []TxID { return slices.Sorted(maps.Keys(c.txs)) }

func (c *Coordinator) newTx(now Instant, batch bool) *coordTx {
	id := c.nextTx
	c.nextTx++
	if id > c.reserved {
		c.reserveLSN = c.emit(CoordTxIDsReserved{Through: id + TxID(c.cfg.ReserveBlock) - 1})
	}
	tx := c.txOrNew(id, c.epoch)
	tx.phase, tx.batch, tx.begun, tx.lastActivity = PhaseActive, batch, now, now
	return tx
}

// activeTx finds a transaction that still accepts client work.
func (c *Coordinator) activeTx(req ReqID, id TxID) *coordTx {
	tx := c.txs[id]
	switch {
	case tx == nil && (id == 0 || id >= c.nextTx):
		c.fail(req, ErrUnknownTx, "unknown transaction %d", id)
	case tx == nil:
		c.fail(req, ErrTxNotActive, "transaction %d is no longer active (%s)", id, c.Status(id).State)
	case tx.phase != PhaseActive:
		c.fail(req, ErrTxNotActive, "transaction %d is %s", id, tx.phase)
	case tx.commitRequested:
		c.fail(req, ErrTxNotActive, "transaction %d is committing", id)
	default:
		return tx
	}
	return nil
}

func (c *Coordinator) clientExec(in ClientExec) {
	if err := c.checkNode(in.Node); err != nil {
		c.fail(in.Req, ErrBadNode, "node %d does not exist (participants are 0..%d)", in.Node, c.cfg.Participants-1)
		return
	}
	var tx *coordTx
	if in.TxID == 0 {
		// An exec without a transaction begins one: the reply carries its
		// id, and the client saves the round trip of a begin.
		tx = c.newTx(in.Now, false)
		tx.unanswered = true
	} else if tx = c.activeTx(in.Req, in.TxID); tx == nil {
		return
	}
	if tx.batch {
		c.fail(in.Req, ErrTxNotActive, "transaction %d is a batch; use execute", tx.id)
		return
	}
	tx.lastActivity = in.Now
	if tx.abortOnly != "" {
		c.fail(in.Req, ErrAborted, "transaction %d will abort: %s", tx.id, tx.abortOnly)
		return
	}
	if tx.stmts >= c.cfg.MaxStatements {
		c.fail(in.Req, ErrBadRequest, "transaction %d already has %d statements, the most one transaction may have; commit it and continue in another", tx.id, c.cfg.MaxStatements)
		return
	}
	c.enqueue(in.Now, tx, in.Node, pendingExec{req: in.Req, sql: in.SQL, args: in.Args, paramTypes: in.ParamTypes, describe: in.Describe})
}

func (c *Coordinator) clientExecute(in ClientExecute) {
	if err := c.checkNode(in.Node); err != nil {
		c.fail(in.Req, ErrBadNode, "node %d does not exist (participants are 0..%d)", in.Node, c.cfg.Participants-1)
		return
	}
	if c.repeated(in, in.Req, in.Key, keyWaiter{req: in.Req, kind: keyedExecute, node: in.Node}) {
		return
	}
	tx := c.batch
	if tx == nil {
		tx = c.newTx(in.Now, true)
		c.batch = tx
	}
	c.addKey(tx, in.Key)
	tx.batchCount++
	closes := tx.batchCount >= c.cfg.BatchSize
	switch {
	case tx.abortOnly != "":
		c.fail(in.Req, ErrAborted, "batch transaction %d will abort: %s", tx.id, tx.abortOnly)
	case closes:
		// The closing statement carries the commit and is answered with
		// its outcome; in a batch of one, it is planned with its statement
		// as a one-call transaction's is.
		tx.transact = &transactCall{req: in.Req, results: make([]*StmtResult, 1), pending: 1, commit: true, began: tx.batchCount == 1, execute: true, node: in.Node}
		tx.commitWaiters = append(tx.commitWaiters, in.Req)
		p := pendingExec{sql: in.SQL, args: in.Args, inTransact: true, batch: true}
		if tx.stmts == 0 {
			p.then = c.piggyback(tx, []Statement{{Node: in.Node, SQL: in.SQL, Args: in.Args}})[0]
		}
		tx.commitRequested = true
		c.batch = nil
		c.enqueue(in.Now, tx, in.Node, p)
		return
	default:
		// The reply carries the txid, so it waits for the reservation too.
		c.enqueue(in.Now, tx, in.Node, pendingExec{req: in.Req, sql: in.SQL, args: in.Args, batch: true})
	}
	if closes {
		c.batch = nil
		c.requestCommit(in.Now, tx)
	}
}

// clientTransact runs a transaction's statements and, when asked, its
// commit, answering once with every result and the outcome. A fresh
// transaction whose commit comes with its statements is piggybacked: each
// participant prepares right after its last statement (the decider, when it
// is the only one, commits instead), which spares a message and a round
// trip to its database per participant.
func (c *Coordinator) clientTransact(in ClientTransact) {
	for i, s := range in.Stmts {
		if err := c.checkNode(s.Node); err != nil {
			c.fail(in.Req, ErrBadNode, "statements[%d]: node %d does not exist (participants are 0..%d)", i, s.Node, c.cfg.Participants-1)
			return
		}
	}
	if len(in.Stmts) == 0 {
		c.fail(in.Req, ErrBadRequest, "no statements")
		return
	}
	if in.Key != "" && in.TxID != 0 {
		c.fail(in.Req, ErrBadRequest, "a key names the transaction a call begins; give it without tx")
		return
	}
	speculative := c.speculates(in)
	if !speculative && c.repeated(in, in.Req, in.Key, keyWaiter{req: in.Req, kind: keyedTransact}) {
		return
	}
	var tx *coordTx
	began := in.TxID == 0
	if began {
		tx = c.newTx(in.Now, false)
		tx.unanswered = true
		if speculative {
			tx.checking, tx.checkDeadline = in.Key, in.Now.Add(c.cfg.VoteTimeout)
			c.checking[in.Key] = tx.id
			c.lookUp(in.Key, nil)
		} else {
			c.addKey(tx, in.Key)
		}
	} else if tx = c.activeTx(in.Req, in.TxID); tx == nil {
		return
	}
	switch {
	case tx.batch:
		c.fail(in.Req, ErrTxNotActive, "transaction %d is a batch; use execute", tx.id)
		return
	case tx.transact != nil:
		c.fail(in.Req, ErrTxNotActive, "transaction %d already runs a transact call", tx.id)
		return
	case tx.abortOnly != "":
		c.fail(in.Req, ErrAborted, "transaction %d will abort: %s", tx.id, tx.abortOnly)
		return
	case tx.stmts+len(in.Stmts) > c.cfg.MaxStatements:
		c.fail(in.Req, ErrBadRequest, "transaction %d would have %d statements, more than one transaction may have (%d); none of these ran", tx.id, tx.stmts+len(in.Stmts), c.cfg.MaxStatements)
		return
	}
	tx.lastActivity = in.Now
	call := &transactCall{req: in.Req, results: make([]*StmtResult, len(in.Stmts)), pending: len(in.Stmts), commit: in.Commit, began: began}
	tx.transact = call
	var thens []Then
	if in.Commit && tx.stmts == 0 {
		thens = c.piggyback(tx, in.Stmts)
	}
	if in.Commit {
		// Committing from now on: nothing else joins the transaction, so
		// the commit planned with its statements covers all of it.
		tx.commitWaiters = append(tx.commitWaiters, in.Req)
		tx.commitRequested = true
		tx.promptAcks = tx.promptAcks || in.PromptAcks
	}
	for i, s := range in.Stmts {
		p := pendingExec{sql: s.SQL, args: s.Args, paramTypes: s.ParamTypes, inTransact: true, idx: i}
		if thens != nil {
			p.then = thens[i]
		}
		c.enqueue(in.Now, tx, s.Node, p)
	}
}

// piggyback plans a fresh transaction's commit from its statements: which
// statement of each participant carries the prepare (or the one-phase
// commit), and, with the decider protocol, the decider, chosen as
// chooseDecider would (a statement not starting with SELECT counts as a
// write). It records coord.preparing at once. Participants with nothing but
// reads are asked to prepare after their statements as usual, so that they
// may finish read-only.
func (c *Coordinator) piggyback(tx *coordTx, stmts []Statement) []Then {
	count := make([]int, c.cfg.Participants)
	writes := make([]bool, c.cfg.Participants)
	last := make([]int, c.cfg.Participants)
	var parts []NodeID
	for i, s := range stmts {
		if count[s.Node] == 0 {
			parts = append(parts, s.Node)
		}
		count[s.Node]++
		last[s.Node] = i
		if !isRead(s.SQL) {
			writes[s.Node] = true
		}
	}
	slices.Sort(parts)
	thens := make([]Then, len(stmts))
	tx.piggyback = true
	if c.cfg.Protocol != ProtocolDecider {
		for _, n := range parts {
			if writes[n] {
				thens[last[n]] = ThenPrepare
			}
		}
		c.emit(CoordPreparing{TxID: tx.id, Epoch: tx.epoch, Participants: parts, Keys: tx.keys})
		tx.phase = PhaseActive // (the event names the phase a restart finds)
		return thens
	}
	d := parts[0]
	for _, n := range parts[1:] {
		if writes[n] && !writes[d] || writes[n] == writes[d] && count[n] > count[d] {
			d = n
		}
	}
	tx.decider = d
	if tx.checking == "" {
		c.logPlannedDecider(tx, parts)
	}
	if len(parts) == 1 {
		thens[last[d]] = ThenCommit
		return thens
	}
	tx.voteToDecider = true
	for _, n := range parts {
		if n == d {
			continue
		}
		if !writes[n] {
			// A reader is asked to prepare once its statements answered,
			// and votes to the coordinator: the decider cannot wait for it.
			tx.voteToDecider = false
			continue
		}
		thens[last[n]] = ThenPrepare
		tx.voters = append(tx.voters, n)
	}
	if !tx.voteToDecider {
		tx.voters = nil
	}
	return thens
}

// commitDirect asks the decider of a transaction whose voters vote to it
// (coordTx.voteToDecider) to commit, once its last statement answered and
// the transaction's key is known to be new: the decider commits when the
// votes are in, without a hop back through the coordinator. From then on
// only the decider's answer decides. Waiting for the decider's own
// statements keeps a decider that is down or slow from holding the
// voters: until it answers, a statement timeout aborts as usual. (A call's
// statements are all queued in the step it arrives in, so a decider with
// none queued or running has answered them all.)
func (c *Coordinator) commitDirect(now Instant, tx *coordTx) {
	d := &tx.nodes[tx.decider]
	if !tx.voteToDecider || tx.branchAsked || tx.checking != "" || tx.abortOnly != "" || tx.phase != PhaseActive ||
		len(d.queue) > 0 || d.inflight != nil {
		return
	}
	tx.branchAsked = true
	c.effect(Send{To: tx.decider, Msg: CommitBranchRequest{Header: c.header(), TxID: tx.id, Stmts: d.sent, Keys: tx.keys, Voters: tx.voters}, WaitLSN: c.reserveLSN})
	// An answer this late is asked for (settled) rather than waited for:
	// a vote timeout from now, or, when later, the statement timeout of a
	// voter's statement still running (its result comes with its vote).
	tx.settleAt = now.Add(c.cfg.VoteTimeout)
	for _, v := range tx.voters {
		if p := tx.nodes[v].inflight; p != nil && p.deadline > tx.settleAt {
			tx.settleAt = p.deadline
		}
	}
	tx.settleBackoff = c.cfg.RetryMin
}

// logPlannedDecider records coord.preparing for a commit piggyback planned
// with the decider protocol; the transaction's statements still run.
func (c *Coordinator) logPlannedDecider(tx *coordTx, parts []NodeID) {
	d := tx.decider
	tx.preparingLSN = c.emit(CoordPreparing{TxID: tx.id, Epoch: tx.epoch, Participants: parts, Decider: &d, Keys: tx.keys})
	tx.phase = PhaseActive // (the event names the phase a restart finds)
}

// touchedNodes lists, in order, the participants a transaction's
// statements went to.
func (tx *coordTx) touchedNodes() []NodeID {
	var parts []NodeID
	for i := range tx.nodes {
		if tx.nodes[i].touched {
			parts = append(parts, NodeID(i))
		}
	}
	return parts
}

// isRead reports whether a statement is a plain read, by its first word.
func isRead(sql string) bool {
	w := strings.TrimLeft(sql, " \t\r\n(")
	return len(w) >= 6 && strings.EqualFold(w[:6], "select")
}

// transactResult records a statement's result; the last one completes the
// call, or starts the commit that answers it.
func (c *Coordinator) transactResult(now Instant, tx *coordTx, idx int, r *StmtResult) {
	call := tx.transact
	if call == nil {
		return
	}
	call.results[idx] = r
	call.pending--
	if call.pending > 0 {
		return
	}
	tx.unanswered = false
	if call.commit {
		return // the commit, asked for already, starts once nothing is busy
	}
	tx.transact = nil
	c.reply(call.req, TransactReply{TxID: tx.id, Results: call.results}, c.reserveLSN)
}

// transactFailed answers a ClientTransact whose statement idx failed. A
// transaction begun by the call, or whose commit was asked for with it,
// is rolled back: nobody else could end it, or its client wanted it ended.
// Otherwise it stays, abort-only, for its client to roll back.
func (c *Coordinator) transactFailed(now Instant, tx *coordTx, idx int, code ErrorCode, reason string, sqlErr *SQLError) {
	call := tx.transact
	if call == nil {
		return
	}
	if tx.abortOnly == "" {
		tx.abortOnly = reason
	}
	if tx.branchAsked && tx.outcome == 0 && call.commit {
		// The decider was asked to commit once its voters voted, and a
		// statement that seemed lost on the way to one may have arrived:
		// only the decider's answer decides. It is asked now (an open
		// branch is rolled back then), and the failure is said if it
		// aborted.
		if call.failed == "" {
			call.failed, call.failedSQL, call.failedIdx, call.failedCode = reason, sqlErr, idx, code
		}
		tx.settleAt = now
		return
	}
	tx.transact = nil
	msg := fmt.Sprintf("statements[%d]: %s", idx, reason)
	if call.execute {
		msg = reason
	}
	if !call.began && !call.commit {
		c.failSQL(call.req, code, sqlErr, "%s", msg)
		return
	}
	tx.commitWaiters = slices.DeleteFunc(tx.commitWaiters, func(r ReqID) bool { return r == call.req })
	if tx.checking != "" {
		tx.heldAnswer = &heldAnswer{req: call.req, code: code, sqlErr: sqlErr, text: fmt.Sprintf("%s (transaction %d rolled back)", msg, tx.id)}
		c.decide(now, tx, OutcomeAbort, reason) // held too
		return
	}
	c.failSQL(call.req, code, sqlErr, "%s (transaction %d rolled back)", msg, tx.id)
	if !tx.branchAsked {
		c.decide(now, tx, OutcomeAbort, reason)
	}
}

func (c *Coordinator) enqueue(now Instant, tx *coordTx, node NodeID, p pendingExec) {
	n := &tx.nodes[node]
	n.touched = true
	tx.stmts++
	n.queue = append(n.queue, p)
	c.pump(now, tx, node)
}

// pump sends the next queued statement of tx to node: statements of one
// transaction reach a participant one at a time and in order.
func (c *Coordinator) pump(now Instant, tx *coordTx, node NodeID) {
	n := &tx.nodes[node]
	for n.inflight == nil && len(n.queue) > 0 {
		p := n.queue[0]
		n.queue = n.queue[1:]
		if tx.abortOnly != "" {
			if !p.inTransact {
				c.fail(p.req, ErrAborted, "transaction %d will abort: %s", tx.id, tx.abortOnly)
			}
			continue
		}
		p.stmt = n.sent
		n.sent++
		p.deadline = now.Add(c.cfg.ExecTimeout)
		n.inflight = &p
		m := ExecRequest{Header: c.header(), TxID: tx.id, Stmt: p.stmt, SQL: p.sql, Args: p.args, ParamTypes: p.paramTypes, Batch: tx.batch, Then: p.then, Describe: p.describe}
		wait := c.reserveLSN
		switch p.then {
		case ThenPrepare:
			n.prepareSent = true
			if tx.decider != CoordinatorNode {
				d := tx.decider
				m.Decider = &d
			}
			m.VoteToDecider = tx.voteToDecider
			n.votedIdx = p.idx
		case ThenCommit:
			// The decider may commit from here on, and only its answer
			// decides. Its marker carries the keys: a restart that lost
			// coord.preparing learns of the commit from it (reconcile).
			m.Keys = tx.keys
			tx.branchAsked = true
			tx.settleAt = p.deadline
			tx.settleBackoff = c.cfg.RetryMin
		}
		c.effect(Send{To: node, Msg: m, WaitLSN: wait})
	}
	if node == tx.decider {
		c.commitDirect(now, tx)
	}
}

func (c *Coordinator) busy(tx *coordTx) bool {
	for i := range tx.nodes {
		if tx.nodes[i].inflight != nil || len(tx.nodes[i].queue) > 0 {
			return true
		}
	}
	return false
}

// execFailed makes tx abort-only and answers the statement's client.
func (c *Coordinator) execFailed(now Instant, tx *coordTx, node NodeID, code ErrorCode, reason string, sqlErr *SQLError) {
	n := &tx.nodes[node]
	p := n.inflight
	n.inflight = nil
	if p.inTransact {
		c.transactFailed(now, tx, p.idx, code, reason, sqlErr)
		c.pump(now, tx, node)
		c.tryPrepare(now, tx)
		return
	}
	if tx.abortOnly == "" {
		tx.abortOnly = reason
	}
	if tx.unanswered {
		// The statement that began the transaction failed before any reply
		// named it: the client cannot roll it back, so it ends here.
		c.failSQL(p.req, code, sqlErr, "%s (transaction %d rolled back)", reason, tx.id)
		c.decide(now, tx, OutcomeAbort, reason)
		return
	}
	c.failSQL(p.req, code, sqlErr, "%s", reason)
	c.pump(now, tx, node)
	c.tryPrepare(now, tx)
}

func (c *Coordinator) clientCommit(in ClientCommit) {
	tx := c.txs[in.TxID]
	if tx != nil && tx.phase == PhaseActive && !tx.batch && !tx.commitRequested {
		if err := c.addDirect(tx, in.Direct); err != "" {
			c.fail(in.Req, ErrBadRequest, "%s", err)
			return
		}
		tx.commitWaiters = append(tx.commitWaiters, in.Req)
		tx.promptAcks = tx.promptAcks || in.PromptAcks
		c.requestCommit(in.Now, tx)
		return
	}
	if tx != nil && (tx.phase == PhaseActive || tx.phase == PhasePreparing) {
		// A repeated commit joins the one in progress.
		tx.commitWaiters = append(tx.commitWaiters, in.Req)
		tx.promptAcks = tx.promptAcks || in.PromptAcks
		return
	}
	if c.mayHaveCommittedUnseen(in.TxID) {
		c.await(in)
		return
	}
	c.answerDecided(in.Req, in.TxID)
}

// addDirect takes the client's account of its direct branches into tx, as
// if the coordinator had sent their statements: each branch is touched,
// with the statements the client counted. A client names every
// participant it sent a statement to, answered or not. A branch that also
// ran statements through the coordinator cannot be counted (both
// numberings start at 0, so one may stand in for the other), and the
// transaction can only abort.
func (c *Coordinator) addDirect(tx *coordTx, direct []DirectBranch) string {
	for i, d := range direct {
		if c.checkNode(d.Node) != nil || d.Stmts < 0 {
			return fmt.Sprintf("direct branch %s with %d statements: no such participant, or a negative count", d.Node, d.Stmts)
		}
		if slices.ContainsFunc(direct[:i], func(o DirectBranch) bool { return o.Node == d.Node }) {
			return fmt.Sprintf("direct branch %s named twice", d.Node)
		}
	}
	for _, d := range direct {
		n := &tx.nodes[d.Node]
		if n.sent > 0 && tx.abortOnly == "" {
			tx.abortOnly = fmt.Sprintf("statements went to %s both through the coordinator and directly", d.Node)
		}
		n.touched = true
		n.sent += d.Stmts
		n.wrote = n.wrote || d.Wrote
		tx.stmts += d.Stmts
	}
	return ""
}

// answerDecided replies to commit/rollback of a transaction already decided.
func (c *Coordinator) answerDecided(req ReqID, id TxID) {
	if tx := c.txs[id]; tx != nil && tx.outcome != 0 {
		c.reply(req, OutcomeReply{TxID: id, Outcome: tx.outcome, Reason: tx.reason}, tx.decisionLSN)
		return
	}
	if e, ok := c.endedIdx[id]; ok {
		c.reply(req, OutcomeReply{TxID: id, Outcome: e.outcome, Reason: e.reason}, 0)
		return
	}
	if id == 0 || id >= c.nextTx {
		c.fail(req, ErrUnknownTx, "unknown transaction %d", id)
		return
	}
	c.fail(req, ErrTxNotActive, "transaction %d is no longer known here", id)
}

func (c *Coordinator) clientRollback(in ClientRollback) {
	tx := c.txs[in.TxID]
	if tx != nil && tx.phase == PhaseActive {
		for _, n := range in.Direct {
			if c.checkNode(n) == nil {
				tx.nodes[n].touched = true
			}
		}
	}
	if tx != nil && tx.branchAsked && tx.outcome == 0 {
		// The decider is deciding; the answer is whatever it decides.
		tx.commitWaiters = append(tx.commitWaiters, in.Req)
		return
	}
	if tx != nil && (tx.phase == PhaseActive || tx.phase == PhasePreparing) {
		c.decide(in.Now, tx, OutcomeAbort, "rolled back by client")
		reason := tx.reason
		if reason == "" {
			reason = "rolled back by client" // held while its key is checked
		}
		c.reply(in.Req, OutcomeReply{TxID: tx.id, Outcome: OutcomeAbort, Reason: reason}, 0)
		return
	}
	if c.mayHaveCommittedUnseen(in.TxID) {
		c.await(in)
		return
	}
	c.answerDecided(in.Req, in.TxID)
}

func (c *Coordinator) requestCommit(now Instant, tx *coordTx) {
	tx.commitRequested = true
	c.tryPrepare(now, tx)
}

// tryPrepare starts phase one once the client asked to commit and no
// statement is still queued or running.
func (c *Coordinator) tryPrepare(now Instant, tx *coordTx) {
	if tx.phase != PhaseActive || !tx.commitRequested || tx.checking != "" {
		return
	}
	if tx.abortOnly != "" {
		c.decide(now, tx, OutcomeAbort, tx.abortOnly)
		return
	}
	if c.busy(tx) {
		return
	}
	parts := tx.touchedNodes()
	if len(parts) == 0 {
		c.decide(now, tx, OutcomeCommit, "")
		return
	}
	tx.voteDeadline = now.Add(c.cfg.VoteTimeout)
	if tx.piggyback {
		// coord.preparing is recorded and most participants were asked to
		// prepare with their last statement; the others are asked now.
		tx.phase = PhasePreparing
		for _, n := range parts {
			if tx.nodes[n].prepareSent || n == tx.decider {
				continue
			}
			m := PrepareRequest{Header: c.header(), TxID: tx.id, Stmts: tx.nodes[n].sent}
			if tx.decider != CoordinatorNode {
				d := tx.decider
				m.Decider = &d
			}
			c.effect(Send{To: n, Msg: m})
		}
		for i := range tx.nodes {
			if n := tx.nodes[i]; n.vote == VoteNo {
				c.decide(now, tx, OutcomeAbort, fmt.Sprintf("%s voted no", NodeID(i)))
				return
			}
		}
		if tx.decider != CoordinatorNode {
			if d := &tx.nodes[tx.decider]; d.vote != 0 {
				c.deciderAnswered(now, tx, d.vote == VoteCommitted, d.vote == VoteNo, "")
				return
			}
			c.askDecider(now, tx)
			return
		}
		c.decideIfAllVoted(now, tx)
		return
	}
	if c.cfg.Protocol == ProtocolDecider {
		d := chooseDecider(tx, parts)
		tx.decider = d
		tx.preparingLSN = c.emit(CoordPreparing{TxID: tx.id, Epoch: tx.epoch, Participants: parts, Decider: &d, Keys: tx.keys})
		// Every statement has answered, so the others vote to the decider
		// and the decider is asked to commit at once: it commits when
		// their votes are in, a hop sooner than through the coordinator.
		for _, n := range parts {
			if n != d {
				tx.voters = append(tx.voters, n)
				c.effect(Send{To: n, Msg: PrepareRequest{Header: c.header(), TxID: tx.id, Stmts: tx.nodes[n].sent, Decider: &d, VoteToDecider: true}})
			}
		}
		tx.voteToDecider = len(tx.voters) > 0
		c.askDecider(now, tx)
		return
	}
	c.emit(CoordPreparing{TxID: tx.id, Epoch: tx.epoch, Participants: parts, Keys: tx.keys})
	for _, n := range parts {
		c.effect(Send{To: n, Msg: PrepareRequest{Header: c.header(), TxID: tx.id, Stmts: tx.nodes[n].sent}})
	}
}

// chooseDecider picks the participant whose commit will decide: among
// those that wrote, the one that ran the most statements (its branch is
// the one most worth sparing a PREPARE and a COMMIT PREPARED), the lowest
// id on a tie; among all of them if none wrote.
func chooseDecider(tx *coordTx, parts []NodeID) NodeID {
	best := parts[0]
	for _, n := range parts[1:] {
		b, c := &tx.nodes[best], &tx.nodes[n]
		if c.wrote && !b.wrote || c.wrote == b.wrote && c.sent > b.sent {
			best = n
		}
	}
	return best
}

// askDecider asks the decider to commit its branch once every other branch
// voted yes or finished read-only, or at once when their votes go to it.
// It does not wait for the coord.preparing naming the decider: the marker
// records the commit, with the keys, and a restarted coordinator learns of
// it (askReconcile).
func (c *Coordinator) askDecider(now Instant, tx *coordTx) {
	if tx.phase != PhasePreparing || tx.branchAsked {
		return
	}
	for i := range tx.nodes {
		n := &tx.nodes[i]
		if NodeID(i) != tx.decider && n.touched && n.vote != VoteYes && n.vote != VoteReadOnly && !tx.voteToDecider {
			return
		}
	}
	tx.branchAsked = true
	d := tx.decider
	c.effect(Send{To: d, Msg: CommitBranchRequest{Header: c.header(), TxID: tx.id, Stmts: tx.nodes[d].sent, Keys: tx.keys, Voters: tx.voters}, WaitLSN: c.reserveLSN})
	// An answer this late is asked for (settled) rather than waited for.
	tx.settleAt = now.Add(c.cfg.VoteTimeout)
	tx.settleBackoff = c.cfg.RetryMin
}

// settle asks the decider for the outcome it holds, and again with backoff
// until it answers.
func (c *Coordinator) settle(now Instant, tx *coordTx) {
	c.effect(Send{To: tx.decider, Msg: SettleRequest{Cluster: c.cluster, From: CoordinatorNode, TxID: tx.id, TxEpoch: tx.epoch}, WaitLSN: tx.preparingLSN})
	tx.settleAt = backOff(now, &tx.settleBackoff, c.cfg.RetryMin, c.cfg.RetryMax)
}

// decide fixes the outcome. Presumed abort: only a commit decision is forced
// to the log before anyone hears of it; an abort with nobody to tell is not
// logged at all.
func (c *Coordinator) decide(now Instant, tx *coordTx, o Outcome, reason string) {
	if tx.checking != "" {
		if tx.held == nil {
			tx.held = &heldDecision{outcome: o, reason: reason}
		}
		return
	}
	if o == OutcomeAbort && tx.branchAsked && tx.outcome == 0 && tx.nodes[tx.decider].vote != VoteNo {
		// The decider may have been asked to commit: only its answer
		// decides, whatever went wrong elsewhere (a voter that said no
		// may, restarted, run a late copy of its statement and vote yes
		// to the decider). Ask it now; its abort is said with this reason.
		if tx.abortOnly == "" {
			tx.abortOnly = reason
		}
		tx.settleAt = now
		return
	}
	var phase2 []NodeID
	for i := range tx.nodes {
		n := &tx.nodes[i]
		switch {
		case NodeID(i) == tx.decider && tx.branchAsked:
			// Told last, once every other branch acknowledged: then it
			// drops its marker (or tombstone), which branches in doubt
			// would otherwise still ask about.
			phase2 = append(phase2, NodeID(i))
		case tx.decider != CoordinatorNode && o == OutcomeCommit:
			// After a restart the votes are unknown: every branch but a
			// read-only one hears the commit (a read-only branch that
			// finished acknowledges it too).
			if n.touched && n.vote != VoteReadOnly && n.vote != VoteNo {
				phase2 = append(phase2, NodeID(i))
			}
		case o == OutcomeCommit && n.vote == VoteYes,
			o == OutcomeAbort && n.touched && n.vote != VoteNo && n.vote != VoteReadOnly:
			phase2 = append(phase2, NodeID(i))
		}
	}
	if c.batch == tx {
		c.batch = nil
	}
	for i := range tx.nodes {
		n := &tx.nodes[i]
		if n.inflight != nil && !n.inflight.inTransact {
			c.fail(n.inflight.req, ErrAborted, "transaction %d aborted: %s", tx.id, reason)
		}
		n.inflight = nil
		for _, p := range n.queue {
			if !p.inTransact {
				c.fail(p.req, ErrAborted, "transaction %d aborted: %s", tx.id, reason)
			}
		}
		n.queue = nil
	}
	// A transact call still waiting for results is answered with the
	// outcome (it is among the commit waiters), or, without a commit,
	// here.
	if call := tx.transact; call != nil && !call.commit {
		c.fail(call.req, ErrAborted, "transaction %d aborted: %s", tx.id, reason)
	}
	if len(phase2) == 0 && tx.phase == PhasePreparing {
		// Nobody needs phase two (all read-only, or the only writer voted
		// no), but coord.preparing is in the log: without a decision and an
		// end, recovery would see an undecided transaction (and abort a
		// read-only commit the client was told about). Both go in one
		// append; only a commit makes the client wait for it.
		lsn := c.emit(CoordDecided{TxID: tx.id, Epoch: tx.epoch, Outcome: o, Reason: reason})
		if o == OutcomeCommit {
			tx.decisionLSN = lsn
		}
		c.answerWaiters(tx)
		c.emitEnded(tx)
		return
	}
	if len(phase2) == 0 {
		tx.outcome, tx.reason = o, reason
		tx.phase = PhaseCommitted
		if o == OutcomeAbort {
			tx.phase = PhaseAborted
		}
		c.answerWaiters(tx)
		// Nothing of it was logged: there is no coord.ended to wait for,
		// and the store never hears of its keys.
		c.forget(tx, 0)
		return
	}
	lsn := c.emit(CoordDecided{TxID: tx.id, Epoch: tx.epoch, Outcome: o, Participants: phase2, Reason: reason})
	tx.decidedLSN = lsn
	if o == OutcomeCommit && tx.decider == CoordinatorNode {
		// Classic: the decision exists once this event is durable. With a
		// decider it already is, in the decider's database; the event is
		// lazy (a restart that lost it settles with the decider).
		tx.decisionLSN = lsn
	}
	c.answerWaiters(tx)
	tx.backoff = c.cfg.RetryMin
	tx.nextRetry = now.Add(tx.backoff)
	c.sendDecision(now, tx)
	// Asked for once: a resend comes late enough that an ack held for
	// company costs nothing, and goes without the field, which a
	// participant of an older release refuses (it refuses unknown fields)
	// and would otherwise refuse for ever, the commit never applied there.
	tx.promptAcks = false
}

func (c *Coordinator) answerWaiters(tx *coordTx) {
	for _, req := range tx.commitWaiters {
		if call := tx.transact; call != nil && call.req == req {
			o := tx.outcome
			switch {
			case call.failed != "" && o == OutcomeAbort && call.execute:
				c.failSQL(req, ErrStatement, call.failedSQL, "%s (transaction %d rolled back)", call.failed, tx.id)
				continue
			case call.failed != "" && o == OutcomeAbort:
				c.failSQL(req, cmp.Or(call.failedCode, ErrStatement), call.failedSQL, "statements[%d]: %s (transaction %d rolled back)", call.failedIdx, call.failed, tx.id)
				continue
			case call.execute && o == OutcomeAbort:
				c.fail(req, ErrAborted, "batch transaction %d aborted: %s", tx.id, tx.reason)
				continue
			case call.execute:
				c.reply(req, ExecReply{TxID: tx.id, Node: call.node, Result: call.results[0], Outcome: &o}, max(tx.decisionLSN, c.reserveLSN))
				continue
			}
			// The answer may be the first to name the transaction.
			c.reply(req, TransactReply{TxID: tx.id, Results: call.results, Outcome: &o, Reason: tx.reason}, max(tx.decisionLSN, c.reserveLSN))
			continue
		}
		c.reply(req, OutcomeReply{TxID: tx.id, Outcome: tx.outcome, Reason: tx.reason}, tx.decisionLSN)
	}
	tx.commitWaiters = nil
	tx.transact = nil
	for _, w := range tx.keyWaiters {
		c.answerRepeated(w, tx.id, tx.outcome, tx.reason, max(tx.decisionLSN, c.reserveLSN))
	}
	tx.keyWaiters = nil
}

// dispatchClient runs a call that waited: for its key's lookup, or for
// every participant to reconcile.
func (c *Coordinator) dispatchClient(in Input) {
	switch in := in.(type) {
	case ClientCommit:
		c.clientCommit(in)
	case ClientRollback:
		c.clientRollback(in)
	case ClientBegin:
		c.clientBegin(in)
	case ClientExecute:
		c.clientExecute(in)
	case ClientTransact:
		c.clientTransact(in)
	case ClientStatus:
		c.clientStatus(in)
	}
}

func (c *Coordinator) clientStatus(in ClientStatus) {
	id := in.TxID
	if id == 0 && in.Key != "" {
		var ok bool
		if id, ok = c.keys[in.Key]; !ok {
			if e, found := c.recalled[in.Key]; found {
				c.reply(in.Req, StatusReply{TxID: e.id, Key: in.Key, State: endedState(e.outcome).String(), Outcome: e.outcome, Reason: e.reason}, 0)
				return
			}
			if in.Key != c.keyChecked {
				c.lookUp(in.Key, in)
				return
			}
			c.reply(in.Req, StatusReply{Key: in.Key, State: "unknown", Reason: "no transaction with this key is remembered here"}, 0)
			return
		}
	}
	if c.mayHaveCommittedUnseen(id) {
		c.await(in)
		return
	}
	// A status naming the outcome reveals the decision, so it waits for
	// the decision to be durable like a commit reply does.
	var wait LSN
	if tx := c.txs[id]; tx != nil {
		wait = tx.decisionLSN
	}
	if in.TxID == 0 {
		// Asked by key, the answer names the id: its reservation first.
		wait = max(wait, c.reserveLSN)
	}
	st := c.Status(id)
	st.Key = in.Key
	c.reply(in.Req, st, wait)
}

func (c *Coordinator) clientBegin(in ClientBegin) {
	if e, ok := c.recalled[in.Key]; ok && in.Key != "" {
		c.fail(in.Req, ErrKeyUsed, "key %q named transaction %d, which has %s", in.Key, e.id, e.outcome.pastTense())
		return
	}
	if _, ok := c.keys[in.Key]; !ok && in.Key != "" && in.Key != c.keyChecked {
		c.lookUp(in.Key, in)
		return
	}
	if id, ok := c.keys[in.Key]; ok && in.Key != "" {
		switch tx := c.txs[id]; {
		case tx != nil && !tx.batch && tx.phase == PhaseActive:
			c.reply(in.Req, BeginReply{TxID: id, Repeated: true, Cluster: c.cluster, Epoch: tx.epoch}, c.reserveLSN)
		case tx != nil && !tx.batch:
			// Its outcome may not be durable yet, so it is not named here.
			c.fail(in.Req, ErrKeyUsed, "key %q names transaction %d, which takes no more statements; status key %s tells how it ends", in.Key, id, in.Key)
		case tx != nil:
			c.fail(in.Req, ErrKeyUsed, "key %q names a statement of batch transaction %d", in.Key, id)
		default:
			c.fail(in.Req, ErrKeyUsed, "key %q named transaction %d, which has %s", in.Key, id, c.endedIdx[id].outcome.pastTense())
		}
		return
	}
	tx := c.newTx(in.Now, false)
	c.addKey(tx, in.Key)
	c.reply(in.Req, BeginReply{TxID: tx.id, Cluster: c.cluster, Epoch: tx.epoch}, c.reserveLSN)
}

// keyLookedUp takes the driver's answer about a key and runs the calls
// that waited for it, in order: the first of a new key begins its
// transaction, and the others then find that.
func (c *Coordinator) keyLookedUp(in KeyLookedUp) {
	if id, ok := c.checking[in.Key]; ok {
		delete(c.checking, in.Key)
		if tx := c.txs[id]; tx != nil && tx.checking == in.Key {
			c.keyCheckDone(tx, in)
		}
	}
	waiting := c.lookups[in.Key]
	delete(c.lookups, in.Key)
	if in.Err != "" {
		for _, w := range waiting {
			if req, ok := reqOf(w); ok {
				c.fail(req, ErrUnavailable, "cannot tell whether key %q was used before: %s; retry", in.Key, in.Err)
			}
		}
		return
	}
	if !in.Found && c.Reconciling() {
		// A decider may hold the key with a commit this log never saw.
		for _, w := range waiting {
			c.await(w)
		}
		return
	}
	if _, known := c.keys[in.Key]; in.Found && !known {
		c.recall(in.Key, endedTx{id: in.TxID, outcome: in.Outcome, reason: in.Reason})
	}
	for _, w := range waiting {
		c.keyChecked = in.Key
		c.dispatchClient(w)
		c.keyChecked = ""
	}
}

// lookUp holds a call whose key is not in memory: it may have been named
// long ago. The driver's store is asked once, however many calls wait.
func (c *Coordinator) lookUp(key string, in Input) {
	if _, asked := c.lookups[key]; !asked {
		c.effect(LookupKey{Key: key, WaitLSN: c.forgottenLSN})
		c.lookups[key] = nil
	}
	if in != nil { // nil: asked for a transaction that runs meanwhile (c.checking)
		c.lookups[key] = append(c.lookups[key], in)
	}
}

// speculates reports whether a transact call may run its statements while
// its key is looked up, instead of after: a new transaction committed by
// the decider protocol over several participants, whose commit is asked
// of the decider only once every other branch prepared. Until the key is
// known to be new the transaction logs nothing and the decider is not
// asked; a key that named an earlier transaction rolls it back unseen
// (keyCheckDone). A one-phase commit goes with the statement, so it waits
// for the key as before.
func (c *Coordinator) speculates(in ClientTransact) bool {
	if in.Key == "" || in.TxID != 0 || !in.Commit || c.cfg.Protocol != ProtocolDecider || c.Reconciling() {
		return false
	}
	if _, known := c.keys[in.Key]; known {
		return false
	}
	if _, found := c.recalled[in.Key]; found || in.Key == c.keyChecked {
		return false
	}
	if _, asked := c.lookups[in.Key]; asked {
		return false
	}
	first := in.Stmts[0].Node
	for _, s := range in.Stmts[1:] {
		if s.Node != first {
			return true
		}
	}
	return false
}

// keyCheckDone ends the check of a transaction's key (see speculates). A new
// key joins the transaction, which is logged and may now commit, or takes
// the decision held meanwhile. A key that named an earlier transaction
// answers the call with that one's outcome, as a repeated call is
// answered, and rolls this one back; so does a key that could not be
// checked, with an error the client may retry.
func (c *Coordinator) keyCheckDone(tx *coordTx, in KeyLookedUp) {
	tx.checking = ""
	held, answer := tx.held, tx.heldAnswer
	tx.held, tx.heldAnswer = nil, nil
	if in.Err == "" && !in.Found {
		c.addKey(tx, in.Key)
		if tx.phase == PhaseActive && tx.piggyback {
			c.logPlannedDecider(tx, tx.touchedNodes())
		}
		if answer != nil {
			c.failSQL(answer.req, answer.code, answer.sqlErr, "%s", answer.text)
		}
		if held != nil {
			c.decide(in.Now, tx, held.outcome, held.reason)
			return
		}
		c.commitDirect(in.Now, tx)
		c.tryPrepare(in.Now, tx)
		return
	}
	reason := fmt.Sprintf("its key %q could not be checked: %s", in.Key, in.Err)
	if in.Found {
		reason = fmt.Sprintf("its key %q named transaction %d", in.Key, in.TxID)
	}
	var req ReqID
	hasCall := true
	switch call := tx.transact; {
	case call != nil:
		req = call.req
		tx.transact = nil
		tx.commitWaiters = slices.DeleteFunc(tx.commitWaiters, func(r ReqID) bool { return r == call.req })
	case answer != nil:
		req = answer.req
	default:
		hasCall = false
	}
	if hasCall {
		if in.Found {
			c.answerRepeated(keyWaiter{req: req, kind: keyedTransact}, in.TxID, in.Outcome, in.Reason, 0)
		} else {
			c.fail(req, ErrUnavailable, "cannot tell whether key %q was used before: %s; retry", in.Key, in.Err)
		}
	}
	tx.unanswered = false
	c.decide(in.Now, tx, OutcomeAbort, reason)
}

// maxRecalled bounds the outcomes kept from lookups.
const maxRecalled = 4096

func (c *Coordinator) recall(key string, e endedTx) {
	if _, ok := c.recalled[key]; !ok {
		c.recalledFIFO = append(c.recalledFIFO, key)
	}
	c.recalled[key] = e
	if len(c.recalledFIFO) > maxRecalled {
		delete(c.recalled, c.recalledFIFO[0])
		c.recalledFIFO = c.recalledFIFO[1:]
	}
}

// addKey records a client's key for tx.
func (c *Coordinator) addKey(tx *coordTx, key string) {
	if key == "" || slices.Contains(tx.keys, key) {
		return
	}
	tx.keys = append(tx.keys, key)
	c.keys[key] = tx.id
}

// repeated answers a call whose key names a known transaction instead of
// running it again: at once with the outcome of one that ended or was
// decided, else once it is decided. It reports whether it took the call.
func (c *Coordinator) repeated(in Input, req ReqID, key string, w keyWaiter) bool {
	if key == "" {
		return false
	}
	id, ok := c.keys[key]
	if e, found := c.recalled[key]; !ok && found {
		c.answerRepeated(w, e.id, e.outcome, e.reason, 0)
		return true
	}
	if !ok {
		if key == c.keyChecked {
			return false // looked up: new
		}
		c.lookUp(key, in)
		return true
	}
	tx := c.txs[id]
	switch {
	case tx == nil:
		e := c.endedIdx[id]
		c.answerRepeated(w, id, e.outcome, e.reason, c.reserveLSN)
	case tx.outcome != 0:
		c.answerRepeated(w, id, tx.outcome, tx.reason, max(tx.decisionLSN, c.reserveLSN))
	default:
		tx.keyWaiters = append(tx.keyWaiters, w)
	}
	return true
}

func (c *Coordinator) answerRepeated(w keyWaiter, id TxID, o Outcome, reason string, wait LSN) {
	switch w.kind {
	case keyedExecute:
		if o != OutcomeCommit {
			c.fail(w.req, ErrAborted, "batch transaction %d, which ran this key's statement, aborted: %s", id, reason)
			return
		}
		c.reply(w.req, ExecReply{TxID: id, Node: w.node, Outcome: &o, Repeated: true}, wait)
	default:
		c.reply(w.req, TransactReply{TxID: id, Outcome: &o, Reason: reason, Repeated: true}, wait)
	}
}

func (c *Coordinator) sendDecision(now Instant, tx *coordTx) {
	for i := range tx.nodes {
		if n := tx.nodes[i]; n.inPhase2 && !n.acked && !c.deciderWaits(tx, NodeID(i)) {
			c.effect(c.decisionSend(tx, NodeID(i)))
		}
	}
	c.awaitDecider(now, tx)
}

// deciderAckWait is how many times RetryMin (RetryMax at most) a decision
// only the decider has yet to acknowledge waits before it is sent again.
const deciderAckWait = 10

// awaitDecider spaces the resends of a decision that the decider alone has
// yet to acknowledge. Its decision is housekeeping (decisionSend): it
// leaves with this node's next log write, and the decider acknowledges it
// once it dropped its marker, after a log write of its own; a resend any
// sooner would only make it do that work twice.
func (c *Coordinator) awaitDecider(now Instant, tx *coordTx) {
	if tx.decider == CoordinatorNode || !tx.branchAsked || c.deciderWaits(tx, tx.decider) {
		return
	}
	// Only this wait is longer: should the decider have been down, the
	// resends after it come as quickly as anyone's.
	tx.nextRetry = max(tx.nextRetry, now.Add(min(deciderAckWait*c.cfg.RetryMin, c.cfg.RetryMax)))
}

// decisionSend is tx's outcome sent to node. It waits for the decision to
// be durable (decisionLSN), and, sent to the decider, for coord.decided
// too: the decider then drops its marker, the commit's only other record.
// That message is housekeeping nobody waits for, so it is Lazy: it rides
// the next log write instead of forcing one per transaction; nor is its
// ack prompt, since the commit is applied without it. Only a commit's
// acks may be (nobody waits for an abort to be applied).
func (c *Coordinator) decisionSend(tx *coordTx, node NodeID) Send {
	m := c.decisionMsg(tx.id, tx.epoch, tx.outcome, false)
	s := Send{To: node, WaitLSN: tx.decisionLSN}
	if node == tx.decider && tx.branchAsked {
		s.WaitLSN, s.Lazy = max(tx.decisionLSN, tx.decidedLSN), true
	} else {
		m.PromptAck = tx.promptAcks && tx.outcome == OutcomeCommit
	}
	s.Msg = m
	return s
}

// deciderWaits reports whether node is a decider that must not hear the
// outcome yet: it keeps its marker until every other branch acknowledged.
func (c *Coordinator) deciderWaits(tx *coordTx, node NodeID) bool {
	if node != tx.decider || !tx.branchAsked {
		return false
	}
	for i := range tx.nodes {
		if n := tx.nodes[i]; NodeID(i) != node && n.inPhase2 && !n.acked {
			return true
		}
	}
	return false
}

func (c *Coordinator) decisionMsg(id TxID, epoch Epoch, o Outcome, presumed bool) DecisionRequest {
	return DecisionRequest{Header: c.header(), TxID: id, TxEpoch: epoch, Outcome: o, Presumed: presumed}
}

func (c *Coordinator) receive(now Instant, m Message) {
	var from NodeID
	var cluster string
	switch m := m.(type) {
	case ExecResult:
		from, cluster = m.From, m.Cluster
	case VoteMessage:
		from, cluster = m.From, m.Cluster
	case AckMessage:
		from, cluster = m.From, m.Cluster
	case InquireMessage:
		from, cluster = m.From, m.Cluster
	case SettleAnswer:
		from, cluster = m.From, m.Cluster
	case ReconcileAnswer:
		from, cluster = m.From, m.Cluster
	default:
		return // a coordinator-bound message of another kind is nonsense; drop it
	}
	if c.checkNode(from) != nil || cluster != c.cluster {
		// A message about another cluster's transaction (a participant
		// still bound to the cluster of a lost log) must not be taken for
		// ours of the same id.
		return
	}
	switch m := m.(type) {
	case InquireMessage:
		c.inquire(m)
		return
	case ReconcileAnswer:
		c.reconciled(now, m)
		return
	}
	tx := c.txs[m.Tx()]
	if tx == nil {
		return // late or duplicate: the transaction is over
	}
	n := &tx.nodes[from]
	switch m := m.(type) {
	case ExecResult:
		if tx.phase != PhaseActive || n.inflight == nil || n.inflight.stmt != m.Stmt {
			return
		}
		if m.Err != "" && n.inflight.then == ThenCommit {
			// Most likely the statement failed and its commit never ran;
			// but a late copy of the statement, after the branch
			// committed, fails too. The decider's own answer decides
			// (it settles the branch and says); ask soon if it is lost.
			p := n.inflight
			n.inflight = nil
			if call := tx.transact; call != nil && call.failed == "" {
				call.failed, call.failedSQL, call.failedIdx = fmt.Sprintf("%s: %s", from, m.Err), m.SQLErr, p.idx
			}
			tx.settleAt = now.Add(c.cfg.RetryMin)
			return
		}
		if m.Err != "" {
			c.execFailed(now, tx, from, ErrStatement, fmt.Sprintf("%s: %s", from, m.Err), m.SQLErr)
			return
		}
		p := n.inflight
		n.inflight = nil
		began := tx.unanswered
		tx.unanswered = false
		if m.Result != nil && !p.describe && !strings.HasPrefix(m.Result.Tag, "SELECT") {
			n.wrote = true
		}
		// The client was waiting for this answer, not idle: its idle time
		// starts now (a client that sent many statements at once may
		// find the last answered long after it sent them).
		tx.lastActivity = now
		if p.inTransact {
			c.transactResult(now, tx, p.idx, m.Result)
		} else {
			r := ExecReply{TxID: tx.id, Node: from, Result: m.Result}
			if began {
				r.Cluster, r.Epoch = c.cluster, tx.epoch
			}
			c.reply(p.req, r, c.reserveLSN)
		}
		c.pump(now, tx, from)
		c.tryPrepare(now, tx)
	case VoteMessage:
		early := tx.phase == PhaseActive && tx.piggyback && (n.prepareSent || from == tx.decider && tx.branchAsked)
		if tx.phase != PhasePreparing && !early || !n.touched || n.vote != 0 {
			return
		}
		if from == tx.decider {
			if m.Vote == VoteCommitted {
				c.votersAnswered(now, tx, m.Results)
			}
			c.deciderAnswered(now, tx, m.Vote == VoteCommitted, m.Vote == VoteNo, m.Reason)
			return
		}
		if m.Vote == VoteCommitted {
			return // only the decider's branch decides
		}
		n.vote = m.Vote
		if m.Vote == VoteNo {
			c.decide(now, tx, OutcomeAbort, fmt.Sprintf("%s voted no: %s", from, m.Reason))
			return
		}
		if early {
			return // the statements' results and the commit come first
		}
		if tx.decider != CoordinatorNode {
			c.askDecider(now, tx)
			return
		}
		c.decideIfAllVoted(now, tx)
	case SettleAnswer:
		if (tx.phase == PhasePreparing || tx.phase == PhaseActive) && from == tx.decider && tx.branchAsked {
			if m.Outcome == OutcomeCommit {
				c.votersAnswered(now, tx, m.Results)
			}
			why := "the decider settled it as aborted"
			if m.Reason != "" {
				why = "it rolled back: " + m.Reason
			}
			c.deciderAnswered(now, tx, m.Outcome == OutcomeCommit, m.Outcome == OutcomeAbort, why)
		}
	case AckMessage:
		if tx.outcome == 0 || m.Outcome != tx.outcome || !n.inPhase2 || n.acked {
			return
		}
		n.acked = true
		if !c.allAcked(tx) {
			if d := tx.decider; d != CoordinatorNode && tx.nodes[d].inPhase2 && !tx.nodes[d].acked && !c.deciderWaits(tx, d) {
				// The last other branch acknowledged: the decider may now
				// drop its marker.
				c.effect(c.decisionSend(tx, d))
				c.awaitDecider(now, tx)
			}
			return
		}
		c.emitEnded(tx)
	}
}

// decideIfAllVoted commits in the classic protocol once every participant
// voted yes or read-only.
func (c *Coordinator) decideIfAllVoted(now Instant, tx *coordTx) {
	for i := range tx.nodes {
		if tx.nodes[i].touched && tx.nodes[i].vote == 0 {
			return
		}
	}
	c.decide(now, tx, OutcomeCommit, "")
}

// noteMissingVotes names, as the reason of the abort a late decider is
// likely to answer, the voters whose statements it has not heard of
// (their results come with their votes, through the decider).
func (c *Coordinator) noteMissingVotes(now Instant, tx *coordTx) {
	if !tx.voteToDecider || tx.abortOnly != "" {
		return
	}
	if tx.phase == PhasePreparing {
		// The votes went to the decider; which of them it lacks only it
		// knows.
		if now >= tx.voteDeadline {
			tx.abortOnly = fmt.Sprintf("vote timeout: the decider %s had not committed within %s (the votes of %s go to it)", tx.decider, c.cfg.VoteTimeout, nodeList(tx.voters))
		}
		return
	}
	var missing []string
	for _, v := range tx.voters {
		if tx.nodes[v].inflight != nil {
			missing = append(missing, v.String())
		}
	}
	if len(missing) > 0 {
		tx.abortOnly = fmt.Sprintf("vote timeout: no vote from %s reached the decider %s within %s", strings.Join(missing, ","), tx.decider, c.cfg.ExecTimeout)
	}
}

// votersAnswered takes the votes and last results of the participants
// that voted to the decider, which it passes on with its commit: they
// answer those participants' last statements.
func (c *Coordinator) votersAnswered(now Instant, tx *coordTx, results []VoterResult) {
	for _, r := range results {
		if c.checkNode(r.Node) != nil || r.Node == tx.decider || (r.Vote != VoteYes && r.Vote != VoteReadOnly) {
			continue
		}
		n := &tx.nodes[r.Node]
		if !n.touched {
			continue
		}
		if n.vote == 0 || n.vote == VoteNo {
			// The decider's word wins over a no heard here: a voter that
			// said no (its branch lost in a restart) may have prepared a
			// late copy and voted yes to the decider, and it must hear the
			// commit.
			n.vote = r.Vote
		}
		if !n.prepareSent || r.Stmt != n.sent-1 { // (the statement that prepares is the last)
			continue
		}
		if p := n.inflight; p != nil && p.stmt == r.Stmt {
			n.inflight = nil
			c.transactResult(now, tx, p.idx, r.Result)
		} else if call := tx.transact; call != nil && n.votedIdx < len(call.results) && call.results[n.votedIdx] == nil {
			call.results[n.votedIdx] = r.Result
		}
	}
}

// deciderAnswered takes the decider's word on its branch: committed, which
// is the commit decision, or aborted. Anything else (a vote that is
// neither) is not an answer.
func (c *Coordinator) deciderAnswered(now Instant, tx *coordTx, committed, aborted bool, reason string) {
	n := &tx.nodes[tx.decider]
	switch {
	case committed:
		n.vote = VoteCommitted
		c.decide(now, tx, OutcomeCommit, "")
	case aborted:
		n.vote = VoteNo
		if tx.abortOnly != "" {
			// What went wrong first, which the decider's abort follows.
			c.decide(now, tx, OutcomeAbort, tx.abortOnly)
			return
		}
		c.decide(now, tx, OutcomeAbort, fmt.Sprintf("%s (the decider) did not commit: %s", tx.decider, reason))
	}
}

// inquire answers a participant in doubt. An undecided transaction gets no
// answer yet (the participant asks again); one with no record is presumed
// aborted.
func (c *Coordinator) inquire(m InquireMessage) {
	if tx := c.txs[m.TxID]; tx != nil {
		if tx.outcome != 0 {
			c.effect(c.decisionSend(tx, m.From))
		}
		return
	}
	if e, ok := c.endedIdx[m.TxID]; ok {
		c.effect(Send{To: m.From, Msg: c.decisionMsg(m.TxID, m.TxEpoch, e.outcome, false)})
		return
	}
	c.effect(Send{To: m.From, Msg: c.decisionMsg(m.TxID, m.TxEpoch, OutcomeAbort, true)})
}

func (c *Coordinator) sendFailed(now Instant, to NodeID, m Message) {
	tx := c.txs[m.Tx()]
	if tx == nil || c.checkNode(to) != nil {
		return
	}
	switch m := m.(type) {
	case ExecRequest:
		if m.Then == ThenCommit {
			if tx.branchAsked && tx.outcome == 0 {
				tx.settleAt = now.Add(c.cfg.RetryMin)
			}
			return
		}
		if n := tx.nodes[to]; tx.phase == PhaseActive && n.inflight != nil && n.inflight.stmt == m.Stmt {
			c.execFailed(now, tx, to, ErrAborted, fmt.Sprintf("%s unreachable", to), nil)
		}
	case PrepareRequest:
		if tx.phase == PhasePreparing && tx.nodes[to].vote == 0 {
			// With the decider already asked to commit (its voters vote to
			// it), decide asks the decider instead, which cannot commit
			// without this vote.
			c.decide(now, tx, OutcomeAbort, fmt.Sprintf("%s unreachable during prepare", to))
		}
	case CommitBranchRequest:
		// It may have arrived: ask the decider soon rather than guess.
		if tx.phase == PhasePreparing && tx.branchAsked {
			tx.settleAt = now.Add(c.cfg.RetryMin)
		}
	}
	// A decision that could not be sent is resent from tick.
}

func (c *Coordinator) tick(now Instant) {
	if c.Reconciling() && now >= c.reconcileAt {
		c.askReconcile(now)
	}
	c.expireAwaiting(now)
	for _, id := range c.sortedTxIDs() {
		tx := c.txs[id]
		if tx == nil {
			continue
		}
		switch tx.phase {
		case PhaseActive:
			if tx.checking != "" && now >= tx.checkDeadline {
				// The lookup is late; the branches wait with their locks.
				// The client is told to retry, which looks the key up again.
				delete(c.checking, tx.checking)
				c.keyCheckDone(tx, KeyLookedUp{Now: now, Key: tx.checking, Err: fmt.Sprintf("no answer within %s", c.cfg.VoteTimeout)})
				continue
			}
			if tx.branchAsked {
				// The decider was asked to commit with its statement (or
				// once its voters voted): only its answer decides, so a
				// late one is asked for.
				if now >= tx.settleAt {
					c.noteMissingVotes(now, tx)
					c.settle(now, tx)
				}
				continue
			}
			for i := range tx.nodes {
				if p := tx.nodes[i].inflight; p != nil && now >= p.deadline && tx.phase == PhaseActive && !(tx.voteToDecider && p.then == ThenPrepare) {
					// (A statement that votes to the decider answers with
					// its vote, through the decider: commitDirect's settle
					// time bounds it.)
					c.execFailed(now, tx, NodeID(i), ErrAborted, fmt.Sprintf("%s did not answer statement %d within %s", NodeID(i), p.stmt, c.cfg.ExecTimeout), nil)
				}
			}
			if tx.phase != PhaseActive {
				continue
			}
			switch {
			case tx.batch && !tx.commitRequested && now >= tx.begun.Add(c.cfg.BatchFlush):
				if c.batch == tx {
					c.batch = nil
				}
				c.requestCommit(now, tx)
			case !tx.batch && !tx.commitRequested && !c.busy(tx) && now >= tx.lastActivity.Add(c.cfg.IdleTimeout):
				c.decide(now, tx, OutcomeAbort, fmt.Sprintf("client idle for %s", c.cfg.IdleTimeout))
			}
		case PhasePreparing:
			if tx.branchAsked {
				if now >= tx.settleAt {
					c.noteMissingVotes(now, tx)
					c.settle(now, tx)
				}
				continue
			}
			if now >= tx.voteDeadline {
				var missing []string
				for i := range tx.nodes {
					if tx.nodes[i].touched && tx.nodes[i].vote == 0 && NodeID(i) != tx.decider {
						missing = append(missing, NodeID(i).String())
					}
				}
				c.decide(now, tx, OutcomeAbort, fmt.Sprintf("vote timeout: no vote from %s within %s", strings.Join(missing, ","), c.cfg.VoteTimeout))
			}
		case PhaseCommitting, PhaseAborting:
			if now >= tx.nextRetry {
				c.sendDecision(now, tx)
				tx.backoff = min(2*tx.backoff, c.cfg.RetryMax)
				tx.nextRetry = now.Add(tx.backoff)
			}
		}
	}
}

// clientResolve retries at once what an in-doubt transaction waits for,
// and answers where it stands. Only the timing changes: a decided
// transaction's decision goes again to those that have not acknowledged
// it, one whose decider was asked is settled with the decider, and one
// still collecting votes is left to its vote timeout.
func (c *Coordinator) clientResolve(now Instant, in ClientResolve) {
	tx := c.txs[in.TxID]
	switch {
	case tx == nil:
		st, code := c.Status(in.TxID), ErrTxNotActive
		if st.State == "unknown" {
			code = ErrUnknownTx
		}
		c.fail(in.Req, code, "transaction %d is not in doubt here (%s)", in.TxID, st.State)
		return
	case tx.phase == PhaseActive:
		c.fail(in.Req, ErrTxNotActive, "transaction %d is still taking statements: commit or roll it back", in.TxID)
		return
	}
	switch tx.phase {
	case PhasePreparing:
		if tx.branchAsked {
			c.settle(now, tx)
		}
	case PhaseCommitting, PhaseAborting:
		tx.backoff = c.cfg.RetryMin
		tx.nextRetry = now.Add(tx.backoff)
		c.sendDecision(now, tx)
	}
	c.reply(in.Req, c.Status(in.TxID), tx.decisionLSN)
}

// InDoubt is a transaction past its statements and not yet ended, as an
// operator sees it: since when and what it waits for.
type InDoubt struct {
	StatusReply
	Begun Instant
	// Waiting says what the transaction waits for, in words.
	Waiting string
	// WaitingOn are the participants it waits for.
	WaitingOn []NodeID
	// NextTry is when the coordinator will next act on it by itself.
	NextTry Instant
}

// InDoubt lists the transactions past their statements that have not
// ended, sorted by id.
func (c *Coordinator) InDoubt() []InDoubt {
	var out []InDoubt
	for _, id := range c.sortedTxIDs() {
		tx := c.txs[id]
		if tx.phase == PhaseActive {
			continue
		}
		d := InDoubt{StatusReply: c.Status(id), Begun: tx.begun}
		switch tx.phase {
		case PhasePreparing:
			if tx.branchAsked {
				d.WaitingOn = []NodeID{tx.decider}
				d.Waiting = fmt.Sprintf("the decider %s's answer: its own commit decides", tx.decider)
				d.NextTry = tx.settleAt
				break
			}
			for i := range tx.nodes {
				if tx.nodes[i].touched && tx.nodes[i].vote == 0 && NodeID(i) != tx.decider {
					d.WaitingOn = append(d.WaitingOn, NodeID(i))
				}
			}
			d.Waiting = "votes"
			d.NextTry = tx.voteDeadline
		case PhaseCommitting, PhaseAborting:
			d.WaitingOn = d.Pending
			d.Waiting = "acknowledgements of the " + tx.outcome.String() + " decision"
			d.NextTry = tx.nextRetry
		}
		out = append(out, d)
	}
	return out
}

// maxEndedReason bounds the reason kept with an aborted transaction's end.
const maxEndedReason = 200

// emitEnded records that tx ended, with what a status or a repeated call
// needs once the rest of its events are compacted away.
func (c *Coordinator) emitEnded(tx *coordTx) {
	e := CoordEnded{TxID: tx.id, Outcome: tx.outcome, Keys: tx.keys}
	if tx.outcome == OutcomeAbort {
		e.Reason = tx.reason
		if len(e.Reason) > maxEndedReason {
			e.Reason = strings.ToValidUTF8(e.Reason[:maxEndedReason], "")
		}
	}
	c.emit(e)
}

// allAcked reports whether every participant owing an ack has sent it (true
// when nobody owes one).
func (c *Coordinator) allAcked(tx *coordTx) bool {
	for i := range tx.nodes {
		if tx.nodes[i].inPhase2 && !tx.nodes[i].acked {
			return false
		}
	}
	return true
}

// Applied reports whether nothing of id's outcome is left to reach the
// data but the decider's marker (StatusReply.Applied), or id is not a
// transaction being committed (it ended, aborts or is unknown): what a
// client that wants to read its own writes waits for. Unlike Status it
// allocates nothing, for a caller that asks after every step.
func (c *Coordinator) Applied(id TxID) bool {
	tx := c.txs[id]
	return tx == nil || tx.phase != PhaseCommitting || tx.applied()
}

// applied reports whether every branch owing an ack but the decider's has
// sent it.
func (tx *coordTx) applied() bool {
	for i, n := range tx.nodes {
		if n.inPhase2 && !n.acked && NodeID(i) != tx.decider {
			return false
		}
	}
	return true
}

// Status describes a transaction for clients and operators.
func (c *Coordinator) Status(id TxID) StatusReply {
	if tx := c.txs[id]; tx != nil {
		s := StatusReply{TxID: id, State: tx.phase.String(), Outcome: tx.outcome, Reason: tx.reason}
		if s.Reason == "" && tx.abortOnly != "" {
			s.Reason = "will abort: " + tx.abortOnly
		}
		for i, n := range tx.nodes {
			if n.touched {
				s.Participants = append(s.Participants, NodeID(i))
			}
			if n.inPhase2 && !n.acked {
				s.Pending = append(s.Pending, NodeID(i))
			}
		}
		s.Applied = tx.phase == PhaseCommitting && tx.applied()
		return s
	}
	if e, ok := c.endedIdx[id]; ok {
		return StatusReply{TxID: id, State: endedState(e.outcome).String(), Outcome: e.outcome, Reason: e.reason}
	}
	if id == 0 || id >= c.nextTx {
		return StatusReply{TxID: id, State: "unknown"}
	}
	return StatusReply{TxID: id, State: "forgotten", Reason: "ended long ago, or aborted before anything was logged"}
}

// askReconcile asks the participants that have not answered since this
// incarnation started for the commit markers of earlier ones, and again
// with backoff.
func (c *Coordinator) askReconcile(now Instant) {
	for i, left := range c.unreconciled {
		if left {
			c.effect(Send{To: NodeID(i), Msg: ReconcileRequest{Header: c.header()}, WaitLSN: c.reconcileLSN})
		}
	}
	c.reconcileAt = backOff(now, &c.reconcileBackoff, c.cfg.RetryMin, c.cfg.RetryMax)
}

// reconciled takes a participant's markers of earlier incarnations: a
// transaction this log does not know was committed by that decider before
// its coord.preparing was durable. It is adopted as committed (its keys
// with it) and finished like any other: every participant hears the
// commit (a branch that never heard of it acknowledges), the decider last.
// Once every participant answered, the calls that waited run.
func (c *Coordinator) reconciled(now Instant, a ReconcileAnswer) {
	if a.Epoch != c.epoch || !c.Reconciling() || !c.unreconciled[a.From] {
		return
	}
	all := make([]NodeID, c.cfg.Participants)
	for i := range all {
		all[i] = NodeID(i)
	}
	for _, mk := range a.Markers {
		_, ended := c.endedIdx[mk.TxID]
		if c.txs[mk.TxID] != nil || ended || mk.TxID == 0 || mk.TxID >= c.firstTx || mk.TxEpoch >= c.epoch {
			// Known: a transaction whose coord.preparing survived is
			// settled with its decider by start.
			continue
		}
		d := a.From
		c.emit(CoordPreparing{TxID: mk.TxID, Epoch: mk.TxEpoch, Participants: all, Decider: &d, Keys: mk.Keys})
		tx := c.txs[mk.TxID]
		tx.branchAsked = true
		c.effect(Warning{Detail: fmt.Sprintf("transaction %d (epoch %d) was committed by its decider %s before this coordinator's log held it: adopted as committed", mk.TxID, mk.TxEpoch, d)})
		c.deciderAnswered(now, tx, true, false, "")
	}
	c.unreconciled[a.From] = false
	if slices.Contains(c.unreconciled, true) {
		return
	}
	c.unreconciled = nil
	held := c.awaiting
	c.awaiting = nil
	for _, w := range held {
		c.dispatchClient(w.in)
	}
}

// mayHaveCommittedUnseen reports whether id is an earlier incarnation's
// transaction this log does not know, while a participant that may hold
// its commit marker has not answered yet.
func (c *Coordinator) mayHaveCommittedUnseen(id TxID) bool {
	if !c.Reconciling() || id == 0 || id >= c.firstTx || c.txs[id] != nil {
		return false
	}
	_, ended := c.endedIdx[id]
	return !ended
}

func (c *Coordinator) await(in Input) {
	c.awaiting = append(c.awaiting, awaitingCall{in: in, since: in.At()})
}

// expireAwaiting refuses, to be retried, the calls that waited longer than
// a vote may: a participant is down, and the answer may be on it.
func (c *Coordinator) expireAwaiting(now Instant) {
	if len(c.awaiting) == 0 || now < c.awaiting[0].since.Add(c.cfg.VoteTimeout) {
		return
	}
	var missing []string
	for i, left := range c.unreconciled {
		if left {
			missing = append(missing, NodeID(i).String())
		}
	}
	keep := c.awaiting[:0]
	for _, w := range c.awaiting {
		req, ok := reqOf(w.in)
		switch {
		case now < w.since.Add(c.cfg.VoteTimeout):
			keep = append(keep, w)
		case ok:
			c.fail(req, ErrUnavailable, "this coordinator restarted and %s has not answered since: it may hold the commit of a transaction this log does not know; retry", strings.Join(missing, ","))
		}
	}
	c.awaiting = keep
}

func endedState(o Outcome) Phase {
	if o == OutcomeAbort {
		return PhaseAborted
	}
	return PhaseCommitted
}

// TxSummary is one transaction as seen by an operator.
type TxSummary struct {
	StatusReply
	Epoch Epoch
}

// Transactions lists the transactions in memory, sorted by id.
func (c *Coordinator) Transactions() []TxSummary {
	var out []TxSummary
	for _, id := range c.sortedTxIDs() {
		out = append(out, TxSummary{StatusReply: c.Status(id), Epoch: c.txs[id].epoch})
	}
	return out
}

// EndedCount is how many transactions this Coordinator has forgotten
// since it was made, those folded in by recovery included. With RecentEnded
// it lets a driver see each newly ended transaction once without copying
// the whole remembered list.
func (c *Coordinator) EndedCount() uint64 { return c.endedCount }

// RecentEnded lists the outcomes of the n transactions forgotten last (fewer
// if fewer are remembered), oldest first.
func (c *Coordinator) RecentEnded(n int) []StatusReply {
	n = max(0, min(n, len(c.ended)))
	out := make([]StatusReply, 0, n)
	for _, e := range c.ended[len(c.ended)-n:] {
		out = append(out, c.Status(e.id))
	}
	return out
}

// EndedIDs lists the ids of the remembered forgotten transactions, oldest
// first, without building their outcomes.
func (c *Coordinator) EndedIDs() []TxID {
	out := make([]TxID, len(c.ended))
	for i, e := range c.ended {
		out[i] = e.id
	}
	return out
}

// Ended lists remembered outcomes of forgotten transactions, oldest first.
func (c *Coordinator) Ended() []StatusReply {
	out := make([]StatusReply, 0, len(c.ended))
	for _, e := range c.ended {
		out = append(out, c.Status(e.id))
	}
	return out
}
