package enginetest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/tpcd/tpcd/engine"
)

// SimConfig shapes one randomized run.
type SimConfig struct {
	// Participants is the number of participants (default 3).
	Participants int
	// Steps is the number of random actions before the quiet period.
	Steps int
	// ForgeVotes breaks the protocol on purpose; see Config.ForgeVotes.
	ForgeVotes bool
	// Protocol is the coordinator's; 0 draws one per run.
	Protocol engine.Protocol
	// RememberEnded, if positive, is how many ended transactions the
	// coordinator keeps in memory, so that keys are soon looked up in
	// its store; 0 draws it now and then.
	RememberEnded int
	// ForgeEarlyAbort breaks the decider rule on purpose; see
	// Config.ForgeEarlyAbort.
	ForgeEarlyAbort bool
	// ForgeVoterVotes: see Config.ForgeVoterVotes.
	ForgeVoterVotes bool
	// ForgePromptAcks: see Config.ForgePromptAcks.
	ForgePromptAcks bool
	// Trace receives a "--- step N: ..." line before each action, then
	// the cluster's lines; nil keeps the run silent.
	Trace func(string)
}

// SimStats counts what a run did, to show that the faults really happen.
type SimStats struct {
	Steps, Delivered, Dropped, Duplicated, SendFailures int
	DataOps, DataFaults, Crashes, Requests              int
	// Committed and Aborted count outcomes told to clients; Logged counts
	// durable commit decisions.
	Committed, Aborted, Logged int
	// Replaced counts coordinators that came back with an empty log, as a
	// new cluster.
	Replaced int
}

// Simulate runs one randomized scenario drawn from rng: client load, message
// loss, duplication and reordering, data-database faults, crashes and
// restarts of any node, and time passing; then a fault-free quiet period
// after which everything must have ended. It returns the broken invariants,
// or nil.
func Simulate(rng *rand.Rand, sc SimConfig) (SimStats, error) {
	if sc.Participants <= 0 {
		sc.Participants = 3
	}
	s := &sim{rng: rng, sc: sc, reqs: map[engine.ReqID]int{}, directTxs: map[engine.TxID]bool{}}
	cfg := Config{
		Participants:    sc.Participants,
		ClusterID:       fmt.Sprintf("c%d", rng.IntN(1000)),
		ForgeVotes:      sc.ForgeVotes,
		ForgeEarlyAbort: sc.ForgeEarlyAbort,
		ForgeVoterVotes: sc.ForgeVoterVotes,
		ForgePromptAcks: sc.ForgePromptAcks,
		Trace:           sc.Trace,
		OnResponse:      s.onResponse,
		Coordinator: engine.CoordinatorConfig{
			VoteTimeout:  5 * time.Second,
			ExecTimeout:  10 * time.Second,
			IdleTimeout:  20 * time.Second,
			BatchSize:    1 + rng.IntN(3),
			BatchFlush:   time.Second,
			RetryMin:     100 * time.Millisecond,
			RetryMax:     2 * time.Second,
			ReserveBlock: 1 + rng.IntN(4),
		},
		Participant: engine.ParticipantConfig{
			IdleTimeout:  40 * time.Second,
			InquireAfter: time.Second,
			RetryMin:     100 * time.Millisecond,
			RetryMax:     2 * time.Second,
			LazyPrepared: rng.IntN(2) == 0,
		},
	}
	if rng.IntN(4) == 0 {
		// Forgetting ended transactions quickly makes the coordinator
		// answer old questions by presumption.
		cfg.Coordinator.RememberEnded = 1 + rng.IntN(8)
	}
	if sc.RememberEnded > 0 {
		cfg.Coordinator.RememberEnded = sc.RememberEnded
	}
	cfg.Compact = rng.IntN(2) == 0
	// Commits as the front door's: decisions asking for prompt acks.
	cfg.PromptAcks = rng.IntN(2) == 0
	// A node keeps what ended for a minute (node.keepEnded) and its
	// transport gives up on a message well before that.
	cfg.CompactAfter, cfg.MaxMessageAge = time.Minute, 30*time.Second
	cfg.Coordinator.Protocol = sc.Protocol
	if cfg.Coordinator.Protocol == 0 {
		cfg.Coordinator.Protocol = engine.Protocol(1 + rng.IntN(2))
	}
	cfg.Participant.DeciderPatience = time.Duration(1+rng.IntN(6)) * time.Second
	s.tracef("config: protocol=%s batch-size=%d reserve-block=%d remember-ended=%d lazy-prepared=%t compact=%t patience=%s prompt-acks=%t",
		cfg.Coordinator.Protocol, cfg.Coordinator.BatchSize, cfg.Coordinator.ReserveBlock, cfg.Coordinator.RememberEnded, cfg.Participant.LazyPrepared, cfg.Compact, cfg.Participant.DeciderPatience, cfg.PromptAcks)
	s.c = New(cfg)
	s.sessions = make([]session, 3)
	for _, n := range s.c.Nodes() {
		_ = s.c.Start(n.ID)
	}
	for i := range sc.Steps {
		s.stats.Steps++
		s.step(i)
		if err := s.c.check.Err(); err != nil {
			return s.stats, fmt.Errorf("step %d: %w", i, err)
		}
	}
	s.tracef("--- quiet period")
	s.quiet()
	s.stats.Logged = len(s.c.check.decided)
	s.c.check.CheckQuiet()
	if len(s.c.waiting) > 0 {
		s.c.check.failf("%d client requests never answered", len(s.c.waiting))
	}
	if err := s.c.check.Err(); err != nil {
		return s.stats, fmt.Errorf("after the quiet period: %w", err)
	}
	return s.stats, nil
}

