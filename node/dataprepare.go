package node

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/queries/dataqueries"
)

// prepare ends the work phase: a transaction that wrote nothing commits at
// once and votes read-only; any other gets its marker and is prepared.
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
	// The marker commits with the transaction's changes or not at all, so
	// after a crash its presence tells which way a transaction went. It
	// goes out with PREPARE TRANSACTION in one round trip.
	var p pipeline
	err := d.q.MarkerInsert(ctx, &p, dataqueries.MarkerInsertParams{Gid: op.GID, Tx: int64(op.TxID)})
	p.utility("PREPARE TRANSACTION " + quote(op.GID))
	var tag pgconn.CommandTag
	if err == nil {
		tag, err = p.run(ctx, conn.PgConn())
	}
	if err == nil && tag.String() != "PREPARE TRANSACTION" {
		err = fmt.Errorf("PREPARE TRANSACTION answered %q", tag.String())
	}
	if err != nil {
		d.release(ctx, w, "ROLLBACK")
		return engine.DataDone{Err: fmt.Sprintf("prepare %s: %v", op.GID, err)}
	}
	d.release(ctx, w, "")
	return engine.DataDone{}
}

// quote makes s a SQL string literal, for the utility statements that take
// a GID but no parameters (PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK
// PREPARED).
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
