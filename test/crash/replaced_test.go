package crash

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testcluster"
)

// TestCoordinatorReplaced is a coordinator that comes back with an empty
// log, as one without a state directory does after a restart, while a
// participant still holds an open transaction of the old log. The new
// coordinator is a new cluster and hands out the same transaction ids
// again; the participant must not take the new transaction 2 for the old
// one. Before the fix, the client was told its row was committed, while
// the participant had committed the old transaction's row instead.
func TestCoordinatorReplaced(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterSpec{participants: 2})
	c.start("", "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p0 := engine.NodeID(0)

	var tx1, tx2 engine.BeginReply
	if err := c.status.Call(ctx, api.MethodBegin, struct{}{}, &tx1); err != nil {
		t.Fatal(err)
	}
	if err := c.status.Call(ctx, api.MethodBegin, struct{}{}, &tx2); err != nil {
		t.Fatal(err)
	}
	orphan := api.ExecParams{TxID: tx2.TxID, Node: &p0, SQL: "INSERT INTO kv VALUES (1, 'orphan of the old log')"}
	if err := c.status.Call(ctx, api.MethodExec, orphan, nil); err != nil {
		t.Fatal(err)
	}

	c.coord.kill(t)
	i := slices.Index(c.coord.args, "--log-db")
	c.coord.args[i+1] = pgtest.NewDB(t)
	c.restart(c.coord)

	var again1, again2 engine.BeginReply
	if err := c.status.Call(ctx, api.MethodBegin, struct{}{}, &again1); err != nil {
		t.Fatal(err)
	}
	if err := c.status.Call(ctx, api.MethodBegin, struct{}{}, &again2); err != nil {
		t.Fatal(err)
	}
	if again2.TxID != tx2.TxID {
		t.Fatalf("the new coordinator began tx %d, not %d again: the case is not exercised", again2.TxID, tx2.TxID)
	}
	fresh := api.ExecParams{TxID: again2.TxID, Node: &p0, SQL: "INSERT INTO kv VALUES (2, 'of the new log')"}
	if err := c.status.Call(ctx, api.MethodExec, fresh, nil); err != nil {
		t.Fatalf("exec on the new coordinator: %v", err)
	}
	var r engine.OutcomeReply
	if err := c.status.Call(ctx, api.MethodCommit, api.TxParams{TxID: again2.TxID}, &r); err != nil {
		t.Fatalf("commit on the new coordinator: %v", err)
	}
	if r.Outcome != engine.OutcomeCommit {
		t.Fatalf("commit on the new coordinator: %s (%s)", r.Outcome, r.Reason)
	}
	testcluster.EventuallyWithin(t, 30*time.Second, "the new transaction to be applied", func() bool {
		s, err := c.txStatus(again2.TxID)
		return err == nil && s.State != engine.PhaseCommitting.String()
	})
	rows := c.rows(0)
	if len(rows) != 1 || rows[2] != "of the new log" {
		t.Fatalf("p0 holds %v, want only row 2 of the new log", rows)
	}
	if v := c.violations(); len(v) > 0 {
		t.Fatalf("violations: %v", v)
	}
	if n := c.count(0, "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'tpcd:%' AND database = current_database()"); n != 0 {
		t.Fatalf("%d prepared transactions left on p0", n)
	}
}
