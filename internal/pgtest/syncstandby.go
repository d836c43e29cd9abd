package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// SetSyncStandby sets synchronous_standby_names on the server at uri (a
// database URI of a superuser) and returns once commits behave by it: when
// name is not empty, a commit waits for that standby; when it is empty, no
// commit waits.
//
// Reading the setting back is not enough: a backend sees the new value at
// once, but whether commits wait is decided by shared state that the
// checkpointer updates when it gets round to the reload, so for a while
// commits still behave by the old value. A probe commit tells.
func SetSyncStandby(t testing.TB, uri, name string) {
	t.Helper()
	ctx := context.Background()
	admin := Connect(t, uri)
	for _, q := range []string{"ALTER SYSTEM SET synchronous_standby_names = '" + name + "'", "SELECT pg_reload_conf()"} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	want := name != ""
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if commitWaits(t, admin, uri) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("synchronous_standby_names = %q set, but commits still wait: %v", name, !want)
		}
	}
}

// commitWaits commits a transaction that writes WAL and reports whether
// its commit waited for a synchronous standby; a waiting commit is
// cancelled (it stays committed on the server alone). A transaction that
// only takes an id writes no WAL before its commit record, and such a
// commit never waits.
func commitWaits(t testing.TB, admin *pgx.Conn, uri string) bool {
	t.Helper()
	ctx := context.Background()
	probe, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatalf("connect %s: %v", uri, err)
	}
	defer probe.Close(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := probe.Exec(ctx, "SELECT pg_logical_emit_message(true, 'tpcd-probe', '')")
		done <- err
	}()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		select {
		case <-done:
			return false
		default:
		}
		var cancelled bool
		if err := admin.QueryRow(ctx, "SELECT coalesce(bool_or(pg_cancel_backend(pid)), false) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep'", probe.PgConn().PID()).Scan(&cancelled); err != nil {
			t.Fatalf("look for the probe's wait: %v", err)
		}
		if cancelled {
			<-done
			return true
		}
		if time.Now().After(deadline) {
			t.Fatal("the probe commit neither ended nor waited for a standby")
		}
	}
}
