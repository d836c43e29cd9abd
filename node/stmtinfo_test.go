package node_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// Oids of the PostgreSQL types the tests below expect (pg_type.oid).
const (
	oidInt4 = 23
	oidText = 25
	oidInt8 = 20
)

// TestResultCarriesColumnTypes: a statement's result names its columns'
// type OIDs, over JSON-RPC and in the process.
func TestResultCarriesColumnTypes(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 1})
	tx := c.Begin()
	c.Exec(tx, 0, "INSERT INTO kv VALUES (1, 'one')")
	r := c.Exec(tx, 0, "SELECT k, v, count(*) OVER () FROM kv")
	if want := []uint32{oidInt4, oidText, oidInt8}; !slices.Equal(r.Result.Types, want) {
		t.Fatalf("types over JSON-RPC = %v, want %v (columns %v)", r.Result.Types, want, r.Result.Columns)
	}
	// With parameters the statement takes the other path (textParams).
	r = c.Exec(tx, 0, "SELECT v FROM kv WHERE k = $1", 1)
	if !slices.Equal(r.Result.Types, []uint32{oidText}) || len(r.Result.Rows) != 1 {
		t.Fatalf("with a parameter: types %v rows %v", r.Result.Types, r.Result.Rows)
	}
	c.Commit(tx)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	zero := engine.NodeID(0)
	reply, err := c.Coord.Transact(ctx, api.TransactParams{Statements: []api.StatementParams{{Node: &zero, SQL: "SELECT 1::int8 AS n"}}, Commit: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := reply.Results[0]; got == nil || !slices.Equal(got.Types, []uint32{oidInt8}) || got.Columns[0] != "n" {
		t.Fatalf("in process: %+v", got)
	}
}

// TestDescribeRunsNothing: exec with describe returns the parameter and
// result types of a statement without running it, and sees a table the
// transaction created.
func TestDescribeRunsNothing(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	zero := engine.NodeID(0)
	tx := c.Begin()
	c.Exec(tx, 0, "CREATE TABLE fresh (id bigint, name text)")
	r, err := c.Coord.Exec(ctx, api.ExecParams{TxID: tx, Node: &zero, SQL: "INSERT INTO fresh VALUES ($1, $2) RETURNING id", Describe: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Result.Params, []uint32{oidInt8, oidText}) || !slices.Equal(r.Result.Types, []uint32{oidInt8}) || len(r.Result.Rows) != 0 {
		t.Fatalf("describe: %+v", r.Result)
	}
	var n int
	if err := c.Data[0].QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'fresh'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("fresh visible outside its transaction (%d, %v)", n, err)
	}
	c.CommitApplied(tx)
	if err := c.Data[0].QueryRow(ctx, "SELECT count(*) FROM fresh").Scan(&n); err != nil || n != 0 {
		t.Fatalf("the described insert ran: %d rows (%v)", n, err)
	}
}

// TestStatementErrorCarriesSQLState: a statement PostgreSQL refuses answers
// with its SQLSTATE, message and detail in the error's data, over JSON-RPC
// and in the process.
func TestStatementErrorCarriesSQLState(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 2})
	c.Exec1(1, "INSERT INTO kv VALUES (7, 'seven')")
	check := func(how string, err error) {
		t.Helper()
		if !rpc.IsCode(err, rpc.CodeAborted) {
			t.Fatalf("%s: %v, want code %d", how, err, rpc.CodeAborted)
		}
		e, ok := api.SQLErrorOf(err)
		if !ok || e.Code != "23505" || e.Detail != "Key (k)=(7) already exists." || e.Message == "" || e.Severity != "ERROR" {
			t.Fatalf("%s: SQL error %+v (%v)", how, e, err)
		}
	}
	tx := c.Begin()
	_, err := c.TryExec(tx, 1, "INSERT INTO kv VALUES (7, 'again')")
	check("exec over JSON-RPC", err)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	zero, one := engine.NodeID(0), engine.NodeID(1)
	_, err = c.Coord.Transact(ctx, api.TransactParams{Statements: []api.StatementParams{
		{Node: &zero, SQL: "INSERT INTO kv VALUES (8, 'eight')"},
		{Node: &one, SQL: "INSERT INTO kv VALUES (7, 'again')"},
	}, Commit: true})
	check("transact in process", err)
	// A one-participant transact commits with its statement (the decider
	// path): its error still says what PostgreSQL said.
	_, err = c.Coord.Transact(ctx, api.TransactParams{Statements: []api.StatementParams{{Node: &one, SQL: "INSERT INTO kv VALUES (7, 'again')"}}, Commit: true})
	check("one-phase transact in process", err)
	_, err = c.Coord.Exec(ctx, api.ExecParams{Node: &one, SQL: "INSERT INTO kv VALUES (7, 'again')"})
	check("exec beginning a transaction, in process", err)
	if got := c.Keys(0); len(got) != 0 {
		t.Fatalf("node 0 kept %v from a transaction that failed", got)
	}
}
