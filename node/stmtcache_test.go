package node

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
)

// newOneConnDataDB is newTestDataDB over a pool of one connection, so that
// what a connection keeps between transactions can be read back from it.
func newOneConnDataDB(t *testing.T) *dataDB {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(pgtest.MigratedPool(t, db.MigrateData).Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return dataDBOver(t, pool)
}

// namedStatements reads the statements the pool's one connection keeps
// under tpcd's names, with how often each ran.
func namedStatements(t *testing.T, pool *pgxpool.Pool) map[string]int64 {
	t.Helper()
	rows, err := pool.Query(poolCtx(t), "SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements WHERE name LIKE 'tpcd\\_%'")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]int64{}
	for rows.Next() {
		var sql string
		var runs int64
		if err := rows.Scan(&sql, &runs); err != nil {
			t.Fatal(err)
		}
		got[sql] = runs
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

// worker returns a worker whose open transaction, if a failed test leaves
// one, is rolled back before the pool closes (which would wait for it).
func worker(t *testing.T, d *dataDB) *txWorker {
	w := &txWorker{}
	t.Cleanup(func() { d.release(context.Background(), w, "ROLLBACK") })
	return w
}

// poolCtx bounds a test's own use of the one-connection pool: should a
// worker keep the connection, the test fails instead of waiting for it.
func poolCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func backendPID(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var pid int
	if err := pool.QueryRow(poolCtx(t), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// A statement with arguments, the timeouts, the branch id query and the
// marker insert are parsed once per connection and then run by name; a
// statement that returns rows keeps running unnamed, so that a change to
// its table cannot fail it with "cached plan must not change result type".
func TestStatementsRunByNameOnAConnection(t *testing.T) {
	d := newOneConnDataDB(t)
	const (
		insert = "INSERT INTO t VALUES ($1)"
		update = "UPDATE t SET k = k WHERE k = $1"
		read   = "SELECT * FROM t WHERE k = $1"
	)
	for i := range 3 {
		tx := engine.TxID(10 + i)
		gid := fmt.Sprintf("tpcd:test:1:%d", tx)
		w := worker(t, d)
		mustRun(t, d, w, engine.Data{Op: engine.DataExec, TxID: tx, GID: gid, SQL: insert, Args: []any{float64(i)}})
		mustRun(t, d, w, engine.Data{Op: engine.DataExec, TxID: tx, GID: gid, SQL: update, Args: []any{float64(i)}})
		res := mustRun(t, d, w, engine.Data{Op: engine.DataExec, TxID: tx, GID: gid, SQL: read, Args: []any{float64(i)}})
		if len(res.Result.Rows) != 1 {
			t.Fatalf("tx %d read %v, want its row", tx, res.Result.Rows)
		}
		if i == 2 {
			mustRun(t, d, w, engine.Data{Op: engine.DataCommitBranch, TxID: tx, GID: gid})
			continue
		}
		res = mustRun(t, d, w, engine.Data{Op: engine.DataPrepare, TxID: tx, GID: gid})
		mustRun(t, d, &txWorker{}, engine.Data{Op: engine.DataCommitPrepared, TxID: tx, GID: gid, Xid: res.Xid})
	}
	got := namedStatements(t, d.pool)
	// A user's statement is named the second time it comes.
	for sql, want := range map[string]int64{insert: 2, update: 2, timeoutsSQL: 3, branchXidSQL: 2} {
		if got[sql] != want {
			t.Errorf("%q ran %d times by name, want %d (named: %v)", sql, got[sql], want, got)
		}
	}
	if got[read] != 0 {
		t.Errorf("%q, which returns rows, ran %d times by name, want unnamed", read, got[read])
	}
	marker := false
	for sql, runs := range got {
		if strings.Contains(sql, "tpcd_markers") && runs == 1 {
			marker = true
		}
	}
	if !marker {
		t.Errorf("the marker insert did not run once by name: %v", got)
	}

	// A new column changes what SELECT * returns; the statements still run.
	if _, err := d.pool.Exec(poolCtx(t), "ALTER TABLE t ADD COLUMN v text"); err != nil {
		t.Fatal(err)
	}
	w := worker(t, d)
	mustRun(t, d, w, engine.Data{Op: engine.DataExec, TxID: 20, GID: "tpcd:test:1:20", SQL: insert, Args: []any{float64(20)}})
	res := mustRun(t, d, w, engine.Data{Op: engine.DataExec, TxID: 20, GID: "tpcd:test:1:20", SQL: read, Args: []any{float64(20)}})
	if len(res.Result.Columns) != 2 {
		t.Errorf("after ALTER TABLE the read returned columns %v, want k and v", res.Result.Columns)
	}
	mustRun(t, d, w, engine.Data{Op: engine.DataCommitBranch, TxID: 20, GID: "tpcd:test:1:20"})
}

// A connection keeps at most stmtCacheSize names: the oldest are
// deallocated when its next transaction begins.
func TestStatementNamesAreBounded(t *testing.T) {
	d := newOneConnDataDB(t)
	w := worker(t, d)
	const n = stmtCacheSize + 10
	for i := range 2 * n {
		// Each statement twice: named the second time.
		sql := fmt.Sprintf("INSERT INTO t VALUES ($1 + %d) ON CONFLICT DO NOTHING", i%n*1000)
		mustRun(t, d, w, engine.Data{Op: engine.DataExec, TxID: 1, GID: "tpcd:test:1:1", SQL: sql, Args: []any{float64(1)}})
	}
	mustRun(t, d, w, engine.Data{Op: engine.DataCommitBranch, TxID: 1, GID: "tpcd:test:1:1"})
	if got := len(namedStatements(t, d.pool)); got <= stmtCacheSize {
		t.Fatalf("%d names kept during a transaction of %d statements; the test expects the excess to wait for the next", got, n)
	}
	w = worker(t, d)
	mustRun(t, d, w, engine.Data{Op: engine.DataExec, TxID: 2, GID: "tpcd:test:1:2", SQL: "INSERT INTO t VALUES ($1)", Args: []any{float64(2)}})
	mustRun(t, d, w, engine.Data{Op: engine.DataCommitBranch, TxID: 2, GID: "tpcd:test:1:2"})
	if got := len(namedStatements(t, d.pool)); got > stmtCacheSize {
		t.Fatalf("%d names kept after the next transaction began, want at most %d", got, stmtCacheSize)
	}
}

// A user's DEALLOCATE ALL removes the names under the participant's feet:
// the rest of its transaction prepares afresh, and the connection is not
// used again.
func TestDeallocateByAUserStatement(t *testing.T) {
	d := newOneConnDataDB(t)
	const insert = "INSERT INTO t VALUES ($1)"
	const gid = "tpcd:test:1:1"
	w := worker(t, d)
	// Named from its second run on.
	mustRun(t, d, w, engine.Data{Op: engine.DataExec, TxID: 1, GID: gid, SQL: insert, Args: []any{float64(1)}})
	mustRun(t, d, w, engine.Data{Op: engine.DataExec, TxID: 1, GID: gid, SQL: insert, Args: []any{float64(2)}})
	res := mustRun(t, d, w, engine.Data{Op: engine.DataExec, TxID: 1, GID: gid, SQL: "SELECT pg_backend_pid()"})
	pid := fmt.Sprint(res.Result.Rows[0][0])
	mustRun(t, d, w, engine.Data{Op: engine.DataExec, TxID: 1, GID: gid, SQL: "DEALLOCATE ALL"})
	mustRun(t, d, w, engine.Data{Op: engine.DataExec, TxID: 1, GID: gid, SQL: insert, Args: []any{float64(3)}})
	mustRun(t, d, w, engine.Data{Op: engine.DataCommitBranch, TxID: 1, GID: gid})
	if got := fmt.Sprint(backendPID(t, d.pool)); got == pid {
		t.Errorf("the connection that ran DEALLOCATE ALL (backend %s) was used again", pid)
	}
	var n int
	if err := d.pool.QueryRow(poolCtx(t), "SELECT count(*) FROM t").Scan(&n); err != nil || n != 3 {
		t.Fatalf("%d rows (%v), want the transaction's 3", n, err)
	}
}

// The data work of one branch, one at a time: an upsert committed at once
// with its marker (a decider's or a lone participant's branch), or
// prepared and then committed. With the statements named, a branch costs
// its server no parse and no plan (docs/PERFORMANCE.md).
func BenchmarkBranchCommitted(b *testing.B) { benchmarkBranch(b, false) }
func BenchmarkBranchPrepared(b *testing.B)  { benchmarkBranch(b, true) }

func benchmarkBranch(b *testing.B, prepare bool) {
	pool := pgtest.MigratedPool(b, db.MigrateData)
	d := dataDBOver(b, pool)
	const upsert = "INSERT INTO t VALUES ($1) ON CONFLICT (k) DO UPDATE SET k = EXCLUDED.k"
	for i := 0; b.Loop(); i++ {
		tx := engine.TxID(i + 1)
		gid := fmt.Sprintf("tpcd:bench:1:%d", tx)
		op := engine.Data{Op: engine.DataExec, TxID: tx, GID: gid, SQL: upsert, Args: []any{float64(i % 1000)}, Then: engine.DataCommitBranch}
		if prepare {
			op.Then = engine.DataPrepare
		}
		res := d.run(&txWorker{}, op)
		if res.Err != "" || res.ThenErr != "" {
			b.Fatalf("%s: %s%s", gid, res.Err, res.ThenErr)
		}
		if prepare {
			if r := d.run(&txWorker{}, engine.Data{Op: engine.DataCommitPrepared, TxID: tx, GID: gid, Xid: res.Xid}); r.Err != "" {
				b.Fatalf("commit %s: %s", gid, r.Err)
			}
		}
	}
}
