package node_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/rpc"
)

// keyedTransact runs statements on node 0 and node 1 as one committed
// transaction named by key.
func (c *testCluster) keyedTransact(key string, sql ...string) (api.TransactReply, error) {
	p := api.TransactParams{Commit: true, Key: key}
	for i, q := range sql {
		n := engine.NodeID(i % 2)
		p.Statements = append(p.Statements, api.StatementParams{Node: &n, SQL: q})
	}
	var r api.TransactReply
	err := c.Call(api.MethodTransact, p, &r)
	return r, err
}

func (c *testCluster) statusBy(p api.StatusParams) engine.StatusReply {
	c.T.Helper()
	var r engine.StatusReply
	if err := c.Call(api.MethodStatus, p, &r); err != nil {
		c.T.Fatalf("status %+v: %v", p, err)
	}
	return r
}

// The outcome of a transaction outlives the coordinator's memory, log
// compaction and a restart: status by id and by key gives it, and a call
// repeated with the key is answered with it instead of running again. A
// transaction that ended before anything of it was logged reads aborted,
// not forgotten.
func TestOutcomesOutliveCompactionAndRestart(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 2, compactEvery: 50 * time.Millisecond,
		engine: engine.CoordinatorConfig{RememberEnded: 1}})
	committed, err := c.keyedTransact("transfer-1", "INSERT INTO kv VALUES (1, 'a')", "INSERT INTO kv VALUES (1, 'a')")
	if err != nil || committed.Outcome == nil || *committed.Outcome != engine.OutcomeCommit {
		t.Fatalf("keyed transact: %+v, %v", committed, err)
	}
	// Applied everywhere first, so that the duplicate below meets a
	// committed row and not a prepared one it would wait for.
	testcluster.Eventually(t, "transfer-1 applied", func() bool { return c.Status(committed.TxID).State == "committed" })
	c.Exec1(0, "INSERT INTO kv VALUES (2, 'b')")
	// A duplicate key aborts the second transaction.
	_, err = c.keyedTransact("transfer-2", "INSERT INTO kv VALUES (3, 'c')", "INSERT INTO kv VALUES (1, 'dup')")
	if rpcCode(err) != rpc.CodeAborted {
		t.Fatalf("transact with a duplicate row: %v, want aborted", err)
	}
	var aborted engine.StatusReply
	testcluster.Eventually(t, "transfer-2 aborted everywhere", func() bool {
		aborted = c.statusBy(api.StatusParams{Key: "transfer-2"})
		return aborted.State == "aborted" && aborted.TxID != 0
	})
	for i := 10; i < 14; i++ {
		c.Exec1(1, "INSERT INTO kv VALUES ($1, 'filler')", i)
	}
	// Compaction removed the events of the first transaction, and the
	// engine, which remembers one ended transaction, has forgotten it.
	testcluster.Eventually(t, "the first transaction's events compacted", func() bool {
		var rows int
		err := c.CoordDBs.Log.QueryRow(context.Background(),
			"SELECT count(*) FROM tpcd_log WHERE $1::bigint = ANY (txs)", int64(committed.TxID)).Scan(&rows)
		return err == nil && rows == 0
	})

	check := func(when string) {
		t.Helper()
		if st := c.Status(committed.TxID); st.State != "committed" || st.Outcome != engine.OutcomeCommit {
			t.Fatalf("%s: status of tx %d: %+v, want committed", when, committed.TxID, st)
		}
		if st := c.statusBy(api.StatusParams{Key: "transfer-1"}); st.TxID != committed.TxID || st.State != "committed" {
			t.Fatalf("%s: status by key: %+v, want tx %d committed", when, st, committed.TxID)
		}
		if st := c.Status(aborted.TxID); st.State != "aborted" || !strings.Contains(st.Reason, "duplicate") {
			t.Fatalf("%s: status of the aborted tx %d: %+v", when, aborted.TxID, st)
		}
		// Run again, the first insert would fail on its primary key: a
		// commit answer means it did not run.
		again, err := c.keyedTransact("transfer-1", "INSERT INTO kv VALUES (1, 'a')", "INSERT INTO kv VALUES (1, 'a')")
		if err != nil || !again.Repeated || again.TxID != committed.TxID || again.Outcome == nil || *again.Outcome != engine.OutcomeCommit {
			t.Fatalf("%s: transact repeated with its key: %+v, %v; want tx %d's commit, repeated", when, again, err, committed.TxID)
		}
		var b engine.BeginReply
		if err := c.Call(api.MethodBegin, api.BeginParams{Key: "transfer-2"}, &b); rpcCode(err) != rpc.CodeKeyUsed {
			t.Fatalf("%s: begin with the key of an aborted transaction: %+v, %v; want key used", when, b, err)
		}
	}
	check("after compaction")

	// A transaction begun and left open when the coordinator stops has
	// nothing in the log but its id's reservation.
	open := c.Begin()
	c.Exec(open, 0, "INSERT INTO kv VALUES (20, 'never')")
	c.RestartCoordinator()
	check("after a restart")
	if st := c.Status(open); st.State != "aborted" || !strings.Contains(st.Reason, "no record") {
		t.Fatalf("status of the transaction open at the restart: %+v, want aborted with no record", st)
	}
	c.Settled()
	if got := c.Keys(0); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("node 0 keys %v, want [1 2]", got)
	}
}

