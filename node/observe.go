package node

import (
	"context"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// Observer watches a node's loop, for metrics. Apart from Appended its
// methods run on the loop goroutine and must return quickly without
// blocking; they must not keep or change what they are given. An Observer
// sees the engine's inputs and outputs only, never the engine itself,
// which keeps instrumentation out of the pure engine.
type Observer interface {
	// Recovered reports the log replay at start: events folded, time taken.
	Recovered(events int, took time.Duration)
	// Stepped sees every input and what the engine made of it.
	Stepped(in engine.Input, rd engine.Ready)
	// Performed sees every effect as it runs, once its events are durable.
	Performed(e engine.Effect)
	// Durable sees every event once it is durable.
	Durable(ev engine.Event)
	// Ended sees each transaction the coordinator forgot (it ended, or was
	// decided with nobody left to tell), once, with its outcome.
	// Coordinator only.
	Ended(txs []engine.StatusReply)
	// Appended reports one group-commit append to the log: how many events,
	// how long it took, and its error. It runs on the flushing goroutine.
	Appended(events int, took time.Duration, err error)
}

// observeStep feeds the observer after a step; it runs on the loop
// goroutine.
func (l *loop) observeStep(in engine.Input, rd engine.Ready) {
	if l.observer != nil {
		l.observer.Stepped(in, rd)
	}
	if l.afterStep != nil {
		l.afterStep()
	}
}

// observed wraps perform so that the observer sees each effect.
func observed(o Observer, perform func(engine.Effect)) func(engine.Effect) {
	if o == nil {
		return perform
	}
	return func(e engine.Effect) {
		o.Performed(e)
		perform(e)
	}
}

// endedFeed returns a function that lists the transactions eng forgot
// since its previous call (the first call: since endedFeed).
func endedFeed(eng *engine.Coordinator) func() []engine.StatusReply {
	seen := eng.EndedCount()
	return func() []engine.StatusReply {
		n := eng.EndedCount()
		if n == seen {
			return nil
		}
		d := n - seen
		seen = n
		return eng.RecentEnded(int(min(d, uint64(1<<30))))
	}
}

// query runs f on the loop goroutine, where the engine may be read, and
// waits for it; it fails when ctx ends or the loop has stopped first.
func (l *loop) query(ctx context.Context, f func()) error {
	done := make(chan struct{})
	q := func() { f(); close(done) }
	select {
	case l.queries <- q:
	case <-l.stopped:
		return errStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-l.stopped:
		// The loop may have run f just before stopping.
		select {
		case <-done:
			return nil
		default:
			return errStopped
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// afterStep counts the transactions the coordinator forgot and shows them
// to the observer; it runs on the loop goroutine.
func (c *Coordinator) afterStep(feed func() []engine.StatusReply) func() {
	return func() {
		c.applied.wake(c.eng.Applied)
		txs := feed()
		if len(txs) == 0 {
			return
		}
		c.counts.add(txs)
		if c.opts.Observer != nil {
			c.opts.Observer.Ended(txs)
		}
	}
}

// writeTimeout bounds one RPC from its headers to its answer. It must
// outlast the longest wait a client method may have: a statement queued
// behind others and then running up to the exec timeout, or a commit
// waiting for votes. cfg has its defaults filled.
func writeTimeout(cfg engine.CoordinatorConfig) time.Duration {
	return max(rpc.DefaultWriteTimeout, 4*cfg.ExecTimeout+2*cfg.VoteTimeout)
}

// inputTx is the transaction an input is about, 0 for none (ticks, begin,
// node-level inputs), so that debug lines of the loop carry "tx" like every
// other protocol line.
func inputTx(in engine.Input) engine.TxID {
	switch in := in.(type) {
	case engine.Receive:
		return in.Msg.Tx()
	case engine.SendFailed:
		return in.Msg.Tx()
	case engine.ClientExec:
		return in.TxID
	case engine.ClientCommit:
		return in.TxID
	case engine.ClientRollback:
		return in.TxID
	case engine.ClientStatus:
		return in.TxID
	case engine.DataDone:
		return in.TxID
	}
	return 0
}
