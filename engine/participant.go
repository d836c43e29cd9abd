package engine

import (
	"fmt"
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
	LazyPrepared bool
	// RememberAborted is how many finished (rolled-back, committed or
	// read-only) transaction ids stay known so late messages cannot revive
	// them.
	RememberAborted int
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
)

var partPhaseNames = [...]string{"", "working", "preparing", "prepared", "committing", "aborting", "rolling-back"}

func (p PartPhase) String() string {
	if int(p) < len(partPhaseNames) && p != 0 {
		return partPhaseNames[p]
	}
	return "phase(?)"
}

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
	joining *Header

	lsn LSN
	rd  Ready
}

type partTx struct {
	id    TxID
	epoch Epoch
	gid   string
	phase PartPhase

	nextStmt     int
	last         *ExecResult // result of statement nextStmt-1, resent on duplicates
	pending      int         // data operations issued and not yet done
	lastActivity Instant

	prepareWanted bool
	prepareStmts  int
	// abortWanted is an abort decision that arrived while preparing.
	abortWanted bool
	// ackWanted: the coordinator asked for the outcome; ack once applied.
	ackWanted bool
	reason    string

	preparedLSN LSN
	nextInquiry Instant
	backoff     time.Duration

	retryOp DataOp
	retryAt Instant
}

// markerDeletion is the deletion of one committed transaction's marker.
type markerDeletion struct {
	gid     string
	retry   bool
	retryAt Instant
	backoff time.Duration
}

// NewParticipant returns a participant with an empty state; fold its log in
// with Apply before the Start step.
func NewParticipant(cfg ParticipantConfig) *Participant {
	cfg.fill()
	return &Participant{cfg: cfg, txs: map[TxID]*partTx{}, finishedIdx: map[TxID]Outcome{}, deleting: map[TxID]*markerDeletion{}}
}

// Cluster is the cluster this participant serves, "" before it heard of one.
func (p *Participant) Cluster() string { return p.cluster }

// Epoch is the newest coordinator incarnation seen.
func (p *Participant) Epoch() Epoch { return p.epoch }

// Violations counts atomicity violations recorded in the log.
func (p *Participant) Violations() int { return p.violations }

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
			p.finished, p.finishedIdx = nil, map[TxID]Outcome{}
		}
		p.cluster, p.epoch = e.Cluster, e.Epoch
	case PartPrepared:
		g, ok := ParseGID(e.GID)
		if !ok {
			return fmt.Errorf("engine: tx %d: malformed gid %q", e.TxID, e.GID)
		}
		tx := p.txs[e.TxID]
		if tx == nil {
			tx = &partTx{id: e.TxID, epoch: g.Epoch, gid: e.GID}
			p.txs[e.TxID] = tx
		}
		tx.phase = PartPhasePrepared
	case PartCommitted, PartForgotten:
		// Committed is final: what is left, deleting the marker, needs no
		// record. After a crash the marker itself says whether it is still
		// there. Logs of earlier versions also hold a PartForgotten after the
		// PartCommitted; it changes nothing.
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
		p.finished = p.finished[1:]
	}
}

func (p *Participant) emit(e Event) LSN {
	if err := p.Apply(e); err != nil {
		panic(fmt.Sprintf("engine: emitted event does not apply: %v", err))
	}
	if len(p.rd.Events) == 0 {
		p.rd.FirstLSN = p.lsn + 1
	}
	p.rd.Events = append(p.rd.Events, e)
	p.lsn++
	return p.lsn
}

func (p *Participant) send(m Message, wait LSN) {
	p.rd.Effects = append(p.rd.Effects, Send{To: CoordinatorNode, Msg: m, WaitLSN: max(wait, p.epochLSN)})
}

func (p *Participant) data(d Data, tx *partTx) {
	tx.pending++
	p.rd.Effects = append(p.rd.Effects, d)
}

// deleteMarker starts deleting a committed transaction's marker once lsn is
// durable; the Forget effect follows when it is gone.
func (p *Participant) deleteMarker(id TxID, gid string, lsn LSN) {
	p.deleting[id] = &markerDeletion{gid: gid}
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
	rd := p.rd
	p.rd = Ready{}
	return rd
}

