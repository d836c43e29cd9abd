package replay

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/tpcd/tpcd/engine"
)

// restartAt is the instant replay gives the start step. The engine only
// compares instants, so any fixed value does, and a fixed one keeps reports
// the same from run to run.
const restartAt engine.Instant = 0

// firstTickAfter is how long after the start the one tick replay runs
// comes: long enough for the first inquiry of every in-doubt transaction
// to be due (engine.ParticipantConfig.InquireAfter, 1 s by default, and
// the start step makes it due at once), and harmless otherwise, since at
// start nothing else of the participant waits on time.
const firstTickAfter = time.Minute

// restartPlan is what a restart of the participant does with one
// transaction: the part of the Ready of the engine's Start step, and of the
// first Tick after it, that names the transaction. Nothing in it is
// performed; replay only reads it.
type restartPlan struct {
	// steps are the events and effects, as engine.DescribeEvent and
	// engine.DescribeEffect render them (without log positions), in the
	// order the engine produced them: the start step's events, its
	// effects, then the tick's.
	steps []string
	// words say the same for people ("logs the commit"), one per step that
	// has something to say.
	words []string
	// logged are the kinds of the events the restart logs.
	logged []string
	// ops are the data-database operations it runs on the transaction.
	ops []engine.DataOp
	// inquires: it asks the coordinator for the decision, so the
	// transaction is in doubt.
	inquires bool
	// violation is the detail of the violation it records, "" if none.
	violation string
}

// logs reports whether the restart logs an event of ev's kind.
func (pl *restartPlan) logs(ev engine.Event) bool { return slices.Contains(pl.logged, ev.Kind()) }

// runs reports whether the restart runs op on the transaction.
func (pl *restartPlan) runs(op engine.DataOp) bool { return slices.Contains(pl.ops, op) }

// text says what the restart does with the transaction, for a finding's
// detail ("logs the commit and deletes the marker"). preparedInDB adds
// that it leaves a prepared transaction as it is, when nothing it does
// ends or asks about it.
func (pl *restartPlan) text(preparedInDB bool) string {
	words := pl.words
	if preparedInDB && !pl.inquires && !pl.runs(engine.DataCommitPrepared) && !pl.runs(engine.DataRollbackPrepared) {
		words = append(words[:len(words):len(words)], "leaves it prepared")
	}
	switch len(words) {
	case 0:
		return "does nothing with it"
	case 1:
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " and " + words[len(words)-1]
}

// restartPlans is what a restart of one participant does, by transaction.
type restartPlans struct {
	txs map[engine.TxID]*restartPlan
	// notes are what the restart tells its operator beyond single
	// transactions (Warning effects), and effects replay cannot tie to one.
	notes []string
}

// add records one step (line) of the restart for transaction tx and
// returns tx's plan for the caller to complete; a step that names no
// transaction becomes a note, and add returns nil.
func (ps *restartPlans) add(tx engine.TxID, line string) *restartPlan {
	if tx == 0 {
		ps.notes = append(ps.notes, line)
		return nil
	}
	pl := ps.txs[tx]
	if pl == nil {
		pl = &restartPlan{}
		ps.txs[tx] = pl
	}
	pl.steps = append(pl.steps, line)
	return pl
}

// planRestart runs a restart of the participant on eng, which holds the
// participant's folded log: the engine's Start step with the data
// database's facts, exactly as node does at start, then one Tick, and sorts
// what they would do by transaction. eng is changed (it has started) and
// should not be used for anything else afterwards; nothing the steps ask for
// is performed.
//
// Two kinds of effect are housekeeping and left out: AskCoordinator (a
// started participant confirms who its coordinator is) and Forget (the
// events of ended transactions go to compaction).
func planRestart(eng *engine.Participant, in engine.Start) *restartPlans {
	ps := &restartPlans{txs: map[engine.TxID]*restartPlan{}}
	in.Now = restartAt
	start := eng.Step(in)
	tick := eng.Step(engine.Tick{Now: restartAt.Add(firstTickAfter)})
	for _, rd := range []engine.Ready{start, tick} {
		for _, ev := range rd.Events {
			ps.event(ev)
		}
		for _, ef := range rd.Effects {
			ps.effect(ef)
		}
	}
	return ps
}

// eventWords and opWords say in words what logging an event of a kind,
// or running a data operation, does to a transaction.
var (
	eventWords = map[string]string{
		engine.PartPrepared{}.Kind():  "logs it as prepared",
		engine.PartCommitted{}.Kind(): "logs the commit",
		engine.PartAborted{}.Kind():   "logs the abort",
		engine.PartViolation{}.Kind(): "logs a violation",
	}
	opWords = map[engine.DataOp]string{
		engine.DataDeleteMarker:     "deletes the marker",
		engine.DataCommitPrepared:   "commits it (COMMIT PREPARED)",
		engine.DataRollbackPrepared: "rolls it back (ROLLBACK PREPARED)",
	}
)

func (ps *restartPlans) event(ev engine.Event) {
	pl := ps.add(ev.Tx(), "log "+engine.DescribeEvent(ev))
	if pl == nil {
		return
	}
	pl.logged = append(pl.logged, ev.Kind())
	pl.words = append(pl.words, cmp.Or(eventWords[ev.Kind()], "logs "+ev.Kind()))
	if v, ok := ev.(engine.PartViolation); ok {
		pl.violation = v.Detail
	}
}

func (ps *restartPlans) effect(ef engine.Effect) {
	switch e := ef.(type) {
	case engine.AskCoordinator, engine.Forget:
	case engine.Data:
		e.WaitLSN = 0 // a position in a log that is never written
		pl := ps.add(e.TxID, engine.DescribeEffect(e))
		if pl == nil {
			return
		}
		pl.ops = append(pl.ops, e.Op)
		pl.words = append(pl.words, cmp.Or(opWords[e.Op], "runs "+e.Op.String()))
	case engine.Send:
		e.WaitLSN = 0
		pl := ps.add(e.Msg.Tx(), engine.DescribeEffect(e))
		if pl == nil {
			return
		}
		if _, ok := e.Msg.(engine.InquireMessage); ok {
			pl.inquires = true
			pl.words = append(pl.words, "asks the coordinator")
		} else {
			pl.words = append(pl.words, "sends "+e.Msg.Method())
		}
	case engine.Violation:
		// Its PartViolation event, logged by the same step, said it
		// already; only a violation without one is a step of its own.
		if pl := ps.txs[e.TxID]; pl != nil && pl.violation != "" {
			return
		}
		if pl := ps.add(e.TxID, engine.DescribeEffect(e)); pl != nil {
			pl.violation = e.Detail
			pl.words = append(pl.words, "reports a violation")
		}
	default:
		// Warning, or an effect replay does not know.
		ps.notes = append(ps.notes, engine.DescribeEffect(ef))
	}
}
