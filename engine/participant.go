package engine

import (
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"time"
)

// ParticipantConfig sets a participant's limits; zero durations take defaults.
type ParticipantConfig struct {
	// Node is this participant's id.
	Node NodeID
	// IdleTimeout rolls back an unprepared transaction that heard nothing
	// from the coordinator this long (client or coordinator gone).
	IdleTimeout time.Duration
	// InquireAfter is how long a prepared transaction waits for the decision
	// before asking the coordinator; the question repeats with backoff.
	InquireAfter time.Duration
	// RetryMin and RetryMax bound the backoff of inquiries and of data
	// operations that failed for want of the data database.
	RetryMin, RetryMax time.Duration
	// LazyPrepared lets the yes vote leave before the Prepared event is
	// durable. The prepared transaction and its marker survive a crash on
	// their own; in exchange recovery treats every prepared GID of ours
	// without an outcome as in doubt and asks, never rolling it back alone.
	// The setting has this one name wherever it is carried (replay, bench,
	// localcluster options); the commands that run participants turn it on
	// unless given --no-lazy-prepared.
	LazyPrepared bool
	// RememberAborted is how many finished (rolled-back, committed or
	// read-only) transaction ids stay known so late messages cannot revive
	// them.
	RememberAborted int
	// DeciderPatience is how long a decider's open branch waits for the
	// coordinator's commit request once a branch in doubt asked about it;
	// then the decider gives up on it (rolls it back, settles it as
	// aborted) and answers. A coordinator that asks gets its answer at
	// once.
	DeciderPatience time.Duration
}

func (c *ParticipantConfig) fill() {
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 2 * DefaultIdleTimeout
	}
	if c.InquireAfter <= 0 {
		c.InquireAfter = time.Second
	}
	if c.RetryMin <= 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax <= 0 {
		c.RetryMax = DefaultRetryMax
	}
	if c.DeciderPatience <= 0 {
		c.DeciderPatience = 5 * time.Second
	}
	if c.RememberAborted <= 0 {
		// As long as the coordinator remembers outcomes, so a late duplicate
		// is recognised here whenever the coordinator could still answer it.
		c.RememberAborted = DefaultRememberEnded
	}
}

// PartPhase is where a transaction stands at a participant.
type PartPhase uint8

const (
	// PartPhaseWorking: statements run in an open data transaction.
	PartPhaseWorking PartPhase = 1 + iota
	// PartPhasePreparing: PREPARE TRANSACTION is running.
	PartPhasePreparing
	// PartPhasePrepared: prepared and voted yes; waiting for the decision.
	PartPhasePrepared
	// PartPhaseCommitting: COMMIT PREPARED is running.
	PartPhaseCommitting
	// PartPhaseAborting: ROLLBACK PREPARED is running.
	PartPhaseAborting
	// PartPhaseRollingBack: the open data transaction is being rolled back.
	PartPhaseRollingBack
	// PartPhaseDeciding: the decider's COMMIT (with its marker) is running.
	PartPhaseDeciding
)

var partPhaseNames = [...]string{"", "working", "preparing", "prepared", "committing", "aborting", "rolling-back", "deciding"}

func (p PartPhase) String() string { return enumName(partPhaseNames[:], p, "phase(?)") }

// Participant is a participant's state machine. It is not safe for concurrent
// use; the driver owns it from one goroutine.
type Participant struct {
	cfg ParticipantConfig

	cluster string
	epoch   Epoch
	// epochLSN is the LSN of the latest epoch event: nothing may be sent
	// before the fence it sets is durable.
	epochLSN   LSN
	started    bool
	violations int

	txs map[TxID]*partTx
	// finished remembers the ids of finished transactions with their
	// outcome (FIFO) so a late statement cannot start one afresh: rolled
	// back, committed, or read-only (finished without phase 2).
	finished    []TxID
	finishedIdx map[TxID]Outcome
	// committedHere marks, among finished, the branches that committed
	// here (not a read-only vote, which also remembers a commit): an abort
	// decided for one of them is a violation.
	committedHere map[TxID]bool
	// deleting holds the markers of committed transactions being deleted. They
	// are not folded from the log: a restart finds the markers left in the
	// data database and deletes them again.
	deleting map[TxID]*markerDeletion

	// held keeps coordinator messages that name a cluster or an epoch this
	// participant has not confirmed with its configured coordinator; they
	// wait for its answer (AskCoordinator), bounded by maxHeld and
	// maxHeldBytes.
	held      []Message
	heldBytes int
	// askAt is when the next AskCoordinator may leave, askBackoff the
	// pause after that one: a flood of strange messages costs the
	// coordinator one question per backoff period.
	askAt      Instant
	askBackoff time.Duration
	// joining is a cluster the configured coordinator now belongs to
	// (its log was replaced): its work waits in held until every
	// transaction of the old cluster has ended here, so that no
	// transaction id of one cluster is ever taken for the other's.
	joining      *Header
	joiningPeers []string
	// peers are the participants' addresses, by node id, as the
	// coordinator last named them: a branch in doubt reaches its decider
	// with them.
	peers []string

	// kept holds, as the decider of transactions, their outcome markers
	// (and tombstones) that must stay until the coordinator says every
	// other branch has its outcome: branches in doubt ask about them.
	kept map[TxID]*keptMarker
	// settles are the decider's DataSettle operations in flight or waiting
	// for a retry, with whoever asked.
	settles map[TxID]*settling
	// earlyVotes are votes that reached this participant as the decider
	// before the transaction's first statement did; its branch takes them
	// when it opens. Bounded by maxHeld, dropped after IdleTimeout (a vote
	// lost is an abort, never a wrong commit).
	earlyVotes map[TxID][]earlyVote

	output
}

type partTx struct {
	id    TxID
	epoch Epoch
	gid   string
	phase PartPhase
	// xid is the prepared branch's PostgreSQL transaction id (0 when its
	// PREPARE came from an earlier version, which wrote a marker).
	xid uint64

	nextStmt int
	last     *ExecResult // result of statement nextStmt-1, resent on duplicates
	// direct marks a branch whose running statement came from the client
	// itself (ExecRequest.Direct): its result goes back there. lastDigest
	// is that statement's digest (statementDigest): a direct statement is
	// a copy of it only if it is the same statement, not just one of the
	// same number.
	direct       bool
	lastDigest   uint64
	pending      int // data operations issued and not yet done
	lastActivity Instant

	prepareWanted bool
	prepareStmts  int
	// abortWanted is an abort decision that arrived while preparing.
	abortWanted bool
	// ackWanted: the coordinator asked for the outcome; ack once applied,
	// promptly when it asked for that (DecisionRequest.PromptAck).
	ackWanted bool
	promptAck bool
	reason    string

	preparedLSN LSN
	nextInquiry Instant
	backoff     time.Duration

	retryOp DataOp
	retryAt Instant

	// decider is the participant whose commit decides the transaction, or
	// CoordinatorNode in the classic protocol (and before the decider is
	// known).
	decider NodeID
	// commitWanted is the coordinator's request to commit this branch as
	// the decider (with its statement count), waiting for running work.
	commitWanted bool
	commitStmts  int
	// keys are the transaction's idempotency keys, stored with the
	// decider's marker.
	keys []string
	// askers wait for this decider branch's outcome (SettleRequest); the
	// first came at askedAt.
	askers  []NodeID
	askedAt Instant
	// abortDecided is set when the coordinator's (not presumed) abort
	// decision arrived for the open branch.
	abortDecided bool
	// thenInFlight is set while a statement runs that prepares or commits
	// the branch right after (ExecRequest.Then): an abort decision then
	// waits for it, as for a prepare.
	thenInFlight bool
	// voteToDecider sends this branch's yes vote to its decider
	// (ExecRequest.VoteToDecider, PrepareRequest.VoteToDecider);
	// resultWithVote, set for the first, sends the last statement's
	// result with it, which nobody has had yet.
	voteToDecider  bool
	resultWithVote bool
	// voters are the participants whose votes this decider branch waits
	// for before it commits (CommitBranchRequest.Voters); votes holds
	// those that came, to be handed on with the answer.
	voters []NodeID
	votes  []VoterResult
}

// earlyVote is a vote that came before the branch it is for.
type earlyVote struct {
	vote VoterResult
	// epoch is the epoch of the voter's branch, at when it came.
	epoch Epoch
	at    Instant
}

// markerDeletion is the deletion of one committed transaction's marker.
type markerDeletion struct {
	markerOp
	// ack is the outcome to acknowledge to the coordinator once the marker
	// is gone: a decider's marker is deleted on the coordinator's word,
	// which is acknowledged only then (or the coordinator would forget a
	// transaction whose marker a crash could leave behind for good).
	ack Outcome
}