type sim struct {
	rng      *rand.Rand
	sc       SimConfig
	c        *Cluster
	sessions []session
	reqs     map[engine.ReqID]int // request -> session
	// directTxs are the transactions a client sent statements of to
	// participants directly.
	directTxs map[engine.TxID]bool
	known     []engine.TxID
	sqlSeq    int
	keySeq    int
	keys      []string // given to calls, for status by key
	replaced  int
	stats     SimStats
	// stepNo is the step being taken; slow holds back, until a step, data
	// operations caught by a coordinator crash (see data).
	stepNo int
	slow   map[slowOp]int
}

// slowOp names a participant's data operation across steps.
type slowOp struct {
	node engine.NodeID
	tx   engine.TxID
	op   engine.DataOp
}

// session is one client connection: at most one explicit transaction and,
// usually, one request at a time. retry is a keyed call whose answer was
// lost, which the client may send again with the same key.
type session struct {
	tx      engine.TxID
	waiting int
	retry   *Request
	// retryAt is the step before which retry is not sent.
	retryAt int
}

func (s *sim) tracef(format string, args ...any) {
	if s.sc.Trace != nil {
		s.sc.Trace(fmt.Sprintf(format, args...))
	}
}

func (s *sim) onResponse(r Response) {
	i, ok := s.reqs[r.Req]
	if !ok {
		return
	}
	delete(s.reqs, r.Req)
	ss := &s.sessions[i]
	ss.waiting--
	if !r.Lost && r.Key != "" && r.Kind == "transact" {
		if rep, ok := r.Reply.(engine.TransactReply); ok && rep.Outcome != nil && r.Tx == 0 && ss.retry == nil && s.chance(0.3) {
			// A client that gave up waiting sends the call again, maybe
			// long after: answered by the coordinator's memory, or, once
			// it forgot the transaction, after a lookup of the key.
			again := r.Request
			ss.retry, ss.retryAt = &again, s.stepNo+20+s.rng.IntN(100)
		}
	}
	if r.Lost {
		ss.tx = 0
		if r.Key != "" && (r.Kind == "transact" || r.Kind == "execute") {
			lost := r.Request
			ss.retry, ss.retryAt = &lost, 0
		}
		return
	}
	switch rep := r.Reply.(type) {
	case engine.BeginReply:
		ss.tx = rep.TxID
		s.known = append(s.known, rep.TxID)
	case engine.ExecReply:
		if r.Kind == "execute" && !slices.Contains(s.known, rep.TxID) {
			s.known = append(s.known, rep.TxID)
		}
		if rep.Outcome != nil && *rep.Outcome == engine.OutcomeCommit {
			s.stats.Committed++
		}
		if r.Kind == "exec" && ss.tx == 0 && !slices.Contains(s.known, rep.TxID) {
			// An exec without a transaction began this one.
			ss.tx = rep.TxID
			s.known = append(s.known, rep.TxID)
		}
	case engine.OutcomeReply:
		if rep.Outcome == engine.OutcomeCommit {
			s.stats.Committed++
		} else {
			s.stats.Aborted++
		}
		if ss.tx == rep.TxID {
			ss.tx = 0
		}
	case engine.TransactReply:
		if !slices.Contains(s.known, rep.TxID) {
			s.known = append(s.known, rep.TxID)
		}
		switch {
		case rep.Outcome == nil:
			ss.tx = rep.TxID // statements only: the transaction goes on
		case *rep.Outcome == engine.OutcomeCommit:
			s.stats.Committed++
			ss.tx = 0
		default:
			s.stats.Aborted++
			ss.tx = 0
		}
	}
	if r.Err != nil && (r.Kind == "commit" || r.Kind == "rollback" || r.Kind == "begin" || r.Kind == "transact" && r.Tx == 0) {
		ss.tx = 0
	}
}

