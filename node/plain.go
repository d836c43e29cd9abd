package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/db/syncrep"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// plainTransact serves api.MethodPlainTransact: a one-participant
// transaction that needs none of the protocol, so none of it runs. Nothing
// is logged and the engine never hears of it: a plain transaction leaves
// nothing to recover, as it either committed on this participant's server
// or did not.
func (p *Participant) plainTransact(ctx context.Context, raw json.RawMessage) (any, error) {
	var params api.TransactParams
	if err := rpc.DecodeParams(raw, &params); err != nil {
		return nil, err
	}
	switch {
	case params.TxID != 0:
		return nil, rpc.Errorf(rpc.CodeInvalidParams, "tx: a plain transaction runs whole in one call; an open transaction's statements go to the coordinator")
	case !params.Commit:
		return nil, rpc.Errorf(rpc.CodeInvalidParams, "commit must be true: a plain transaction commits in the call that runs it")
	case params.Key != "":
		return nil, rpc.Errorf(rpc.CodeInvalidParams, "key: a plain transaction keeps no outcome to find by its key; send a keyed transaction to the coordinator (transact)")
	case len(params.Statements) == 0:
		return nil, rpc.Errorf(rpc.CodeInvalidParams, "statements are required")
	}
	me := p.opts.Engine.Node
	for i, st := range params.Statements {
		n, err := needNode(st.Node)
		if err != nil {
			return nil, statementError(i, err)
		}
		if n != me {
			return nil, rpc.Errorf(rpc.CodeBadNode, "statements[%d] is for participant %d and this is %d: a plain transaction runs on one participant (send it there, or a transaction of several to the coordinator)", i, n, me)
		}
		if err := needSQL(st.SQL); err != nil {
			return nil, statementError(i, err)
		}
	}
	if err := p.notReady(); err != nil {
		return nil, err
	}
	results, err := p.data.plain(ctx, params.Statements)
	if o, ok := p.opts.Observer.(PlainObserver); ok {
		o.PlainEnded(plainOutcome(err))
	}
	if err != nil {
		var fail *plainFailure
		if errors.As(err, &fail) {
			e := &engine.Error{Code: engine.ErrStatement, Message: fmt.Sprintf("%s: statements[%d]: %s (rolled back)", p.name, fail.stmt, fail.done.Err), SQL: fail.done.SQLErr}
			if fail.stmt < 0 {
				e.Message = fmt.Sprintf("%s: commit: %s (rolled back)", p.name, fail.done.Err)
			}
			return nil, rpcError(e)
		}
		if errors.Is(err, errPlainUnknown) {
			return nil, rpc.Errorf(rpc.CodeInternal, "%s: %v", p.name, err)
		}
		// Nothing was committed: the call may be sent again.
		return nil, rpc.Errorf(rpc.CodeUnavailable, "%s: %v (nothing committed)", p.name, err)
	}
	committed := engine.OutcomeCommit
	return engine.TransactReply{Results: results, Outcome: &committed}, nil
}

// PlainObserver, when a participant's Observer implements it, hears how
// each plain transaction ended: "committed", "rolled_back" (PostgreSQL
// refused it, or nothing was sent to commit it), or "unknown" (the
// connection broke once the COMMIT may have been sent, or the COMMIT is on
// the primary alone).
type PlainObserver interface {
	PlainEnded(outcome string)
}

// plainOutcome names how a plain transaction that returned err ended.
func plainOutcome(err error) string {
	switch {
	case err == nil:
		return "committed"
	case errors.Is(err, errPlainUnknown):
		return "unknown"
	}
	return "rolled_back"
}

// plainFailure is a plain transaction that PostgreSQL rolled back: a
// statement failed (stmt is its index) or its COMMIT did (stmt -1).
type plainFailure struct {
	stmt int
	done engine.DataDone
}

func (f *plainFailure) Error() string { return f.done.Err }

// errPlainUnknown wraps a plain transaction's failure after its COMMIT may
// have reached the server: nobody can tell whether it committed.
var errPlainUnknown = errors.New("whether it committed is unknown")