// keptMarker is a decider's outcome marker (or tombstone) waiting for the
// coordinator's word that it may go.
type keptMarker struct {
	gid       string
	tombstone bool
	// keys are the idempotency keys stored with a commit marker: a
	// coordinator that lost the transaction learns them (ReconcileAnswer).
	keys []string
	// A tombstone may belong to a transaction the coordinator never learned
	// of (it died before coord.preparing was durable), which will never
	// say it may go: the decider asks about it, and a presumed abort lets
	// it go.
	nextInquiry Instant
	backoff     time.Duration
	// votes are a committed branch's voters' votes and results, handed on
	// again when the coordinator asks (its commit's answer may be lost).
	votes []VoterResult
}

// settling is a decider's DataSettle: the askers get its finding.
type settling struct {
	markerOp
	askers []NodeID
	// reason is why the branch rolled back, if it did here: told with an
	// abort, so that the client learns it (a count that did not match,
	// a statement that failed).
	reason string
}

// NewParticipant returns a participant with an empty state; fold its log in
// with Apply before the Start step.
func NewParticipant(cfg ParticipantConfig) *Participant {
	cfg.fill()
	return &Participant{cfg: cfg, txs: map[TxID]*partTx{}, finishedIdx: map[TxID]Outcome{}, committedHere: map[TxID]bool{}, deleting: map[TxID]*markerDeletion{},
		kept: map[TxID]*keptMarker{}, settles: map[TxID]*settling{}, earlyVotes: map[TxID][]earlyVote{}}
}

// Cluster is the cluster this participant serves, "" before it heard of one.
func (p *Participant) Cluster() string { return p.cluster }

// Epoch is the newest coordinator incarnation seen.
func (p *Participant) Epoch() Epoch { return p.epoch }

// Violations counts atomicity violations recorded in the log.
func (p *Participant) Violations() int { return p.violations }

// Peers are the participants' addresses, by node id, as the coordinator
// last named them.
func (p *Participant) Peers() []string { return p.peers }

// Limits of the messages held while the coordinator is asked who it is.
// Beyond them a message is dropped, as if lost: the coordinator resends
// decisions and times out statements and votes.
const (
	maxHeld      = 1024
	maxHeldBytes = 16 << 20
)

// Apply folds one durable event into the state; see Coordinator.Apply.
func (p *Participant) Apply(e Event) error {
	switch e := e.(type) {
	case PartEpochSeen:
		if p.cluster != "" && e.Cluster != p.cluster {
			// Joined another cluster: every transaction of the old one had
			// ended first (see join), and its ids mean nothing to the new
			// one, which hands out the same numbers again.
			p.finished, p.finishedIdx, p.committedHere = nil, map[TxID]Outcome{}, map[TxID]bool{}
			// Tombstones of the old cluster answer nobody now (its
			// coordinator is gone; its commit markers forbid a join).
			clear(p.kept)
		}
		p.cluster, p.epoch = e.Cluster, e.Epoch
		if len(e.Participants) > 0 {
			p.peers = e.Participants
		}
	case PartPrepared:
		g, ok := ParseGID(e.GID)
		if !ok {
			return fmt.Errorf("engine: tx %d: malformed gid %q", e.TxID, e.GID)
		}
		tx := p.txs[e.TxID]
		if tx == nil {
			tx = &partTx{id: e.TxID, epoch: g.Epoch, gid: e.GID, decider: CoordinatorNode}
			p.txs[e.TxID] = tx
		}
		if g.HasDecider {
			tx.decider = g.Decider
		}
		tx.phase, tx.xid = PartPhasePrepared, e.Xid
	case PartCommitted, PartForgotten:
		// Committed is final: what is left, deleting the marker, needs no
		// record. After a crash the marker itself says whether it is still
		// there. Logs of earlier versions also hold a PartForgotten after the
		// PartCommitted; it changes nothing.
		if p.txs[e.Tx()] != nil {
			p.committedHere[e.Tx()] = true
		}
		delete(p.txs, e.Tx())
		p.remember(e.Tx(), OutcomeCommit)
	case PartVotedNo:
		p.remember(e.TxID, OutcomeAbort)
	case PartAborted:
		delete(p.txs, e.TxID)
		p.remember(e.TxID, OutcomeAbort)
	case PartViolation:
		p.violations++
	default:
		return fmt.Errorf("engine: participant cannot apply %s", e.Kind())
	}
	return nil
}

func (p *Participant) remember(id TxID, o Outcome) {
	if _, ok := p.finishedIdx[id]; ok {
		return
	}
	p.finished = append(p.finished, id)
	p.finishedIdx[id] = o
	if len(p.finished) > p.cfg.RememberAborted {
		delete(p.finishedIdx, p.finished[0])
		delete(p.committedHere, p.finished[0])
		p.finished = p.finished[1:]
	}
}

func (p *Participant) emit(e Event) LSN {
	if err := p.Apply(e); err != nil {
		panic(fmt.Sprintf("engine: emitted event does not apply: %v", err))
	}
	return p.queue(e)
}

func (p *Participant) send(m Message, wait LSN) { p.sendTo(CoordinatorNode, m, wait) }

func (p *Participant) sendTo(to NodeID, m Message, wait LSN) {
	p.rd.Effects = append(p.rd.Effects, Send{To: to, Msg: m, WaitLSN: max(wait, p.epochLSN)})
}

func (p *Participant) data(d Data, tx *partTx) {
	tx.pending++
	if d.Op == DataCommitPrepared || d.Op == DataRollbackPrepared {
		d.Xid = tx.xid
	}
	p.rd.Effects = append(p.rd.Effects, d)
}

// deleteMarker starts deleting a committed transaction's marker once lsn is
// durable; the Forget effect follows when it is gone (and the ack, if ack
// is set).
func (p *Participant) deleteMarker(id TxID, gid string, lsn LSN, ack Outcome) {
	p.deleting[id] = &markerDeletion{markerOp: markerOp{gid: gid}, ack: ack}
	p.rd.Effects = append(p.rd.Effects, Data{Op: DataDeleteMarker, TxID: id, GID: gid, WaitLSN: lsn})
}

func (p *Participant) violation(id TxID, format string, args ...any) {
	d := fmt.Sprintf(format, args...)
	p.emit(PartViolation{TxID: id, Detail: d})
	p.rd.Effects = append(p.rd.Effects, Violation{TxID: id, Detail: d})
}

// Step feeds one input to the participant and returns what must be done.
func (p *Participant) Step(in Input) Ready {
	p.rd = Ready{}
	now := in.At()
	switch in := in.(type) {
	case Start:
		p.start(in)
	case Tick:
		if p.started {
			p.tick(now)
		}
	case Receive:
		if p.started {
			p.receive(now, in.Msg)
		}
	case DataDone:
		p.dataDone(in)
	case CoordinatorAnswered:
		if p.started {
			p.answered(now, in)
		}
	}
	if p.joining != nil {
		p.settleJoin(now)
	}
	return p.take()
}

