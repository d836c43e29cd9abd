package replay

import (
	"testing"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/logstore"
)

// record makes the record a node would read back for ev, alone in row seq.
func record(t *testing.T, seq int64, ev engine.Event) logstore.Record {
	t.Helper()
	payload, err := engine.EncodeEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	return logstore.Record{Pos: logstore.Pos{Seq: seq}, Tx: uint64(ev.Tx()), Payload: payload}
}

// boundedStep returns a function that feeds an event to a fold as the
// next row of its log, and fails t once tr tracks more than window
// transactions.
func boundedStep(t *testing.T, seq *int64, window int, fold func(logstore.Record) error, tr *tracker) func(engine.Event) {
	return func(ev engine.Event) {
		*seq++
		if err := fold(record(t, *seq, ev)); err != nil {
			t.Fatal(err)
		}
		if n := len(tr.txs); n > window {
			t.Fatalf("after %s: %d transactions tracked, at most %d are open", engine.DescribeEvent(ev), n, window)
		}
	}
}

// TestFoldForgetsEndedTransactions feeds long logs with a bounded number of
// transactions open at a time and checks that the replay's bookkeeping
// never holds more than those: ended transactions leave memory as they end.
func TestFoldForgetsEndedTransactions(t *testing.T) {
	const total, window = 5000, 7
	parts := []engine.NodeID{0, 1}
	gid := func(tx engine.TxID) string { return engine.GID{Cluster: "c", Epoch: 1, Tx: tx, Node: 0}.String() }

	var seq int64
	t.Run("coordinator", func(t *testing.T) {
		rep := &NodeReport{}
		f := newCoordFold(rep, 3, 0, 2, false)
		step := boundedStep(t, &seq, window, func(rec logstore.Record) error { return f.step(f, rec) }, f.tr)
		step(engine.CoordStarted{Cluster: "c", Epoch: 1})
		step(engine.CoordTxIDsReserved{Through: total + window})
		for i := 1; i <= total+window; i++ {
			if i <= total {
				tx := engine.TxID(i)
				step(engine.CoordPreparing{TxID: tx, Epoch: 1, Participants: parts})
				o := engine.OutcomeCommit
				if i%5 == 0 {
					o = engine.OutcomeAbort
				}
				step(engine.CoordDecided{TxID: tx, Epoch: 1, Outcome: o, Participants: parts})
			}
			if old := i - window + 1; old >= 1 && old <= total {
				step(engine.CoordEnded{TxID: engine.TxID(old)})
			}
		}
		if len(f.tr.txs) != 0 || len(f.eng.Transactions()) != 0 {
			t.Errorf("after every transaction ended: %d tracked, %d in the engine", len(f.tr.txs), len(f.eng.Transactions()))
		}
		if f.states["committed"] != total*4/5 || f.states["aborted"] != total/5 {
			t.Errorf("states %v", f.states)
		}
		if len(rep.Undecodable) != 0 {
			t.Errorf("bad events: %+v", rep.Undecodable)
		}
	})

	t.Run("participant", func(t *testing.T) {
		rep := &NodeReport{}
		f := newPartFold(rep, 3, 0, engine.ParticipantConfig{Node: 0, RememberAborted: 1})
		step := boundedStep(t, &seq, window, func(rec logstore.Record) error { return f.step(f, rec) }, f.tr)
		step(engine.PartEpochSeen{Cluster: "c", Epoch: 1})
		for i := 1; i <= total+window; i++ {
			if i <= total {
				tx := engine.TxID(i)
				switch i % 4 {
				case 0: // voted no: never in memory
					step(engine.PartVotedNo{TxID: tx, Reason: "prepare failed"})
				default:
					step(engine.PartPrepared{TxID: tx, GID: gid(tx)})
				}
			}
			old := i - window + 1
			if old < 1 || old > total {
				continue
			}
			tx := engine.TxID(old)
			switch old % 4 {
			case 0:
				step(engine.PartAborted{TxID: tx, GID: gid(tx), Reason: "prepare failed"})
			case 1:
				step(engine.PartAborted{TxID: tx, GID: gid(tx), Reason: "coordinator decided abort"})
			default:
				step(engine.PartCommitted{TxID: tx, GID: gid(tx)})
				if old%8 == 2 {
					// As logs of earlier builds have it.
					step(engine.PartForgotten{TxID: tx})
				}
			}
		}
		if len(f.tr.txs) != 0 || len(f.eng.Transactions()) != 0 {
			t.Errorf("after every transaction ended: %d tracked, %d in the engine", len(f.tr.txs), len(f.eng.Transactions()))
		}
		if f.states["committed"] != total/2 || f.states["aborted"] != total/2 {
			t.Errorf("states %v", f.states)
		}
	})
}

// TestTrackerKeepsLastEvents checks the ring of last events and the count
// of earlier ones.
func TestTrackerKeepsLastEvents(t *testing.T) {
	tr := newTracker(2, 0)
	for i := range 5 {
		tr.note(7, eventRef{pos: logstore.Pos{Seq: int64(i + 1)}, ev: engine.CoordEnded{TxID: 7}})
	}
	evs, earlier := refs(tr.txs[7], false)
	if len(evs) != 2 || evs[0].Seq != 4 || evs[1].Seq != 5 || earlier != 3 {
		t.Errorf("events %+v, %d earlier; want #4 and #5, 3 earlier", evs, earlier)
	}
	tr.end(7, "committed")
	if len(tr.txs) != 0 {
		t.Errorf("an ended transaction is still tracked")
	}

	only := newTracker(2, 9)
	if only.note(7, eventRef{}) != nil || len(only.txs) != 0 {
		t.Errorf("a tracker for tx 9 tracks tx 7")
	}
	only.note(9, eventRef{ev: engine.CoordEnded{TxID: 9}})
	only.end(9, "aborted")
	if only.txs[9] == nil || only.txs[9].state != "aborted" {
		t.Errorf("the one tracked transaction was forgotten at its end")
	}
}

// TestFoldReportsAnEventTheRowMisplaces checks that an event whose row names
// another transaction for it is a problem: compaction removes events by the
// row's transaction, so it would outlive its transaction or go too early.
func TestFoldReportsAnEventTheRowMisplaces(t *testing.T) {
	rep := &NodeReport{}
	f := newPartFold(rep, 3, 0, engine.ParticipantConfig{})
	good := record(t, 1, engine.PartEpochSeen{Cluster: "c", Epoch: 1})
	bad := record(t, 2, engine.PartVotedNo{TxID: 7, Reason: "r"})
	bad.Index, bad.Tx = 3, 8
	for _, rec := range []logstore.Record{good, bad} {
		if err := f.step(f, rec); err != nil {
			t.Fatal(err)
		}
	}
	if len(rep.Undecodable) != 1 {
		t.Fatalf("reported %+v, want the misplaced event alone", rep.Undecodable)
	}
	if b := rep.Undecodable[0]; b.Seq != 2 || b.Index != 3 || b.Tx != 8 || b.Kind != "part.voted_no" {
		t.Fatalf("reported %+v, want #2.3 part.voted_no as tx 8", b)
	}
}