// start reconciles the log with the data database after a restart. The
// marker row, written inside the data transaction before PREPARE, decides
// what happened to a transaction that is no longer prepared: present means
// committed, absent means rolled back. Nothing is guessed.
func (p *Participant) start(in Start) {
	if p.started {
		return
	}
	p.started = true
	prepared := p.ours(in.PreparedGIDs)
	markers := p.ours(in.Markers)
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
				p.deleteMarker(id, tx.gid, p.emit(PartCommitted{TxID: id, GID: tx.gid}))
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
		lsn := p.emit(PartPrepared{TxID: id, GID: gid})
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
			p.deleteMarker(id, gid, 0)
			continue
		}
		p.deleteMarker(id, gid, p.emit(PartCommitted{TxID: id, GID: gid}))
	}
	// Confirm at once who the configured coordinator is, so that its
	// first message does not wait for the question.
	p.ask(in.Now)
	// The transactions that ended before the crash may still have events
	// that the last incarnation did not live to compact; they go once the
	// events logged above are durable.
	for _, id := range p.finished {
		if _, ok := prepared[id]; !ok && p.txs[id] == nil && p.deleting[id] == nil {
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
		return false
	case p.joining != nil && h == *p.joining:
		p.hold(m)
		return false
	case p.joining != nil:
		// Leaving: the configured coordinator is already the new
		// cluster's; nothing of the old one starts here any more.
		return false
	case h.Cluster == p.cluster && h.Epoch == p.epoch:
		return true
	case h.Cluster == p.cluster && h.Epoch < p.epoch:
		return false
	}
	p.hold(m)
	p.ask(now)
	return false
}

func (p *Participant) hold(m Message) {
	size := messageSize(m)
	if len(p.held) >= maxHeld || p.heldBytes+size > maxHeldBytes {
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
		p.bind(now, id)
	case id.Cluster == p.cluster && id.Epoch < p.epoch:
		p.warn("the coordinator says it is epoch %d of cluster %s, older than epoch %d seen here: its log went back in time (restored from a backup?); its messages are refused", id.Epoch, id.Cluster, p.epoch)
	case id.Cluster != p.cluster:
		p.join(now, id)
	}
	p.releaseHeld(now)
}

