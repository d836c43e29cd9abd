package replay

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/logstore"
)

// maxListed bounds the violations and bad events a report lists per node;
// the rest are only counted, so a log full of garbage cannot blow memory up.
const maxListed = 1000

// eventRef is an event kept for display; it is rendered only if reported.
type eventRef struct {
	pos logstore.Pos
	at  time.Time
	ev  engine.Event
}

// txTrack is the replay's own note on one transaction the engine still
// holds: its state and its newest events.
type txTrack struct {
	state string
	total int
	last  []eventRef
}

// tracker keeps a txTrack per transaction in memory and drops it as soon as
// the transaction ends, so its size follows the engine's, not the log's.
type tracker struct {
	keep int
	// only, when set, is the one transaction tracked (--tx); its track
	// survives its end so the report can say how it ended.
	only engine.TxID
	txs  map[engine.TxID]*txTrack
}

func newTracker(keep int, only engine.TxID) *tracker {
	return &tracker{keep: keep, only: only, txs: map[engine.TxID]*txTrack{}}
}

// note records that ev of transaction id was folded; nil if id is not tracked.
func (t *tracker) note(id engine.TxID, r eventRef) *txTrack {
	if t.only != 0 && id != t.only {
		return nil
	}
	tr := t.txs[id]
	if tr == nil {
		tr = &txTrack{}
		t.txs[id] = tr
	}
	tr.total++
	switch {
	case t.keep <= 0:
	case len(tr.last) < t.keep:
		tr.last = append(tr.last, r)
	default:
		copy(tr.last, tr.last[1:])
		tr.last[len(tr.last)-1] = r
	}
	return tr
}

// end forgets a transaction that ended in state.
func (t *tracker) end(id engine.TxID, state string) {
	if id == t.only {
		if tr := t.txs[id]; tr != nil {
			tr.state = state
		}
		return
	}
	delete(t.txs, id)
}

// folder folds one node's events into an engine.
type folder interface {
	// apply folds one decoded event; an error means the engine refuses it
	// (errRefold: start again with more participants).
	apply(rec logstore.Record, ev engine.Event) error
}

// errRefold stops a coordinator's fold that met a participant id beyond
// the count it was started with.
var errRefold = errors.New("replay: participant count too small")

// nodeFold is the part of a fold common to both roles.
type nodeFold struct {
	rep    *NodeReport
	tr     *tracker
	only   engine.TxID
	states map[string]int
}

func newNodeFold(rep *NodeReport, keep int, only engine.TxID, states ...string) nodeFold {
	f := nodeFold{rep: rep, tr: newTracker(keep, only), only: only, states: map[string]int{}}
	for _, s := range states {
		f.states[s] = 0
	}
	return f
}

// relevant reports whether a record belongs in a report restricted to one
// transaction.
func (f *nodeFold) relevant(rec logstore.Record, ev engine.Event) bool {
	if f.only == 0 {
		return true
	}
	return rec.Tx == uint64(f.only) || ev != nil && ev.Tx() == f.only
}

func (f *nodeFold) bad(rec logstore.Record, ev engine.Event, err error) {
	if !f.relevant(rec, ev) {
		return
	}
	if len(f.rep.Undecodable) >= maxListed {
		f.rep.UndecodableOmitted++
		return
	}
	f.rep.Undecodable = append(f.rep.Undecodable, BadEvent{Seq: rec.Seq, Index: rec.Index, Kind: kindOf(rec, ev), Tx: rec.Tx, Error: err.Error()})
}

// step decodes and folds one record. Recovery applies the payload and
// stops at the first event it cannot decode or apply; replay notes such
// events and goes on, to show everything that is wrong at once.
func (f *nodeFold) step(fo folder, rec logstore.Record) error {
	f.rep.Events++
	ev, err := engine.DecodeEvent(rec.Payload)
	if err != nil {
		f.bad(rec, nil, err)
		return nil
	}
	if uint64(ev.Tx()) != rec.Tx {
		// Recovery trusts the payload, but compaction removes events by the
		// row's txs column, so such an event outlives its transaction or
		// dies early.
		f.bad(rec, ev, fmt.Errorf("the row says tx %d but the payload is %s of tx %d", rec.Tx, ev.Kind(), ev.Tx()))
	}
	if err := fo.apply(rec, ev); err != nil {
		if errors.Is(err, errRefold) {
			return err
		}
		f.bad(rec, ev, fmt.Errorf("recovery cannot apply it: %w", err))
	}
	return nil
}

// coordFold folds a coordinator's log.
type coordFold struct {
	nodeFold
	eng   *engine.Coordinator
	facts CoordinatorFacts
	// size is the participant count the engine was made with; named is
	// the highest participant id the events name, plus one.
	size, named int
	// need is the participant count a refold needs.
	need int
}

// Coordinator states, in report order.
var coordStates = []string{"preparing", "committing", "aborting", "committed", "aborted"}

func newCoordFold(rep *NodeReport, keep int, only engine.TxID, participants int, inferred bool) *coordFold {
	return &coordFold{
		nodeFold: newNodeFold(rep, keep, only, coordStates...),
		// The fold answers no status queries, so the ring of ended
		// outcomes needs one entry: the transaction that just ended.
		eng:   engine.NewCoordinator(engine.CoordinatorConfig{Participants: participants, RememberEnded: 1}),
		facts: CoordinatorFacts{Participants: participants, Inferred: inferred},
		size:  participants,
	}
}