// start reconciles the log with the data database after a restart. A
// transaction that is no longer prepared committed if PostgreSQL's commit
// log says its transaction id committed (or, for a branch of an earlier
// version, its marker row is there), else it was rolled back. Nothing is
// guessed.
func (p *Participant) start(in Start) {
	if p.started {
		return
	}
	p.started = true
	prepared := p.ours(in.PreparedGIDs)
	markers := p.ours(in.Markers)
	committedXids := map[uint64]bool{}
	for _, x := range in.CommittedXids {
		committedXids[x] = true
	}
	// A decider's marker or tombstone stays until the coordinator says the
	// other branches have their outcome: they may still ask about it.
	for id, gid := range p.ours(in.Tombstones) {
		p.keep(in.Now, id, gid, true, nil)
	}
	for _, id := range slices.Sorted(maps.Keys(markers)) {
		if g, _ := ParseGID(markers[id]); g.IsDecider() {
			p.keep(in.Now, id, markers[id], false, in.MarkerKeys[markers[id]])
			delete(markers, id)
			if p.finishedIdx[id] != OutcomeCommit {
				p.emit(PartCommitted{TxID: id, GID: g.String()})
			}
		}
	}
	for _, id := range slices.Sorted(maps.Keys(p.kept)) {
		if k := p.kept[id]; k.tombstone && p.finishedIdx[id] == 0 {
			p.emit(PartAborted{TxID: id, GID: k.gid, Reason: "settled as aborted by the decider"})
		}
	}
	for _, id := range p.sortedTxIDs() {
		tx := p.txs[id]
		switch tx.phase {
		case PartPhasePrepared:
			if _, ok := prepared[id]; ok {
				tx.nextInquiry = in.Now
				tx.backoff = p.cfg.RetryMin
				continue
			}
			if _, ok := markers[id]; ok {
				p.deleteMarker(id, tx.gid, p.emit(PartCommitted{TxID: id, GID: tx.gid}), 0)
				continue
			}
			if tx.xid != 0 && committedXids[tx.xid] {
				// Its events go with the other ended ones' below.
				p.emit(PartCommitted{TxID: id, GID: tx.gid})
				continue
			}
			p.emit(PartAborted{TxID: id, GID: tx.gid, Reason: "found rolled back at recovery"})
		}
	}
	for _, id := range slices.Sorted(maps.Keys(prepared)) {
		if p.txs[id] != nil {
			continue
		}
		gid := prepared[id]
		if p.finishedIdx[id] == OutcomeCommit {
			// Only a hand could have prepared it again; asking the
			// coordinator, which may have forgotten it, could roll back what
			// the log says committed. Leave it for the operator, loudly.
			p.violation(id, "the log says committed, yet PostgreSQL holds %s prepared; left alone", gid)
			continue
		}
		// Prepared in PostgreSQL but not logged: in doubt, whatever this
		// incarnation's LazyPrepared says. With lazy Prepared events the vote
		// may have left before the event was written; and the incarnation
		// that crashed may have run with them even if this one does not, so
		// rolling back on our own could undo a commit. The coordinator
		// knows; it answers abort for a vote it never counted. Logging the
		// Prepared event now records what PostgreSQL holds, so that a yes
		// vote repeated for a late prepare request waits for it as usual.
		lsn := p.emit(PartPrepared{TxID: id, GID: gid, Xid: in.PreparedXids[gid]})
		tx := p.txs[id]
		tx.preparedLSN, tx.nextInquiry, tx.backoff = lsn, in.Now, p.cfg.RetryMin
	}
	for _, id := range slices.Sorted(maps.Keys(markers)) {
		if p.txs[id] != nil || p.deleting[id] != nil {
			continue
		}
		if _, ok := prepared[id]; ok {
			continue
		}
		gid := markers[id]
		if p.finishedIdx[id] == OutcomeCommit {
			// Logged as committed; only the marker's deletion was cut short.
			p.deleteMarker(id, gid, 0, 0)
			continue
		}
		p.deleteMarker(id, gid, p.emit(PartCommitted{TxID: id, GID: gid}), 0)
	}
	// Confirm at once who the configured coordinator is, so that its
	// first message does not wait for the question.
	p.ask(in.Now)
	// The transactions that ended before the crash may still have events
	// that the last incarnation did not live to compact; they go once the
	// events logged above are durable.
	for _, id := range p.finished {
		if _, ok := prepared[id]; !ok && p.txs[id] == nil && p.deleting[id] == nil && p.kept[id] == nil {
			p.rd.Effects = append(p.rd.Effects, Forget{TxID: id, WaitLSN: p.lsn})
		}
	}
}

// ours keeps the GIDs of this participant in its cluster, by transaction id.
func (p *Participant) ours(gids []string) map[TxID]string {
	out := map[TxID]string{}
	for _, s := range gids {
		g, ok := ParseGID(s)
		if ok && g.Cluster == p.cluster && p.cluster != "" && g.Node == p.cfg.Node {
			out[g.Tx] = s
		}
	}
	return out
}

func (p *Participant) sortedTxIDs() []TxID { return slices.Sorted(maps.Keys(p.txs)) }

// admit applies fencing to a coordinator message. A message of the
// cluster and epoch this participant has confirmed passes; one of an older
// epoch is refused; anything else (the first word from a new epoch,
// another cluster, or any cluster at all before the first) waits until the
// configured coordinator confirms who it is, so that a forged header can
// neither take the participant over nor fence its coordinator off.
func (p *Participant) admit(now Instant, m Message, h Header) bool {
	switch {
	case h.Cluster == "" || h.Epoch == 0:
		p.refuseDirect(m, "the statement names no cluster and epoch")
		return false
	case p.joining != nil && h == *p.joining:
		p.hold(m)
		return false
	case p.joining != nil:
		// Leaving: the configured coordinator is already the new
		// cluster's; nothing of the old one starts here any more.
		p.refuseDirect(m, fmt.Sprintf("this participant is leaving cluster %s for %s", p.cluster, p.joining.Cluster))
		return false
	case h.Cluster == p.cluster && h.Epoch == p.epoch:
		return true
	case h.Cluster == p.cluster && h.Epoch < p.epoch:
		// The coordinator that began the transaction is gone (a newer
		// one took over), and so is the transaction.
		p.refuseDirect(m, fmt.Sprintf("the transaction belongs to coordinator epoch %d, which has been replaced (now %d)", h.Epoch, p.epoch))
		return false
	}
	p.hold(m)
	p.ask(now)
	return false
}

func (p *Participant) hold(m Message) {
	size := messageSize(m)
	if len(p.held) >= maxHeld || p.heldBytes+size > maxHeldBytes {
		p.refuseDirect(m, "too much work waits here for the coordinator to confirm who it is; try again")
		return
	}
	p.held = append(p.held, m)
	p.heldBytes += size
}

// messageSize is what a held message costs, roughly: its statement text
// dominates.
func messageSize(m Message) int {
	if e, ok := m.(ExecRequest); ok {
		return 256 + len(e.SQL) + 64*len(e.Args)
	}
	return 256
}

// ask asks the configured coordinator who it is, unless a question left
// less than a backoff period ago.
func (p *Participant) ask(now Instant) {
	if now < p.askAt {
		return
	}
	p.askAt = p.backOff(now, &p.askBackoff)
	p.rd.Effects = append(p.rd.Effects, AskCoordinator{})
}

// answered acts on the configured coordinator's word about who it is, then
// lets through the held messages it vouches for and drops the others.
func (p *Participant) answered(now Instant, in CoordinatorAnswered) {
	if in.Err != "" || in.Cluster == "" || in.Epoch == 0 {
		return // tick asks again while messages wait
	}
	// Answered: the next strange message may ask at once.
	p.askAt, p.askBackoff = 0, 0
	id := Header{Cluster: in.Cluster, Epoch: in.Epoch}
	switch {
	case p.joining != nil:
		// Already leaving for the cluster named then; a later answer
		// naming yet another one is taken up once that is done.
	case p.cluster == "" || id.Cluster == p.cluster && id.Epoch > p.epoch:
		p.bind(now, id, in.Participants)
	case id.Cluster == p.cluster && id.Epoch == p.epoch && len(in.Participants) > 0 && !slices.Equal(in.Participants, p.peers):
		// Same coordinator, new addresses for its participants.
		p.epochLSN = p.emit(PartEpochSeen{Cluster: p.cluster, Epoch: p.epoch, Participants: in.Participants})
	case id.Cluster == p.cluster && id.Epoch < p.epoch:
		p.warn("the coordinator says it is epoch %d of cluster %s, older than epoch %d seen here: its log went back in time (restored from a backup?); its messages are refused", id.Epoch, id.Cluster, p.epoch)
	case id.Cluster != p.cluster:
		p.join(now, id, in.Participants)
	}
	p.releaseHeld(now)
}

// bind records the cluster and epoch confirmed by the coordinator, before
// anything is sent in reply, and rolls back work left open by an earlier
// incarnation: its coordinator died undecided, so the new one presumes
// abort.
func (p *Participant) bind(now Instant, id Header, peers []string) {
	p.epochLSN = p.emit(PartEpochSeen{Cluster: id.Cluster, Epoch: id.Epoch, Participants: peers})
	for _, tidx := range p.sortedTxIDs() {
		if tx := p.txs[tidx]; tx.phase == PartPhaseWorking && tx.epoch < id.Epoch {
			p.rollback(now, tx, "coordinator restarted")
		}
	}
}

// join starts moving this participant to the cluster its configured
// coordinator now belongs to, as when that coordinator lost its log. Work
// of the old cluster can never be decided by the new one: open work is
// rolled back, and the new cluster's messages wait until nothing of the
// old one is left (settleJoin). A transaction the old cluster left in
// doubt cannot be settled by anyone but its own coordinator, so while one
// exists the new cluster is refused, with a message saying why.
func (p *Participant) join(now Instant, id Header, peers []string) {
	if n := p.inDoubt(); n > 0 {
		p.refuse(id, n)
		return
	}
	p.joining, p.joiningPeers = &id, peers
	for _, tidx := range p.sortedTxIDs() {
		if tx := p.txs[tidx]; tx.phase == PartPhaseWorking {
			p.rollback(now, tx, "the coordinator now belongs to cluster "+id.Cluster)
		}
	}
}

// settleJoin finishes a join once the old cluster's transactions have all
// ended here, or gives it up if one of them ended up prepared.
func (p *Participant) settleJoin(now Instant) {
	id := *p.joining
	if n := p.inDoubt(); n > 0 {
		p.joining = nil
		p.refuse(id, n)
		return
	}
	if len(p.txs) > 0 || len(p.deleting) > 0 || len(p.settles) > 0 {
		return
	}
	p.joining = nil
	p.bind(now, id, p.joiningPeers)
	p.releaseHeld(now)
}

