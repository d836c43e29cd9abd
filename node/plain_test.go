package node_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// TestPlainTransactions: a participant runs one participant's statements
// as a plain transaction of its data server, over a real socket. What
// commits is all there; a statement PostgreSQL refuses, or a COMMIT it
// refuses, leaves none of the transaction and no session in a transaction;
// both ways of sending statements (one pipeline, or one by one for
// statements without arguments) behave alike; and what needs the
// coordinator is refused with the reason.
func TestPlainTransactions(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 2})
	c.Exec1(1, "CREATE TABLE pl (k int PRIMARY KEY, v text)")
	c.Exec1(1, "CREATE TABLE pld (k int, CONSTRAINT u UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	part := rpc.NewClient(c.PartAddrs[1], rpc.ClientOptions{Stream: true})
	t.Cleanup(func() { part.Close() })
	one := engine.NodeID(1)
	stmt := func(sql string, args ...any) api.StatementParams {
		return api.StatementParams{Node: &one, SQL: sql, Args: args}
	}
	plain := func(stmts ...api.StatementParams) (engine.TransactReply, error) {
		var r engine.TransactReply
		err := part.Call(ctx, api.MethodPlainTransact, api.TransactParams{Commit: true, Statements: stmts}, &r)
		return r, err
	}
	count := func(sql string) int {
		t.Helper()
		var k int
		if err := c.Data[1].QueryRow(ctx, sql).Scan(&k); err != nil {
			t.Fatal(err)
		}
		return k
	}
	noOpenSession := func() {
		t.Helper()
		if open := count(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'`); open != 0 {
			t.Fatalf("%d sessions left in a transaction", open)
		}
	}

	r, err := plain(stmt("INSERT INTO pl VALUES ($1, $2)", 1, "a"), stmt("INSERT INTO pl VALUES ($1, $2)", 2, "b"), stmt("SELECT v FROM pl WHERE k = $1", 2))
	if err != nil || r.Outcome == nil || *r.Outcome != engine.OutcomeCommit || r.TxID != 0 || len(r.Results) != 3 {
		t.Fatalf("pipelined plain transaction: %+v, %v", r, err)
	}
	if r.Results[0].Tag != "INSERT 0 1" || len(r.Results[2].Rows) != 1 || r.Results[2].Rows[0][0] != "b" {
		t.Fatalf("results %+v %+v: want the insert's tag and the row it wrote, seen inside the transaction", r.Results[0], r.Results[2])
	}
	r, err = plain(stmt("INSERT INTO pl VALUES (3, 'c'); INSERT INTO pl VALUES (4, 'd')"), stmt("UPDATE pl SET v = 'z' WHERE k <= 2"))
	if err != nil || len(r.Results) != 2 || r.Results[1].RowsAffected != 2 {
		t.Fatalf("plain transaction sent a statement at a time: %+v, %v", r, err)
	}
	if n := count("SELECT count(*) FROM pl"); n != 4 {
		t.Fatalf("%d rows after two committed transactions, want 4", n)
	}

	for _, tc := range []struct {
		name  string
		stmts []api.StatementParams
		state string
		want  string
	}{
		{"pipelined, second statement fails", []api.StatementParams{stmt("INSERT INTO pl VALUES ($1, $2)", 10, "x"), stmt("INSERT INTO pl VALUES ($1, $2)", 1, "dup")}, "23505", "statements[1]"},
		{"in turn, second statement fails", []api.StatementParams{stmt("INSERT INTO pl VALUES (11, 'x')"), stmt("INSERT INTO pl VALUES (1, 'dup')")}, "23505", "statements[1]"},
		{"pipelined, the commit fails", []api.StatementParams{stmt("INSERT INTO pl VALUES ($1, $2)", 12, "x"), stmt("INSERT INTO pld VALUES ($1)", 5), stmt("INSERT INTO pld VALUES ($1)", 5)}, "23505", "commit"},
		{"in turn, the commit fails", []api.StatementParams{stmt("INSERT INTO pl VALUES (13, 'x')"), stmt("INSERT INTO pld VALUES (6), (6)")}, "23505", "commit"},
	} {
		_, err := plain(tc.stmts...)
		sqlErr, ok := api.SQLErrorOf(err)
		if !rpc.IsCode(err, rpc.CodeAborted) || !ok || sqlErr.Code != tc.state || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "rolled back") {
			t.Fatalf("%s: %v (SQL error %+v): want an abort naming %s with SQLSTATE %s", tc.name, err, sqlErr, tc.want, tc.state)
		}
		if n := count("SELECT count(*) FROM pl WHERE k >= 10") + count("SELECT count(*) FROM pld"); n != 0 {
			t.Fatalf("%s: %d rows of the rolled-back transaction are there", tc.name, n)
		}
		noOpenSession()
	}
	// A statement whose argument pgx cannot send fails before it runs; the
	// transaction is rolled back like any other whose statement failed.
	_, err = plain(stmt("INSERT INTO pl VALUES ($1, 'x')", 14), stmt("INSERT INTO pl VALUES ($1, 'y')", map[string]any{"not": "an int"}))
	if !rpc.IsCode(err, rpc.CodeAborted) || !strings.Contains(err.Error(), "statements[1]") {
		t.Fatalf("an argument that cannot be sent: %v, want an abort naming statements[1]", err)
	}
	if n := count("SELECT count(*) FROM pl WHERE k >= 10"); n != 0 {
		t.Fatalf("%d rows of the transaction whose argument could not be sent", n)
	}
	noOpenSession()

	// More distinct statements than a connection keeps names for, run
	// again and again: the second run names them, and none may be
	// deallocated before the pipeline that uses it.
	var many []api.StatementParams
	for i := range 2 * 64 {
		many = append(many, stmt(fmt.Sprintf("SELECT $1::int + %d", i), i))
	}
	for run := range 3 {
		r, err := plain(many...)
		if err != nil || len(r.Results) != len(many) || r.Results[len(many)-1].Rows[0][0] != strconv.Itoa(2*(len(many)-1)) {
			t.Fatalf("run %d of %d distinct statements: %v", run, len(many), err)
		}
	}

	// A statement that deallocates prepared statements, ours included, in
	// the middle of a transaction of named ones.
	for run := range 2 {
		r, err := plain(stmt("INSERT INTO pl VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v", 6, "f"), stmt("DEALLOCATE ALL"), stmt("UPDATE pl SET v = $1 WHERE k = $2", "g", 6))
		if err != nil || len(r.Results) != 3 || r.Results[2].RowsAffected != 1 {
			t.Fatalf("run %d with DEALLOCATE ALL in the middle: %+v, %v", run, r, err)
		}
	}

	// The connections the failures used still serve.
	if _, err := plain(stmt("INSERT INTO pl VALUES ($1, $2)", 5, "e")); err != nil {
		t.Fatalf("after the failures: %v", err)
	}

	zero := engine.NodeID(0)
	for _, tc := range []struct {
		name   string
		params api.TransactParams
		code   int
		want   string
	}{
		{"open transaction", api.TransactParams{TxID: 7, Commit: true, Statements: []api.StatementParams{stmt("SELECT 1")}}, rpc.CodeInvalidParams, "tx"},
		{"no commit", api.TransactParams{Statements: []api.StatementParams{stmt("SELECT 1")}}, rpc.CodeInvalidParams, "commit must be true"},
		{"key", api.TransactParams{Commit: true, Key: "k1", Statements: []api.StatementParams{stmt("SELECT 1")}}, rpc.CodeInvalidParams, "key"},
		{"no statements", api.TransactParams{Commit: true}, rpc.CodeInvalidParams, "statements are required"},
		{"another participant's statement", api.TransactParams{Commit: true, Statements: []api.StatementParams{stmt("SELECT 1"), {Node: &zero, SQL: "SELECT 1"}}}, rpc.CodeBadNode, "statements[1] is for participant 0"},
		{"no node", api.TransactParams{Commit: true, Statements: []api.StatementParams{{SQL: "SELECT 1"}}}, rpc.CodeInvalidParams, "node is required"},
		{"no sql", api.TransactParams{Commit: true, Statements: []api.StatementParams{stmt("")}}, rpc.CodeInvalidParams, "sql is required"},
	} {
		err := part.Call(ctx, api.MethodPlainTransact, tc.params, nil)
		if !rpc.IsCode(err, tc.code) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: %v, want code %d naming %q", tc.name, err, tc.code, tc.want)
		}
	}
	if n := count("SELECT count(*) FROM pl"); n != 6 {
		t.Fatalf("%d rows at the end, want 6", n)
	}
	noOpenSession()
}