// chance is true with probability p.
func (s *sim) chance(p float64) bool { return s.rng.Float64() < p }

func (s *sim) step(i int) {
	s.stepNo = i
	c := s.c
	var up, down, withPending, withOps []engine.NodeID
	for _, n := range c.Nodes() {
		if !n.up {
			down = append(down, n.ID)
			continue
		}
		up = append(up, n.ID)
		if len(n.pending) > 0 {
			withPending = append(withPending, n.ID)
		}
		if len(n.ops) > 0 {
			withOps = append(withOps, n.ID)
		}
	}
	type action struct {
		w  int
		do func()
	}
	acts := []action{
		{12, s.client},
		{10, func() { s.tick(up) }},
	}
	if len(c.net) > 0 {
		acts = append(acts, action{30, s.deliver})
	}
	if len(withOps) > 0 {
		acts = append(acts, action{25, func() { s.data(withOps) }})
	}
	if len(withPending) > 0 {
		acts = append(acts, action{15, func() { s.persist(withPending) }})
	}
	if len(up) > 0 {
		acts = append(acts, action{1, func() { s.crash(up) }})
		acts = append(acts, action{1, func() {
			s.stats.Crashes++
			_ = c.CrashDataDB(engine.NodeID(s.rng.IntN(s.sc.Participants)))
		}})
	}
	if len(down) > 0 {
		acts = append(acts, action{6, func() { s.restart(down) }})
	}
	if !c.coord.up && s.nothingToDecide() {
		acts = append(acts, action{1, s.replaceCoordinator})
	}
	total := 0
	for _, a := range acts {
		total += a.w
	}
	r := s.rng.IntN(total)
	for _, a := range acts {
		if r < a.w {
			s.tracef("--- step %d", i)
			a.do()
			return
		}
		r -= a.w
	}
}

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

func (s *sim) deliver() {
	c := s.c
	i := s.rng.IntN(len(c.net))
	switch r := s.rng.Float64(); {
	case r < 0.05:
		s.stats.Dropped++
		c.Drop(i)
	case r < 0.10:
		s.stats.Duplicated++
		c.Duplicate(i)
		c.Deliver(i)
	case r < 0.12:
		s.stats.SendFailures++
		c.FailSend(i, false)
	case r < 0.13:
		s.stats.SendFailures++
		c.FailSend(i, true)
	default:
		s.stats.Delivered++
		c.Deliver(i)
	}
}

// faultOdds lists the faults injected into one kind of data operation, each
// picked when a single draw falls below its cumulative probability.
type faultOdds []struct {
	below float64
	fault Fault
}

// dataFaultOdds says how often each kind of data operation fails, and how.
var dataFaultOdds = map[engine.DataOp]faultOdds{
	engine.DataExec:         {{0.02, FailOp}},
	engine.DataRollback:     {{0.02, FailOp}},
	engine.DataPrepare:      {{0.03, FailOp}, {0.05, FailAfterPrepare}, {0.35, ForcePrepare}},
	engine.DataCommitBranch: {{0.03, FailOp}, {0.06, FailAfterCommit}, {0.08, RetryOp}},
}

