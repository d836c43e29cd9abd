package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tpcd/tpcd/db/syncrep"
	"github.com/tpcd/tpcd/engine"
)

// finish commits or rolls back a prepared transaction. "Does not exist" is
// never taken as success by itself: the commit log, asked with the branch's
// transaction id (or, for a branch an earlier version prepared, its marker),
// says whether the transaction committed, and only the matching answer
// counts. Either way the answer counts only once the server's synchronous
// standby, if it has one, has it too (package syncrep): a COMMIT PREPARED
// whose wait for the standby was cancelled, and taken for done, would be
// undone by a failover, leaving the branch prepared on the new primary
// with nobody to finish it.
func (d *dataDB) finish(ctx context.Context, gid string, xid uint64, verb string, commit bool) engine.DataDone {
	c, err := d.pool.Acquire(ctx)
	if err != nil {
		return engine.DataDone{Err: fmt.Sprintf("%s %s: %v", verb, gid, err), Retry: true}
	}
	defer c.Release()
	conn := c.Conn()
	err = syncrep.Durably(ctx, conn, func() error {
		// A utility statement: the GID goes in as a literal (see quote).
		_, err := conn.Exec(ctx, verb+" "+quote(gid), pgx.QueryExecModeSimpleProtocol)
		return err
	})
	if err == nil {
		return engine.DataDone{}
	}
	if !notPrepared(err) {
		return engine.DataDone{Err: fmt.Sprintf("%s %s: %v", verb, gid, err), Retry: true}
	}
	// Whatever ended the branch (an earlier try whose wait was cancelled,
	// say) must be on the standby before the commit log's word counts.
	if err := syncrep.Barrier(ctx, conn); err != nil {
		return engine.DataDone{Err: fmt.Sprintf("%s %s: the branch is gone, but %v", verb, gid, err), Retry: true}
	}
	if xid != 0 {
		status, err := d.q.XactStatus(ctx, conn, int64(xid))
		if err != nil {
			return engine.DataDone{Err: fmt.Sprintf("read the status of %s (transaction %d): %v", gid, xid, err), Retry: true}
		}
		switch {
		case status == "committed" && commit, status == "aborted" && !commit:
			return engine.DataDone{}
		case status == "committed":
			return engine.DataDone{Err: fmt.Sprintf("%s is no longer prepared and transaction %d committed", gid, xid)}
		case status == "aborted":
			return engine.DataDone{Err: fmt.Sprintf("%s is no longer prepared and transaction %d was rolled back", gid, xid)}
		default:
			return engine.DataDone{Err: fmt.Sprintf("%s is no longer prepared and the commit log says %q of transaction %d", gid, status, xid)}
		}
	}
	marker, err := d.q.MarkerExists(ctx, conn, gid)
	if err != nil {
		return engine.DataDone{Err: fmt.Sprintf("check marker of %s: %v", gid, err), Retry: true}
	}
	switch {
	case marker == commit:
		return engine.DataDone{}
	case commit:
		return engine.DataDone{Err: fmt.Sprintf("%s is no longer prepared and has no commit marker: it was rolled back", gid)}
	default:
		return engine.DataDone{Err: fmt.Sprintf("%s is no longer prepared and its commit marker is present: it was committed", gid)}
	}
}

// notPrepared reports whether err says the GID names no prepared
// transaction (undefined_object). Any other error says nothing about the
// transaction (the server is down, the connection broke): the operation
// is retried.
func notPrepared(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42704"
}