// inDoubt counts the old cluster's transactions that tie this participant
// to it: branches prepared and waiting for their outcome, and, as a
// decider, outcomes that branches elsewhere may still ask about.
func (p *Participant) inDoubt() int {
	n := 0
	for _, tx := range p.txs {
		if tx.phase == PartPhasePrepared {
			n++
		}
	}
	for _, k := range p.kept {
		if !k.tombstone {
			n++
		}
	}
	return n
}

// refuse turns away the held work of cluster id: its statements fail and
// its prepare requests get a no vote, each carrying the reason, so that the
// new cluster's clients learn why; the operator hears of it too.
func (p *Participant) refuse(id Header, inDoubt int) {
	reason := fmt.Sprintf("this participant belongs to cluster %s and holds %d undecided or deciding transaction(s) of it that only that cluster can settle; it takes no work from cluster %s until they are resolved (see tpcd replay)",
		p.cluster, inDoubt, id.Cluster)
	p.warn("%s", reason)
	for _, m := range p.held {
		switch m := m.(type) {
		case ExecRequest:
			if m.Header == id {
				p.answerExec(m.Direct, ExecResult{Cluster: id.Cluster, From: p.cfg.Node, TxID: m.TxID, Stmt: m.Stmt, Err: reason})
			}
		case PrepareRequest:
			if m.Header == id {
				p.send(VoteMessage{Cluster: id.Cluster, From: p.cfg.Node, TxID: m.TxID, Vote: VoteNo, Reason: reason}, 0)
			}
		case CommitBranchRequest:
			if m.Header == id {
				p.send(VoteMessage{Cluster: id.Cluster, From: p.cfg.Node, TxID: m.TxID, Vote: VoteNo, Reason: reason}, 0)
			}
		}
	}
	p.held, p.heldBytes = nil, 0
}

// releaseHeld runs the held messages of the confirmed cluster and epoch and
// drops the others, which named an identity the coordinator did not
// confirm. Those of a cluster being joined wait on.
func (p *Participant) releaseHeld(now Instant) {
	held := p.held
	p.held, p.heldBytes = nil, 0
	for _, m := range held {
		h := headerOf(m)
		switch {
		case p.joining != nil && h == *p.joining:
			p.hold(m)
		case h.Cluster == p.cluster && h.Epoch == p.epoch:
			p.receive(now, m)
		default:
			p.refuseDirect(m, fmt.Sprintf("the coordinator did not confirm cluster %s epoch %d, which the statement names", h.Cluster, h.Epoch))
		}
	}
}

// refuseDirect answers a statement a client sent directly with why it did
// not run: the client asks once and waits for the answer. Any other
// message is dropped without a word, as a lost one (its sender resends).
func (p *Participant) refuseDirect(m Message, why string) {
	if e, ok := m.(ExecRequest); ok && e.Direct {
		p.answerExec(true, ExecResult{Cluster: e.Cluster, From: p.cfg.Node, TxID: e.TxID, Stmt: e.Stmt, Err: why})
	}
}

// statementDigest tells statements apart: a direct statement that only
// shares its number with the last one ran is not a copy of it.
func statementDigest(m ExecRequest) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d\x00%s\x00%v\x00%t", len(m.SQL), m.SQL, m.Args, m.Describe)
	if len(m.ParamTypes) > 0 {
		fmt.Fprintf(h, "\x00%v", m.ParamTypes)
	}
	return h.Sum64()
}

func headerOf(m Message) Header {
	switch m := m.(type) {
	case ExecRequest:
		return m.Header
	case PrepareRequest:
		return m.Header
	case DecisionRequest:
		return m.Header
	case CommitBranchRequest:
		return m.Header
	case ReconcileRequest:
		return m.Header
	}
	return Header{}
}

func (p *Participant) warn(format string, args ...any) {
	p.rd.Effects = append(p.rd.Effects, Warning{Detail: fmt.Sprintf(format, args...)})
}

func (p *Participant) receive(now Instant, m Message) {
	switch m := m.(type) {
	case ExecRequest:
		if p.admit(now, m, m.Header) {
			p.exec(now, m)
		}
	case PrepareRequest:
		if p.admit(now, m, m.Header) {
			p.prepare(now, m)
		}
	case DecisionRequest:
		if p.admit(now, m, m.Header) {
			p.decision(now, m)
		}
	case CommitBranchRequest:
		if p.admit(now, m, m.Header) {
			p.commitBranch(now, m)
		}
	case ReconcileRequest:
		if p.admit(now, m, m.Header) {
			p.reconcile(m)
		}
	case SettleRequest:
		// A question from a branch in doubt or from the coordinator. It
		// changes nothing a commit could not also have changed, so only
		// the cluster is checked; peers authenticate each other.
		switch {
		case m.Cluster == "" || p.joining != nil:
			// Joining: the new cluster's questions repeat until it is done.
		case m.Cluster == p.cluster:
			p.settleRequested(now, m)
		default:
			// A cluster not confirmed here: the coordinator may have moved
			// on (its log replaced) while this participant was down. The
			// question is not held (it carries no epoch to fence on) but
			// repeats, and is answered once the coordinator confirms.
			p.ask(now)
		}
	case SettleAnswer:
		if m.Cluster == p.cluster && p.cluster != "" {
			p.settleAnswered(now, m)
		}
	case VoteMessage:
		// A peer's vote, this participant being the decider. Like a
		// settle question it is checked for the cluster only: peers
		// authenticate each other, and a vote commits nothing without the
		// coordinator's request naming its voter.
		if m.Cluster == p.cluster && p.cluster != "" {
			p.peerVoted(now, m)
		}
	}
}

// peerVoted records a yes (or read-only) vote sent to this participant as
// the decider, and commits the branch if it was the last one missing.
func (p *Participant) peerVoted(now Instant, m VoteMessage) {
	if m.From < 0 || len(p.peers) > 0 && int(m.From) >= len(p.peers) || m.From == p.cfg.Node || (m.Vote != VoteYes && m.Vote != VoteReadOnly) {
		return
	}
	v := VoterResult{Node: m.From, Vote: m.Vote, Stmt: m.Stmt, Result: m.Result}
	tx := p.txs[m.TxID]
	if tx == nil {
		_, finished := p.finishedIdx[m.TxID]
		if finished || p.kept[m.TxID] != nil || p.settles[m.TxID] != nil || len(p.earlyVotes) >= maxHeld {
			return
		}
		p.earlyVotes[m.TxID] = append(p.earlyVotes[m.TxID], earlyVote{vote: v, epoch: m.TxEpoch, at: now})
		return
	}
	if tx.epoch != m.TxEpoch {
		return
	}
	tx.addVote(v)
	p.tryCommitBranch(now, tx)
}

// addVote records a voter's vote on an open branch, once per voter.
func (tx *partTx) addVote(v VoterResult) {
	if tx.phase != PartPhaseWorking || slices.ContainsFunc(tx.votes, func(o VoterResult) bool { return o.Node == v.Node }) {
		return
	}
	tx.votes = append(tx.votes, v)
}

// votesIn reports whether every voter the decider branch waits for voted.
func (tx *partTx) votesIn() bool {
	for _, n := range tx.voters {
		if !slices.ContainsFunc(tx.votes, func(v VoterResult) bool { return v.Node == n }) {
			return false
		}
	}
	return true
}

func (p *Participant) execResult(tx TxID, stmt int, err string) ExecResult {
	return ExecResult{Cluster: p.cluster, From: p.cfg.Node, TxID: tx, Stmt: stmt, Err: err}
}

// answerExec sends a statement's result to whoever sent the statement: the
// client itself for a direct one, else the coordinator.
func (p *Participant) answerExec(direct bool, r ExecResult) {
	if direct {
		p.sendTo(ClientNode, r, 0)
		return
	}
	p.send(r, 0)
}

