package node

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/db/syncrep"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/failpoint"
)

// exec runs one statement of the work phase in the transaction's own data
// transaction, opening it on the first statement.
func (d *dataDB) exec(ctx context.Context, w *txWorker, op engine.Data) engine.DataDone {
	if w.conn == nil {
		conn, err := d.acquire(ctx)
		if err != nil {
			return engine.DataDone{Err: err.Error()}
		}
		if params, ok := textParams(op.Args); ok {
			// The usual first statement: one round trip opens the
			// transaction and runs it, and also prepares or commits it
			// when the statement carries that (op.Then).
			res, begun, err, thenErr, xid := d.beginWith(ctx, conn.Conn(), op, params)
			if !begun {
				conn.Conn().Close(ctx)
				conn.Release()
				return engine.DataDone{Err: fmt.Sprintf("begin: %v", err)}
			}
			w.conn = conn
			if err != nil {
				return statementFailed(err)
			}
			if provesWrite(res) {
				w.wrote = true
			}
			done := engine.DataDone{Result: res}
			if op.Then != 0 {
				done.Then, done.Xid = op.Then, xid
				if thenErr != nil {
					d.release(ctx, w, "ROLLBACK")
					done.ThenErr = fmt.Sprintf("%s %s: %v", op.Then, op.GID, thenErr)
				} else {
					d.release(ctx, w, "")
				}
			}
			return done
		}
		if err := d.beginSimple(ctx, conn.Conn()); err != nil {
			conn.Conn().Close(ctx)
			conn.Release()
			return engine.DataDone{Err: fmt.Sprintf("begin: %v", err)}
		}
		w.conn = conn
	}
	if op.Describe {
		// Parsed and described in the transaction, so that it sees what
		// the transaction's earlier statements created; nothing runs.
		res, err := describe(ctx, w.conn.Conn(), op.SQL, op.ParamTypes)
		if err != nil {
			return statementFailed(err)
		}
		return engine.DataDone{Result: res}
	}
	res, err := query(ctx, w.conn.Conn(), op.SQL, op.Args, op.ParamTypes)
	if err != nil {
		return statementFailed(err)
	}
	if provesWrite(res) {
		w.wrote = true
	}
	return engine.DataDone{Result: res}
}

