package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/failpoint"
)

// dataDB performs a participant's data-database effects. Each transaction
// gets a worker that runs its operations one after another, in the order
// the engine emitted them, on the transaction's own connection while the
// transaction is open.
type dataDB struct {
	pool             *pgxpool.Pool
	logger           *slog.Logger
	lockTimeout      time.Duration
	statementTimeout time.Duration
	acquireTimeout   time.Duration
	done             func(engine.DataDone)
	now              func() engine.Instant

	// base is cancelled by closeAll, ending operations still running.
	base    context.Context
	stop    context.CancelFunc
	running sync.WaitGroup

	mu      sync.Mutex
	workers map[engine.TxID]*txWorker
	// idle hands a transaction that has work to a parked goroutine; one is
	// started only when none is parked. Goroutines that ran pgx have grown
	// their stacks, and reusing them saves growing a new one per task.
	idle chan task
	// markers collects marker deletions, which run in batches.
	markers *markerSweeper
}

type task struct {
	id engine.TxID
	w  *txWorker
}

// idleWorker is how long a parked worker goroutine waits for work before it
// ends.
const idleWorker = 10 * time.Second

func newDataDB(d *dataDB) *dataDB {
	d.base, d.stop = context.WithCancel(context.Background())
	d.workers = map[engine.TxID]*txWorker{}
	d.idle = make(chan task)
	d.markers = &markerSweeper{d: d, queue: newBatchQueue[engine.Data]()}
	d.running.Add(1)
	go func() { defer d.running.Done(); d.markers.run() }()
	return d
}

type txWorker struct {
	queue   []engine.Data
	running bool
	conn    *pgxpool.Conn // the open data transaction, if any
	// wrote is set once a statement's command tag proves the open
	// transaction wrote, which makes the read-only probe at prepare moot.
	wrote bool
}

// opTimeout bounds one data operation so a hung server cannot hold a worker
// forever; statement_timeout normally ends statements much sooner.
const opTimeout = 5 * time.Minute

