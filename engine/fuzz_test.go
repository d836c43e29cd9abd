package engine_test

import (
	"bytes"
	"testing"

	"github.com/tpcd/tpcd/engine"
)

// FuzzDecodeEvent feeds arbitrary bytes to DecodeEvent, the first thing
// recovery does with every row of a log. It must never panic, and whatever
// it accepts must encode again and decode to the same event (re-encoding is
// a fixed point), so that a log that recovery accepted survives being
// rewritten. The seed corpus is in testdata/fuzz/FuzzDecodeEvent.
func FuzzDecodeEvent(f *testing.F) {
	for _, ev := range []engine.Event{
		engine.CoordStarted{Cluster: "c", Epoch: 1},
		engine.CoordTxIDsReserved{Through: 1024},
		engine.CoordPreparing{TxID: 7, Epoch: 2, Participants: []engine.NodeID{0, 2}},
		engine.CoordDecided{TxID: 7, Epoch: 2, Outcome: engine.OutcomeAbort, Participants: []engine.NodeID{1}, Reason: "p1 voted no"},
		engine.CoordEnded{TxID: 7},
		engine.PartEpochSeen{Cluster: "c", Epoch: 3},
		engine.PartPrepared{TxID: 7, GID: "tpcd:c:2:7:0"},
		engine.PartVotedNo{TxID: 7, Reason: "lock timeout"},
		engine.PartCommitted{TxID: 7, GID: "tpcd:c:2:7:0"},
		engine.PartAborted{TxID: 7},
		engine.PartForgotten{TxID: 7},
		engine.PartViolation{TxID: 7, Detail: "marker missing"},
	} {
		b, err := engine.EncodeEvent(ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := engine.DecodeEvent(b)
		if err != nil {
			return
		}
		once, err := engine.EncodeEvent(ev)
		if err != nil {
			t.Fatalf("decoded %s but cannot encode it: %v", ev.Kind(), err)
		}
		again, err := engine.DecodeEvent(once)
		if err != nil {
			t.Fatalf("re-encoded %s does not decode: %v\n%s", ev.Kind(), err, once)
		}
		twice, err := engine.EncodeEvent(again)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(once, twice) || again.Kind() != ev.Kind() || again.Tx() != ev.Tx() {
			t.Fatalf("round trip changed the event:\n%s\n%s", once, twice)
		}
	})
}