// plain runs stmts as one transaction on a pooled connection and commits
// it: BEGIN, the timeouts, the statements and COMMIT in one round trip when
// every statement's arguments go as text (as a branch's first statement
// does), else statement by statement. A *plainFailure is a rollback; an
// error wrapping errPlainUnknown an outcome nobody knows; any other error
// means nothing committed (the connection broke before COMMIT was sent, or
// none could be had).
func (d *dataDB) plain(ctx context.Context, stmts []api.StatementParams) ([]*engine.StmtResult, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	conn, err := d.acquire(ctx)
	if err != nil {
		return nil, err
	}
	params := make([][][]byte, len(stmts))
	pipelined := true
	for i, st := range stmts {
		if params[i], pipelined = textParams(st.Args); !pipelined {
			break
		}
	}
	var results []*engine.StmtResult
	if pipelined {
		results, err = d.plainPipelined(ctx, conn.Conn(), stmts, params)
	} else {
		results, err = d.plainInTurn(ctx, conn.Conn(), stmts)
	}
	var fail *plainFailure
	switch {
	case err == nil, errors.As(err, &fail) && fail.stmt < 0:
		// Committed, or a COMMIT that failed rolled back: the session is
		// out of the transaction.
		releaseConn(ctx, conn, "")
	case fail != nil:
		// The transaction is open and failed: end it, or drop the
		// connection if that fails too.
		releaseConn(ctx, conn, "ROLLBACK")
	default:
		conn.Conn().Close(ctx)
		conn.Release()
	}
	return results, err
}

// plainNamed bounds the user's statements one plain transaction runs by
// name: the connection's cache keeps the most recent stmtCacheSize names,
// and a name evicted while the pipeline is built would be deallocated
// (trim) before the pipeline uses it.
const plainNamed = stmtCacheSize / 2

// plainPipelined sends the whole transaction in one pipeline. PostgreSQL
// skips what follows a failed statement up to the pipeline's end, COMMIT
// included, so the transaction is left open and failed.
func (d *dataDB) plainPipelined(ctx context.Context, conn *pgx.Conn, stmts []api.StatementParams, params [][][]byte) ([]*engine.StmtResult, error) {
	pc := conn.PgConn()
	p := pipeline{conn: pc}
	if err := d.queueBegin(ctx, &p); err != nil {
		return nil, err
	}
	// A statement that may deallocate prepared statements would take the
	// names of those after it away before they run.
	nameable := !slices.ContainsFunc(stmts, func(st api.StatementParams) bool { return containsFold(st.SQL, "deallocate") })
	for i, st := range stmts {
		// Asked about at most plainNamed statements, the cache makes at
		// most that many entries (of statements that return rows too).
		p.user(ctx, st.SQL, params[i], st.ParamTypes, nameable && i < plainNamed)
	}
	p.utility("COMMIT")
	if err := stmtsOf(pc).trim(ctx, pc); err != nil {
		return nil, err
	}
	syncrep.Cancelled(pc)
	mrr := pc.ExecBatch(ctx, &p.batch)
	if err := readBegun(mrr); err != nil {
		// PostgreSQL skipped the rest, COMMIT included; the connection is
		// closed, which ends the session's transaction.
		return nil, plainBroke("begin", err)
	}
	results := make([]*engine.StmtResult, len(stmts))
	for i := range stmts {
		if !mrr.NextResult() {
			return nil, plainStatementFailed(i, closeBoth(nil, mrr))
		}
		res, err := textResult(mrr.ResultReader())
		if err != nil {
			return nil, plainStatementFailed(i, closeBoth(err, mrr))
		}
		results[i] = res
	}
	if !mrr.NextResult() {
		return nil, commitAnswer(ctx, conn, pgconn.CommandTag{}, closeBoth(nil, mrr))
	}
	tag, err := mrr.ResultReader().Close()
	// The COMMIT's own answer counts: once it said COMMIT, a failure to
	// read what follows it changes nothing.
	if cerr := mrr.Close(); err == nil && cerr != nil && tag.String() != "COMMIT" {
		err = cerr
	}
	return results, commitAnswer(ctx, conn, tag, err)
}

// plainStatementFailed reads the failure of a pipelined statement: PostgreSQL
// refused it (and skipped the rest, COMMIT included), or the connection
// broke, after the pipeline, COMMIT and all, may have been sent.
func plainStatementFailed(i int, err error) error {
	if isServerError(err) {
		return &plainFailure{stmt: i, done: statementFailed(err)}
	}
	return plainBroke(fmt.Sprintf("statements[%d]", i), err)
}

