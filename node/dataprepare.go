package node

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tpcd/tpcd/db/syncrep"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/queries/dataqueries"
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
	xid, err := d.endBranch(ctx, w, engine.DataPrepare, op)
	if err != nil {
		return engine.DataDone{Err: fmt.Sprintf("prepare %s: %v", op.GID, err)}
	}
	return engine.DataDone{Xid: xid}
}

// endBranch ends w's open data transaction as kind says (see queueEnd), in
// one round trip, and releases its connection, rolling the transaction
// back unless it ended. xid is the id of the branch prepared.
func (d *dataDB) endBranch(ctx context.Context, w *txWorker, kind engine.DataOp, op engine.Data) (xid uint64, err error) {
	pc := w.conn.Conn().PgConn()
	p := pipeline{conn: pc}
	wantTag, err := d.queueEnd(ctx, &p, kind, op)
	if err == nil {
		syncrep.Cancelled(pc)
		xid, err = endResults(pc, pc.ExecBatch(ctx, &p.batch), wantTag)
	}
	if err != nil {
		d.release(ctx, w, "ROLLBACK")
		return 0, err
	}
	d.release(ctx, w, "")
	return xid, nil
}

// queueEnd queues the two statements that end a branch, whether on their
// own (endBranch) or behind the transaction's first statement (beginWith):
// for DataPrepare the branch's transaction id and PREPARE TRANSACTION, for
// DataCommitBranch the outcome marker and COMMIT. wantTag is the command
// tag of the second, the only answer that means it happened.
func (d *dataDB) queueEnd(ctx context.Context, p *pipeline, kind engine.DataOp, op engine.Data) (wantTag string, err error) {
	switch kind {
	case engine.DataPrepare:
		if err := p.statement(ctx, branchXidSQL, nil); err != nil {
			return "", err
		}
		p.utility("PREPARE TRANSACTION " + quote(op.GID))
		return "PREPARE TRANSACTION", nil
	case engine.DataCommitBranch:
		if err := d.q.MarkerInsert(ctx, p, dataqueries.MarkerInsertParams{Gid: op.GID, Tx: int64(op.TxID), Keys: op.Keys}); err != nil {
			return "", err
		}
		p.utility("COMMIT")
		return "COMMIT", nil
	}
	return "", fmt.Errorf("%s does not end a branch", kind)
}

// endResults reads the results of the statements queueEnd queued, the last
// ones mrr has, and closes mrr. A prepare or commit whose wait for the
// synchronous standby was cancelled is no success, as the branch may be on
// pc's server alone: a prepare's failure is a no vote, and the engine rolls
// the branch back; a commit's leaves the engine to settle the branch, as
// after a broken connection.
func endResults(pc *pgconn.PgConn, mrr *pgconn.MultiResultReader, wantTag string) (xid uint64, err error) {
	xid, err = thenResults(mrr, wantTag)
	if cerr := mrr.Close(); err == nil {
		err = cerr
	}
	if err == nil && syncrep.Cancelled(pc) {
		err = syncrep.ErrNotReplicated
	}
	return xid, err
}

// primeBranch runs a participant's own statements of a branch once on a
// new data connection, in a transaction it rolls back, so that the
// connection has them prepared (stmtCache) and its backend has loaded what
// they read. Done while the participant starts, that work stays out of the
// first transactions: right after a restart the servers spent their first
// second or two loading the same catalogs into each of dozens of backends.
func primeBranch(ctx context.Context, pc *pgconn.PgConn) error {
	p := pipeline{conn: pc}
	// A lock held on the marker table (an index build, say) must fail the
	// priming, not hold up the participant's start: naming the insert
	// waits for it too, before any timeout set in the transaction applies.
	ctx, cancel := context.WithTimeout(ctx, primeTimeout)
	defer cancel()
	p.utility("BEGIN")
	if err := p.statement(ctx, timeoutsSQL, [][]byte{[]byte("0"), []byte("0")}); err != nil {
		return err
	}
	if err := p.statement(ctx, branchXidSQL, nil); err != nil {
		return err
	}
	if err := dataqueries.New().MarkerInsert(ctx, &p, dataqueries.MarkerInsertParams{Gid: "tpcd-prime", Keys: []string{}}); err != nil {
		return err
	}
	p.utility("ROLLBACK")
	_, err := pc.ExecBatch(ctx, &p.batch).ReadAll()
	return err
}

// primeTimeout bounds primeBranch, lock waits included.
const primeTimeout = 5 * time.Second

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