// highestNode is the highest participant id an event names, -1 if none.
func highestNode(ev engine.Event) engine.NodeID {
	var ns []engine.NodeID
	switch e := ev.(type) {
	case engine.CoordPreparing:
		ns = e.Participants
	case engine.CoordDecided:
		ns = e.Participants
	}
	if len(ns) == 0 {
		return -1
	}
	return slices.Max(ns)
}

func (f *coordFold) apply(rec logstore.Record, ev engine.Event) error {
	n := highestNode(ev)
	if f.facts.Inferred && int(n) >= f.size {
		f.need = int(n) + 1
		return errRefold
	}
	f.named = max(f.named, int(n)+1)
	if err := f.eng.Apply(ev); err != nil {
		return err
	}
	switch e := ev.(type) {
	case engine.CoordStarted:
		f.facts.Incarnations++
	case engine.CoordTxIDsReserved:
		f.facts.ReservedThrough = max(f.facts.ReservedThrough, uint64(e.Through))
	}
	id := ev.Tx()
	if id == 0 {
		return nil
	}
	f.facts.HighestTx = max(f.facts.HighestTx, uint64(id))
	tr := f.tr.note(id, eventRef{pos: rec.Pos, at: rec.At, ev: ev})
	st := f.eng.Status(id)
	if tr != nil {
		tr.state = st.State
	}
	if _, ok := ev.(engine.CoordEnded); ok {
		f.states[st.State]++
	}
	if !coordLive(st.State) {
		f.tr.end(id, st.State)
	}
	return nil
}

func coordLive(state string) bool {
	switch state {
	case "active", "preparing", "committing", "aborting":
		return true
	}
	return false
}

// partFold folds a participant's log.
type partFold struct {
	nodeFold
	eng *engine.Participant
}

// Participant states, in report order.
var partStates = []string{"prepared", "committed", "aborted"}

func newPartFold(rep *NodeReport, keep int, only engine.TxID, cfg engine.ParticipantConfig) *partFold {
	return &partFold{
		nodeFold: newNodeFold(rep, keep, only, partStates...),
		eng:      engine.NewParticipant(cfg),
	}
}

func (f *partFold) apply(rec logstore.Record, ev engine.Event) error {
	if err := f.eng.Apply(ev); err != nil {
		return err
	}
	id := ev.Tx()
	if id == 0 {
		return nil
	}
	tr := f.tr.note(id, eventRef{pos: rec.Pos, at: rec.At, ev: ev})
	// The cases mirror engine.Participant.Apply: prepared transactions stay
	// in memory, committed and aborted ones leave it. (Logs of earlier
	// builds follow part.committed with part.forgotten, which ended nothing
	// more.)
	switch e := ev.(type) {
	case engine.PartPrepared:
		if tr != nil {
			tr.state = "prepared"
		}
	case engine.PartCommitted:
		f.states["committed"]++
		f.tr.end(id, "committed")
	case engine.PartAborted:
		f.states["aborted"]++
		f.tr.end(id, "aborted")
	case engine.PartForgotten:
		f.tr.end(id, "committed") // counted at its part.committed
	case engine.PartVotedNo:
		if tr != nil && !partLive(tr.state) {
			f.tr.end(id, "voted-no")
		}
	case engine.PartViolation:
		if f.relevant(rec, ev) {
			if len(f.rep.Violations) < maxListed {
				f.rep.Violations = append(f.rep.Violations, ViolationReport{Tx: uint64(e.TxID), Seq: rec.Seq, Index: rec.Index, Detail: e.Detail})
			} else {
				f.rep.ViolationsOmitted++
			}
		}
		if tr != nil && tr.state == "" {
			f.tr.end(id, "violation")
		}
	}
	return nil
}

func partLive(state string) bool { return state == "prepared" }

// refs turns a track's events into reports.
func refs(tr *txTrack, times bool) ([]EventReport, int) {
	if tr == nil {
		return []EventReport{}, 0
	}
	out := make([]EventReport, len(tr.last))
	for i, r := range tr.last {
		out[i] = eventReport(r.pos, r.ev.Kind(), engine.DescribeEvent(r.ev), r.at, times)
	}
	return out, tr.total - len(tr.last)
}

func eventReport(pos logstore.Pos, kind, text string, at time.Time, times bool) EventReport {
	e := EventReport{Seq: pos.Seq, Index: pos.Index, Kind: kind, Text: text}
	if times {
		t := at.UTC()
		e.At = &t
	}
	return e
}

// sortTxs puts in-doubt transactions first, then orders by id.
func sortTxs(txs []TxReport) {
	slices.SortFunc(txs, func(a, b TxReport) int {
		if a.InDoubt != b.InDoubt {
			if a.InDoubt {
				return -1
			}
			return 1
		}
		switch {
		case a.Tx < b.Tx:
			return -1
		case a.Tx > b.Tx:
			return 1
		}
		return 0
	})
}

func nodeInts(ns []engine.NodeID) []int {
	if len(ns) == 0 {
		return nil
	}
	out := make([]int, len(ns))
	for i, n := range ns {
		out[i] = int(n)
	}
	return out
}
