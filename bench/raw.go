package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// rawDriver runs the baselines: the workload done by the client itself,
// straight on the PostgreSQL servers, with nothing a coordinator adds (no
// event log, no RPC, no markers). Its two-phase baselines run per
// transaction BEGIN, the statements and PREPARE TRANSACTION on each
// touched server, a decision row on the log server, and COMMIT PREPARED on
// each; the decision is a forced row of its own (BaselineRaw) or shares
// one insert and commit with the decisions of concurrent transactions
// (BaselineRawGrouped). The local baseline runs BEGIN, the statements and
// COMMIT on the one server its transaction was planned on
// (BaselineLocal). Baselines take turns on the same connections.
type rawDriver struct {
	data []string
	// log is the log server's URI; empty when only the local baseline
	// runs, which writes no decisions.
	log         string
	nonce       int64
	lockTimeout time.Duration
	timeout     time.Duration
	// concurrent runs each server's statements at the same time as the
	// other servers' (bench's single form), as tpcd's coordinator does
	// with a transact call.
	concurrent bool
	// group writes the decisions of BaselineRawGrouped; nil when that
	// baseline does not run.
	group *decisionGroup

	mu      sync.Mutex
	clients []*rawClient
}

// rawClient holds one client's connections: one per data server and one to
// the log server, kept for the whole run.
type rawClient struct {
	d    *rawDriver
	id   int
	data []*pgx.Conn
	log  *pgx.Conn
	seq  uint64
	open []bool
	errs []error
}

// newRawDriver drives the baselines on the data servers data; log is the
// log server for the two-phase baselines ("" if none runs), and grouped
// starts the decision writer of BaselineRawGrouped for up to clients
// transactions at a time.
func newRawDriver(data []string, log string, nonce int64, lockTimeout, timeout time.Duration, concurrent, grouped bool, clients int) *rawDriver {
	d := &rawDriver{data: data, log: log, nonce: nonce, lockTimeout: lockTimeout, timeout: timeout, concurrent: concurrent}
	if grouped {
		d.group = startDecisionGroup(log, clients, timeout)
	}
	return d
}

// setup creates the tables the baselines write.
func (d *rawDriver) setup(ctx context.Context) error {
	for i, uri := range d.data {
		if err := execOnce(ctx, uri, CreateTableSQL); err != nil {
			return fmt.Errorf("create bench_kv on data database %d: %w", i, err)
		}
	}
	if d.log == "" {
		return nil
	}
	if err := execOnce(ctx, d.log, CreateDecisionsSQL); err != nil {
		return fmt.Errorf("create bench_decisions on the log database: %w", err)
	}
	return nil
}