func (p *Participant) exec(now Instant, m ExecRequest) {
	if m.Direct && m.Then != ThenNothing {
		p.answerExec(true, p.execResult(m.TxID, m.Stmt, "a statement sent to a participant directly cannot prepare or commit its branch; ask the coordinator to commit"))
		return
	}
	tx := p.txs[m.TxID]
	if tx == nil {
		switch {
		case p.finishedIdx[m.TxID] == OutcomeAbort:
			p.answerExec(m.Direct, p.execResult(m.TxID, m.Stmt, "transaction was rolled back here"))
			return
		case p.finishedIdx[m.TxID] == OutcomeCommit || p.kept[m.TxID] != nil || p.settles[m.TxID] != nil:
			// A late duplicate: running it would redo committed work (or
			// reopen a branch its decider settled).
			p.answerExec(m.Direct, p.execResult(m.TxID, m.Stmt, "transaction already finished here"))
			return
		case m.Stmt != 0:
			p.answerExec(m.Direct, p.execResult(m.TxID, m.Stmt, fmt.Sprintf("statement %d arrived but earlier work is gone (rolled back or lost in a restart)", m.Stmt)))
			return
		}
		tx = &partTx{id: m.TxID, epoch: m.Epoch, gid: GID{Cluster: p.cluster, Epoch: m.Epoch, Tx: m.TxID, Node: p.cfg.Node}.String(), phase: PartPhaseWorking, decider: CoordinatorNode}
		p.txs[m.TxID] = tx
		for _, e := range p.earlyVotes[m.TxID] {
			if e.epoch == tx.epoch {
				tx.addVote(e.vote)
			}
		}
		delete(p.earlyVotes, m.TxID)
	}
	// A copy of the last statement is answered with its result again; a
	// statement that only shares its number (one direct, the other sent
	// through the coordinator) is not that statement.
	again := tx.last != nil && tx.last.Stmt == m.Stmt && tx.direct == m.Direct && (!m.Direct || tx.lastDigest == statementDigest(m))
	if tx.phase != PartPhaseWorking {
		if again {
			p.answerExec(m.Direct, *tx.last)
		} else if m.Direct {
			// The client waits for an answer; the coordinator would
			// resend, but a client's call asks once.
			p.answerExec(true, p.execResult(tx.id, m.Stmt, "transaction takes no more statements here (it is being prepared, committed or rolled back)"))
		}
		return
	}
	tx.lastActivity = now
	switch {
	case m.Stmt < tx.nextStmt:
		if again {
			p.answerExec(m.Direct, *tx.last)
		} else if m.Direct {
			p.answerExec(true, p.execResult(tx.id, m.Stmt, fmt.Sprintf("statement %d already ran here", m.Stmt)))
		}
	case m.Stmt > tx.nextStmt:
		p.answerExec(m.Direct, p.execResult(tx.id, m.Stmt, fmt.Sprintf("statement %d arrived before statement %d", m.Stmt, tx.nextStmt)))
		p.rollback(now, tx, "statements lost")
	default:
		tx.nextStmt++
		tx.direct = m.Direct
		if m.Direct {
			tx.lastDigest = statementDigest(m)
		}
		d := Data{Op: DataExec, TxID: tx.id, GID: tx.gid, Stmt: m.Stmt, SQL: m.SQL, Args: m.Args, ParamTypes: m.ParamTypes, Describe: m.Describe}
		switch {
		case m.Then == ThenPrepare && (m.Decider == nil || *m.Decider != p.cfg.Node):
			if m.Decider != nil {
				tx.decider = *m.Decider
				tx.gid = p.branchGID(tx.id, tx.epoch, tx.decider)
			}
			tx.prepareWanted, tx.prepareStmts = true, tx.nextStmt
			tx.voteToDecider = m.VoteToDecider && m.Decider != nil
			tx.resultWithVote = tx.voteToDecider
			d.Then, d.GID = DataPrepare, tx.gid
		case m.Then == ThenCommit:
			tx.decider = p.cfg.Node
			tx.gid = p.branchGID(tx.id, tx.epoch, p.cfg.Node)
			tx.commitWanted, tx.commitStmts, tx.keys = true, tx.nextStmt, m.Keys
			d.Then, d.GID, d.Keys = DataCommitBranch, tx.gid, m.Keys
		}
		if d.Then != 0 {
			// The GID it prepares (or the marker it commits) names the
			// cluster: its binding must be durable first, or a restart
			// would not know the branch for its own.
			d.WaitLSN = p.epochLSN
		}
		tx.thenInFlight = d.Then != 0
		p.data(d, tx)
	}
}

func (p *Participant) vote(tx TxID, v Vote, reason string, wait LSN) {
	p.send(VoteMessage{Cluster: p.cluster, From: p.cfg.Node, TxID: tx, Vote: v, Reason: reason}, wait)
}

// voteYes votes yes (or read-only) for tx: to the coordinator, or, when
// asked to, to the decider, with the last statement's result if the vote
// rode that statement: the coordinator then hears of both from the
// decider.
func (p *Participant) voteYes(tx *partTx, v Vote, wait LSN) {
	switch {
	case !tx.voteToDecider || tx.resultWithVote && tx.last == nil:
		p.vote(tx.id, v, "", wait)
	case tx.resultWithVote:
		p.sendTo(tx.decider, VoteMessage{Cluster: p.cluster, From: p.cfg.Node, TxID: tx.id, Vote: v, TxEpoch: tx.epoch, Stmt: tx.last.Stmt, Result: tx.last.Result}, wait)
	default:
		p.sendTo(tx.decider, VoteMessage{Cluster: p.cluster, From: p.cfg.Node, TxID: tx.id, Vote: v, TxEpoch: tx.epoch}, wait)
	}
}

func (p *Participant) prepare(now Instant, m PrepareRequest) {
	tx := p.txs[m.TxID]
	if tx == nil {
		if p.finishedIdx[m.TxID] == OutcomeCommit && !p.committedHere[m.TxID] {
			// A copy of the request that found the branch read-only: say
			// so again. The first vote may have gone to the decider, and
			// a no now would abort a transaction that can commit.
			v := VoteMessage{Cluster: p.cluster, From: p.cfg.Node, TxID: m.TxID, Vote: VoteReadOnly}
			if m.VoteToDecider && m.Decider != nil {
				v.TxEpoch = m.Epoch
				p.sendTo(*m.Decider, v, 0)
				return
			}
			p.send(v, 0)
			return
		}
		p.vote(m.TxID, VoteNo, "no such transaction here (rolled back, or lost in a restart)", 0)
		return
	}
	switch tx.phase {
	case PartPhaseWorking:
		tx.lastActivity = now
		if m.Decider != nil {
			if *m.Decider == p.cfg.Node {
				return // the decider commits; it is never asked to prepare
			}
			tx.decider = *m.Decider
			tx.gid = p.branchGID(tx.id, tx.epoch, tx.decider)
			tx.voteToDecider = m.VoteToDecider
		}
		tx.prepareWanted, tx.prepareStmts = true, m.Stmts
		p.tryPrepare(now, tx)
	case PartPhasePrepared:
		if m.VoteToDecider && m.Decider != nil && *m.Decider == tx.decider {
			// (A branch recovered from the log no longer knows where its
			// vote went.)
			tx.voteToDecider = true
		}
		p.voteYes(tx, VoteYes, tx.preparedLSN)
	case PartPhaseRollingBack:
		tx.prepareWanted = true
	}
}

func (p *Participant) tryPrepare(now Instant, tx *partTx) {
	if !tx.prepareWanted || tx.pending > 0 || tx.phase != PartPhaseWorking {
		return
	}
	tx.prepareWanted = false
	if tx.nextStmt != tx.prepareStmts {
		tx.prepareWanted = true // answered when the rollback is done
		p.rollback(now, tx, fmt.Sprintf("ran %d statements, the commit counted %d", tx.nextStmt, tx.prepareStmts))
		return
	}
	tx.phase = PartPhasePreparing
	p.data(Data{Op: DataPrepare, TxID: tx.id, GID: tx.gid}, tx)
}

// branchGID names this participant's branch of a transaction decided by
// decider.
func (p *Participant) branchGID(id TxID, epoch Epoch, decider NodeID) string {
	return GID{Cluster: p.cluster, Epoch: epoch, Tx: id, Node: p.cfg.Node, HasDecider: true, Decider: decider}.String()
}

// commitBranch commits this participant's branch as the decider: its
// COMMIT, marker inside, decides the transaction. A branch this
// participant no longer has is settled instead, so that "no" is final
// before it is said.
func (p *Participant) commitBranch(now Instant, m CommitBranchRequest) {
	tx := p.txs[m.TxID]
	if tx == nil {
		if k := p.kept[m.TxID]; k != nil {
			p.answerBranch(m.TxID, !k.tombstone, "settled as aborted earlier", k.votes...)
			return
		}
		if o := p.finishedIdx[m.TxID]; o != 0 {
			p.answerBranch(m.TxID, o == OutcomeCommit, "rolled back here")
			return
		}
		p.settle(m.TxID, p.branchGID(m.TxID, m.Epoch, p.cfg.Node), CoordinatorNode)
		return
	}
	switch tx.phase {
	case PartPhaseWorking, PartPhaseRollingBack:
		tx.lastActivity = now
		tx.commitWanted, tx.commitStmts, tx.keys, tx.voters = true, m.Stmts, m.Keys, m.Voters
		p.tryCommitBranch(now, tx)
	}
	// Deciding: the answer follows. Any other phase: this branch is
	// prepared for another decider, and the request is nonsense.
}