// bind records the cluster and epoch confirmed by the coordinator, before
// anything is sent in reply, and rolls back work left open by an earlier
// incarnation: its coordinator died undecided, so the new one presumes
// abort.
func (p *Participant) bind(now Instant, id Header) {
	p.epochLSN = p.emit(PartEpochSeen{Cluster: id.Cluster, Epoch: id.Epoch})
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
func (p *Participant) join(now Instant, id Header) {
	if n := p.inDoubt(); n > 0 {
		p.refuse(id, n)
		return
	}
	p.joining = &id
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
	if len(p.txs) > 0 || len(p.deleting) > 0 {
		return
	}
	p.joining = nil
	p.bind(now, id)
	p.releaseHeld(now)
}

func (p *Participant) inDoubt() int {
	n := 0
	for _, tx := range p.txs {
		if tx.phase == PartPhasePrepared {
			n++
		}
	}
	return n
}

// refuse turns away the held work of cluster id: its statements fail and
// its prepare requests get a no vote, each carrying the reason, so that the
// new cluster's clients learn why; the operator hears of it too.
func (p *Participant) refuse(id Header, inDoubt int) {
	reason := fmt.Sprintf("this participant belongs to cluster %s and holds %d prepared transaction(s) of it that only that cluster's coordinator can decide; it takes no work from cluster %s until they are resolved (see tpcd replay)",
		p.cluster, inDoubt, id.Cluster)
	p.warn("%s", reason)
	for _, m := range p.held {
		switch m := m.(type) {
		case ExecRequest:
			if m.Header == id {
				p.send(ExecResult{Cluster: id.Cluster, From: p.cfg.Node, TxID: m.TxID, Stmt: m.Stmt, Err: reason}, 0)
			}
		case PrepareRequest:
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
		}
	}
}

func headerOf(m Message) Header {
	switch m := m.(type) {
	case ExecRequest:
		return m.Header
	case PrepareRequest:
		return m.Header
	case DecisionRequest:
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
	}
}

func (p *Participant) execResult(tx TxID, stmt int, err string) ExecResult {
	return ExecResult{Cluster: p.cluster, From: p.cfg.Node, TxID: tx, Stmt: stmt, Err: err}
}

func (p *Participant) exec(now Instant, m ExecRequest) {
	tx := p.txs[m.TxID]
	if tx == nil {
		switch {
		case p.finishedIdx[m.TxID] == OutcomeAbort:
			p.send(p.execResult(m.TxID, m.Stmt, "transaction was rolled back here"), 0)
			return
		case p.finishedIdx[m.TxID] == OutcomeCommit:
			// A late duplicate: running it would redo committed work.
			p.send(p.execResult(m.TxID, m.Stmt, "transaction already finished here"), 0)
			return
		case m.Stmt != 0:
			p.send(p.execResult(m.TxID, m.Stmt, fmt.Sprintf("statement %d arrived but earlier work is gone (rolled back or lost in a restart)", m.Stmt)), 0)
			return
		}
		tx = &partTx{id: m.TxID, epoch: m.Epoch, gid: GID{Cluster: p.cluster, Epoch: m.Epoch, Tx: m.TxID, Node: p.cfg.Node}.String(), phase: PartPhaseWorking}
		p.txs[m.TxID] = tx
	}
	if tx.phase != PartPhaseWorking {
		if tx.last != nil && tx.last.Stmt == m.Stmt {
			p.send(*tx.last, 0)
		}
		return
	}
	tx.lastActivity = now
	switch {
	case m.Stmt < tx.nextStmt:
		if tx.last != nil && tx.last.Stmt == m.Stmt {
			p.send(*tx.last, 0)
		}
	case m.Stmt > tx.nextStmt:
		p.send(p.execResult(tx.id, m.Stmt, fmt.Sprintf("statement %d arrived before statement %d", m.Stmt, tx.nextStmt)), 0)
		p.rollback(now, tx, "statements lost")
	default:
		tx.nextStmt++
		p.data(Data{Op: DataExec, TxID: tx.id, GID: tx.gid, Stmt: m.Stmt, SQL: m.SQL, Args: m.Args}, tx)
	}
}

func (p *Participant) vote(tx TxID, v Vote, reason string, wait LSN) {
	p.send(VoteMessage{Cluster: p.cluster, From: p.cfg.Node, TxID: tx, Vote: v, Reason: reason}, wait)
}

func (p *Participant) prepare(now Instant, m PrepareRequest) {
	tx := p.txs[m.TxID]
	if tx == nil {
		p.vote(m.TxID, VoteNo, "no such transaction here (rolled back, or lost in a restart)", 0)
		return
	}
	switch tx.phase {
	case PartPhaseWorking:
		tx.lastActivity = now
		tx.prepareWanted, tx.prepareStmts = true, m.Stmts
		p.tryPrepare(now, tx)
	case PartPhasePrepared:
		p.vote(tx.id, VoteYes, "", tx.preparedLSN)
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
		p.rollback(now, tx, fmt.Sprintf("ran %d statements, coordinator counted %d", tx.nextStmt, tx.prepareStmts))
		return
	}
	tx.phase = PartPhasePreparing
	p.data(Data{Op: DataPrepare, TxID: tx.id, GID: tx.gid}, tx)
}

// rollback abandons an unprepared transaction.
func (p *Participant) rollback(now Instant, tx *partTx, reason string) {
	tx.phase = PartPhaseRollingBack
	tx.reason = reason
	p.data(Data{Op: DataRollback, TxID: tx.id, GID: tx.gid}, tx)
}

func (p *Participant) ack(id TxID, o Outcome) {
	p.send(AckMessage{Cluster: p.cluster, From: p.cfg.Node, TxID: id, Outcome: o}, 0)
}

func (p *Participant) decision(now Instant, m DecisionRequest) {
	tx := p.txs[m.TxID]
	if tx == nil {
		switch {
		case m.Outcome == OutcomeCommit && p.finishedIdx[m.TxID] == OutcomeAbort:
			p.violation(m.TxID, "coordinator decided commit, but this participant rolled the transaction back")
		case m.Outcome == OutcomeAbort && !m.Presumed && p.deleting[m.TxID] != nil:
			// Committed here, its marker still being deleted. (Once it is
			// gone only the id is remembered, as for a read-only vote, to
			// which an abort may be sent.)
			p.violation(m.TxID, "coordinator decided abort, but this participant committed the transaction")
		}
		// Already finished and forgotten: acknowledge so the coordinator can
		// forget too.
		p.ack(m.TxID, m.Outcome)
		return
	}
	tx.ackWanted = true
	switch {
	case m.Outcome == OutcomeCommit && tx.phase == PartPhasePrepared:
		tx.phase = PartPhaseCommitting
		p.data(Data{Op: DataCommitPrepared, TxID: tx.id, GID: tx.gid}, tx)
	case m.Outcome == OutcomeAbort && tx.phase == PartPhasePrepared:
		tx.phase = PartPhaseAborting
		tx.reason = "coordinator decided abort"
		p.data(Data{Op: DataRollbackPrepared, TxID: tx.id, GID: tx.gid}, tx)
	case m.Outcome == OutcomeAbort && tx.phase == PartPhaseWorking:
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
	if in.Op == DataDeleteMarker {
		p.markerDeleted(in)
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
		if in.Err == "" {
			r.Result = in.Result
			tx.last = &r
		}
		p.send(r, 0)
		if in.Err != "" && tx.phase == PartPhaseWorking {
			p.rollback(now, tx, "statement failed: "+in.Err)
			return
		}
		p.tryPrepare(now, tx)
	case DataPrepare:
		switch {
		case in.Err != "":
			// PREPARE may or may not have happened; rolling back the GID
			// settles it either way (a missing GID with no marker is fine).
			p.emit(PartVotedNo{TxID: tx.id, Reason: in.Err})
			p.vote(tx.id, VoteNo, in.Err, 0)
			tx.phase, tx.reason = PartPhaseAborting, "prepare failed: "+in.Err
			p.data(Data{Op: DataRollbackPrepared, TxID: tx.id, GID: tx.gid}, tx)
		case in.ReadOnly:
			p.vote(tx.id, VoteReadOnly, "", 0)
			delete(p.txs, tx.id)
			p.remember(tx.id, OutcomeCommit)
		case tx.abortWanted:
			tx.phase, tx.reason = PartPhaseAborting, "coordinator decided abort"
			p.data(Data{Op: DataRollbackPrepared, TxID: tx.id, GID: tx.gid}, tx)
		default:
			lsn := p.emit(PartPrepared{TxID: tx.id, GID: tx.gid})
			if !p.cfg.LazyPrepared {
				tx.preparedLSN = lsn
			}
			// The decision normally arrives well within InquireAfter; only
			// then does the participant start asking, at the same pace.
			tx.nextInquiry = now.Add(p.cfg.InquireAfter)
			tx.backoff = p.cfg.InquireAfter
			p.vote(tx.id, VoteYes, "", tx.preparedLSN)
		}
	case DataRollback, DataRollbackPrepared:
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
	case DataCommitPrepared:
		if in.Err != "" {
			p.violation(tx.id, "commit of %s failed: %s", tx.gid, in.Err)
		}
		lsn := p.emit(PartCommitted{TxID: tx.id, GID: tx.gid})
		p.ack(tx.id, OutcomeCommit)
		p.deleteMarker(tx.id, tx.gid, lsn)
	}
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
			if tx.pending == 0 && now >= tx.lastActivity.Add(p.cfg.IdleTimeout) {
				p.rollback(now, tx, fmt.Sprintf("no word from the coordinator for %s", p.cfg.IdleTimeout))
			}
		case PartPhasePrepared:
			if now >= tx.nextInquiry {
				p.send(InquireMessage{Cluster: p.cluster, From: p.cfg.Node, TxID: tx.id, TxEpoch: tx.epoch}, 0)
				tx.nextInquiry = p.backOff(now, &tx.backoff)
			}
		}
	}
}