// otherDataFaultOdds is for every other kind of data operation.
var otherDataFaultOdds = faultOdds{{0.08, RetryOp}}

func (s *sim) data(withOps []engine.NodeID) {
	type cand struct {
		id engine.NodeID
		i  int
	}
	var cands []cand
	for _, id := range withOps {
		for _, i := range s.c.Runnable(id) {
			op := s.c.Node(id).ops[i]
			if s.slow[slowOp{id, op.TxID, op.Op}] <= s.stepNo {
				cands = append(cands, cand{id, i})
			}
		}
	}
	if len(cands) == 0 {
		return
	}
	ch := pick(s.rng, cands)
	id, i := ch.id, ch.i
	op := s.c.Node(id).ops[i]
	if (op.Op == engine.DataCommitBranch || op.Then == engine.DataCommitBranch || op.Op == engine.DataSettle) && s.c.coord.up && s.chance(0.05) {
		// The coordinator dies while a decider's commit (or a settle,
		// which may find its marker) runs, which then takes long: the
		// restarted coordinator's question about the decider's markers
		// is likely to come first, and must not be answered until the
		// operation is over.
		s.stats.Crashes++
		if s.slow == nil {
			s.slow = map[slowOp]int{}
		}
		s.slow[slowOp{id, op.TxID, op.Op}] = s.stepNo + 60
		s.tracef("%s: its decider commit of tx %d stalls while the coordinator dies", id, op.TxID)
		_ = s.c.Crash(engine.CoordinatorNode)
		return
	}
	f := NoFault
	odds, ok := dataFaultOdds[op.Op]
	if !ok {
		odds = otherDataFaultOdds
	}
	r := s.rng.Float64()
	for _, o := range odds {
		if r < o.below {
			f = o.fault
			break
		}
	}
	s.stats.DataOps++
	if f != NoFault && f != ForcePrepare {
		s.stats.DataFaults++
	}
	if s.chance(0.02) {
		s.stats.Crashes++
		_ = s.c.RunDataThenCrash(id, i, f)
		return
	}
	_ = s.c.RunData(id, i, f)
}

func (s *sim) persist(withPending []engine.NodeID) {
	n := s.c.Node(pick(s.rng, withPending))
	k := len(n.pending)
	if s.chance(0.5) {
		k = 1 + s.rng.IntN(k)
	}
	_ = s.c.Persist(n.ID, n.durLSN+engine.LSN(k))
}

func (s *sim) tick(up []engine.NodeID) {
	var d time.Duration
	switch r := s.rng.Float64(); {
	case r < 0.70:
		d = time.Duration(s.rng.IntN(500)) * time.Millisecond
	case r < 0.95:
		d = time.Duration(s.rng.IntN(3000)) * time.Millisecond
	default:
		d = time.Duration(s.rng.IntN(30)) * time.Second
	}
	s.c.Advance(d)
	s.tracef("time +%s", d)
	if len(up) == 0 {
		return
	}
	if s.chance(0.5) {
		_ = s.c.Tick(pick(s.rng, up))
		return
	}
	for _, id := range up {
		_ = s.c.Tick(id)
	}
}

func (s *sim) crash(up []engine.NodeID) {
	s.stats.Crashes++
	_ = s.c.Crash(pick(s.rng, up))
}

// nothingToDecide reports whether no transaction can need the
// coordinator's decision: nothing is prepared or being prepared anywhere, and
// no prepare request is on its way. Only then may the simulation lose the
// coordinator's log: with it, a transaction in doubt would have nobody left
// to decide it, which tpcd cannot fix and refuses to guess at.
func (s *sim) nothingToDecide() bool {
	for _, env := range s.c.net {
		if mayDecide(env.Msg) {
			return false
		}
	}
	for _, n := range s.c.parts {
		if slices.ContainsFunc(n.part.Held(), mayDecide) {
			return false
		}
		if len(n.db.PreparedGIDs()) > 0 || len(n.db.Markers()) > 0 {
			return false
		}
		for _, tx := range n.part.Transactions() {
			if tx.Phase != engine.PartPhaseWorking && tx.Phase != engine.PartPhaseRollingBack {
				return false
			}
		}
		for _, op := range n.ops {
			if decides(op) {
				return false
			}
		}
		for _, h := range n.held {
			if d, ok := h.e.(engine.Data); ok && decides(d) {
				return false
			}
		}
	}
	return true
}