func execOnce(ctx context.Context, uri, sql string) error {
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// connect opens n clients' connections, in parallel since there may be
// hundreds.
func (d *rawDriver) connect(ctx context.Context, n int) error {
	d.clients = make([]*rawClient, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &rawClient{d: d, id: i, data: make([]*pgx.Conn, len(d.data)), open: make([]bool, len(d.data)), errs: make([]error, len(d.data))}
			d.mu.Lock()
			d.clients[i] = c
			d.mu.Unlock()
			errs[i] = c.connect(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *rawClient) connect(ctx context.Context) error {
	var err error
	for i, uri := range c.d.data {
		if c.data[i] == nil || c.data[i].IsClosed() {
			if c.data[i], err = pgx.Connect(ctx, uri); err != nil {
				return fmt.Errorf("connect to data database %d: %w", i, err)
			}
		}
	}
	if c.d.log != "" && (c.log == nil || c.log.IsClosed()) {
		if c.log, err = pgx.Connect(ctx, c.d.log); err != nil {
			return fmt.Errorf("connect to the log database: %w", err)
		}
	}
	return nil
}

func (d *rawDriver) close() {
	if d.group != nil {
		d.group.stop()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, c := range d.clients {
		if c == nil {
			continue
		}
		for _, conn := range c.data {
			if conn != nil {
				conn.Close(ctx)
			}
		}
		if c.log != nil {
			c.log.Close(ctx)
		}
	}
	d.clients = nil
}

// client returns client i's transaction function for baseline (one of
// the Baseline constants but BaselineNone).
func (d *rawDriver) client(i int, baseline string) txFunc {
	c := d.clients[i]
	switch baseline {
	case BaselineLocal:
		return c.local
	case BaselineRawGrouped:
		return func(ctx context.Context, plan []stmt, sp *spans) (outcome, string) {
			return c.twoPhase(ctx, plan, sp, true)
		}
	}
	return func(ctx context.Context, plan []stmt, sp *spans) (outcome, string) {
		return c.twoPhase(ctx, plan, sp, false)
	}
}

// twoPhase runs plan as a raw two-phase commit; grouped hands the decision
// to the driver's decision writer instead of inserting it here.
func (c *rawClient) twoPhase(ctx context.Context, plan []stmt, sp *spans, grouped bool) (outcome, string) {
	ctx, cancel := context.WithTimeout(ctx, c.d.timeout)
	defer cancel()
	if err := c.connect(ctx); err != nil {
		return outFailed, err.Error()
	}
	c.seq++
	// The sequence is the client's across baselines, so GIDs never repeat
	// in a run; a "g" marks the grouped baseline's.
	tag := ""
	if grouped {
		tag = "g"
	}
	gid := fmt.Sprintf("bench:%d:%s%d:%d", c.d.nonce, tag, c.id, c.seq)
	clear(c.open)

	if out, reason := c.work(ctx, plan, sp); out != outCommitted {
		return out, reason
	}

	// Prepare on every touched server at once, as a coordinator would.
	c.eachOpen(func(i int, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, "PREPARE TRANSACTION "+quote(nodeGID(gid, i)), pgx.QueryExecModeSimpleProtocol)
		return err
	})
	if err := errors.Join(c.errs...); err != nil {
		// A failed PREPARE TRANSACTION has rolled its transaction back;
		// the others are prepared and must be rolled back by name.
		for i := range c.open {
			if c.open[i] && c.errs[i] != nil {
				c.open[i] = false
			}
		}
		c.eachOpen(func(i int, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, "ROLLBACK PREPARED "+quote(nodeGID(gid, i)), pgx.QueryExecModeSimpleProtocol)
			return err
		})
		return outAborted, fmt.Sprintf("prepare: %v", err)
	}
	sp.mark("prepare")

	// The decision: a row on the log server, durable before any COMMIT
	// PREPARED (synchronous commit as configured there, on by default):
	// one forced insert of its own, or a place in the writer's next group.
	var err error
	if grouped {
		err = c.d.group.decide(ctx, gid)
	} else {
		_, err = c.log.Exec(ctx, insertDecisionSQL, gid)
	}
	if err != nil {
		c.eachOpen(func(i int, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, "ROLLBACK PREPARED "+quote(nodeGID(gid, i)), pgx.QueryExecModeSimpleProtocol)
			return err
		})
		return outAborted, fmt.Sprintf("log decision: %v", err)
	}
	sp.mark("decision")

	c.eachOpen(func(i int, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, "COMMIT PREPARED "+quote(nodeGID(gid, i)), pgx.QueryExecModeSimpleProtocol)
		return err
	})
	if err := errors.Join(c.errs...); err != nil {
		return outFailed, fmt.Sprintf("commit prepared: %v", err)
	}
	sp.mark("commit prepared")
	return outCommitted, ""
}

// local runs plan, whose statements are all on one server, as an
// application without tpcd would: BEGIN, the statements, COMMIT.
func (c *rawClient) local(ctx context.Context, plan []stmt, sp *spans) (outcome, string) {
	ctx, cancel := context.WithTimeout(ctx, c.d.timeout)
	defer cancel()
	for _, s := range plan {
		if s.node != plan[0].node {
			// Separate COMMITs on two servers would not be atomic: this
			// is a planning bug, and must not pass for a commit.
			return outFailed, fmt.Sprintf("local baseline: a transaction planned on participants %d and %d", plan[0].node, s.node)
		}
	}
	if err := c.connect(ctx); err != nil {
		return outFailed, err.Error()
	}
	clear(c.open)
	if out, reason := c.work(ctx, plan, sp); out != outCommitted {
		return out, reason
	}
	c.eachOpen(func(_ int, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, "COMMIT", pgx.QueryExecModeSimpleProtocol)
		return err
	})
	if err := errors.Join(c.errs...); err != nil {
		// A COMMIT the server refused rolled back; one that got no answer
		// may have committed.
		if isConnErr(err) {
			return outFailed, fmt.Sprintf("commit: %v", err)
		}
		return outAborted, fmt.Sprintf("commit: %v", err)
	}
	sp.mark("commit")
	return outCommitted, ""
}

