package logstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/db/embedpg"
	"github.com/tpcd/tpcd/db/syncrep"
	"github.com/tpcd/tpcd/internal/pgtest"
)

// TestAppendOutlivesACancelledStandbyWait: an append whose wait for the
// synchronous standby is cancelled (the row is then on the server alone)
// is not reported durable until a barrier after it has passed, and is
// reported failed when every wait is cancelled; Last, which the node asks
// after such a failure, names the row only once the standby has it.
func TestAppendOutlivesACancelledStandbyWait(t *testing.T) {
	ctx := t.Context()
	server := pgtest.NewCluster(t, embedpg.Options{Settings: map[string]string{"fsync": "off"}})
	admin := pgtest.Connect(t, server.URI("postgres"))
	cfg, err := pgxpool.ParseConfig(server.URI("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	syncrep.Watch(cfg)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := db.MigrateLog(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	s := New(pool)

	// standby makes commits wait for a standby of that name ("" for none).
	standby := func(name string) {
		t.Helper()
		pgtest.SetSyncStandby(t, server.URI("postgres"), name)
	}
	// cancelWaits cancels, as an operator would, every wait for the
	// standby of a statement that begins with prefix, and reports how many.
	cancelWaits := func(prefix string) int {
		t.Helper()
		var n int
		if err := admin.QueryRow(ctx, "SELECT count(pg_cancel_backend(pid)) FROM (SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND starts_with(query, $1)) w", prefix).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waiting := func(prefix string) bool {
		t.Helper()
		var n int
		if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND starts_with(query, $1)", prefix).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	const barrier = syncrep.BarrierSQL
	type result struct {
		seq int64
		err error
	}
	appendAsync := func(tx uint64) chan result {
		done := make(chan result, 1)
		go func() {
			seq, err := s.Append(context.Background(), "n", []Entry{entry(tx, "a", 0)})
			done <- result{seq, err}
		}()
		return done
	}

	// Every wait cancelled, the append's own and its barriers': it fails.
	standby("absent")
	done := appendAsync(1)
	waitFor(t, "the append waiting for the standby", func() bool { return waiting("-- name: LogAppend") })
	var first result
	waitFor(t, "the append to give up", func() bool {
		cancelWaits("")
		select {
		case first = <-done:
			return true
		default:
			return false
		}
	})
	if !errors.Is(first.err, syncrep.ErrNotReplicated) {
		t.Fatalf("append whose waits were all cancelled: seq %d, err %v; want %v", first.seq, first.err, syncrep.ErrNotReplicated)
	}

	// The append's own wait cancelled, it waits on in a barrier until the
	// standby (here: the need for one) lets it go.
	done = appendAsync(2)
	waitFor(t, "the append waiting for the standby", func() bool { return waiting("-- name: LogAppend") })
	if cancelWaits("-- name: LogAppend") != 1 {
		t.Fatal("the append's wait was not cancelled")
	}
	waitFor(t, "the barrier waiting for the standby", func() bool { return waiting(barrier) })
	select {
	case r := <-done:
		t.Fatalf("append returned (seq %d, err %v) while its barrier waited for the standby", r.seq, r.err)
	default:
	}
	standby("")
	second := <-done
	if second.err != nil || second.seq == 0 {
		t.Fatalf("append once the standby let it go: seq %d, err %v", second.seq, second.err)
	}

	// Last waits for the standby too before it names the newest row.
	standby("absent")
	last := make(chan result, 1)
	go func() {
		seq, _, err := s.Last(context.Background(), "n")
		last <- result{seq, err}
	}()
	var lastErr result
	waitFor(t, "Last to give up", func() bool {
		cancelWaits(barrier)
		select {
		case lastErr = <-last:
			return true
		default:
			return false
		}
	})
	if r := lastErr; !errors.Is(r.err, syncrep.ErrNotReplicated) {
		t.Fatalf("Last whose barriers were all cancelled: seq %d, err %v; want %v", r.seq, r.err, syncrep.ErrNotReplicated)
	}
	standby("")
	seq, n, err := s.Last(ctx, "n")
	if err != nil || seq != second.seq || n != 1 {
		t.Fatalf("Last = %d, %d, %v; want the second append's row %d with 1 event", seq, n, err, second.seq)
	}
}

// waitFor polls cond until it holds, failing the test after a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}
