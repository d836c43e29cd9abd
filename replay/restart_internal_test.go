package replay

import (
	"context"
	"strings"
	"testing"

	"github.com/tpcd/tpcd/engine"
)

// TestUnclassifiedRestart feeds classify restart plans that no category
// describes, as an engine changed after replay would produce, and checks
// they are reported as problems that say what the restart does, never
// dropped as agreement. Those a real start step produces are covered by
// TestReplayFindings.
func TestUnclassifiedRestart(t *testing.T) {
	const tx = engine.TxID(7)
	g := engine.GID{Cluster: "c", Epoch: 1, Tx: tx, Node: 0}.String()
	preparedFacts := facts{prepared: map[engine.TxID]string{tx: g}, markers: map[engine.TxID]string{}}
	for _, tc := range []struct {
		name    string
		st      logState
		fs      facts
		effects []engine.Effect
		events  []engine.Event
		says    string
	}{
		{
			name: "an unlogged prepared transaction rolled back at once",
			fs:   preparedFacts, effects: []engine.Effect{engine.Data{Op: engine.DataRollbackPrepared, TxID: tx, GID: g, WaitLSN: 3}},
			says: "a restart rolls it back (ROLLBACK PREPARED): data rollback-prepared tx=7 gid=" + g,
		},
		{
			name: "an in-doubt transaction committed as well as asked about",
			st:   logState{phase: "prepared", gid: g}, fs: preparedFacts,
			effects: []engine.Effect{
				engine.Data{Op: engine.DataCommitPrepared, TxID: tx, GID: g},
				engine.Send{To: engine.CoordinatorNode, Msg: engine.InquireMessage{From: 0, TxID: tx}},
			},
			says: "a restart commits it (COMMIT PREPARED) and asks the coordinator",
		},
		{
			name:   "a violation about a transaction that is not prepared",
			st:     logState{phase: "committed", gid: g, last: "part.committed", committed: true},
			fs:     facts{prepared: map[engine.TxID]string{}, markers: map[engine.TxID]string{}},
			events: []engine.Event{engine.PartViolation{TxID: tx, Detail: "something new"}},
			says:   `a restart logs a violation: log part.violation tx=7 detail="something new"`,
		},
	} {
		ps := &restartPlans{txs: map[engine.TxID]*restartPlan{}}
		for _, ev := range tc.events {
			ps.event(ev)
		}
		for _, ef := range tc.effects {
			ps.effect(ef)
		}
		c := &checker{r: &runner{}, rep: &NodeReport{}}
		fd, found, err := c.classify(context.Background(), tx, tc.st, tc.fs, ps.txs[tx])
		if err != nil {
			t.Fatal(err)
		}
		if !found || fd.Category != FindingUnclassified || !fd.Problem || !strings.Contains(fd.Detail, tc.says) {
			t.Errorf("%s: found=%t %+v; want an unclassified problem saying %q", tc.name, found, fd, tc.says)
		}
	}
}

// TestRestartNotes checks that what a start step says beyond single
// transactions reaches the report, and that its housekeeping does not.
func TestRestartNotes(t *testing.T) {
	ps := &restartPlans{txs: map[engine.TxID]*restartPlan{}}
	for _, ef := range []engine.Effect{engine.AskCoordinator{}, engine.Forget{TxID: 3}, engine.Warning{Detail: "the log went back in time"}} {
		ps.effect(ef)
	}
	if len(ps.txs) != 0 || len(ps.notes) != 1 || ps.notes[0] != "WARNING the log went back in time" {
		t.Errorf("plans %v, notes %q; want only the warning, as a note", ps.txs, ps.notes)
	}
}
