package node

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/engine"
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
		if err := conn.QueryRow(ctx, "SELECT pg_current_xact_id_if_assigned() IS NULL").Scan(&readOnly); err != nil {
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
	// after a crash its presence tells which way a transaction went.
	sql := fmt.Sprintf("INSERT INTO tpcd_markers (gid, tx) VALUES (%s, %d); PREPARE TRANSACTION %s", quote(op.GID), op.TxID, quote(op.GID))
	tag, err := conn.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol)
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