func (p *Participant) tryCommitBranch(now Instant, tx *partTx) {
	if !tx.commitWanted || tx.pending > 0 || tx.phase != PartPhaseWorking {
		return
	}
	if tx.nextStmt == tx.commitStmts && !tx.votesIn() {
		return // a voter's yes is still missing: never commit without it
	}
	tx.commitWanted = false
	tx.decider = p.cfg.Node
	tx.gid = p.branchGID(tx.id, tx.epoch, p.cfg.Node)
	if tx.nextStmt != tx.commitStmts {
		tx.askers = appendAsker(tx.askers, CoordinatorNode)
		p.rollback(now, tx, fmt.Sprintf("ran %d statements, the commit counted %d", tx.nextStmt, tx.commitStmts))
		return
	}
	tx.phase = PartPhaseDeciding
	p.data(Data{Op: DataCommitBranch, TxID: tx.id, GID: tx.gid, Keys: tx.keys}, tx)
}

// reconcile answers a restarted coordinator with the commit markers this
// participant keeps for transactions of earlier incarnations, once none of
// their branches can still commit here: the coordinator's epoch is bound,
// so their requests are refused from now on, and the branches that were
// open then have been rolled back or have finished committing. A settle
// may still find a marker, so the answer waits for those too. Until then
// the question goes unanswered; the coordinator asks again.
func (p *Participant) reconcile(m ReconcileRequest) {
	for _, tx := range p.txs {
		if tx.epoch < m.Epoch && (tx.phase == PartPhaseWorking || tx.phase == PartPhaseDeciding) {
			return
		}
	}
	if len(p.settles) > 0 {
		return
	}
	a := ReconcileAnswer{Cluster: p.cluster, From: p.cfg.Node, Epoch: m.Epoch}
	for _, id := range slices.Sorted(maps.Keys(p.kept)) {
		k := p.kept[id]
		if g, ok := ParseGID(k.gid); ok && !k.tombstone && g.Epoch < m.Epoch {
			a.Markers = append(a.Markers, Marker{TxID: id, TxEpoch: g.Epoch, Keys: k.keys})
		}
	}
	p.send(a, p.epochLSN)
}

// answerBranch answers the coordinator's commit request for a branch
// whose outcome is known; a commit hands on the votes that came here.
func (p *Participant) answerBranch(id TxID, committed bool, reason string, votes ...VoterResult) {
	if committed {
		p.send(VoteMessage{Cluster: p.cluster, From: p.cfg.Node, TxID: id, Vote: VoteCommitted, Results: votes}, 0)
	} else {
		p.vote(id, VoteNo, reason, 0)
	}
}

func appendAsker(askers []NodeID, n NodeID) []NodeID {
	if slices.Contains(askers, n) {
		return askers
	}
	return append(askers, n)
}

// settleRequested answers a question about a transaction this participant
// decides. An open branch the coordinator has not asked to commit is
// given up on (rolled back, then settled) when the coordinator asks, or
// when a branch in doubt asked and DeciderPatience passed; a branch being
// committed answers when done.
func (p *Participant) settleRequested(now Instant, m SettleRequest) {
	if tx := p.txs[m.TxID]; tx != nil {
		switch tx.phase {
		case PartPhaseWorking, PartPhaseRollingBack, PartPhaseDeciding:
			if len(tx.askers) == 0 {
				tx.askedAt = now
			}
			tx.askers = appendAsker(tx.askers, m.From)
			if m.From == CoordinatorNode && tx.phase == PartPhaseWorking {
				p.rollback(now, tx, "the coordinator asked for its outcome before it committed")
			}
		}
		// A prepared branch here belongs to another decider.
		return
	}
	if k := p.kept[m.TxID]; k != nil {
		p.settleAnswer(m.TxID, []NodeID{m.From}, !k.tombstone, "")
		return
	}
	if o := p.finishedIdx[m.TxID]; o != 0 {
		// Ended here, its marker gone on the coordinator's word: only a
		// late copy of an old question gets here. What ended is known for
		// longer than any message can be late (the log's events of ended
		// transactions are compacted only after a while, see
		// docs/PROTOCOL.md), and a branch that rolled back cannot be
		// reopened meanwhile.
		p.settleAnswer(m.TxID, []NodeID{m.From}, o == OutcomeCommit, "")
		return
	}
	p.settle(m.TxID, p.branchGID(m.TxID, m.TxEpoch, p.cfg.Node), m.From)
}

// settle starts (or joins) a DataSettle of this participant's decider
// branch of id.
func (p *Participant) settle(id TxID, gid string, asker NodeID) {
	if s := p.settles[id]; s != nil {
		s.askers = appendAsker(s.askers, asker)
		return
	}
	p.settles[id] = &settling{markerOp: markerOp{gid: gid}, askers: []NodeID{asker}}
	p.rd.Effects = append(p.rd.Effects, Data{Op: DataSettle, TxID: id, GID: gid})
}

// settleAnswer tells each asker the decider's outcome: the coordinator as
// the answer to its commit request or question, a branch in doubt as the
// decision it waits for.
func (p *Participant) settleAnswer(id TxID, askers []NodeID, committed bool, reason string) {
	o := OutcomeAbort
	if committed {
		o = OutcomeCommit
		reason = ""
	}
	for _, a := range askers {
		m := SettleAnswer{Cluster: p.cluster, From: p.cfg.Node, TxID: id, Outcome: o, Reason: reason}
		if k := p.kept[id]; k != nil && committed && a == CoordinatorNode {
			m.Results = k.votes
		}
		p.sendTo(a, m, 0)
	}
}

// settled records what a DataSettle found and answers whoever asked.
func (p *Participant) settled(in DataDone) {
	s := p.settles[in.TxID]
	if s == nil {
		return
	}
	if in.Retry || in.Err != "" {
		s.retry, s.retryAt = true, p.backOff(in.Now, &s.backoff)
		return
	}
	delete(p.settles, in.TxID)
	p.keep(in.Now, in.TxID, s.gid, !in.Committed, in.Keys)
	switch {
	case in.Committed && p.finishedIdx[in.TxID] != OutcomeCommit:
		p.emit(PartCommitted{TxID: in.TxID, GID: s.gid})
	case !in.Committed && p.finishedIdx[in.TxID] == OutcomeCommit:
		p.violation(in.TxID, "the log says committed, but the decider's marker is missing: settled as aborted")
	case !in.Committed && p.finishedIdx[in.TxID] == 0:
		p.emit(PartAborted{TxID: in.TxID, GID: s.gid, Reason: "settled as aborted by the decider"})
	}
	p.settleAnswer(in.TxID, s.askers, in.Committed, s.reason)
}

// keep records a decider's marker or tombstone, which stays until the
// coordinator's word.
func (p *Participant) keep(now Instant, id TxID, gid string, tombstone bool, keys []string) {
	p.kept[id] = &keptMarker{gid: gid, tombstone: tombstone, keys: keys, nextInquiry: now.Add(p.cfg.InquireAfter), backoff: p.cfg.InquireAfter}
}

// inquireTombstones asks the coordinator about the tombstones whose
// question is due, in id order.
func (p *Participant) inquireTombstones(now Instant) {
	var due []TxID
	for id, k := range p.kept {
		if k.tombstone && now >= k.nextInquiry {
			due = append(due, id)
		}
	}
	slices.Sort(due)
	for _, id := range due {
		k := p.kept[id]
		g, _ := ParseGID(k.gid)
		p.send(InquireMessage{Cluster: p.cluster, From: p.cfg.Node, TxID: id, TxEpoch: g.Epoch}, 0)
		k.nextInquiry = p.backOff(now, &k.backoff)
	}
}

// settleAnswered applies a decider's answer to a branch in doubt here.
func (p *Participant) settleAnswered(now Instant, m SettleAnswer) {
	tx := p.txs[m.TxID]
	if tx == nil || tx.decider != m.From || tx.phase != PartPhasePrepared {
		return
	}
	p.decision(now, DecisionRequest{Header: Header{Cluster: p.cluster, Epoch: p.epoch}, TxID: m.TxID, TxEpoch: tx.epoch, Outcome: m.Outcome})
	if tx.phase == PartPhaseAborting {
		tx.reason = fmt.Sprintf("%s, the decider, settled it as aborted", m.From)
	}
}

// rollback abandons an unprepared transaction. One whose statement runs
// with its prepare is undone once that is over (a commit running with its
// statement cannot be stopped: its outcome is what it is).
func (p *Participant) rollback(now Instant, tx *partTx, reason string) {
	if tx.thenInFlight {
		tx.abortWanted, tx.reason = true, reason
		return
	}
	tx.phase = PartPhaseRollingBack
	tx.reason = reason
	p.data(Data{Op: DataRollback, TxID: tx.id, GID: tx.gid}, tx)
}

