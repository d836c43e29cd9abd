package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/db/syncrep"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/queries/dataqueries"
)

// commitBranch commits the open data transaction as the decider's branch:
// its outcome marker goes in, then COMMIT, in one round trip. Only a
// "COMMIT" answer means it committed; anything else leaves the outcome to
// the engine, which settles it (a broken connection may have committed).
func (d *dataDB) commitBranch(ctx context.Context, w *txWorker, op engine.Data) engine.DataDone {
	if w.conn == nil {
		return engine.DataDone{Err: "no open data transaction to commit"}
	}
	if _, err := d.endBranch(ctx, w, engine.DataCommitBranch, op); err != nil {
		return engine.DataDone{Err: fmt.Sprintf("commit %s: %v", op.GID, err)}
	}
	return engine.DataDone{}
}

// settle makes the outcome of the decider's branch op.GID final and reads
// it. The tombstone is inserted on its own (its own transaction, committed
// before anyone hears abort) unless a row of that name exists; an insert
// that meets the branch's uncommitted marker waits until the branch ends,
// so a branch still committing is never settled as aborted. The row read
// afterwards, in a statement of its own, is whichever committed first.
func (d *dataDB) settle(ctx context.Context, op engine.Data) engine.DataDone {
	q := dataqueries.New()
	if err := q.MarkerSettle(ctx, d.pool, dataqueries.MarkerSettleParams{Gid: op.GID, Tx: int64(op.TxID)}); err != nil {
		return engine.DataDone{Err: fmt.Sprintf("settle %s: %v", op.GID, err), Retry: true}
	}
	// Read on a connection of its own, to see whether its commit's wait
	// for a synchronous standby was cut short: commit is said only once
	// the standby has the marker.
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return engine.DataDone{Err: fmt.Sprintf("settle %s: %v", op.GID, err), Retry: true}
	}
	defer conn.Release()
	pc := conn.Conn().PgConn()
	syncrep.Cancelled(pc)
	row, err := q.MarkerAborted(ctx, conn, op.GID)
	if errors.Is(err, pgx.ErrNoRows) {
		// Deleted between the two statements: the coordinator already
		// let it go, which it does only once everyone has the outcome.
		err = errors.New("its marker vanished while settling")
	}
	if err == nil && syncrep.Cancelled(pc) {
		err = syncrep.ErrNotReplicated
	}
	if err != nil {
		return engine.DataDone{Err: fmt.Sprintf("settle %s: %v", op.GID, err), Retry: true}
	}
	if row.Aborted {
		return engine.DataDone{}
	}
	return engine.DataDone{Committed: true, Keys: row.Keys}
}
