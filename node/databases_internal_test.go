package node

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
)

// TestWarmDataConnectionsArePrimed: each data connection a participant
// opens at start has its own statements of a branch prepared, and the
// branch that prepared them left nothing behind.
func TestWarmDataConnectionsArePrimed(t *testing.T) {
	ctx := context.Background()
	const warmConns = 3
	dbs, err := OpenDatabases(ctx, DatabaseSpec{
		LogURI: pgtest.NewDB(t), DataURI: pgtest.NewDB(t), NeedData: true, MaxConns: 8, WarmDataConns: warmConns,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer dbs.Close()
	// Every idle connection, not only those warm opened: one may be the
	// connection the migrations ran on.
	conns := make([]*pgxpool.Conn, dbs.Data.Stat().IdleConns())
	for i := range conns {
		if conns[i], err = dbs.Data.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Release()
	}
	primed := 0
	for _, c := range conns {
		missing := 0
		for _, want := range []string{timeoutsSQL, branchXidSQL, "INSERT INTO tpcd_markers"} {
			found := false
			for sql := range stmtsOf(c.Conn().PgConn()).entries {
				found = found || strings.Contains(sql, want)
			}
			if !found {
				missing++
			}
		}
		if missing == 0 {
			primed++
		}
	}
	if primed < warmConns {
		t.Errorf("%d of %d idle data connections primed, want at least %d", primed, len(conns), warmConns)
	}
	var markers int
	if err := conns[0].QueryRow(ctx, "SELECT count(*) FROM tpcd_markers").Scan(&markers); err != nil {
		t.Fatal(err)
	}
	if markers != 0 {
		t.Errorf("%d markers after priming, want none", markers)
	}
}

// TestPrimingGivesWayToLocks: a lock held on the marker table fails the
// priming, which the participant's start reports and goes past, rather
// than waiting for the lock.
func TestPrimingGivesWayToLocks(t *testing.T) {
	ctx := context.Background()
	logURI, dataURI := pgtest.NewDB(t), pgtest.NewDB(t)
	spec := DatabaseSpec{LogURI: logURI, DataURI: dataURI, NeedData: true, MaxConns: 8}
	dbs, err := OpenDatabases(ctx, spec) // migrates, warms nothing
	if err != nil {
		t.Fatal(err)
	}
	dbs.Close()
	holder, err := pgx.Connect(ctx, dataURI)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	if _, err := holder.Exec(ctx, "BEGIN; LOCK TABLE tpcd_markers IN SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	var logs testbin.SyncBuffer
	spec.WarmDataConns, spec.Logger = 2, slog.New(slog.NewTextHandler(&logs, nil))
	// Far longer than the priming's own time limit: a start that waited
	// for the lock would end with this deadline instead.
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	dbs, err = OpenDatabases(sctx, spec)
	if err != nil {
		t.Fatalf("start with the marker table locked: %v", err)
	}
	defer dbs.Close()
	if sctx.Err() != nil {
		t.Fatalf("the start waited for the lock until its deadline")
	}
	if out := logs.String(); !strings.Contains(out, "could not prime") {
		t.Errorf("no warning that priming failed:\n%s", out)
	}
}
