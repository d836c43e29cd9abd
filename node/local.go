package node

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

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
	r, err := typed[engine.TransactReply](c.transactTyped(ctx, p, api.PromptAcks(ctx)))
	if err == nil && r.Outcome != nil {
		c.endsTx(r.TxID, nil)
	}
	return r, err
}

// Commit runs api.MethodCommit.
func (c *Coordinator) Commit(ctx context.Context, tx engine.TxID) (engine.OutcomeReply, error) {
	prompt := api.PromptAcks(ctx)
	r, err := c.call(ctx, func(req engine.ReqID, now engine.Instant) engine.Input {
		return engine.ClientCommit{Now: now, Req: req, TxID: tx, PromptAcks: prompt}
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

// WaitApplied waits until tx's commit is applied on every participant but
// its decider (engine.StatusReply.Applied: a read there sees its rows), or
// tx is not being committed; it returns ctx's error if that ends first.
// It is woken by the step that applies it, where asking Status over and
// over would either ask often or wake late.
func (c *Coordinator) WaitApplied(ctx context.Context, tx engine.TxID) error {
	// Waiting before asking: a step that applies tx after the answer
	// below wakes the waiter.
	done := c.applied.add(tx)
	defer c.applied.remove(tx, done)
	st, err := c.Status(ctx, tx)
	if err != nil {
		return err
	}
	if st.State != engine.PhaseCommitting.String() || st.Applied {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// appliedWaiters are the callers of WaitApplied, by transaction.
type appliedWaiters struct {
	// n counts the waiters, so that a step with none (most) takes no lock.
	n       atomic.Int32
	mu      sync.Mutex
	waiting map[engine.TxID][]chan struct{}
}

func (w *appliedWaiters) add(tx engine.TxID) chan struct{} {
	ch := make(chan struct{})
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.waiting == nil {
		w.waiting = map[engine.TxID][]chan struct{}{}
	}
	w.waiting[tx] = append(w.waiting[tx], ch)
	w.n.Add(1)
	return ch
}

// remove forgets ch, if wake has not already.
func (w *appliedWaiters) remove(tx engine.TxID, ch chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	before := len(w.waiting[tx])
	chs := slices.DeleteFunc(w.waiting[tx], func(c chan struct{}) bool { return c == ch })
	w.n.Add(int32(len(chs) - before))
	if len(chs) == 0 {
		delete(w.waiting, tx)
		return
	}
	w.waiting[tx] = chs
}

// wake closes the channels of the transactions applied says are applied;
// it runs on the loop goroutine after every step, where the engine may be
// asked.
func (w *appliedWaiters) wake(applied func(engine.TxID) bool) {
	if w.n.Load() == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for tx, chs := range w.waiting {
		if !applied(tx) {
			continue
		}
		for _, ch := range chs {
			close(ch)
		}
		w.n.Add(-int32(len(chs)))
		delete(w.waiting, tx)
	}
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
