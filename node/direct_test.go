package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/rpc"
)

// TestDirectStatements: a client begins at the coordinator, sends its
// statements to the participants itself, and commits with its count of
// each branch's statements. An honest count commits every statement; a
// count one short (an answer the client never got) aborts the whole
// transaction, whose rows then exist nowhere.
func TestDirectStatements(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 2})
	c.Exec1(0, "CREATE TABLE d (k int PRIMARY KEY)")
	c.Exec1(1, "CREATE TABLE d (k int PRIMARY KEY)")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	parts := make([]*rpc.Client, 2)
	for i, addr := range c.PartAddrs {
		parts[i] = rpc.NewClient(addr, rpc.ClientOptions{Stream: true})
		t.Cleanup(func() { parts[i].Close() })
	}
	begin := func() engine.BeginReply {
		t.Helper()
		var b engine.BeginReply
		if err := c.Call(api.MethodBegin, struct{}{}, &b); err != nil || b.Cluster == "" || b.Epoch == 0 {
			t.Fatalf("begin: %+v %v (want the header for direct statements)", b, err)
		}
		return b
	}
	direct := func(b engine.BeginReply, n, stmt int, sql string) (engine.ExecResult, error) {
		var r engine.ExecResult
		err := parts[n].Call(ctx, api.MethodDirectExec, api.DirectExecParams{Cluster: b.Cluster, Epoch: b.Epoch, TxID: b.TxID, Stmt: stmt, SQL: sql}, &r)
		return r, err
	}
	commit := func(b engine.BeginReply, counts ...int) engine.OutcomeReply {
		t.Helper()
		p := api.TxParams{TxID: b.TxID}
		for n, k := range counts {
			p.Direct = append(p.Direct, engine.DirectBranch{Node: engine.NodeID(n), Stmts: k, Wrote: true})
		}
		var r engine.OutcomeReply
		if err := c.Call(api.MethodCommit, p, &r); err != nil {
			t.Fatalf("commit %d: %v", b.TxID, err)
		}
		return r
	}
	nothingLeft := func() {
		t.Helper()
		testcluster.Eventually(t, "no branch left prepared or open", func() bool {
			for n := range 2 {
				var open int
				if err := c.Data[n].QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
					WHERE datname = current_database() AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'`).Scan(&open); err != nil {
					t.Fatal(err)
				}
				if open > 0 || len(c.Prepared(n)) > 0 {
					return false
				}
			}
			return true
		})
	}
	rows := func(n int) int {
		var k int
		if err := c.Data[n].QueryRow(ctx, "SELECT count(*) FROM d").Scan(&k); err != nil {
			t.Fatal(err)
		}
		return k
	}

	b := begin()
	for _, s := range []struct {
		node, stmt int
		sql        string
	}{{0, 0, "INSERT INTO d VALUES (1)"}, {1, 0, "INSERT INTO d VALUES (2)"}, {0, 1, "INSERT INTO d VALUES (3)"}} {
		r, err := direct(b, s.node, s.stmt, s.sql)
		if err != nil || r.Result == nil || r.Result.RowsAffected != 1 || r.From != engine.NodeID(s.node) {
			t.Fatalf("%s on p%d: %+v %v", s.sql, s.node, r, err)
		}
	}
	if r := commit(b, 2, 1); r.Outcome != engine.OutcomeCommit {
		t.Fatalf("honest count: %s (%s)", r.Outcome, r.Reason)
	}
	c.CommitApplied(b.TxID)
	if rows(0) != 2 || rows(1) != 1 {
		t.Fatalf("rows after the commit: p0 %d, p1 %d; want 2 and 1", rows(0), rows(1))
	}

	// A statement that ran but that the commit does not count.
	b = begin()
	if _, err := direct(b, 0, 0, "INSERT INTO d VALUES (4)"); err != nil {
		t.Fatal(err)
	}
	if _, err := direct(b, 1, 0, "INSERT INTO d VALUES (5)"); err != nil {
		t.Fatal(err)
	}
	if r := commit(b, 1, 0); r.Outcome != engine.OutcomeAbort {
		t.Fatalf("a count one short: %s, want abort", r.Outcome)
	}
	nothingLeft()
	if rows(0) != 2 || rows(1) != 1 {
		t.Fatalf("rows after the abort: p0 %d, p1 %d; want 2 and 1 still", rows(0), rows(1))
	}

	// A copy of the last statement is answered with its result again;
	// another statement under its number is refused, not taken for it.
	b = begin()
	first, err := direct(b, 0, 0, "INSERT INTO d VALUES (8)")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := direct(b, 0, 0, "INSERT INTO d VALUES (8)"); err != nil || again.Result == nil || again.Result.Tag != first.Result.Tag {
		t.Fatalf("a copy of statement 0: %+v %v, want its result again", again, err)
	}
	if _, err := direct(b, 0, 0, "INSERT INTO d VALUES (9)"); !rpc.IsCode(err, rpc.CodeAborted) {
		t.Fatalf("another statement numbered 0: %v, want it refused", err)
	}
	if r := commit(b, 1); r.Outcome != engine.OutcomeCommit {
		t.Fatalf("after the refused copy: %s (%s)", r.Outcome, r.Reason)
	}
	c.CommitApplied(b.TxID)
	var nine int
	if err := c.Data[0].QueryRow(ctx, "SELECT count(*) FROM d WHERE k = 9").Scan(&nine); err != nil || nine != 0 || rows(0) != 3 {
		t.Fatalf("p0 holds %d rows, %d of them the refused one (%v); want 3 and none", rows(0), nine, err)
	}

	// Statements out of order fail at once rather than hang; a statement
	// without the epoch from begin is refused before the engine sees it
	// (the engine's refusal of another cluster's is security_test's).
	b = begin()
	if _, err := direct(b, 0, 1, "INSERT INTO d VALUES (6)"); !rpc.IsCode(err, rpc.CodeAborted) {
		t.Fatalf("statement 1 before statement 0: %v, want a statement error", err)
	}
	stale := b
	stale.Epoch = 0
	if _, err := direct(stale, 0, 0, "INSERT INTO d VALUES (7)"); !rpc.IsCode(err, rpc.CodeInvalidParams) {
		t.Fatalf("no epoch: %v, want invalid params", err)
	}
	var r engine.OutcomeReply
	if err := c.Call(api.MethodRollback, api.TxParams{TxID: b.TxID, Direct: []engine.DirectBranch{{Node: 0}}}, &r); err != nil || r.Outcome != engine.OutcomeAbort {
		t.Fatalf("rollback: %+v %v", r, err)
	}
	nothingLeft()
}