// plainBroke is a pipeline's failure other than a statement PostgreSQL
// refused: nothing committed if PostgreSQL refused the opening statements
// or nothing was sent (pgconn.SafeToRetry), else nobody can tell.
func plainBroke(step string, err error) error {
	if isServerError(err) || pgconn.SafeToRetry(err) {
		return fmt.Errorf("%s: %w", step, err)
	}
	return fmt.Errorf("%s: %w: %w", step, errPlainUnknown, err)
}

// plainInTurn runs the transaction a statement at a time, for statements
// without arguments (which may be several, as in psql) and arguments only
// pgx's typed encoding can send (query).
func (d *dataDB) plainInTurn(ctx context.Context, conn *pgx.Conn, stmts []api.StatementParams) ([]*engine.StmtResult, error) {
	if err := d.beginSimple(ctx, conn); err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	results := make([]*engine.StmtResult, len(stmts))
	for i, st := range stmts {
		res, err := query(ctx, conn, st.SQL, st.Args, st.ParamTypes)
		switch {
		case err == nil:
			results[i] = res
			continue
		case isServerError(err) || !conn.IsClosed():
			// PostgreSQL refused it, or pgx could not send its
			// arguments: the transaction is still there to roll back.
			return nil, &plainFailure{stmt: i, done: statementFailed(err)}
		}
		// Nothing was sent to commit it: the server rolls back the
		// transaction of a connection that is closed.
		return nil, fmt.Errorf("statements[%d]: %w", i, err)
	}
	syncrep.Cancelled(conn.PgConn())
	tag, err := conn.Exec(ctx, "COMMIT", pgx.QueryExecModeSimpleProtocol)
	return results, commitAnswer(ctx, conn, tag, err)
}

// commitAnswer reads the answer to a plain transaction's COMMIT. A COMMIT
// whose wait for the synchronous standby was cancelled is on the primary
// alone: a barrier makes it durable, or its outcome is unknown (package
// syncrep).
func commitAnswer(ctx context.Context, conn *pgx.Conn, tag pgconn.CommandTag, err error) error {
	switch {
	case err != nil && isServerError(err):
		return &plainFailure{stmt: -1, done: statementFailed(err)}
	case err != nil:
		return fmt.Errorf("commit: %w: %w", errPlainUnknown, err)
	case tag.String() != "COMMIT":
		// A transaction that failed earlier answers COMMIT with ROLLBACK.
		return &plainFailure{stmt: -1, done: engine.DataDone{Err: fmt.Sprintf("COMMIT answered %q", tag.String())}}
	}
	if syncrep.Cancelled(conn.PgConn()) {
		if err := syncrep.Barrier(ctx, conn); err != nil {
			return fmt.Errorf("commit: %w: %w: %w", errPlainUnknown, syncrep.ErrNotReplicated, err)
		}
	}
	return nil
}

// isServerError reports whether err is PostgreSQL's answer, as opposed
// to a broken connection or a cancelled wait, after which the session's
// state is unknown.
func isServerError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe)
}

// timeoutParams are timeoutsSQL's arguments.
func (d *dataDB) timeoutParams() [][]byte {
	return [][]byte{[]byte(strconv.FormatInt(d.lockTimeout.Milliseconds(), 10)), []byte(strconv.FormatInt(d.statementTimeout.Milliseconds(), 10))}
}

// acquire takes a data connection. A full pool fails after acquireTimeout
// rather than waiting: the connections are held by transactions that may
// be waiting for this one on another node. Opening a new connection may
// take long on a busy server; only waiting for a full pool is cut short.
func (d *dataDB) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	actx, cancel := ctx, context.CancelFunc(func() {})
	if st := d.pool.Stat(); st.AcquiredConns() >= st.MaxConns() {
		actx, cancel = context.WithTimeout(ctx, d.acquireTimeout)
	}
	defer cancel()
	conn, err := d.pool.Acquire(actx)
	if err != nil {
		if actx != ctx && actx.Err() != nil && ctx.Err() == nil {
			return nil, fmt.Errorf("no free data-database connection within %s (all %d in use by open transactions; raise --max-conns)", d.acquireTimeout, d.pool.Config().MaxConns)
		}
		return nil, fmt.Errorf("data database unavailable: %w", err)
	}
	return conn, nil
}