func (d *dataDB) do(op engine.Data) {
	if op.Op == engine.DataDeleteMarker {
		// The transaction is over on this node: nothing else of it can be
		// queued, so its marker may go with other transactions' markers.
		d.markers.push(op)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	w := d.workers[op.TxID]
	if w == nil {
		w = &txWorker{}
		d.workers[op.TxID] = w
	}
	w.queue = append(w.queue, op)
	if !w.running {
		w.running = true
		d.running.Add(1)
		t := task{op.TxID, w}
		select {
		case d.idle <- t:
		default:
			go d.worker(t)
		}
	}
}

// worker runs tasks until it has been idle for idleWorker or closeAll.
func (d *dataDB) worker(t task) {
	timer := time.NewTimer(idleWorker)
	defer timer.Stop()
	for {
		d.work(t.id, t.w)
		timer.Reset(idleWorker)
		select {
		case t = <-d.idle:
		case <-timer.C:
			return
		case <-d.base.Done():
			return
		}
	}
}

func (d *dataDB) work(id engine.TxID, w *txWorker) {
	defer d.running.Done()
	for {
		d.mu.Lock()
		if len(w.queue) == 0 {
			w.running = false
			if w.conn == nil {
				delete(d.workers, id)
			}
			d.mu.Unlock()
			return
		}
		op := w.queue[0]
		w.queue = w.queue[1:]
		d.mu.Unlock()
		res := d.run(w, op)
		failpoint.AfterData(op.Op, res)
		res.Now, res.Op, res.TxID, res.Stmt = d.now(), op.Op, op.TxID, op.Stmt
		d.done(res)
	}
}

// closeAll ends running operations and rolls back every open data
// transaction (shutdown; the loop must be stopped first). Prepared
// transactions are not touched: they wait for recovery.
func (d *dataDB) closeAll() {
	d.stop()
	d.running.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, w := range d.workers {
		if w.conn != nil {
			w.conn.Conn().Close(context.Background())
			w.conn.Release()
			w.conn = nil
			delete(d.workers, id)
		}
	}
}

func (d *dataDB) run(w *txWorker, op engine.Data) engine.DataDone {
	ctx, cancel := context.WithTimeout(d.base, opTimeout)
	defer cancel()
	switch op.Op {
	case engine.DataExec:
		return d.exec(ctx, w, op)
	case engine.DataPrepare:
		return d.prepare(ctx, w, op)
	case engine.DataRollback:
		d.release(ctx, w, "ROLLBACK")
		return engine.DataDone{}
	case engine.DataCommitPrepared:
		return d.finish(ctx, op.GID, "COMMIT PREPARED", true)
	case engine.DataRollbackPrepared:
		return d.finish(ctx, op.GID, "ROLLBACK PREPARED", false)
	case engine.DataCommitBranch:
		return d.commitBranch(ctx, w, op)
	case engine.DataSettle:
		return d.settle(ctx, op)
	}
	return engine.DataDone{Err: fmt.Sprintf("unknown data operation %d", op.Op)}
}

func (d *dataDB) exec(ctx context.Context, w *txWorker, op engine.Data) engine.DataDone {
	if w.conn == nil {
		// A full pool must fail the statement rather than wait: the
		// connections are held by transactions that may be waiting for
		// this one on another node.
		// Opening a new connection may take long on a busy server; only
		// waiting for a full pool is cut short.
		actx, cancel := ctx, context.CancelFunc(func() {})
		if st := d.pool.Stat(); st.AcquiredConns() >= st.MaxConns() {
			actx, cancel = context.WithTimeout(ctx, d.acquireTimeout)
		}
		conn, err := d.pool.Acquire(actx)
		poolFull := actx != ctx && actx.Err() != nil && ctx.Err() == nil
		cancel()
		if err != nil {
			if poolFull {
				return engine.DataDone{Err: fmt.Sprintf("no free data-database connection within %s (all %d in use by open transactions; raise --max-conns)", d.acquireTimeout, d.pool.Config().MaxConns)}
			}
			return engine.DataDone{Err: fmt.Sprintf("data database unavailable: %v", err)}
		}
		if params, ok := textParams(op.Args); ok {
			// The usual first statement: one round trip opens the
			// transaction and runs it.
			res, begun, err := d.beginWith(ctx, conn.Conn(), op.SQL, params)
			if !begun {
				conn.Conn().Close(ctx)
				conn.Release()
				return engine.DataDone{Err: fmt.Sprintf("begin: %v", err)}
			}
			w.conn = conn
			if err != nil {
				return engine.DataDone{Err: err.Error()}
			}
			if provesWrite(res) {
				w.wrote = true
			}
			return engine.DataDone{Result: res}
		}
		// One round trip opens the transaction with the timeouts that turn
		// a distributed deadlock into an error instead of a hang.
		begin := fmt.Sprintf("BEGIN; SET LOCAL lock_timeout = %d; SET LOCAL statement_timeout = %d",
			d.lockTimeout.Milliseconds(), d.statementTimeout.Milliseconds())
		if _, err := conn.Exec(ctx, begin, pgx.QueryExecModeSimpleProtocol); err != nil {
			conn.Conn().Close(ctx)
			conn.Release()
			return engine.DataDone{Err: fmt.Sprintf("begin: %v", err)}
		}
		w.conn = conn
	}
	res, err := query(ctx, w.conn.Conn(), op.SQL, op.Args)
	if err != nil {
		return engine.DataDone{Err: err.Error()}
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
func query(ctx context.Context, conn *pgx.Conn, sql string, args []any) (*engine.StmtResult, error) {
	if params, ok := textParams(args); ok {
		return textResult(conn.PgConn().ExecParams(ctx, sql, params, nil, nil, []int16{pgx.TextFormatCode}))
	}
	var opts []any
	if len(args) == 0 {
		opts = []any{pgx.QueryExecModeSimpleProtocol}
	} else {
		opts = []any{pgx.QueryResultFormats{pgx.TextFormatCode}}
		for _, a := range args {
			opts = append(opts, normalizeArg(a))
		}
	}
	rows, err := conn.Query(ctx, sql, opts...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	res := &engine.StmtResult{Columns: columnNames(rows.FieldDescriptions())}
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
// statement, all in one round trip (one pipeline, one Sync). begun reports
// whether the transaction is open: when it is not, the connection is in an
// unknown state and must not be reused; when it is and err is set, the
// statement failed and the transaction awaits its rollback.
func (d *dataDB) beginWith(ctx context.Context, conn *pgx.Conn, sql string, params [][]byte) (res *engine.StmtResult, begun bool, err error) {
	b := &pgconn.Batch{}
	b.ExecParams("BEGIN", nil, nil, nil, nil)
	b.ExecParams("SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)",
		[][]byte{[]byte(strconv.FormatInt(d.lockTimeout.Milliseconds(), 10)), []byte(strconv.FormatInt(d.statementTimeout.Milliseconds(), 10))},
		nil, nil, nil)
	b.ExecParams(sql, params, nil, nil, []int16{pgx.TextFormatCode})
	mrr := conn.PgConn().ExecBatch(ctx, b)
	for range 2 {
		if !mrr.NextResult() {
			return nil, false, closeBoth(nil, mrr)
		}
		if _, err := mrr.ResultReader().Close(); err != nil {
			return nil, false, closeBoth(err, mrr)
		}
	}
	if !mrr.NextResult() {
		return nil, true, closeBoth(nil, mrr)
	}
	res, err = textResult(mrr.ResultReader())
	if cerr := mrr.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, true, err
	}
	return res, true, nil
}

// textResult reads a statement's rows, all columns in text format.
func textResult(rr *pgconn.ResultReader) (*engine.StmtResult, error) {
	res := &engine.StmtResult{Columns: columnNames(rr.FieldDescriptions())}
	for rr.NextRow() {
		res.Rows = append(res.Rows, textRow(rr.Values()))
	}
	tag, err := rr.Close()
	if err != nil {
		return nil, err
	}
	res.RowsAffected, res.Tag = tag.RowsAffected(), tag.String()
	return res, nil
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

func columnNames(fields []pgconn.FieldDescription) []string {
	var names []string
	for _, f := range fields {
		names = append(names, f.Name)
	}
	return names
}

// textRow copies a row of text-format values (the buffer is reused for the
// next row); a NULL stays nil.
func textRow(raw [][]byte) []any {
	row := make([]any, len(raw))
	for i, v := range raw {
		if v != nil {
			row[i] = string(v)
		}
	}
	return row
}

// textParams renders statement arguments as text parameters of unspecified
// type, which PostgreSQL then types from the statement, as it types quoted
// literals (psql's \bind and libpq clients pass parameters the same way).
// It declines (ok false) for anything but strings, numbers, booleans and
// nulls: arrays and objects go through pgx's typed encoding, which knows
// how to write a JSON array as a PostgreSQL array of the parameter's type.
func textParams(args []any) (params [][]byte, ok bool) {
	if len(args) == 0 {
		return nil, false
	}
	params = make([][]byte, len(args))
	for i, a := range args {
		switch v := normalizeArg(a).(type) {
		case nil:
		case string:
			params[i] = []byte(v)
		case int64:
			params[i] = strconv.AppendInt(nil, v, 10)
		case float64:
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, false
			}
			// Never exponent notation: integer types reject "1e+16".
			params[i] = strconv.AppendFloat(nil, v, 'f', -1, 64)
		case bool:
			params[i] = strconv.AppendBool(nil, v)
		default:
			return nil, false
		}
	}
	return params, true
}

// normalizeArg turns JSON numbers that are whole into integers, so that
// they bind to integer columns.
func normalizeArg(a any) any {
	if f, ok := a.(float64); ok && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return int64(f)
	}
	return a
}

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

// release ends the worker's hold on its connection, running sql first if
// given; a connection that fails is closed rather than reused.
func (d *dataDB) release(ctx context.Context, w *txWorker, sql string) error {
	if w.conn == nil {
		return nil
	}
	var err error
	if sql != "" {
		_, err = w.conn.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			w.conn.Conn().Close(ctx)
		}
	}
	w.conn.Release()
	d.mu.Lock()
	w.conn, w.wrote = nil, false
	d.mu.Unlock()
	return err
}

// finish commits or rolls back a prepared transaction. "Does not exist" is
// never taken as success by itself: the marker says whether the transaction
// committed, and only the matching answer counts.
func (d *dataDB) finish(ctx context.Context, gid, verb string, commit bool) engine.DataDone {
	_, err := d.pool.Exec(ctx, verb+" "+quote(gid), pgx.QueryExecModeSimpleProtocol)
	if err == nil {
		return engine.DataDone{}
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42704" {
		return engine.DataDone{Err: fmt.Sprintf("%s %s: %v", verb, gid, err), Retry: true}
	}
	var marker bool
	if err := d.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM tpcd_markers WHERE gid = $1 AND NOT aborted)", gid).Scan(&marker); err != nil {
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

// recoveryFacts reads what survived in the data database: our prepared
// transactions, outcome markers and decider tombstones.
func recoveryFacts(ctx context.Context, pool *pgxpool.Pool) (prepared, markers, tombstones []string, err error) {
	prepared, err = strings1(ctx, pool, "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE 'tpcd:%' ORDER BY gid")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read pg_prepared_xacts: %w", err)
	}
	markers, err = strings1(ctx, pool, "SELECT gid FROM tpcd_markers WHERE NOT aborted ORDER BY gid")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read markers: %w", err)
	}
	tombstones, err = strings1(ctx, pool, "SELECT gid FROM tpcd_markers WHERE aborted ORDER BY gid")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read tombstones: %w", err)
	}
	return prepared, markers, tombstones, nil
}

func strings1(ctx context.Context, pool *pgxpool.Pool, sql string) ([]string, error) {
	rows, err := pool.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

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
