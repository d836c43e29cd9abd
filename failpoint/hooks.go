package failpoint

import (
	"sync"

	"github.com/tpcd/tpcd/engine"
)

// The hooks below let package node mark protocol steps with one line each;
// they turn the engine's events, messages and data results into failpoint
// hits. Every one returns at once when nothing is armed.

// BeforeLog marks a log append of evs about to start: a commit decision
// among them hits CoordBeforeDecisionLogged, a Prepared event
// PartBeforePreparedLogged, a Committed event PartBeforeCommittedLogged.
// All linger before dying (see Linger).
func BeforeLog(evs []engine.Event) {
	if !enabled.Load() {
		return
	}
	for _, ev := range evs {
		switch {
		case commitDecision(ev):
			fire(CoordBeforeDecisionLogged, Linger)
		case deciderPreparing(ev):
			fire(CoordBeforePreparingLogged, Linger)
		case ev.Kind() == engine.PartPrepared{}.Kind():
			fire(PartBeforePreparedLogged, Linger)
		case ev.Kind() == engine.PartCommitted{}.Kind():
			fire(PartBeforeCommittedLogged, Linger)
		}
	}
}

// AfterLog marks the end of a log append of evs that failed with err (nil:
// the events are durable). Before anything that waited for them runs, a
// durable commit decision hits CoordAfterDecisionLogged and a durable
// Prepared event hits PartAfterPreparedLogged.
func AfterLog(evs []engine.Event, err error) {
	if !enabled.Load() || err != nil {
		return
	}
	for _, ev := range evs {
		switch {
		case commitDecision(ev):
			hit(CoordAfterDecisionLogged)
		case ev.Kind() == engine.PartPrepared{}.Kind():
			hit(PartAfterPreparedLogged)
		}
	}
}

func deciderPreparing(ev engine.Event) bool {
	p, ok := ev.(engine.CoordPreparing)
	return ok && p.Decider != nil
}

func commitDecision(ev engine.Event) bool {
	d, ok := ev.(engine.CoordDecided)
	return ok && d.Outcome == engine.OutcomeCommit
}

// BeforeSend marks a message about to be handed to the transport: an
// acknowledgement hits PartBeforeAck, and a commit decision passes the gate
// of CoordAfterDecisionSent (see decisionGate).
func BeforeSend(m engine.Message) {
	if !enabled.Load() {
		return
	}
	switch m := m.(type) {
	case engine.AckMessage:
		hit(PartBeforeAck)
	case engine.DecisionRequest:
		if commitSent(m) {
			gate.before(m.TxID)
		}
	}
}

// AfterSend marks the end of a send of m that failed with err (nil: the
// peer accepted it, or, for a participant's one-way messages, it was
// written). An accepted commit decision may fire CoordAfterDecisionSent
// (see decisionGate); a yes vote sent hits PartAfterVote.
func AfterSend(m engine.Message, err error) {
	if !enabled.Load() {
		return
	}
	switch m := m.(type) {
	case engine.DecisionRequest:
		if commitSent(m) {
			gate.after(m.TxID, err)
		}
	case engine.VoteMessage:
		if m.Vote == engine.VoteYes && err == nil {
			hit(PartAfterVote)
		}
	case engine.CommitBranchRequest:
		if err == nil {
			hit(CoordAfterBranchAsked)
		}
	}
}

func commitSent(m engine.DecisionRequest) bool {
	return m.Outcome == engine.OutcomeCommit && !m.Presumed
}

// decisionGate makes CoordAfterDecisionSent leave a commit decision with
// some participants and not others. The coordinator sends a decision to
// all participants at once, from concurrent goroutines, so dying after the
// first one was accepted would usually find the others delivered too.
// Instead the N-th transaction whose commit decision starts going out is
// chosen: its first send proceeds, every other send of it (to the other
// participants, resends, answers to inquiries) waits at the gate; when the
// first is accepted the process dies, and if it fails the waiting sends go
// ahead and the next transaction is chosen. A transaction with a single
// participant in phase two can only leave it with all of them.
type decisionGate struct {
	mu      sync.Mutex
	seen    map[engine.TxID]bool // transactions counted towards N
	chosen  engine.TxID          // 0 until one is chosen
	release chan struct{}        // closed when the chosen one's first send failed
	waiting int                  // sends held at the gate (read by tests)
}

var gate decisionGate

func (g *decisionGate) reset() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seen, g.chosen, g.release, g.waiting = map[engine.TxID]bool{}, 0, nil, 0
}

func (g *decisionGate) before(tx engine.TxID) {
	p := points[CoordAfterDecisionSent]
	if p == nil {
		return
	}
	g.mu.Lock()
	if g.chosen == 0 {
		if !g.seen[tx] {
			g.seen[tx] = true
			if int64(len(g.seen)) >= p.at {
				g.chosen, g.release = tx, make(chan struct{})
			}
		}
		g.mu.Unlock()
		return
	}
	if tx != g.chosen {
		g.mu.Unlock()
		return
	}
	ch := g.release
	g.waiting++
	g.mu.Unlock()
	<-ch
	g.mu.Lock()
	g.waiting--
	g.mu.Unlock()
}

func (g *decisionGate) after(tx engine.TxID, err error) {
	g.mu.Lock()
	if g.chosen == 0 || tx != g.chosen {
		g.mu.Unlock()
		return
	}
	// Only the first send of the chosen transaction gets here: every other
	// one is held in before.
	n := int64(len(g.seen))
	ch := g.release
	g.chosen, g.release = 0, nil
	g.mu.Unlock()
	if err == nil {
		die(CoordAfterDecisionSent, n)
	}
	// The send failed (or, in this package's tests, die returned): let the
	// held sends go.
	close(ch)
}

// AfterData marks a data-database operation that finished with res, before
// the engine hears of it. A successful PREPARE TRANSACTION hits
// PartAfterPrepare; a successful COMMIT PREPARED hits
// PartAfterCommitPrepared.
func AfterData(op engine.DataOp, res engine.DataDone) {
	if !enabled.Load() || res.Err != "" || res.Retry {
		return
	}
	switch {
	case op == engine.DataPrepare && !res.ReadOnly:
		hit(PartAfterPrepare)
	case op == engine.DataCommitPrepared:
		hit(PartAfterCommitPrepared)
	case op == engine.DataCommitBranch:
		hit(PartAfterBranchCommit)
	case op == engine.DataSettle:
		hit(PartAfterSettle)
	}
}

// BeforeData marks a data-database operation about to run: a decider's
// COMMIT hits PartBeforeBranchCommit.
func BeforeData(op engine.DataOp) {
	if enabled.Load() && op == engine.DataCommitBranch {
		hit(PartBeforeBranchCommit)
	}
}
