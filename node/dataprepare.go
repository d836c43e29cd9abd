package node

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tpcd/tpcd/db/syncrep"
	"github.com/tpcd/tpcd/engine"
)

// prepare ends the work phase: a transaction that wrote nothing commits at
// once and votes read-only; any other is prepared, and its transaction id
// read on the way, in the same round trip: once the GID is gone, the commit
// log says through that id whether the branch committed, so a prepared
// branch needs no marker row.
func (d *dataDB) prepare(ctx context.Context, w *txWorker, op engine.Data) engine.DataDone {
	if w.conn == nil {
		return engine.DataDone{Err: "no open data transaction to prepare"}
	}
	conn := w.conn.Conn()
	// Only a transaction not known to have written needs the round trip
	// that asks PostgreSQL whether it did.
	var readOnly bool
	if !w.wrote {
		var err error
		if readOnly, err = d.q.XactWroteNothing(ctx, conn); err != nil {
			d.release(ctx, w, "ROLLBACK")
			return engine.DataDone{Err: fmt.Sprintf("prepare: %v", err)}
		}
	}
	if readOnly {
		if err := d.release(ctx, w, "COMMIT"); err != nil {
			return engine.DataDone{Err: fmt.Sprintf("commit read-only: %v", err)}
		}
		return engine.DataDone{ReadOnly: true}
	}
	var p pipeline
	p.utility(branchXidSQL)
	p.utility("PREPARE TRANSACTION " + quote(op.GID))
	syncrep.Cancelled(conn.PgConn())
	mrr := conn.PgConn().ExecBatch(ctx, &p.batch)
	xid, err := thenResults(mrr, "PREPARE TRANSACTION")
	if cerr := mrr.Close(); err == nil {
		err = cerr
	}
	if err == nil && syncrep.Cancelled(conn.PgConn()) {
		// Prepared here alone: a no vote, and the engine rolls it back.
		err = syncrep.ErrNotReplicated
	}
	if err != nil {
		d.release(ctx, w, "ROLLBACK")
		return engine.DataDone{Err: fmt.Sprintf("prepare %s: %v", op.GID, err)}
	}
	d.release(ctx, w, "")
	return engine.DataDone{Xid: xid}
}

// branchXidSQL reads the open transaction's id, 64 bits (the epoch
// included, so it never wraps), as text.
const branchXidSQL = "SELECT pg_current_xact_id()"

// readXid reads the one row of branchXidSQL.
func readXid(rr *pgconn.ResultReader) (uint64, error) {
	var xid uint64
	var err error
	n := 0
	for rr.NextRow() {
		n++
		xid, err = strconv.ParseUint(string(rr.Values()[0]), 10, 64)
	}
	if err == nil && n != 1 {
		err = fmt.Errorf("transaction id query returned %d rows", n)
	}
	return xid, err
}

// quote makes s a SQL string literal, for the utility statements that take
// a GID but no parameters (PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK
// PREPARED).
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
