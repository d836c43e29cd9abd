package node

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/internal/pgtest"
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