// query runs one statement and returns its rows as text, which reads the
// same in every client whatever the column types. Without arguments the
// simple protocol is used so a statement may be several, as in psql; with
// scalar arguments they go as text parameters (see textParams), as in the
// first statement of a transaction (beginWith), so a statement behaves the
// same wherever it falls in its transaction.
func query(ctx context.Context, conn *pgx.Conn, sql string, args []any, types []uint32) (*engine.StmtResult, error) {
	pc := conn.PgConn()
	stmts := stmtsOf(pc)
	defer stmts.noteUserSQL(sql)
	if params, ok := textParams(args); ok {
		name, named, err := stmts.name(ctx, pc, sql, types, false)
		switch {
		case err != nil:
			// The parse failed inside the transaction, which is as
			// aborted as if the statement had run and failed.
			return nil, err
		case named:
			return textResult(pc.ExecPrepared(ctx, name, params, nil, []int16{pgx.TextFormatCode}))
		}
		return textResult(pc.ExecParams(ctx, sql, params, types, nil, []int16{pgx.TextFormatCode}))
	}
	if len(types) > 0 {
		// pgx's typed encoding works from the types it learns by its own
		// describe; declared ones would be left out, unsaid.
		return nil, errors.New("param_types cannot be given with an array or object among the arguments, nor without arguments")
	}
	var opts []any
	if len(args) == 0 {
		opts = []any{pgx.QueryExecModeSimpleProtocol}
	} else {
		opts = []any{pgx.QueryResultFormats{pgx.TextFormatCode}}
		for _, a := range args {
			opts = append(opts, typedArg(a))
		}
	}
	rows, err := conn.Query(ctx, sql, opts...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	res := &engine.StmtResult{}
	res.Columns, res.Types = columns(rows.FieldDescriptions())
	for rows.Next() {
		res.Rows = append(res.Rows, textRow(rows.RawValues()))
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	tag := rows.CommandTag()
	res.RowsAffected, res.Tag = tag.RowsAffected(), tag.String()
	return res, nil
}

// beginWith opens a transaction, sets the timeouts that turn a distributed
// deadlock into an error instead of a hang, and runs the transaction's first
// statement, all in one round trip (one pipeline, one Sync); with op.Then,
// the branch's transaction id and PREPARE TRANSACTION, or the outcome
// marker and COMMIT, go in the same pipeline. begun reports whether the transaction is open: when it is not,
// the connection is in an unknown state and must not be reused; when it is
// and err is set, the statement failed (nothing after it ran) and the
// transaction awaits its rollback. thenErr is the prepare's or commit's
// error; the transaction is then to be rolled back (a COMMIT whose answer
// was lost may have committed: the engine settles it). xid is the id of the
// branch prepared.
func (d *dataDB) beginWith(ctx context.Context, conn *pgx.Conn, op engine.Data, params [][]byte) (res *engine.StmtResult, begun bool, err, thenErr error, xid uint64) {
	pc := conn.PgConn()
	stmts := stmtsOf(pc)
	p := pipeline{conn: pc}
	b := &p.batch
	if err := d.queueBegin(ctx, &p); err != nil {
		return nil, false, err, nil, 0
	}
	p.user(ctx, op.SQL, params, op.ParamTypes, true)
	wantTag := ""
	if op.Then != 0 {
		if wantTag, err = d.queueEnd(ctx, &p, op.Then, op); err != nil {
			return nil, false, err, nil, 0
		}
	}
	if err := stmts.trim(ctx, pc); err != nil {
		return nil, false, err, nil, 0
	}
	syncrep.Cancelled(pc)
	mrr := pc.ExecBatch(ctx, b)
	if err := readBegun(mrr); err != nil {
		return nil, false, err, nil, 0
	}
	if !mrr.NextResult() {
		return nil, true, closeBoth(nil, mrr), nil, 0
	}
	res, err = textResult(mrr.ResultReader())
	if err != nil {
		mrr.Close()
		return nil, true, err, nil, 0
	}
	if wantTag == "" {
		if err := mrr.Close(); err != nil {
			return nil, true, err, nil, 0
		}
		return res, true, nil, nil, 0
	}
	xid, thenErr = endResults(conn.PgConn(), mrr, wantTag)
	return res, true, nil, thenErr, xid
}

// queueBegin queues BEGIN and the transaction's timeouts, the two
// statements readBegun reads the results of.
func (d *dataDB) queueBegin(ctx context.Context, p *pipeline) error {
	p.batch.ExecParams("BEGIN", nil, nil, nil, nil)
	return p.statement(ctx, timeoutsSQL, d.timeoutParams())
}

// readBegun reads the results of what queueBegin queued. An error closes
// mrr: PostgreSQL skipped the rest of the pipeline.
func readBegun(mrr *pgconn.MultiResultReader) error {
	for range 2 {
		if !mrr.NextResult() {
			return closeBoth(nil, mrr)
		}
		if _, err := mrr.ResultReader().Close(); err != nil {
			return closeBoth(err, mrr)
		}
	}
	return nil
}

// beginSimple opens a transaction with the same timeouts in one round trip
// of the simple protocol, for statements that go one at a time.
func (d *dataDB) beginSimple(ctx context.Context, conn *pgx.Conn) error {
	begin := fmt.Sprintf("BEGIN; SET LOCAL lock_timeout = %d; SET LOCAL statement_timeout = %d",
		d.lockTimeout.Milliseconds(), d.statementTimeout.Milliseconds())
	_, err := conn.Exec(ctx, begin, pgx.QueryExecModeSimpleProtocol)
	return err
}

// timeoutsSQL sets, for the transaction it runs in, the lock and statement
// timeouts that turn a distributed deadlock into an error instead of a hang.
const timeoutsSQL = "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)"

// thenResults reads the results of the branch's transaction id query and
// PREPARE TRANSACTION, or of the marker insert and COMMIT; only the
// expected tag means it happened.
func thenResults(mrr *pgconn.MultiResultReader, wantTag string) (xid uint64, err error) {
	for i := range 2 {
		if !mrr.NextResult() {
			return 0, closeBoth(nil, mrr)
		}
		rr := mrr.ResultReader()
		if i == 0 && wantTag == "PREPARE TRANSACTION" {
			xid, err = readXid(rr)
		}
		tag, cerr := rr.Close()
		if err == nil {
			err = cerr
		}
		if err != nil {
			return 0, err
		}
		if i == 1 && tag.String() != wantTag {
			// A transaction already failed answers COMMIT with ROLLBACK.
			return 0, fmt.Errorf("%s answered %q", wantTag, tag.String())
		}
	}
	return xid, nil
}

// closeBoth closes mrr and returns err, or else mrr's error, or else a
// note that a result was missing (which only a broken connection causes).
func closeBoth(err error, mrr *pgconn.MultiResultReader) error {
	cerr := mrr.Close()
	switch {
	case err != nil:
		return err
	case cerr != nil:
		return cerr
	}
	return errors.New("connection returned fewer results than statements sent")
}

// release ends the worker's hold on its connection, running sql first if
// given; a connection that fails is closed rather than reused.
func (d *dataDB) release(ctx context.Context, w *txWorker, sql string) error {
	if w.conn == nil {
		return nil
	}
	err := releaseConn(ctx, w.conn, sql)
	d.mu.Lock()
	w.conn, w.wrote = nil, false
	d.mu.Unlock()
	return err
}

// releaseConn gives conn back to its pool, running sql on it first if
// given; a connection that fails, or that a user's statement left unfit,
// is closed rather than reused.
func releaseConn(ctx context.Context, conn *pgxpool.Conn, sql string) error {
	var err error
	if sql != "" {
		if _, err = conn.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
			conn.Conn().Close(ctx)
		}
	}
	if stmtsOf(conn.Conn().PgConn()).unfit {
		conn.Conn().Close(ctx)
	}
	conn.Release()
	return err
}

// provesWrite reports whether a statement's command tag shows that its
// transaction wrote (and so has a transaction id): a DML statement that
// touched rows, or DDL. Anything else proves nothing; the probe decides.
func provesWrite(r *engine.StmtResult) bool {
	verb, _, _ := strings.Cut(r.Tag, " ")
	switch verb {
	case "INSERT", "UPDATE", "DELETE", "MERGE":
		return r.RowsAffected > 0
	case "CREATE", "ALTER", "DROP", "TRUNCATE":
		return true
	}
	return false
}

// execThen runs a statement and, when it carries one (op.Then) and
// succeeded, the prepare or commit of its branch: in the statement's round
// trip when it opens the transaction (beginWith), else right after it.
func (d *dataDB) execThen(ctx context.Context, w *txWorker, op engine.Data) engine.DataDone {
	if op.Then != 0 {
		failpoint.BeforeData(op.Then)
	}
	done := d.exec(ctx, w, op)
	if op.Then == 0 || done.Err != "" {
		return done
	}
	if done.Then != 0 {
		// beginWith ran it with the statement.
		failpoint.AfterData(op.Then, engine.DataDone{Err: done.ThenErr})
		return done
	}
	var then engine.DataDone
	switch op.Then {
	case engine.DataPrepare:
		then = d.prepare(ctx, w, op)
	case engine.DataCommitBranch:
		then = d.commitBranch(ctx, w, op)
	default:
		then = engine.DataDone{Err: fmt.Sprintf("a statement cannot carry %s", op.Then)}
	}
	failpoint.AfterData(op.Then, then)
	done.Then, done.ThenErr, done.ReadOnly, done.Retry, done.Xid = op.Then, then.Err, then.ReadOnly, then.Retry, then.Xid
	return done
}
