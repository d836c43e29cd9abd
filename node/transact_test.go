package node_test

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/rpc"
)

func stmt(n int, sql string, args ...any) api.StatementParams {
	id := engine.NodeID(n)
	return api.StatementParams{Node: &id, SQL: sql, Args: args}
}

func (c *testCluster) transact(p api.TransactParams) (api.TransactReply, error) {
	var r api.TransactReply
	err := c.Call(api.MethodTransact, p, &r)
	return r, err
}

// wantRolledBack checks that the transaction an error says was rolled back
// was: its id is only in the message, since no reply named it.
func (c *testCluster) wantRolledBack(err error) {
	c.T.Helper()
	m := regexp.MustCompile(`\(transaction (\d+) rolled back\)`).FindStringSubmatch(err.Error())
	if m == nil {
		c.T.Fatalf("error %q does not say which transaction was rolled back", err)
	}
	id, _ := strconv.ParseUint(m[1], 10, 64)
	tx := engine.TxID(id)
	// Decided abort; "aborting" until every participant it touched
	// acknowledged, which an unreachable one cannot.
	testcluster.Eventually(c.T, fmt.Sprintf("transaction %d decided abort", tx), func() bool {
		return c.Status(tx).Outcome == engine.OutcomeAbort
	})
}

func TestTransactCommitsInOneCall(t *testing.T) {
	c := startCluster(t, clusterConfig{})
	r, err := c.transact(api.TransactParams{Commit: true, Statements: []api.StatementParams{
		stmt(0, "INSERT INTO kv VALUES ($1, $2)", 1, "a"),
		stmt(1, "INSERT INTO kv VALUES ($1, $2)", 2, "b"),
		// Statements for one participant run in the order given: the
		// update finds the row the insert before it wrote.
		stmt(0, "UPDATE kv SET v = 'c' WHERE k = 1"),
		stmt(2, "SELECT count(*) FROM kv"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome == nil || *r.Outcome != engine.OutcomeCommit || r.TxID == 0 {
		t.Fatalf("reply %+v, want a committed transaction", r)
	}
	var tags []string
	for _, res := range r.Results {
		tags = append(tags, res.Tag)
	}
	if want := []string{"INSERT 0 1", "INSERT 0 1", "UPDATE 1", "SELECT 1"}; !slices.Equal(tags, want) {
		t.Fatalf("tags %q, want %q", tags, want)
	}
	if got := r.Results[3].Rows; len(got) != 1 || got[0][0] != "0" {
		t.Fatalf("count on node 2: %v", got)
	}
	testcluster.Eventually(t, "applied", func() bool { return c.Status(r.TxID).State == "committed" })
	var v string
	if err := c.Data[0].QueryRow(t.Context(), "SELECT v FROM kv WHERE k = 1").Scan(&v); err != nil || v != "c" {
		t.Fatalf("node 0 has v = %q (%v), want c", v, err)
	}
	if got := c.Keys(1); !slices.Equal(got, []int{2}) {
		t.Fatalf("node 1 keys %v", got)
	}
}

// noIdleAbort keeps the coordinator from aborting idle transactions within
// a test's patience, so that only the rollback under test can end them.
var noIdleAbort = clusterConfig{engine: engine.CoordinatorConfig{IdleTimeout: time.Hour}}

func TestTransactFailedStatementRollsBack(t *testing.T) {
	c := startCluster(t, noIdleAbort)
	c.Exec1(1, "INSERT INTO kv VALUES (7, 'x')")
	_, err := c.transact(api.TransactParams{Commit: true, Statements: []api.StatementParams{
		stmt(0, "INSERT INTO kv VALUES (7, 'y')"),
		stmt(1, "INSERT INTO kv VALUES (7, 'y')"), // duplicate key
		stmt(2, "INSERT INTO kv VALUES (7, 'y')"),
	}})
	if rpcCode(err) != rpc.CodeAborted {
		t.Fatalf("err %v, want code %d", err, rpc.CodeAborted)
	}
	if msg := err.Error(); !strings.Contains(msg, "statements[1]") || !strings.Contains(msg, "duplicate key") {
		t.Fatalf("error %q should name statements[1] and its cause", msg)
	}
	c.wantRolledBack(err)
	c.Settled()
	for i, want := range [][]int{nil, {7}, nil} {
		if got := c.Keys(i); !slices.Equal(got, want) {
			t.Fatalf("node %d keys %v, want %v", i, got, want)
		}
	}
}

func TestTransactRefusesBadStatementsBeforeRunning(t *testing.T) {
	c := startCluster(t, clusterConfig{})
	cases := []struct {
		name string
		p    api.TransactParams
		code int
		msg  string
	}{
		{"no statements", api.TransactParams{Commit: true}, rpc.CodeInvalidParams, "statements is required"},
		{"node out of range", api.TransactParams{Commit: true, Statements: []api.StatementParams{
			stmt(0, "INSERT INTO kv VALUES (1, 'a')"), stmt(3, "INSERT INTO kv VALUES (1, 'a')"),
		}}, rpc.CodeBadNode, "statements[1]: node 3 does not exist"},
		{"no node", api.TransactParams{Statements: []api.StatementParams{
			stmt(0, "INSERT INTO kv VALUES (1, 'a')"), {SQL: "SELECT 1"},
		}}, rpc.CodeInvalidParams, "statements[1]: node is required"},
		{"no sql", api.TransactParams{Statements: []api.StatementParams{stmt(2, "")}}, rpc.CodeInvalidParams, "statements[0]: sql is required"},
	}
	for _, tc := range cases {
		_, err := c.transact(tc.p)
		if rpcCode(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: err %v, want code %d and %q", tc.name, err, tc.code, tc.msg)
		}
	}
	// Nothing ran: a transaction begun now is the first after the table's.
	tx := c.Begin()
	if st := c.Status(tx - 1); st.State != "committed" && st.State != "forgotten" {
		t.Fatalf("transaction %d before %d is %s: a refused call began one", tx-1, tx, st.State)
	}
	if got := c.Keys(0); len(got) != 0 {
		t.Fatalf("node 0 keys %v", got)
	}
}

func TestTransactContinuesAnOpenTransaction(t *testing.T) {
	c := startCluster(t, clusterConfig{})
	tx := c.Begin()
	c.Exec(tx, 2, "INSERT INTO kv VALUES (1, 'a')")
	r, err := c.transact(api.TransactParams{TxID: tx, Statements: []api.StatementParams{
		stmt(0, "INSERT INTO kv VALUES (2, 'b')"),
		stmt(1, "INSERT INTO kv VALUES (3, 'c')"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if r.TxID != tx || r.Outcome != nil || len(r.Results) != 2 {
		t.Fatalf("reply %+v, want tx %d's two results and no outcome", r, tx)
	}
	if st := c.Status(tx); st.State != "active" {
		t.Fatalf("transaction is %s, want active until its commit", st.State)
	}
	r, err = c.transact(api.TransactParams{TxID: tx, Commit: true, Statements: []api.StatementParams{
		stmt(1, "INSERT INTO kv VALUES (4, 'd')"),
	}})
	if err != nil || r.Outcome == nil || *r.Outcome != engine.OutcomeCommit {
		t.Fatalf("commit: %+v, %v", r, err)
	}
	testcluster.Eventually(t, "applied", func() bool { return c.Status(tx).State == "committed" })
	for i, want := range [][]int{{2}, {3, 4}, {1}} {
		if got := c.Keys(i); !slices.Equal(got, want) {
			t.Fatalf("node %d keys %v, want %v", i, got, want)
		}
	}

	// A failure in an open transaction leaves it to its client, as exec
	// does: abort-only, not rolled back behind the client's back.
	tx = c.Begin()
	_, err = c.transact(api.TransactParams{TxID: tx, Statements: []api.StatementParams{stmt(0, "SELECT * FROM missing")}})
	if rpcCode(err) != rpc.CodeAborted || strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("err %v, want code %d without a rollback", err, rpc.CodeAborted)
	}
	if st := c.Status(tx); st.State != "active" {
		t.Fatalf("transaction is %s, want active (abort-only)", st.State)
	}
	if out := c.Commit(tx); out.Outcome != engine.OutcomeAbort {
		t.Fatalf("commit of a failed transaction: %+v", out)
	}
}

func TestTransactKeepsTheStatementLimit(t *testing.T) {
	c := startCluster(t, clusterConfig{engine: engine.CoordinatorConfig{MaxStatements: 2}})
	// More statements than a transaction may have: refused before anything
	// runs.
	_, err := c.transact(api.TransactParams{Commit: true, Statements: []api.StatementParams{
		stmt(0, "INSERT INTO kv VALUES (1, 'a')"),
		stmt(1, "INSERT INTO kv VALUES (2, 'b')"),
		stmt(2, "INSERT INTO kv VALUES (3, 'c')"),
	}})
	if rpcCode(err) != rpc.CodeLimit || !strings.Contains(err.Error(), "more than one transaction may have (2)") {
		t.Fatalf("err %v, want code %d", err, rpc.CodeLimit)
	}

	// In an open transaction the call would cross the limit: it is
	// refused as a whole, before any of its statements runs; the
	// transaction stays usable, and nothing is committed behind the
	// client's back.
	tx := c.Begin()
	c.Exec(tx, 0, "INSERT INTO kv VALUES (1, 'a')")
	_, err = c.transact(api.TransactParams{TxID: tx, Commit: true, Statements: []api.StatementParams{
		stmt(1, "INSERT INTO kv VALUES (2, 'b')"),
		stmt(2, "INSERT INTO kv VALUES (3, 'c')"),
	}})
	want := fmt.Sprintf("transaction %d would have 3 statements, more than one transaction may have (2); none of these ran", tx)
	if rpcCode(err) != rpc.CodeLimit || !strings.Contains(err.Error(), want) {
		t.Fatalf("err %v, want code %d saying %q", err, rpc.CodeLimit, want)
	}
	if st := c.Status(tx); st.State != "active" {
		t.Fatalf("transaction is %s, want active", st.State)
	}
	c.CommitApplied(tx)
	for i, want := range [][]int{{1}, nil, nil} {
		if got := c.Keys(i); !slices.Equal(got, want) {
			t.Fatalf("node %d keys %v, want %v", i, got, want)
		}
	}
}

// TestTransactReportsTheCause: when a participant is unreachable, the
// statements queued behind a slow one elsewhere are refused because the
// transaction is doomed; the error names the statement that doomed it.
func TestTransactReportsTheCause(t *testing.T) {
	c := startCluster(t, noIdleAbort)
	c.StopParticipant(1)
	_, err := c.transact(api.TransactParams{Commit: true, Statements: []api.StatementParams{
		stmt(0, "SELECT pg_sleep(1)"),
		stmt(0, "SELECT 1"),
		stmt(1, "SELECT 1"),
	}})
	if rpcCode(err) != rpc.CodeAborted || !strings.Contains(err.Error(), "statements[2]: p1 unreachable") {
		t.Fatalf("err %v, want statements[2] with p1 unreachable", err)
	}
	c.wantRolledBack(err)
}

func TestTransactReportsANoVote(t *testing.T) {
	c := startCluster(t, clusterConfig{})
	c.Exec1(1, "CREATE TABLE once (k int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
	// The duplicate passes its statement and fails at PREPARE, where the
	// deferred check runs: node 1 votes no.
	r, err := c.transact(api.TransactParams{Commit: true, Statements: []api.StatementParams{
		stmt(0, "INSERT INTO kv VALUES (1, 'a')"),
		stmt(1, "INSERT INTO once VALUES (1), (1)"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome == nil || *r.Outcome != engine.OutcomeAbort || !strings.Contains(r.Reason, "duplicate key") {
		t.Fatalf("reply %+v, want abort for the duplicate", r)
	}
	c.Settled()
	if got := c.Keys(0); len(got) != 0 {
		t.Fatalf("node 0 keys %v", got)
	}
}