// backOff returns when to try again from now, and doubles *backoff (from
// RetryMin, up to RetryMax) for the time after.
func (p *Participant) backOff(now Instant, backoff *time.Duration) Instant {
	if *backoff == 0 {
		*backoff = p.cfg.RetryMin
	}
	at := now.Add(*backoff)
	*backoff = min(2**backoff, p.cfg.RetryMax)
	return at
}

// due reports whether tick has something to do for tx: the cases of its
// loop.
func (p *Participant) due(now Instant, tx *partTx) bool {
	return tx.retryOp != 0 && now >= tx.retryAt ||
		tx.phase == PartPhaseWorking && tx.pending == 0 && now >= tx.lastActivity.Add(p.cfg.IdleTimeout) ||
		tx.phase == PartPhasePrepared && now >= tx.nextInquiry
}

// retryMarkerDeletions reissues the marker deletions whose retry is due, in
// id order.
func (p *Participant) retryMarkerDeletions(now Instant) {
	var ready []TxID
	for id, s := range p.deleting {
		if s.retry && now >= s.retryAt {
			ready = append(ready, id)
		}
	}
	slices.Sort(ready)
	for _, id := range ready {
		s := p.deleting[id]
		s.retry = false
		p.rd.Effects = append(p.rd.Effects, Data{Op: DataDeleteMarker, TxID: id, GID: s.gid})
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

// Transactions lists the transactions in memory, sorted by id.
func (p *Participant) Transactions() []PartTxSummary {
	var out []PartTxSummary
	for _, id := range p.sortedTxIDs() {
		tx := p.txs[id]
		out = append(out, PartTxSummary{TxID: id, GID: tx.gid, Phase: tx.phase, Reason: tx.reason})
	}
	return out
}