// mayDecide reports whether a message may prepare or commit a branch: a
// coordinator's request, or a vote on its way to a decider, which may be
// the last one it waits for (a read-only voter leaves nothing prepared).
func mayDecide(m engine.Message) bool {
	switch m := m.(type) {
	case engine.PrepareRequest, engine.CommitBranchRequest:
		return true
	case engine.ExecRequest:
		return m.Then != engine.ThenNothing
	case engine.VoteMessage:
		return m.TxEpoch != 0 && (m.Vote == engine.VoteYes || m.Vote == engine.VoteReadOnly)
	}
	return false
}

// decides reports whether a data operation may prepare or commit a branch.
func decides(d engine.Data) bool {
	return d.Op == engine.DataPrepare || d.Op == engine.DataCommitBranch || d.Then != 0
}

// replaceCoordinator gives the down coordinator an empty log, as when it
// runs without a state directory: it comes back as a new cluster that hands
// out the same transaction ids again.
func (s *sim) replaceCoordinator() {
	s.stats.Replaced++
	s.replaced++
	_ = s.c.LoseLog(engine.CoordinatorNode, fmt.Sprintf("%s-%d", s.c.cfg.ClusterID, s.replaced))
	// Keys live in the coordinator's log: a new cluster knows none, so a
	// call repeated now would run again (its clients are told so).
	for i := range s.sessions {
		s.sessions[i].retry = nil
	}
	s.keys = nil
	s.c.check.forgetKeys()
}

func (s *sim) restart(down []engine.NodeID) {
	_ = s.c.Start(pick(s.rng, down))
}

// key gives half the calls an idempotency key.
func (s *sim) key() string {
	if s.chance(0.5) {
		return ""
	}
	s.keySeq++
	k := fmt.Sprintf("k%d", s.keySeq)
	s.keys = append(s.keys, k)
	return k
}

func (s *sim) sql() string {
	s.sqlSeq++
	switch r := s.rng.Float64(); {
	case r < 0.04:
		return fmt.Sprintf("insert %d fail", s.sqlSeq)
	case r < 0.20:
		return fmt.Sprintf("select %d", s.sqlSeq)
	}
	return fmt.Sprintf("insert %d", s.sqlSeq)
}

// stmts draws a transact call's statements: 1-4 of them over 1-3 nodes.
func (s *sim) stmts() []engine.Statement {
	out := make([]engine.Statement, 1+s.rng.IntN(4))
	for i := range out {
		out[i] = engine.Statement{Node: engine.NodeID(s.rng.IntN(s.sc.Participants)), SQL: s.sql()}
	}
	return out
}

