package node

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

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

func (d *directCalls) giveUp(k directStmt) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.waiting, k)
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
// as if the coordinator had sent it, marked direct, and the engine's
// answer comes back here instead of going to the coordinator.
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
	k := directStmt{params.TxID, params.Stmt}
	ch, ok := p.direct.wait(k)
	if !ok {
		return nil, rpc.Errorf(rpc.CodeInvalidParams, "statement %d of transaction %d is already running here", params.Stmt, params.TxID)
	}
	m := engine.ExecRequest{Header: engine.Header{Cluster: params.Cluster, Epoch: params.Epoch},
		TxID: params.TxID, Stmt: params.Stmt, SQL: params.SQL, Args: params.Args, Direct: true}
	if !p.loop.submit(engine.Receive{Now: p.loop.now(), Msg: m}) {
		p.direct.giveUp(k)
		return nil, unavailable(errStopped)
	}
	select {
	case r := <-ch:
		if r.Err != "" {
			return nil, rpcError(&engine.Error{Code: engine.ErrStatement, Message: fmt.Sprintf("%s: %s", p.name, r.Err), SQL: r.SQLErr})
		}
		return r, nil
	case <-ctx.Done():
		p.direct.giveUp(k)
		return nil, rpc.Errorf(rpc.CodeUnavailable, "%s: no answer to statement %d of transaction %d: %v", p.name, params.Stmt, params.TxID, ctx.Err())
	}
}
