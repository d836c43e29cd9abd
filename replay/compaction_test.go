package replay_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/replay"
)

// compacted waits until l's log holds nothing but node-level events and
// violations.
func compacted(t *testing.T, l logRef) {
	t.Helper()
	store := logstore.New(l.log)
	ctx := context.Background()
	testcluster.Eventually(t, l.node+" compacted to its node-level events", func() bool {
		left := 0
		err := store.Scan(ctx, l.node, func(r logstore.Record) error {
			if r.Tx != 0 && !violation(t, r) {
				left++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return left == 0
	})
}

func violation(t *testing.T, r logstore.Record) bool {
	t.Helper()
	ev, err := engine.DecodeEvent(r.Payload)
	if err != nil {
		t.Fatalf("event %s: %v", r.Pos, err)
	}
	_, ok := ev.(engine.PartViolation)
	return ok
}

// TestCompaction runs transactions on a cluster that compacts its logs
// every 50ms, checks the events of ended transactions leave the logs, then
// restarts the coordinator and a participant on the same databases and
// checks that recovery from compacted logs is still right.
func TestCompaction(t *testing.T) {
	ctx := context.Background()
	c := startCluster(t, 2, 50*time.Millisecond)
	var committed, aborted []int
	var txs []engine.TxID
	for i := range 20 {
		tx := c.begin()
		txs = append(txs, tx)
		c.Exec(tx, 0, "INSERT INTO kv VALUES ($1, 'x')", 100+i)
		c.Exec(tx, 1, "INSERT INTO kv VALUES ($1, 'x')", 100+i)
		if i%4 == 3 {
			c.Rollback(tx)
			aborted = append(aborted, 100+i)
		} else {
			c.MustCommit(tx)
			committed = append(committed, 100+i)
		}
	}
	c.settled()
	logs := c.logs()
	for _, l := range logs {
		compacted(t, l)
		for _, tx := range txs {
			recs, err := logstore.New(l.log).TxRows(ctx, l.node, uint64(tx))
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if r.Tx == uint64(tx) {
					t.Errorf("%s still has event %s of ended tx %d", l.node, r.Pos, tx)
				}
			}
		}
		rep := replayOf(t, l, replay.Options{})
		n := rep.Nodes[0]
		for state, count := range n.States {
			if count != 0 {
				t.Errorf("%s after compaction: %d transactions %s", l.node, count, state)
			}
		}
		if !rep.Consistent() || n.InMemory != 0 {
			t.Errorf("%s after compaction: %d problems, %d in memory", l.node, rep.Problems, n.InMemory)
		}
	}
	before := replayOf(t, logs[0], replay.Options{}).Nodes[0].Coordinator
	if before.HighestTx != 0 || before.NextTx <= uint64(txs[len(txs)-1]) {
		t.Errorf("compacted coordinator: %+v; the reservation must keep the next id above %d", before, txs[len(txs)-1])
	}

	// Restart the coordinator and participant 0 on their compacted logs.
	c.StopCoordinator()
	c.StopParticipant(0)
	c.StartParticipant(0)
	c.StartCoordinator()

	var st engine.StatusReply
	if err := c.Call(api.MethodStatus, api.TxParams{TxID: txs[0]}, &st); err != nil {
		t.Fatal(err)
	}
	// The log forgot it; the outcomes the coordinator keeps beside the log
	// still know how it ended.
	if st.State != "committed" {
		t.Errorf("status of compacted tx %d after the restart: %s, want committed (kept beside the log)", txs[0], st.State)
	}
	for i := range 5 {
		tx := c.begin()
		if slices.Contains(txs, tx) || tx <= txs[len(txs)-1] {
			t.Fatalf("tx id %d after the restart reuses or precedes an id before it (last %d)", tx, txs[len(txs)-1])
		}
		txs = append(txs, tx)
		c.Exec(tx, 0, "INSERT INTO kv VALUES ($1, 'y')", 200+i)
		c.Exec(tx, 1, "INSERT INTO kv VALUES ($1, 'y')", 200+i)
		c.MustCommit(tx)
		committed = append(committed, 200+i)
	}
	c.settled()
	for _, l := range logs {
		compacted(t, l)
		rep := replayOf(t, l, replay.Options{})
		if !rep.Consistent() || rep.Nodes[0].InMemory != 0 {
			t.Errorf("%s after the restart: %d problems, %d in memory", l.node, rep.Problems, rep.Nodes[0].InMemory)
		}
	}
	after := replayOf(t, logs[0], replay.Options{}).Nodes[0]
	if after.Coordinator.Incarnations != 2 || after.Epoch != 2 || after.Coordinator.NextTx <= uint64(txs[len(txs)-1]) {
		t.Errorf("coordinator after the restart: epoch %d, %+v", after.Epoch, after.Coordinator)
	}
	for i := range c.Parts {
		keys := c.Keys(i)
		if fmt.Sprint(keys) != fmt.Sprint(committed) {
			t.Errorf("participant %d holds keys %v, want the committed ones %v (aborted: %v)", i, keys, committed, aborted)
		}
	}
}

// TestCompactionAfterRestart runs transactions while the nodes do not
// compact, as a node leaves its log when it crashes between the end of
// transactions and their compaction, then restarts the coordinator and
// participant 0 with compaction on: both hand every transaction their log
// shows ended to compaction, so the logs shed them without new traffic.
func TestCompactionAfterRestart(t *testing.T) {
	ctx := context.Background()
	c := startCluster(t, 2, -1)
	for i := range 6 {
		tx := c.begin()
		c.Exec(tx, 0, "INSERT INTO kv VALUES ($1, 'x')", 100+i)
		c.Exec(tx, 1, "INSERT INTO kv VALUES ($1, 'x')", 100+i)
		if i%3 == 2 {
			c.Rollback(tx)
		} else {
			c.MustCommit(tx)
		}
	}
	c.settled()
	logs := c.logs()
	last := engine.TxID(replayOf(t, logs[0], replay.Options{}).Nodes[0].Coordinator.HighestTx)
	for _, l := range logs[:2] {
		before := replayOf(t, l, replay.Options{}).Nodes[0]
		if before.States["committed"] < 4 || before.States["aborted"] < 2 {
			t.Fatalf("%s before the restart: states %v, want the 4 commits and 2 rollbacks still in the log", l.node, before.States)
		}
	}
	c.StopCoordinator()
	c.StopParticipant(0)
	// A violation recorded for one of them stays through compaction: it is
	// evidence, not a transaction's state.
	appendEvents(t, logs[1].log, logs[1].node, engine.PartViolation{TxID: last, Detail: "made by hand"})
	c.PartOpts[0].CompactEvery = 50 * time.Millisecond
	c.CoordOpts.CompactEvery = 50 * time.Millisecond
	c.StartParticipant(0)
	c.StartCoordinator()
	compacted(t, logs[0])
	testcluster.Eventually(t, logs[1].node+" compacted", func() bool {
		st := replayOf(t, logs[1], replay.Options{}).Nodes[0].States
		return st["committed"] == 0 && st["aborted"] == 0
	})
	for _, l := range logs[:2] {
		rep := replayOf(t, l, replay.Options{})
		for state, count := range rep.Nodes[0].States {
			if count != 0 {
				t.Errorf("%s compacted after the restart: %d transactions %s", l.node, count, state)
			}
		}
		if n, err := logstore.New(l.log).Count(ctx, l.node); err != nil || n.Events == 0 {
			t.Errorf("%s: %d events left, err %v; its node-level events must stay", l.node, n.Events, err)
		}
	}
	if v := replayOf(t, logs[1], replay.Options{}).Nodes[0].Violations; len(v) != 1 || v[0].Detail != "made by hand" {
		t.Errorf("%s after compaction: violations %+v, want the one made by hand", logs[1].node, v)
	}
	// Participant 1, not restarted and still not compacting, keeps them:
	// the restarts did it, not the transactions' own ends.
	if st := replayOf(t, logs[2], replay.Options{}).Nodes[0].States; st["committed"] < 4 || st["aborted"] < 2 {
		t.Errorf("%s, not restarted: states %v, want its ended transactions still in the log", logs[2].node, st)
	}
}