// work runs plan's statements, in order on each server; a server's first
// statement opens its transaction, with the same lock timeout, in the same
// round trip, as tpcd's participants do. It answers outCommitted when
// every statement succeeded, and otherwise rolls back what it opened.
func (c *rawClient) work(ctx context.Context, plan []stmt, sp *spans) (outcome, string) {
	lockTimeout := strconv.FormatInt(c.d.lockTimeout.Milliseconds(), 10)
	run := func(conn *pgx.Conn, s stmt, first bool) error {
		if !first {
			_, err := conn.Exec(ctx, UpsertSQL, s.key, s.val)
			return err
		}
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		b.Queue("SELECT set_config('lock_timeout', $1, true)", lockTimeout)
		b.Queue(UpsertSQL, s.key, s.val)
		return conn.SendBatch(ctx, b).Close()
	}
	if !c.d.concurrent {
		for _, s := range plan {
			first := !c.open[s.node]
			c.open[s.node] = true
			if err := run(c.data[s.node], s, first); err != nil {
				c.rollbackOpen(ctx)
				return outAborted, fmt.Sprintf("statement on %d: %v", s.node, err)
			}
			sp.mark("exec")
		}
		return outCommitted, ""
	}
	for _, s := range plan {
		c.open[s.node] = true
	}
	// Once a server's statement fails the others stop before their next
	// statement, as tpcd refuses the queued statements of a doomed
	// transaction, so that no server holds its locks longer than tpcd's
	// participants would.
	var doomed atomic.Bool
	c.eachOpen(func(i int, conn *pgx.Conn) error {
		first := true
		for _, s := range plan {
			if s.node != i {
				continue
			}
			if doomed.Load() {
				return nil
			}
			if err := run(conn, s, first); err != nil {
				doomed.Store(true)
				return fmt.Errorf("statement on %d: %w", i, err)
			}
			first = false
		}
		return nil
	})
	for _, err := range c.errs {
		if err != nil {
			c.rollbackOpen(ctx)
			return outAborted, err.Error()
		}
	}
	sp.mark("exec")
	return outCommitted, ""
}

// rollbackOpen ends the open (unprepared) transactions after a failure.
func (c *rawClient) rollbackOpen(ctx context.Context) {
	c.eachOpen(func(_ int, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, "ROLLBACK", pgx.QueryExecModeSimpleProtocol)
		return err
	})
}

// eachOpen runs fn on the connections of the open transactions
// concurrently, one round trip's time in all, and leaves the errors in
// c.errs. A connection whose operation failed is closed, so that the next
// transaction reconnects instead of inheriting a broken session.
func (c *rawClient) eachOpen(fn func(i int, conn *pgx.Conn) error) {
	clear(c.errs)
	var wg sync.WaitGroup
	last := -1
	for i := range c.open {
		if !c.open[i] {
			continue
		}
		if last >= 0 {
			wg.Add(1)
			go func(i int) { defer wg.Done(); c.errs[i] = fn(i, c.data[i]) }(last)
		}
		last = i
	}
	if last >= 0 {
		// The last one runs here: one goroutine fewer per transaction.
		c.errs[last] = fn(last, c.data[last])
	}
	wg.Wait()
	for i, err := range c.errs {
		if err != nil && isConnErr(err) {
			c.data[i].Close(context.Background())
		}
	}
}

// isConnErr tells a broken connection from a statement that failed.
func isConnErr(err error) bool {
	var pgErr *pgconn.PgError
	return !errors.As(err, &pgErr)
}

func nodeGID(gid string, node int) string { return fmt.Sprintf("%s:%d", gid, node) }

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// leftoverPrepared counts the baseline's prepared transactions still on
// the data servers; after a run there must be none.
func (d *rawDriver) leftoverPrepared(ctx context.Context) (int, error) {
	total := 0
	for i, uri := range d.data {
		conn, err := pgx.Connect(ctx, uri)
		if err != nil {
			return total, fmt.Errorf("data database %d: %w", i, err)
		}
		var n int
		err = conn.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE $1", fmt.Sprintf("bench:%d:%%", d.nonce)).Scan(&n)
		conn.Close(ctx)
		if err != nil {
			return total, fmt.Errorf("data database %d: read pg_prepared_xacts: %w", i, err)
		}
		total += n
	}
	return total, nil
}
