package node

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
)

// newTestDataDB returns the data layer over a fresh, migrated data
// database with a table t (k bigint primary key).
func newTestDataDB(t *testing.T) *dataDB {
	t.Helper()
	pool := pgtest.MigratedPool(t, db.MigrateData)
	if _, err := pool.Exec(t.Context(), "CREATE TABLE t (k bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	d := newDataDB(&dataDB{pool: pool, logger: slog.New(slog.DiscardHandler),
		lockTimeout: time.Second, statementTimeout: 10 * time.Second, acquireTimeout: time.Second,
		now: func() engine.Instant { return 0 }, done: func(engine.DataDone) {}})
	t.Cleanup(d.closeAll)
	return d
}

// facts reads the prepared GIDs and the markers as a restart would.
func facts(t *testing.T, d *dataDB) (prepared, markers []string) {
	t.Helper()
	prepared, markers, _, err := recoveryFacts(t.Context(), d.pool)
	if err != nil {
		t.Fatal(err)
	}
	return prepared, markers
}

func mustRun(t *testing.T, d *dataDB, w *txWorker, op engine.Data) engine.DataDone {
	t.Helper()
	res := d.run(w, op)
	if res.Err != "" {
		t.Fatalf("%s of %s: %s", op.Op, op.GID, res.Err)
	}
	return res
}

// The marker goes in with PREPARE TRANSACTION, is seen once the
// transaction commits, and is what finish trusts when the GID is gone.
func TestPrepareCommitAndMarker(t *testing.T) {
	d := newTestDataDB(t)
	const gid = "tpcd:test:1:7"
	w := &txWorker{}
	mustRun(t, d, w, engine.Data{Op: engine.DataExec, TxID: 7, GID: gid, SQL: "INSERT INTO t VALUES ($1)", Args: []any{float64(1)}})
	if res := mustRun(t, d, w, engine.Data{Op: engine.DataPrepare, TxID: 7, GID: gid}); res.ReadOnly {
		t.Fatal("a transaction that wrote voted read-only")
	}
	if w.conn != nil {
		t.Fatal("the worker kept its connection after PREPARE TRANSACTION")
	}
	if prepared, markers := facts(t, d); !slices.Equal(prepared, []string{gid}) || len(markers) != 0 {
		t.Fatalf("after prepare: prepared %q, markers %q; want the GID prepared and its marker unseen", prepared, markers)
	}

	mustRun(t, d, w, engine.Data{Op: engine.DataCommitPrepared, TxID: 7, GID: gid})
	if prepared, markers := facts(t, d); len(prepared) != 0 || !slices.Equal(markers, []string{gid}) {
		t.Fatalf("after commit: prepared %q, markers %q; want the marker alone", prepared, markers)
	}
	// Again, as after a lost answer: the marker says it committed.
	mustRun(t, d, w, engine.Data{Op: engine.DataCommitPrepared, TxID: 7, GID: gid})
	res := d.run(w, engine.Data{Op: engine.DataRollbackPrepared, TxID: 7, GID: gid})
	if !strings.Contains(res.Err, "commit marker is present") || res.Retry {
		t.Fatalf("rollback of a committed GID = %+v, want a final error naming the marker", res)
	}

	// A second transaction with the same GID cannot insert its marker: the
	// whole prepare fails and leaves nothing prepared.
	w2 := &txWorker{}
	mustRun(t, d, w2, engine.Data{Op: engine.DataExec, TxID: 7, GID: gid, SQL: "INSERT INTO t VALUES ($1)", Args: []any{float64(2)}})
	res = d.run(w2, engine.Data{Op: engine.DataPrepare, TxID: 7, GID: gid})
	if !strings.Contains(res.Err, "tpcd_markers") || w2.conn != nil {
		t.Fatalf("prepare with a duplicate marker = %+v, connection kept %t; want the key error and the connection released", res, w2.conn != nil)
	}
	if prepared, _ := facts(t, d); len(prepared) != 0 {
		t.Fatalf("a failed prepare left %q prepared", prepared)
	}

	d.markers.sweep([]engine.Data{{Op: engine.DataDeleteMarker, TxID: 7, GID: gid}})
	if _, markers := facts(t, d); len(markers) != 0 {
		t.Fatalf("markers %q left after the sweep", markers)
	}
	// Without its marker, a GID that is gone reads as rolled back.
	res = d.run(w, engine.Data{Op: engine.DataCommitPrepared, TxID: 7, GID: gid})
	if !strings.Contains(res.Err, "no commit marker") || res.Retry {
		t.Fatalf("commit of a GID with neither = %+v, want a final error", res)
	}
}

func TestPrepareOfAReaderCommitsAtOnce(t *testing.T) {
	d := newTestDataDB(t)
	const gid = "tpcd:test:1:8"
	w := &txWorker{}
	mustRun(t, d, w, engine.Data{Op: engine.DataExec, TxID: 8, GID: gid, SQL: "SELECT count(*) FROM t"})
	if res := mustRun(t, d, w, engine.Data{Op: engine.DataPrepare, TxID: 8, GID: gid}); !res.ReadOnly {
		t.Fatal("a transaction that only read was prepared")
	}
	if prepared, markers := facts(t, d); len(prepared) != 0 || len(markers) != 0 {
		t.Fatalf("a reader left prepared %q, markers %q", prepared, markers)
	}
}
