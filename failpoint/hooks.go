package failpoint

import "github.com/tpcd/tpcd/engine"

// The hooks below let package node mark protocol steps with one line each;
// they turn the engine's events, messages and data results into failpoint
// hits. Every one returns at once when nothing is armed.

// BeforeLog marks a log append of evs about to start: a commit decision
// among them hits CoordBeforeDecisionLogged.
func BeforeLog(evs []engine.Event) {
	if !enabled.Load() {
		return
	}
	for _, ev := range evs {
		if commitDecision(ev) {
			hit(CoordBeforeDecisionLogged)
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

func commitDecision(ev engine.Event) bool {
	d, ok := ev.(engine.CoordDecided)
	return ok && d.Outcome == engine.OutcomeCommit
}

// BeforeSend marks a message about to be handed to the transport: an
// acknowledgement hits PartBeforeAck.
func BeforeSend(m engine.Message) {
	if !enabled.Load() {
		return
	}
	if _, ok := m.(engine.AckMessage); ok {
		hit(PartBeforeAck)
	}
}

// AfterSend marks the end of a send of m that failed with err (nil: the
// peer accepted it). An accepted commit decision hits
// CoordAfterDecisionSent; an accepted yes vote hits PartAfterVote.
func AfterSend(m engine.Message, err error) {
	if !enabled.Load() || err != nil {
		return
	}
	switch m := m.(type) {
	case engine.DecisionRequest:
		if m.Outcome == engine.OutcomeCommit && !m.Presumed {
			hit(CoordAfterDecisionSent)
		}
	case engine.VoteMessage:
		if m.Vote == engine.VoteYes {
			hit(PartAfterVote)
		}
	}
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
	}
}