// Keys and status params are checked before anything runs.
func TestKeyParamsAreChecked(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 1})
	n := engine.NodeID(0)
	long := strings.Repeat("k", api.MaxKeyBytes+1)
	cases := []struct {
		name   string
		method string
		params any
		want   string
	}{
		{"long begin key", api.MethodBegin, api.BeginParams{Key: long}, "more than 200"},
		{"long transact key", api.MethodTransact, api.TransactParams{Key: long, Statements: []api.StatementParams{{Node: &n, SQL: "SELECT 1"}}}, "more than 200"},
		{"key with tx", api.MethodTransact, api.TransactParams{TxID: 5, Key: "k", Statements: []api.StatementParams{{Node: &n, SQL: "SELECT 1"}}}, "without tx"},
		{"long execute key", api.MethodExecute, api.ExecuteParams{Node: &n, SQL: "SELECT 1", Key: long}, "more than 200"},
		{"status of nothing", api.MethodStatus, api.StatusParams{}, "tx or key is required"},
		{"status of both", api.MethodStatus, api.StatusParams{TxID: 1, Key: "k"}, "not both"},
	}
	for _, tc := range cases {
		var r any
		err := c.Call(tc.method, tc.params, &r)
		if rpcCode(err) != rpc.CodeInvalidParams || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want invalid params saying %q", tc.name, err, tc.want)
		}
	}
	// A key never used is unknown, not an error.
	if st := c.statusBy(api.StatusParams{Key: "never-used"}); st.State != "unknown" {
		t.Fatalf("status of a key never used: %+v", st)
	}
	// A repeated begin names the open transaction.
	var b1, b2 engine.BeginReply
	if err := c.Call(api.MethodBegin, api.BeginParams{Key: "b"}, &b1); err != nil {
		t.Fatal(err)
	}
	if err := c.Call(api.MethodBegin, api.BeginParams{Key: "b"}, &b2); err != nil || b2.TxID != b1.TxID || !b2.Repeated {
		t.Fatalf("begin repeated with its key: %+v, %v; want tx %d, repeated", b2, err, b1.TxID)
	}
}

// An abort that cannot reach a participant is in doubt: indoubt lists it
// with what it waits for and from whom; resolve, once the participant is
// back, sends the decision again at once, and is logged.
func TestInDoubtAndResolve(t *testing.T) {
	var logs testbin.SyncBuffer
	// A long backoff, so that only resolve gets the decision there soon.
	c := startCluster(t, clusterConfig{participants: 2, coordLog: &logs,
		engine: engine.CoordinatorConfig{RetryMin: 10 * time.Minute, RetryMax: 10 * time.Minute}})
	tx := c.Begin()
	c.Exec(tx, 0, "INSERT INTO kv VALUES (1, 'a')")
	c.Exec(tx, 1, "INSERT INTO kv VALUES (1, 'a')")
	c.StopParticipant(1)
	var r engine.OutcomeReply
	if err := c.Call(api.MethodRollback, api.TxParams{TxID: tx}, &r); err != nil || r.Outcome != engine.OutcomeAbort {
		t.Fatalf("rollback: %+v, %v", r, err)
	}
	var list []api.InDoubtTx
	testcluster.Eventually(t, "the abort in doubt at p1, p1 unreachable", func() bool {
		list = nil
		if err := c.Call(api.MethodInDoubt, struct{}{}, &list); err != nil {
			t.Fatal(err)
		}
		return len(list) == 1 && len(list[0].WaitingOn) == 1 && !list[0].WaitingOn[0].Reachable
	})
	d := list[0]
	if d.TxID != tx || d.State != "aborting" || !strings.Contains(d.Waiting, "abort") || d.WaitingOn[0].Node != 1 || d.AgeMillis <= 0 || d.NextTryMillis <= 0 {
		t.Fatalf("in doubt: %+v", d)
	}
	c.StartParticipant(1)
	var st engine.StatusReply
	if err := c.Call(api.MethodResolve, api.TxParams{TxID: tx}, &st); err != nil || st.TxID != tx {
		t.Fatalf("resolve: %+v, %v", st, err)
	}
	testcluster.Eventually(t, "the transaction ended after resolve", func() bool { return c.Status(tx).State == "aborted" })
	if err := c.Call(api.MethodInDoubt, struct{}{}, &list); err != nil || len(list) != 0 {
		t.Fatalf("in doubt after resolve: %+v, %v", list, err)
	}
	if err := c.Call(api.MethodResolve, api.TxParams{TxID: tx}, &st); rpcCode(err) != rpc.CodeTxNotActive {
		t.Fatalf("resolve of an ended transaction: %v, want not active", err)
	}
	if n := strings.Count(logs.String(), "manual resolve"); n != 2 {
		t.Fatalf("%d log lines about manual resolves, want 2 (one done, one refused):\n%s", n, logs.String())
	}
}
