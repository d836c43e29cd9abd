package node

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/db/embedpg"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
)

// newTestDataDB returns the data layer over a fresh, migrated data
// database with a table t (k bigint primary key).
func newTestDataDB(t *testing.T) *dataDB {
	t.Helper()
	return dataDBOver(t, pgtest.MigratedPool(t, db.MigrateData))
}

// dataDBOver returns the data layer over pool's migrated data database,
// creating a table t (k bigint primary key) in it.
func dataDBOver(t testing.TB, pool *pgxpool.Pool) *dataDB {
	t.Helper()
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
	in, err := recoveryFacts(t.Context(), d.pool, engine.NewParticipant(engine.ParticipantConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	return in.PreparedGIDs, in.Markers
}

func mustRun(t *testing.T, d *dataDB, w *txWorker, op engine.Data) engine.DataDone {
	t.Helper()
	res := d.run(w, op)
	if res.Err != "" {
		t.Fatalf("%s of %s: %s", op.Op, op.GID, res.Err)
	}
	return res
}

// A prepared branch carries no marker: PREPARE TRANSACTION reports the
// branch's transaction id, and once the GID is gone the commit log, asked
// with that id, is what finish trusts. The id is the one pg_prepared_xacts
// shows, widened to 64 bits as a restart reads it.
func TestPrepareCommitAndXid(t *testing.T) {
	d := newTestDataDB(t)
	const gid, gid2 = "tpcd:test:1:7", "tpcd:test:1:9"
	w := &txWorker{}
	mustRun(t, d, w, engine.Data{Op: engine.DataExec, TxID: 7, GID: gid, SQL: "INSERT INTO t VALUES ($1)", Args: []any{float64(1)}})
	res := mustRun(t, d, w, engine.Data{Op: engine.DataPrepare, TxID: 7, GID: gid})
	if res.ReadOnly || res.Xid == 0 {
		t.Fatalf("prepare of a writer = %+v, want a yes with the transaction id", res)
	}
	xid := res.Xid
	if w.conn != nil {
		t.Fatal("the worker kept its connection after PREPARE TRANSACTION")
	}

	// A second branch, prepared with a later statement, after a first that
	// opened the transaction.
	w2 := &txWorker{}
	mustRun(t, d, w2, engine.Data{Op: engine.DataExec, TxID: 9, GID: gid2, SQL: "INSERT INTO t VALUES ($1)", Args: []any{float64(2)}})
	res2 := mustRun(t, d, w2, engine.Data{Op: engine.DataExec, TxID: 9, GID: gid2, SQL: "INSERT INTO t VALUES ($1)", Args: []any{float64(3)}, Then: engine.DataPrepare})
	xid2 := res2.Xid
	if res2.ThenErr != "" || xid2 == 0 || xid2 == xid {
		t.Fatalf("second branch's prepare %+v: transaction id %d (first %d)", res2, xid2, xid)
	}

	// Both still prepared, nothing completed since: the ids a restart reads
	// are the ones the prepares reported.
	in, err := recoveryFacts(t.Context(), d.pool, engine.NewParticipant(engine.ParticipantConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(in.PreparedGIDs, []string{gid, gid2}) || in.PreparedXids[gid] != xid || in.PreparedXids[gid2] != xid2 || len(in.Markers) != 0 {
		t.Fatalf("after the prepares: %+v; want %s and %s prepared as transactions %d and %d, and no marker", in, gid, gid2, xid, xid2)
	}
	mustRun(t, d, w2, engine.Data{Op: engine.DataRollbackPrepared, TxID: 9, GID: gid2, Xid: xid2})

	mustRun(t, d, w, engine.Data{Op: engine.DataCommitPrepared, TxID: 7, GID: gid, Xid: xid})
	if prepared, markers := facts(t, d); len(prepared) != 0 || len(markers) != 0 {
		t.Fatalf("after commit: prepared %q, markers %q; want neither", prepared, markers)
	}
	// Again, as after a lost answer: the commit log says it committed.
	mustRun(t, d, w, engine.Data{Op: engine.DataCommitPrepared, TxID: 7, GID: gid, Xid: xid})
	res = d.run(w, engine.Data{Op: engine.DataRollbackPrepared, TxID: 7, GID: gid, Xid: xid})
	if !strings.Contains(res.Err, "committed") || res.Retry {
		t.Fatalf("rollback of a committed GID = %+v, want a final error saying it committed", res)
	}
	mustRun(t, d, w, engine.Data{Op: engine.DataRollbackPrepared, TxID: 9, GID: gid2, Xid: xid2})
	res = d.run(w, engine.Data{Op: engine.DataCommitPrepared, TxID: 9, GID: gid2, Xid: xid2})
	if !strings.Contains(res.Err, "rolled back") || res.Retry {
		t.Fatalf("commit of a rolled back GID = %+v, want a final error saying it was rolled back", res)
	}

	// What a restart asks: of the branches its log shows prepared, which
	// committed.
	committed, err := d.q.XactsCommitted(t.Context(), d.pool, []int64{int64(xid), int64(xid2)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(committed, []int64{int64(xid)}) {
		t.Fatalf("committed among %d and %d: %v, want the first only", xid, xid2, committed)
	}
}

// A branch an earlier version prepared has a marker row and no known
// transaction id: its marker still decides.
func TestFinishByMarkerWithoutXid(t *testing.T) {
	d := newTestDataDB(t)
	const gid = "tpcd:test:1:7"
	if _, err := d.pool.Exec(t.Context(), "INSERT INTO tpcd_markers (gid, tx) VALUES ($1, 7)", gid); err != nil {
		t.Fatal(err)
	}
	w := &txWorker{}
	mustRun(t, d, w, engine.Data{Op: engine.DataCommitPrepared, TxID: 7, GID: gid})
	res := d.run(w, engine.Data{Op: engine.DataRollbackPrepared, TxID: 7, GID: gid})
	if !strings.Contains(res.Err, "commit marker is present") || res.Retry {
		t.Fatalf("rollback of a committed GID = %+v, want a final error naming the marker", res)
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

// A PREPARE TRANSACTION whose wait for the synchronous standby is cut
// short (the standby is down; someone cancels the wait) returns success
// with a warning; it must be a no vote. A settle that finds a decider's
// marker says commit only once the standby has it. ROLLBACK PREPARED then
// waits for the standby too, and ends once commits stop waiting for it.
func TestWaitForTheStandbyCancelled(t *testing.T) {
	ctx := t.Context()
	// A decider's marker committed before commits wait for the standby is
	// for the settle below.
	const marked = "tpcd:test:1:3:0:0"
	d, setup := dataDBWithoutItsStandby(t, 500*time.Millisecond,
		"CREATE TABLE t (k bigint PRIMARY KEY)", "INSERT INTO tpcd_markers (gid, tx) VALUES ('"+marked+"', 3)")

	// cancelled runs op and cancels its wait for the standby, as an
	// operator would with pg_cancel_backend.
	cancelled := func(w *txWorker, op engine.Data) engine.DataDone {
		t.Helper()
		done := make(chan engine.DataDone, 1)
		go func() { done <- d.run(w, op) }()
		for deadline := time.Now().Add(30 * time.Second); ; {
			var n int
			if err := setup.QueryRow(ctx, "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("nothing waits for the standby")
			}
			time.Sleep(20 * time.Millisecond)
		}
		return <-done
	}

	// Through the first statement's pipeline, and through a prepare of its
	// own after a second statement.
	const gid1, gid2 = "tpcd:test:1:1", "tpcd:test:1:2"
	w1 := &txWorker{}
	res := cancelled(w1, engine.Data{Op: engine.DataExec, TxID: 1, GID: gid1, SQL: "INSERT INTO t VALUES ($1)", Args: []any{float64(1)}, Then: engine.DataPrepare})
	if res.Err != "" || !strings.Contains(res.ThenErr, "synchronous standby") {
		t.Fatalf("statement with its prepare = %+v, want the statement's result and the prepare refused for want of the standby", res)
	}
	w2 := &txWorker{}
	mustRun(t, d, w2, engine.Data{Op: engine.DataExec, TxID: 2, GID: gid2, SQL: "INSERT INTO t VALUES ($1)", Args: []any{float64(2)}})
	mustRun(t, d, w2, engine.Data{Op: engine.DataExec, TxID: 2, GID: gid2, SQL: "INSERT INTO t VALUES ($1)", Args: []any{float64(3)}})
	if res := cancelled(w2, engine.Data{Op: engine.DataPrepare, TxID: 2, GID: gid2}); !strings.Contains(res.Err, "synchronous standby") {
		t.Fatalf("prepare = %+v, want it refused for want of the standby", res)
	}
	if res := cancelled(nil, engine.Data{Op: engine.DataSettle, TxID: 3, GID: marked}); res.Committed || !res.Retry || !strings.Contains(res.Err, "synchronous standby") {
		t.Fatalf("settle of a marked branch = %+v, want no answer yet, to be tried again, for want of the standby", res)
	}
	if prepared, _ := facts(t, d); !slices.Equal(prepared, []string{gid1, gid2}) {
		t.Fatalf("prepared %q: the server holds both, on its own", prepared)
	}

	// A rollback whose waits are all cancelled, its own and its
	// barriers', is done on the server alone: to be tried again.
	undone := make(chan engine.DataDone, 1)
	go func() {
		undone <- d.run(&txWorker{}, engine.Data{Op: engine.DataRollbackPrepared, TxID: 1, GID: gid1})
	}()
	var res1 engine.DataDone
	for deadline, got := time.Now().Add(time.Minute), false; !got; time.Sleep(20 * time.Millisecond) {
		if _, err := setup.Exec(ctx, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"); err != nil {
			t.Fatal(err)
		}
		select {
		case res1, got = <-undone:
		default:
		}
		if !got && time.Now().After(deadline) {
			t.Fatal("the rollback never gave up")
		}
	}
	if !res1.Retry || !strings.Contains(res1.Err, "synchronous standby") {
		t.Fatalf("rollback whose waits were all cancelled = %+v, want it tried again for want of the standby", res1)
	}
	if prepared, _ := facts(t, d); !slices.Equal(prepared, []string{gid2}) {
		t.Fatalf("prepared %q: the server rolled back %s on its own", prepared, gid1)
	}

	// The engine rolls them back (gid1 again); that waits for the standby,
	// until commits no longer wait for one.
	rolled := make(chan engine.DataDone, 2)
	for i, gid := range []string{gid1, gid2} {
		go func() {
			rolled <- d.run(&txWorker{}, engine.Data{Op: engine.DataRollbackPrepared, TxID: engine.TxID(i + 1), GID: gid})
		}()
	}
	for _, s := range []string{"ALTER SYSTEM RESET synchronous_standby_names", "SELECT pg_reload_conf()"} {
		if _, err := setup.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	for range 2 {
		if res := <-rolled; res.Err != "" {
			t.Fatalf("rollback: %+v", res)
		}
	}
	if prepared, _ := facts(t, d); len(prepared) != 0 {
		t.Fatalf("still prepared: %q", prepared)
	}
	var n int
	if err := d.pool.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d rows (%v), want none", n, err)
	}
}

// dataDBWithoutItsStandby returns the data layer over a fresh, migrated
// data database whose commits wait for a synchronous standby that never
// comes, and a pool for the test's own statements; the setup statements
// run before the wait starts. The data layer's connections, opened after,
// wait at once.
func dataDBWithoutItsStandby(t *testing.T, statementTimeout time.Duration, setupSQL ...string) (*dataDB, *pgxpool.Pool) {
	t.Helper()
	ctx := t.Context()
	server := pgtest.NewCluster(t, embedpg.Options{})
	setup, err := openPool(ctx, server.URI("postgres"), 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(setup.Close)
	if err := db.MigrateData(ctx, setup, nil); err != nil {
		t.Fatal(err)
	}
	for _, s := range setupSQL {
		if _, err := setup.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	pgtest.SetSyncStandby(t, server.URI("postgres"), "absent")
	pool, err := openPool(ctx, server.URI("postgres"), 4, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	d := newDataDB(&dataDB{pool: pool, logger: slog.New(slog.DiscardHandler),
		lockTimeout: time.Second, statementTimeout: statementTimeout, acquireTimeout: time.Second,
		now: func() engine.Instant { return 0 }, done: func(engine.DataDone) {}})
	t.Cleanup(d.closeAll)
	return d, setup
}
