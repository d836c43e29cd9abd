package node

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// directSlack is what a direct statement's caller waits beyond the data
// database's timeouts for one statement before it is told there was no
// answer (whether the statement ran is then unknown).
const directSlack = 10 * time.Second

// directCalls are the direct statements (api.MethodDirectExec) whose
// callers wait for the engine's answer, by transaction and statement.
type directCalls struct {
	mu      sync.Mutex
	waiting map[directStmt]chan engine.ExecResult
}

type directStmt struct {
	tx   engine.TxID
	stmt int
}

// wait registers a caller for statement stmt of tx; false if one already
// waits for it.
func (d *directCalls) wait(k directStmt) (chan engine.ExecResult, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, busy := d.waiting[k]; busy {
		return nil, false
	}
	if d.waiting == nil {
		d.waiting = map[directStmt]chan engine.ExecResult{}
	}
	ch := make(chan engine.ExecResult, 1)
	d.waiting[k] = ch
	return ch, true
}

// giveUp unregisters the caller waiting on ch, if the answer has not
// taken it away meanwhile (and a later caller registered under the key).
func (d *directCalls) giveUp(k directStmt, ch chan engine.ExecResult) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.waiting[k] == ch {
		delete(d.waiting, k)
	}
}

// answer hands a result to its caller; a result nobody waits for (the
// caller gave up, or a copy of an answer already given) is dropped.
func (d *directCalls) answer(r engine.ExecResult) {
	k := directStmt{r.TxID, r.Stmt}
	d.mu.Lock()
	ch := d.waiting[k]
	delete(d.waiting, k)
	d.mu.Unlock()
	if ch != nil {
		ch <- r
	}
}

// directExec serves api.MethodDirectExec: the statement goes to the engine
// of its transaction's slot as if the coordinator had sent it, marked
// direct, and the engine's answer comes back here instead of going to the
// coordinator.
func (p *Participant) directExec(ctx context.Context, raw json.RawMessage) (any, error) {
	var params api.DirectExecParams
	if err := rpc.DecodeParams(raw, &params); err != nil {
		return nil, err
	}
	switch {
	case params.TxID == 0 || params.Cluster == "" || params.Epoch == 0:
		return nil, rpc.Errorf(rpc.CodeInvalidParams, "tx, cluster and epoch are required (from the coordinator's answer to begin)")
	case params.Stmt < 0:
		return nil, rpc.Errorf(rpc.CodeInvalidParams, "stmt %d: statements are numbered from 0", params.Stmt)
	}
	if err := needSQL(params.SQL); err != nil {
		return nil, err
	}
	if err := p.notReady(); err != nil {
		return nil, err
	}
	q, err := p.slotEngine(api.SlotOfTx(params.TxID))
	if err != nil {
		return nil, err
	}
	return q.runDirect(ctx, params)
}

// runDirect runs a direct statement on this slot's engine and waits for
// its answer.
func (p *Participant) runDirect(ctx context.Context, params api.DirectExecParams) (any, error) {
	k := directStmt{params.TxID, params.Stmt}
	ch, ok := p.direct.wait(k)
	if !ok {
		return nil, rpc.Errorf(rpc.CodeInvalidParams, "statement %d of transaction %d is already running here", params.Stmt, params.TxID)
	}
	m := engine.ExecRequest{Header: engine.Header{Cluster: params.Cluster, Epoch: params.Epoch},
		TxID: params.TxID, Stmt: params.Stmt, SQL: params.SQL, Args: params.Args, Direct: true}
	if !p.loop.submit(engine.Receive{Now: p.loop.now(), Msg: m}) {
		p.direct.giveUp(k, ch)
		return nil, unavailable(errStopped)
	}
	// The engine answers every direct statement, but a statement may wait
	// for a connection and its locks first: the bound is the data
	// database's own for one statement, and some.
	bound := time.NewTimer(p.opts.StatementTimeout + p.opts.LockTimeout + directSlack)
	defer bound.Stop()
	select {
	case r := <-ch:
		if r.Err != "" {
			return nil, rpcError(&engine.Error{Code: engine.ErrStatement, Message: fmt.Sprintf("%s: %s", p.name, r.Err), SQL: r.SQLErr})
		}
		return r, nil
	case <-ctx.Done():
		p.direct.giveUp(k, ch)
		return nil, rpc.Errorf(rpc.CodeUnavailable, "%s: no answer to statement %d of transaction %d: %v", p.name, params.Stmt, params.TxID, ctx.Err())
	case <-bound.C:
		p.direct.giveUp(k, ch)
		return nil, rpc.Errorf(rpc.CodeUnavailable, "%s: no answer to statement %d of transaction %d within %s", p.name, params.Stmt, params.TxID, p.opts.StatementTimeout+p.opts.LockTimeout+directSlack)
	case <-p.loop.stopped:
		p.direct.giveUp(k, ch)
		return nil, unavailable(errStopped)
	}
}
