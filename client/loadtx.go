package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// loadTx is a distributed transaction a load runs.
type loadTx struct {
	s  *Session
	id engine.TxID
	// direct, for a load whose statements go straight to the
	// participants (parts), keeps their account.
	direct *api.DirectTx
	parts  []*rpc.Failover
}

// end is the params of the transaction's commit or rollback.
func (tx *loadTx) end() api.TxParams {
	if tx.direct != nil {
		return tx.direct.End()
	}
	return api.TxParams{TxID: tx.id}
}

// stmtError is a statement a participant refused: retrying cannot help,
// and the rows it carried hold the reason.
type stmtError struct {
	tx   engine.TxID
	node engine.NodeID
	stmt stmt
	err  error
	addr string
}

func (e *stmtError) Error() string {
	return fmt.Sprintf("transaction %d: %s", e.tx, describe(e.err, e.addr))
}

func (e *stmtError) Unwrap() error { return e.err }

func (l *loader) begin(ctx context.Context) (*loadTx, error) {
	s := l.s
	if s.broken {
		if err := s.check(ctx); err != nil {
			return nil, s.explain(err)
		}
	}
	var b engine.BeginReply
	if err := s.call(ctx, api.MethodBegin, struct{}{}, &b); err != nil {
		return nil, s.explain(err)
	}
	tx := &loadTx{s: s, id: b.TxID}
	if l.opts.Direct {
		parts, err := s.participants(ctx)
		if err != nil {
			tx.rollback(ctx)
			return nil, err
		}
		tx.direct, tx.parts = api.NewDirectTx(b.TxID, b.Cluster, b.Epoch), parts
	}
	return tx, nil
}

// retryable reports whether err, from a transaction's begin, exec or
// commit, may pass on another try: the coordinator did not answer, or the
// transaction aborted for another reason than a refused statement.
func retryable(err error) bool {
	var se *stmtError
	var oe *OutcomeError
	switch {
	case err == nil, errors.As(err, &se):
		return false
	case errors.As(err, &oe):
		return true
	}
	return rpc.IsTransport(err)
}

// exec runs stmts, per participant in order, the participants in parallel.
func (tx *loadTx) exec(ctx context.Context, stmts map[engine.NodeID][]stmt) error {
	_, err := tx.run(ctx, stmts)
	return err
}

// query is exec that returns each participant's last result.
func (tx *loadTx) query(ctx context.Context, stmts map[engine.NodeID][]stmt) (map[engine.NodeID]*engine.StmtResult, error) {
	return tx.run(ctx, stmts)
}

func (tx *loadTx) run(ctx context.Context, stmts map[engine.NodeID][]stmt) (map[engine.NodeID]*engine.StmtResult, error) {
	s := tx.s
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	results := make(map[engine.NodeID]*engine.StmtResult, len(stmts))
	for nd, list := range stmts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, st := range list {
				var result *engine.StmtResult
				var err error
				if tx.direct != nil {
					mu.Lock()
					p := tx.direct.Exec(nd, st.sql, st.args)
					mu.Unlock()
					var r engine.ExecResult
					err = tx.parts[nd].Call(ctx, api.MethodDirectExec, p, &r)
					result = r.Result
				} else {
					var r engine.ExecReply
					err = s.rpc.Call(ctx, api.MethodExec, api.ExecParams{TxID: tx.id, Node: &nd, SQL: st.sql, Args: st.args}, &r)
					result = r.Result
				}
				mu.Lock()
				if tx.direct != nil {
					tx.direct.Answered(nd, err == nil, true)
				}
				// The statement that failed, not one on another participant
				// refused because of it ("will abort"), whichever answer
				// came first: the failed one names the row to report.
				if err != nil && (firstErr == nil || tx.doomedBy(firstErr) && !tx.doomedBy(err)) {
					firstErr = err
					if !rpc.IsTransport(err) && ctx.Err() == nil {
						addr := s.Addr()
						if tx.direct != nil {
							addr = tx.parts[nd].Addr()
						}
						firstErr = &stmtError{tx: tx.id, node: nd, stmt: st, err: err, addr: addr}
					}
				}
				results[nd] = result
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		if rpc.IsTransport(firstErr) && ctx.Err() == nil {
			s.broken = true
		}
		var se *stmtError
		if errors.As(firstErr, &se) {
			return nil, se
		}
		return nil, wrapf(firstErr, "transaction %d: %s", tx.id, describe(firstErr, s.Addr()))
	}
	return results, nil
}

// rollback ends a transaction that must not commit; the coordinator would
// abort it at its idle timeout anyway, so a failure is not reported.
func (tx *loadTx) rollback(ctx context.Context) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	_ = tx.s.rpc.Call(rctx, api.MethodRollback, tx.end(), nil)
	cancel()
}

// commit commits the transaction. retry reports whether trying again may
// work: it aborted at commit (a no vote or a timeout), or the outcome is
// known to be an abort after the coordinator stopped answering.
func (tx *loadTx) commit(ctx context.Context) (retry bool, err error) {
	s := tx.s
	var out engine.OutcomeReply
	if err := s.call(ctx, api.MethodCommit, tx.end(), &out); err != nil {
		if !rpc.IsTransport(err) || ctx.Err() != nil {
			return false, fmt.Errorf("commit transaction %d: %s", tx.id, describe(err, s.Addr()))
		}
		// The commit may or may not have happened: ask once the
		// coordinator answers again, so rows are neither lost nor doubled.
		if cerr := s.check(ctx); cerr != nil {
			return false, fmt.Errorf("commit transaction %d: outcome unknown, the coordinator is unreachable: %s", tx.id, describe(cerr, s.Addr()))
		}
		var st engine.StatusReply
		if serr := s.call(ctx, api.MethodStatus, api.TxParams{TxID: tx.id}, &st); serr != nil {
			return false, fmt.Errorf("commit transaction %d: outcome unknown: %s", tx.id, describe(serr, s.Addr()))
		}
		switch st.State {
		case engine.PhaseCommitted.String(), engine.PhaseCommitting.String():
			return false, nil
		case engine.PhaseAborted.String(), engine.PhaseAborting.String(), "forgotten":
			return true, fmt.Errorf("transaction %d: %s", tx.id, describeState(st))
		}
		return false, fmt.Errorf("commit transaction %d: outcome unknown (%s)", tx.id, describeState(st))
	}
	if out.Outcome != engine.OutcomeCommit {
		// A failed statement would have failed its exec; an abort decided
		// at commit is a no vote or a timeout, which may pass next time.
		return true, &OutcomeError{TxID: tx.id, Reason: out.Reason}
	}
	return false, nil
}

// transact runs stmts in one distributed transaction and commits it.
// retry reports whether trying again may work.
func (l *loader) transact(ctx context.Context, stmts map[engine.NodeID][]stmt) (id engine.TxID, retry bool, err error) {
	tx, err := l.begin(ctx)
	if err != nil {
		return 0, retryable(err), err
	}
	if err := tx.exec(ctx, stmts); err != nil {
		// The transaction is doomed; say so now rather than leave it to
		// the idle timeout.
		tx.rollback(ctx)
		return tx.id, retryable(err), err
	}
	retry, err = tx.commit(ctx)
	return tx.id, retry, err
}

// doomedBy reports whether err refused a statement because an earlier one
// of the transaction failed.
func (tx *loadTx) doomedBy(err error) bool {
	return strings.HasPrefix(rpcMessage(err), fmt.Sprintf("transaction %d will abort", tx.id))
}