func (s *sim) client() {
	i := s.rng.IntN(len(s.sessions))
	ss := &s.sessions[i]
	if ss.waiting > 0 && !(ss.tx != 0 && s.chance(0.1)) {
		return // busy; now and then a client pipelines a second statement
	}
	node := engine.NodeID(s.rng.IntN(s.sc.Participants))
	// The answer may come back within the call, so the request is
	// registered under the id the cluster is about to assign.
	next := s.c.nextReq + 1
	s.reqs[next] = i
	ss.waiting++
	r := s.rng.Float64()
	switch {
	case ss.tx == 0 && ss.retry != nil && s.stepNo >= ss.retryAt && s.chance(0.5):
		// The same call again, with the same key: it must not run twice.
		again := ss.retry
		ss.retry = nil
		if again.Kind == "transact" {
			s.c.Transact(0, again.Stmts, true, again.Key)
		} else {
			s.c.Execute(again.Node, again.SQL, again.Key)
		}
	case ss.tx == 0 && r < 0.3:
		s.c.Begin(s.key())
	case ss.tx == 0 && r < 0.45:
		// Begin with the first statement.
		s.c.Exec(0, node, s.sql())
	case ss.tx == 0 && r < 0.65:
		// A whole transaction in one call, committed (mostly) with it.
		s.c.Transact(0, s.stmts(), s.chance(0.9), s.key())
	case ss.tx == 0 && r < 0.9:
		s.c.Execute(node, s.sql(), s.key())
	case ss.tx == 0 && r < 0.92 && len(s.known) > 0:
		s.c.Status(pick(s.rng, s.known), "")
	case ss.tx == 0 && r < 0.93 && len(s.keys) > 0:
		s.c.Status(0, pick(s.rng, s.keys))
	case ss.tx == 0 && r < 0.94 && len(s.known) > 0:
		// An operator retries an in-doubt transaction now.
		s.c.Resolve(pick(s.rng, s.known))
	case ss.tx == 0 && r < 0.96 && len(s.known) > 0:
		// A confused client: a statement for an old transaction, or for
		// a node that does not exist.
		s.c.Exec(pick(s.rng, s.known), engine.NodeID(s.rng.IntN(s.sc.Participants+1)), s.sql())
	case ss.tx == 0 && len(s.known) > 0:
		// Only the client that sent a transaction's direct statements
		// can commit it: nobody else knows its branches.
		if tx := pick(s.rng, s.known); !s.directTxs[tx] {
			s.c.Commit(tx)
		} else {
			s.c.Status(tx, "")
		}
	case ss.tx == 0:
		delete(s.reqs, next)
		ss.waiting--
		return
	case r < 0.55 && s.c.CanDirect(ss.tx) && s.chance(0.5):
		// Straight to the participant, not waiting for the answer: the
		// commit counts what answered ok by then.
		delete(s.reqs, next)
		ss.waiting--
		s.directTxs[ss.tx] = true
		s.c.Direct(ss.tx, node, s.sql())
	case r < 0.55:
		s.c.Exec(ss.tx, node, s.sql())
	case r < 0.6:
		s.c.Transact(ss.tx, s.stmts(), s.chance(0.5) && !s.directTxs[ss.tx], "")
	case r < 0.8 && s.directTxs[ss.tx]:
		s.c.CommitDirect(ss.tx)
	case r < 0.8:
		s.c.Commit(ss.tx)
	case r < 0.87 && s.directTxs[ss.tx]:
		s.c.RollbackDirect(ss.tx)
	case r < 0.87:
		s.c.Rollback(ss.tx)
	case r < 0.92:
		s.c.Status(ss.tx, "")
	default:
		// The client walks away; the coordinator's idle timeout cleans up.
		delete(s.reqs, next)
		ss.waiting--
		ss.tx = 0
		return
	}
	s.stats.Requests++
}

// quiet restarts every node and lets the cluster run without faults and
// without new client work until nothing is left to do.
func (s *sim) quiet() {
	c := s.c
	for _, n := range c.Nodes() {
		if !n.up {
			_ = c.Start(n.ID)
		}
	}
	for round := 0; round < 400; round++ {
		for budget := 0; budget < 100000; budget++ {
			if !s.drainOne() {
				break
			}
		}
		if c.Quiet() && s.idle() {
			return
		}
		c.Advance(time.Second)
		for _, n := range c.Nodes() {
			_ = c.Tick(n.ID)
		}
	}
}

// drainOne performs one fault-free action, if any is left.
func (s *sim) drainOne() bool {
	c := s.c
	for _, n := range c.Nodes() {
		if len(n.pending) > 0 {
			_ = c.Persist(n.ID, 0)
			return true
		}
	}
	for _, n := range c.parts {
		if len(n.ops) > 0 {
			_ = c.RunData(n.ID, 0, NoFault)
			return true
		}
	}
	if len(c.net) > 0 {
		c.Deliver(0)
		return true
	}
	return false
}

func (s *sim) idle() bool {
	if len(s.c.coord.coord.Transactions()) > 0 || len(s.c.waiting) > 0 {
		return false
	}
	for _, n := range s.c.parts {
		if len(n.part.Transactions()) > 0 || n.part.MarkerDeletions() > 0 {
			return false
		}
	}
	return true
}