func (p *Participant) ack(id TxID, o Outcome) { p.sendAck(id, o, false) }

// sendAck acknowledges o; prompt marks an ack somebody waits for.
func (p *Participant) sendAck(id TxID, o Outcome, prompt bool) {
	p.send(AckMessage{Cluster: p.cluster, From: p.cfg.Node, TxID: id, Outcome: o, Prompt: prompt}, 0)
}

func (p *Participant) decision(now Instant, m DecisionRequest) {
	tx := p.txs[m.TxID]
	if tx == nil && p.kept[m.TxID] != nil {
		// The decider hears the outcome last: every other branch has it,
		// so its marker (or tombstone) may go, and the ack follows. A
		// presumed abort (the coordinator knows nothing of it) only lets a
		// tombstone go: a commit marker exists only for a transaction the
		// coordinator knows, and stays until it says so.
		k := p.kept[m.TxID]
		if m.Presumed && !k.tombstone {
			return
		}
		delete(p.kept, m.TxID)
		switch {
		case m.Outcome == OutcomeCommit && k.tombstone:
			p.violation(m.TxID, "coordinator decided commit, but this participant, its decider, settled it as aborted")
		case m.Outcome == OutcomeAbort && !m.Presumed && !k.tombstone:
			p.violation(m.TxID, "coordinator decided abort, but this participant, its decider, committed it")
		}
		// Not before what this participant logged of it is durable: a
		// marker gone with no record of the commit would read as aborted.
		p.deleteMarker(m.TxID, k.gid, p.lsn, m.Outcome)
		return
	}
	if tx == nil {
		switch {
		case p.deleting[m.TxID] != nil && p.deleting[m.TxID].ack != 0:
			return // the ack follows the marker's deletion
		case m.Outcome == OutcomeCommit && p.finishedIdx[m.TxID] == OutcomeAbort:
			p.violation(m.TxID, "coordinator decided commit, but this participant rolled the transaction back")
		case m.Outcome == OutcomeAbort && !m.Presumed && (p.deleting[m.TxID] != nil || p.committedHere[m.TxID]):
			// Committed here (a read-only vote, to which an abort may be
			// sent, is not in committedHere).
			p.violation(m.TxID, "coordinator decided abort, but this participant committed the transaction")
		}
		// Already finished and forgotten: acknowledge so the coordinator can
		// forget too.
		p.sendAck(m.TxID, m.Outcome, m.PromptAck)
		return
	}
	tx.ackWanted = true
	tx.promptAck = tx.promptAck || m.PromptAck
	switch {
	case m.Outcome == OutcomeCommit && tx.phase == PartPhasePrepared:
		tx.phase = PartPhaseCommitting
		p.data(Data{Op: DataCommitPrepared, TxID: tx.id, GID: tx.gid}, tx)
	case m.Outcome == OutcomeAbort && tx.phase == PartPhasePrepared:
		tx.phase = PartPhaseAborting
		tx.reason = "coordinator decided abort"
		p.data(Data{Op: DataRollbackPrepared, TxID: tx.id, GID: tx.gid}, tx)
	case m.Outcome == OutcomeAbort && tx.phase == PartPhaseWorking:
		tx.abortDecided = !m.Presumed
		p.rollback(now, tx, "coordinator decided abort")
	case m.Outcome == OutcomeAbort && tx.phase == PartPhasePreparing:
		tx.abortWanted = true
	case m.Outcome == OutcomeCommit && tx.phase == PartPhaseCommitting,
		m.Outcome == OutcomeAbort && (tx.phase == PartPhaseAborting || tx.phase == PartPhaseRollingBack):
		// Already being applied; the ack follows.
	case m.Outcome == OutcomeAbort && m.Presumed:
		// A stale presumed answer to an old question: this participant
		// knows better (it is committing).
	default:
		p.violation(tx.id, "coordinator decided %s while this participant is %s", m.Outcome, tx.phase)
	}
}

func (p *Participant) dataDone(in DataDone) {
	switch in.Op {
	case DataDeleteMarker:
		p.markerDeleted(in)
		return
	case DataSettle:
		p.settled(in)
		return
	}
	tx := p.txs[in.TxID]
	if tx == nil {
		return
	}
	tx.pending--
	if in.Retry && (in.Op == DataCommitPrepared || in.Op == DataRollbackPrepared) {
		tx.retryOp = in.Op
		tx.retryAt = p.backOff(in.Now, &tx.backoff)
		return
	}
	now := in.Now
	switch in.Op {
	case DataExec:
		r := p.execResult(tx.id, in.Stmt, in.Err)
		r.SQLErr = in.SQLErr
		if in.Err == "" {
			r.Result = in.Result
			tx.last = &r
		}
		if in.Then != DataPrepare || !tx.voteToDecider || in.Err != "" || in.ThenErr != "" {
			// (A branch that votes to its decider sends the result with
			// its vote.)
			p.answerExec(tx.direct, r)
		}
		tx.thenInFlight = false
		if in.Err != "" && tx.phase == PartPhaseWorking {
			p.rollback(now, tx, "statement failed: "+in.Err)
			return
		}
		switch {
		case in.Then == DataPrepare:
			tx.prepareWanted, tx.phase = false, PartPhasePreparing
			p.prepareDone(now, tx, in.ThenErr, in.ReadOnly, in.Xid)
			return
		case in.Then == DataCommitBranch:
			tx.commitWanted, tx.phase = false, PartPhaseDeciding
			p.branchDone(now, tx, in.ThenErr, in.Retry)
			return
		}
		p.tryPrepare(now, tx)
		p.tryCommitBranch(now, tx)
	case DataPrepare:
		p.prepareDone(now, tx, in.Err, in.ReadOnly, in.Xid)
	case DataRollback, DataRollbackPrepared:
		p.rolledBack(now, tx, in)
	case DataCommitBranch:
		p.branchDone(now, tx, in.Err, in.Retry)
	case DataCommitPrepared:
		if in.Err != "" {
			p.violation(tx.id, "commit of %s failed: %s", tx.gid, in.Err)
		}
		lsn := p.emit(PartCommitted{TxID: tx.id, GID: tx.gid})
		p.sendAck(tx.id, OutcomeCommit, tx.promptAck)
		if tx.xid == 0 {
			p.deleteMarker(tx.id, tx.gid, lsn, 0)
			return
		}
		// No marker to delete: the commit log keeps the outcome.
		p.rd.Effects = append(p.rd.Effects, Forget{TxID: tx.id, WaitLSN: lsn})
	}
}

// prepareDone ends a branch's PREPARE TRANSACTION: it votes.
func (p *Participant) prepareDone(now Instant, tx *partTx, err string, readOnly bool, xid uint64) {
	if err == "" && !readOnly && xid == 0 {
		// Without its id nothing could tell, once the GID is gone, whether
		// the branch committed (it has no marker): no vote.
		err = "prepared, but its transaction id was not reported"
	}
	switch {
	case err != "":
		// PREPARE may or may not have happened; rolling back the GID
		// settles it either way (a missing GID with no marker is fine).
		p.emit(PartVotedNo{TxID: tx.id, Reason: err})
		p.vote(tx.id, VoteNo, err, 0)
		tx.phase, tx.reason = PartPhaseAborting, "prepare failed: "+err
		p.data(Data{Op: DataRollbackPrepared, TxID: tx.id, GID: tx.gid}, tx)
	case readOnly:
		p.voteYes(tx, VoteReadOnly, 0)
		delete(p.txs, tx.id)
		p.remember(tx.id, OutcomeCommit)
	case tx.abortWanted:
		tx.phase = PartPhaseAborting
		if tx.reason == "" {
			tx.reason = "coordinator decided abort"
		}
		p.data(Data{Op: DataRollbackPrepared, TxID: tx.id, GID: tx.gid}, tx)
	default:
		tx.xid = xid
		lsn := p.emit(PartPrepared{TxID: tx.id, GID: tx.gid, Xid: xid})
		if !p.cfg.LazyPrepared {
			tx.preparedLSN = lsn
		}
		// The decision normally arrives well within InquireAfter; only
		// then does the participant start asking, at the same pace.
		tx.nextInquiry = now.Add(p.cfg.InquireAfter)
		tx.backoff = p.cfg.InquireAfter
		p.voteYes(tx, VoteYes, tx.preparedLSN)
	}
}

