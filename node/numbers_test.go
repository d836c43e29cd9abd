package node_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/rpc"
)

// TestNumbersAreWrittenAsSent sends numbers a float64 does not hold, over
// JSON-RPC, through the coordinator to a prepared branch and to the
// decider: each lands in its column as its client wrote it. Decoded into
// float64, 2^53 + 1 was written as 2^53.
func TestNumbersAreWrittenAsSent(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 2})
	const ddl = "CREATE TABLE nums (k bigint PRIMARY KEY, n numeric, i int, a bigint[], j jsonb)"
	created, err := c.transact(api.TransactParams{Commit: true, Statements: []api.StatementParams{stmt(0, ddl), stmt(1, ddl)}})
	if err != nil {
		t.Fatal(err)
	}
	// Committed is decided: a prepared branch may apply it a moment later.
	testcluster.Eventually(t, "the table created on both", func() bool { return c.Status(created.TxID).State == "committed" })
	const big = int64(1<<53 + 1) // 9007199254740993
	r, err := c.transact(api.TransactParams{Commit: true, Statements: []api.StatementParams{
		// Scalars only: bound as text.
		stmt(0, "INSERT INTO nums (k, n, i) VALUES ($1, $2, $3)", big, json.Number("0.10000000000000000555"), json.Number("1.0")),
		// An array among the arguments: pgx's typed encoding.
		stmt(1, "INSERT INTO nums (k, n, a, j) VALUES ($1, $2, $3, $4)", json.Number("1e16"),
			json.Number("123456789012345678901234567890"), []any{big, json.Number("2.0")}, map[string]any{"n": big}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome == nil || *r.Outcome != engine.OutcomeCommit {
		t.Fatalf("reply %+v, want a committed transaction", r)
	}
	testcluster.Eventually(t, "the rows applied on both", func() bool { return c.Status(r.TxID).State == "committed" })
	read := func(n int, sql string) string {
		t.Helper()
		var s string
		if err := c.Data[n].QueryRow(t.Context(), sql).Scan(&s); err != nil {
			t.Fatalf("%s on node %d: %v", sql, n, err)
		}
		return s
	}
	for _, w := range []struct {
		node      int
		sql, want string
	}{
		{0, "SELECT k::text FROM nums", "9007199254740993"},
		{0, "SELECT n::text FROM nums", "0.10000000000000000555"},
		{0, "SELECT i::text FROM nums", "1"},
		{1, "SELECT k::text FROM nums", "10000000000000000"},
		{1, "SELECT n::text FROM nums", "123456789012345678901234567890"},
		{1, "SELECT a::text FROM nums", "{9007199254740993,2}"},
		{1, "SELECT j::text FROM nums", `{"n": 9007199254740993}`},
	} {
		if got := read(w.node, w.sql); got != w.want {
			t.Errorf("%s on node %d = %s, want %s", w.sql, w.node, got, w.want)
		}
	}

	// A number no float64 holds is refused before anything runs, as it
	// was when arguments decoded to float64.
	_, err = c.transact(api.TransactParams{Commit: true, Statements: []api.StatementParams{
		stmt(0, "SELECT $1::numeric", json.Number("1e400"))}})
	if err == nil || !strings.Contains(err.Error(), `field "statements.args": expected a number, got JSON number 1e400`) {
		t.Fatalf("1e400: %v, want it refused as out of range", err)
	}
}

// TestDeclaredParamTypesAreKept: with param_types, a statement's
// parameters have the types its client declared, as with PostgreSQL's own
// Parse; without, PostgreSQL infers them from the statement. 3 declared a
// double and halved is 1.5; left to inference, an integer, 1.
func TestDeclaredParamTypesAreKept(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 2})
	one0 := engine.NodeID(0)
	half := func(types []uint32) string {
		t.Helper()
		id := engine.NodeID(1)
		r, err := c.transact(api.TransactParams{Commit: true, Statements: []api.StatementParams{
			{Node: &id, SQL: "SELECT $1 / 2", Args: engine.Args{"3"}, ParamTypes: types}}})
		if err != nil {
			t.Fatalf("types %v: %v", types, err)
		}
		return fmt.Sprint(r.Results[0].Rows[0][0])
	}
	if got := half([]uint32{701}); got != "1.5" {
		t.Errorf("3 declared float8, halved: %s, want 1.5", got)
	}
	if got := half(nil); got != "1" {
		t.Errorf("3 inferred, halved: %s, want 1", got)
	}
	// The same SQL again, declared: prepared apart from the inferred one.
	for range 3 {
		if got := half([]uint32{701}); got != "1.5" {
			t.Fatalf("3 declared float8, halved again: %s, want 1.5", got)
		}
		if got := half([]uint32{0}); got != "1" {
			t.Fatalf("3 declared unknown, halved again: %s, want 1", got)
		}
	}

	// pgx's typed encoding, for arrays and objects, would leave declared
	// types out: refused rather than run otherwise than asked.
	if _, err := c.transact(api.TransactParams{Commit: true, Statements: []api.StatementParams{
		{Node: &one0, SQL: "SELECT $1::int[]", Args: engine.Args{[]any{1}}, ParamTypes: []uint32{1007}}}}); err == nil || !strings.Contains(err.Error(), "param_types cannot be given with an array or object") {
		t.Fatalf("declared types with an array argument: %v, want them refused", err)
	}

	// At the participant, in a plain transaction.
	part := rpc.NewClient(c.PartAddrs[1], rpc.ClientOptions{Stream: true})
	t.Cleanup(func() { part.Close() })
	one := engine.NodeID(1)
	var pr engine.TransactReply
	if err := part.Call(t.Context(), api.MethodPlainTransact, api.TransactParams{Commit: true, Statements: []api.StatementParams{
		{Node: &one, SQL: "SELECT $1 / 2", Args: engine.Args{"3"}, ParamTypes: []uint32{701}}}}, &pr); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(pr.Results[0].Rows[0][0]); got != "1.5" {
		t.Errorf("plain transaction with float8 declared: %s, want 1.5", got)
	}

	// Interactive, and described with the declared type.
	var r engine.ExecReply
	id := engine.NodeID(0)
	if err := c.Call(api.MethodExec, api.ExecParams{Node: &id, SQL: "SELECT $1 AS v", ParamTypes: []uint32{20}, Describe: true}, &r); err != nil {
		t.Fatal(err)
	}
	if r.Result == nil || fmt.Sprint(r.Result.Params) != "[20]" || fmt.Sprint(r.Result.Types) != "[20]" {
		t.Fatalf("describe with int8 declared: %+v, want params and column int8", r.Result)
	}
	var e engine.ExecReply
	if err := c.Call(api.MethodExec, api.ExecParams{TxID: r.TxID, Node: &id, SQL: "SELECT $1 / 2", Args: engine.Args{"3"}, ParamTypes: []uint32{701}}, &e); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(e.Result.Rows[0][0]); got != "1.5" {
		t.Errorf("exec with float8 declared: %s, want 1.5", got)
	}
	var cr engine.OutcomeReply
	if err := c.Call(api.MethodCommit, api.TxParams{TxID: r.TxID}, &cr); err != nil {
		t.Fatal(err)
	}
}
