package node

import (
	"context"
	"fmt"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
)

// The methods below serve the coordinator's client methods to callers in
// the same process (the PostgreSQL front door), through the same handlers
// as JSON-RPC without encoding anything. Their errors are the *rpc.Error
// values a JSON-RPC client would get. The caller's identity, for the
// per-client limit, is the rpc.Caller in ctx (rpc.WithCaller); without one
// every in-process caller counts as the one client "local".

// Exec runs api.MethodExec.
func (c *Coordinator) Exec(ctx context.Context, p api.ExecParams) (engine.ExecReply, error) {
	return typed[engine.ExecReply](c.exec(ctx, p))
}

// Transact runs api.MethodTransact.
func (c *Coordinator) Transact(ctx context.Context, p api.TransactParams) (engine.TransactReply, error) {
	r, err := typed[engine.TransactReply](c.transactTyped(ctx, p))
	if err == nil && r.Outcome != nil {
		c.endsTx(r.TxID, nil)
	}
	return r, err
}

// Commit runs api.MethodCommit.
func (c *Coordinator) Commit(ctx context.Context, tx engine.TxID) (engine.OutcomeReply, error) {
	r, err := c.call(ctx, func(req engine.ReqID, now engine.Instant) engine.Input {
		return engine.ClientCommit{Now: now, Req: req, TxID: tx}
	})
	c.endsTx(tx, err)
	return typed[engine.OutcomeReply](r, err)
}

// Rollback runs api.MethodRollback.
func (c *Coordinator) Rollback(ctx context.Context, tx engine.TxID) (engine.OutcomeReply, error) {
	r, err := c.call(ctx, func(req engine.ReqID, now engine.Instant) engine.Input {
		return engine.ClientRollback{Now: now, Req: req, TxID: tx}
	})
	c.endsTx(tx, err)
	return typed[engine.OutcomeReply](r, err)
}

// Status runs api.MethodStatus.
func (c *Coordinator) Status(ctx context.Context, tx engine.TxID) (engine.StatusReply, error) {
	return typed[engine.StatusReply](c.call(ctx, func(req engine.ReqID, now engine.Instant) engine.Input {
		return engine.ClientStatus{Now: now, Req: req, TxID: tx}
	}))
}

// Participants is the number of participants (node ids 0..n-1).
func (c *Coordinator) Participants() int { return len(c.opts.Participants) }

// typed narrows a handler's answer to the reply type its method has.
func typed[T any](r any, err error) (T, error) {
	var zero T
	if err != nil {
		return zero, err
	}
	t, ok := r.(T)
	if !ok {
		return zero, fmt.Errorf("coordinator answered %T, want %T", r, zero)
	}
	return t, nil
}
