package node

import (
	"errors"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/db/syncrep"
	"github.com/tpcd/tpcd/engine"
)

// TestPlainCommitWithoutTheStandby: a plain transaction's COMMIT whose
// wait for the synchronous standby is cancelled is on the primary alone.
// PostgreSQL answers COMMIT all the same; the call must not say committed
// (a failover would lose the rows), but that nobody knows, once the
// barrier that would make it durable fails too. Both ways of sending the
// transaction are checked.
func TestPlainCommitWithoutTheStandby(t *testing.T) {
	ctx := t.Context()
	d, setup := dataDBWithoutItsStandby(t, time.Minute, "CREATE TABLE t (k bigint PRIMARY KEY)")

	zero := engine.NodeID(0)
	for _, stmts := range [][]api.StatementParams{
		{{Node: &zero, SQL: "INSERT INTO t VALUES ($1)", Args: []any{1}}},
		{{Node: &zero, SQL: "INSERT INTO t VALUES (2)"}},
	} {
		done := make(chan error, 1)
		go func() {
			_, err := d.plain(ctx, stmts)
			done <- err
		}()
		// Cancel every wait for the standby, the COMMIT's and the
		// barriers' after it, as an operator would with pg_cancel_backend.
		var err error
	cancelling:
		for deadline := time.Now().Add(30 * time.Second); ; {
			select {
			case err = <-done:
				break cancelling
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatal("the plain transaction did not end")
			}
			if _, cerr := setup.Exec(ctx, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"); cerr != nil {
				t.Fatal(cerr)
			}
		}
		if !errors.Is(err, errPlainUnknown) || !errors.Is(err, syncrep.ErrNotReplicated) || plainOutcome(err) != "unknown" {
			t.Fatalf("%s: %v, want its outcome unknown for want of the standby", stmts[0].SQL, err)
		}
	}
}