// rolledBack ends a rollback: the branch is over; whoever waits for it
// hears.
func (p *Participant) rolledBack(now Instant, tx *partTx, in DataDone) {
	// A failed rollback of an open transaction still leaves nothing
	// behind (its connection is gone); a failed ROLLBACK PREPARED means
	// the marker showed the transaction committed.
	if in.Err != "" && in.Op == DataRollbackPrepared {
		p.violation(tx.id, "rollback of %s failed: %s", tx.gid, in.Err)
	}
	if tx.pending > 0 {
		return // an earlier statement is still finishing; wait for it
	}
	reason := tx.reason
	p.emit(PartAborted{TxID: tx.id, GID: tx.gid, Reason: reason})
	if tx.prepareWanted {
		p.vote(tx.id, VoteNo, reason, 0)
	}
	if tx.ackWanted {
		p.ack(tx.id, OutcomeAbort)
	}
	if len(tx.askers) > 0 && tx.abortDecided {
		// The coordinator decided abort before asking this branch to
		// commit: it never will, so the abort is final as it is.
		p.settleAnswer(tx.id, tx.askers, false, reason)
	} else if len(tx.askers) > 0 || tx.commitWanted {
		// Asked about as a decider: rolled back is not yet final (a
		// duplicate could reopen the branch); the tombstone makes it
		// so, then the askers hear.
		if tx.commitWanted {
			tx.askers = appendAsker(tx.askers, CoordinatorNode)
		}
		p.settle(tx.id, p.branchGID(tx.id, tx.epoch, p.cfg.Node), tx.askers[0])
		for _, a := range tx.askers[1:] {
			p.settle(tx.id, "", a)
		}
		p.settles[tx.id].reason = reason
	}
}

// branchDone ends the decider's COMMIT of its branch: the decision.
func (p *Participant) branchDone(now Instant, tx *partTx, err string, retry bool) {
	if err != "" || retry {
		// The COMMIT may or may not have happened (the connection broke
		// during it): only the marker can tell, and settling reads it
		// or makes the abort final.
		delete(p.txs, tx.id)
		p.settle(tx.id, tx.gid, CoordinatorNode)
		for _, a := range tx.askers {
			p.settle(tx.id, "", a)
		}
		return
	}
	p.emit(PartCommitted{TxID: tx.id, GID: tx.gid})
	p.keep(now, tx.id, tx.gid, false, tx.keys)
	votes := slices.DeleteFunc(tx.votes, func(v VoterResult) bool { return !slices.Contains(tx.voters, v.Node) })
	p.kept[tx.id].votes = votes
	p.answerBranch(tx.id, true, "", votes...)
	p.settleAnswer(tx.id, slices.DeleteFunc(tx.askers, func(a NodeID) bool { return a == CoordinatorNode }), true, "")
}

// markerDeleted ends a marker's deletion: any failure is retried with
// backoff (the marker may still be there), else the transaction's events are
// no longer needed.
func (p *Participant) markerDeleted(in DataDone) {
	s := p.deleting[in.TxID]
	if s == nil {
		return
	}
	if in.Retry || in.Err != "" {
		s.retry, s.retryAt = true, p.backOff(in.Now, &s.backoff)
		return
	}
	delete(p.deleting, in.TxID)
	if s.ack != 0 {
		p.ack(in.TxID, s.ack)
	}
	p.rd.Effects = append(p.rd.Effects, Forget{TxID: in.TxID})
}

// tick reissues the marker deletions whose retry is due, then acts on the
// transactions whose time came, each in id order. Ticks come every few
// milliseconds and usually find nothing due, so only the due ones are
// sorted.
func (p *Participant) tick(now Instant) {
	if len(p.held) > 0 && p.joining == nil {
		p.ask(now) // the last question or its answer was lost
	}
	p.retryMarkerDeletions(now)
	p.retrySettles(now)
	p.inquireTombstones(now)
	for id, votes := range p.earlyVotes {
		if now >= votes[0].at.Add(p.cfg.IdleTimeout) {
			delete(p.earlyVotes, id)
		}
	}
	var ready []TxID
	for id, tx := range p.txs {
		if p.due(now, tx) {
			ready = append(ready, id)
		}
	}
	slices.Sort(ready)
	for _, id := range ready {
		tx := p.txs[id]
		if tx.retryOp != 0 && now >= tx.retryAt {
			op := tx.retryOp
			tx.retryOp = 0
			p.data(Data{Op: op, TxID: tx.id, GID: tx.gid}, tx)
			continue
		}
		switch tx.phase {
		case PartPhaseWorking:
			switch {
			case tx.pending == 0 && now >= tx.lastActivity.Add(p.cfg.IdleTimeout):
				p.rollback(now, tx, fmt.Sprintf("no word from the coordinator for %s", p.cfg.IdleTimeout))
			case p.outOfPatience(now, tx):
				p.rollback(now, tx, fmt.Sprintf("a branch in doubt asked about it as the decider, and no commit request came within %s", p.cfg.DeciderPatience))
			}
		case PartPhasePrepared:
			if now >= tx.nextInquiry {
				if tx.decider != CoordinatorNode {
					// The decider's database holds the outcome; it answers
					// while the coordinator is down too.
					p.sendTo(tx.decider, SettleRequest{Cluster: p.cluster, From: p.cfg.Node, TxID: tx.id, TxEpoch: tx.epoch}, 0)
				} else {
					p.send(InquireMessage{Cluster: p.cluster, From: p.cfg.Node, TxID: tx.id, TxEpoch: tx.epoch}, 0)
				}
				tx.nextInquiry = p.backOff(now, &tx.backoff)
			}
		}
	}
}

// backOff returns when to try again from now, and doubles *backoff (from
// RetryMin, up to RetryMax) for the time after.
func (p *Participant) backOff(now Instant, backoff *time.Duration) Instant {
	return backOff(now, backoff, p.cfg.RetryMin, p.cfg.RetryMax)
}

// due reports whether tick has something to do for tx: the cases of its
// loop.
func (p *Participant) due(now Instant, tx *partTx) bool {
	return tx.retryOp != 0 && now >= tx.retryAt ||
		tx.phase == PartPhaseWorking && tx.pending == 0 && now >= tx.lastActivity.Add(p.cfg.IdleTimeout) ||
		tx.phase == PartPhaseWorking && p.outOfPatience(now, tx) ||
		tx.phase == PartPhasePrepared && now >= tx.nextInquiry
}

// outOfPatience reports whether an open branch asked about as the decider
// has waited long enough for the coordinator's commit request.
func (p *Participant) outOfPatience(now Instant, tx *partTx) bool {
	return len(tx.askers) > 0 && (!tx.commitWanted || !tx.votesIn()) && now >= tx.askedAt.Add(p.cfg.DeciderPatience)
}

// retrySettles reissues the settles whose retry is due, in id order.
func (p *Participant) retrySettles(now Instant) { reissue(p, now, p.settles, DataSettle) }

// retryMarkerDeletions reissues the marker deletions whose retry is due, in
// id order.
func (p *Participant) retryMarkerDeletions(now Instant) {
	reissue(p, now, p.deleting, DataDeleteMarker)
}

// markerOp is a data operation on a marker, which may fail for want of the
// data database and wait to be tried again.
type markerOp struct {
	gid     string
	retry   bool
	retryAt Instant
	backoff time.Duration
}

func (r *markerOp) op() *markerOp { return r }

// reissue emits op again for the entries of m whose retry is due, in id
// order.
func reissue[T interface{ op() *markerOp }](p *Participant, now Instant, m map[TxID]T, op DataOp) {
	var ready []TxID
	for id, e := range m {
		if r := e.op(); r.retry && now >= r.retryAt {
			ready = append(ready, id)
		}
	}
	slices.Sort(ready)
	for _, id := range ready {
		r := m[id].op()
		r.retry = false
		p.rd.Effects = append(p.rd.Effects, Data{Op: op, TxID: id, GID: r.gid})
	}
}

// MarkerDeletions counts the committed transactions whose markers are still
// being deleted; they are no longer in Transactions.
func (p *Participant) MarkerDeletions() int { return len(p.deleting) }

// PartTxSummary is one transaction as a participant sees it.
type PartTxSummary struct {
	TxID   TxID
	GID    string
	Phase  PartPhase
	Reason string
}

// Held lists the coordinator messages waiting for the coordinator to
// confirm who it is.
func (p *Participant) Held() []Message { return slices.Clone(p.held) }

// Transactions lists the transactions in memory, sorted by id.
func (p *Participant) Transactions() []PartTxSummary {
	var out []PartTxSummary
	for _, id := range p.sortedTxIDs() {
		tx := p.txs[id]
		out = append(out, PartTxSummary{TxID: id, GID: tx.gid, Phase: tx.phase, Reason: tx.reason})
	}
	return out
}

// BranchXids lists the transaction ids of the branches the folded log shows
// prepared, sorted: a driver reads their status in PostgreSQL's commit log
// before the start step (Start.CommittedXids) for the ones no longer
// prepared.
func (p *Participant) BranchXids() []uint64 {
	var xs []uint64
	for _, tx := range p.txs {
		if tx.phase == PartPhasePrepared && tx.xid != 0 {
			xs = append(xs, tx.xid)
		}
	}
	slices.Sort(xs)
	return xs
}
