package node_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
)

// TestNumbersAreWrittenAsSent sends numbers a float64 does not hold, over
// JSON-RPC, through the coordinator to a prepared branch and to the
// decider: each lands in its column as its client wrote it. Decoded into
// float64, 2^53 + 1 was written as 2^53.
func TestNumbersAreWrittenAsSent(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 2})
	const ddl = "CREATE TABLE nums (k bigint PRIMARY KEY, n numeric, i int, a bigint[], j jsonb)"
	if _, err := c.transact(api.TransactParams{Commit: true, Statements: []api.StatementParams{stmt(0, ddl), stmt(1, ddl)}}); err != nil {
		t.Fatal(err)
	}
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
