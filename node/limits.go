package node

import (
	"context"
	"encoding/json"
	"slices"
	"sync"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// openLimiter bounds the explicit transactions one client holds open, so
// that a client that begins and never finishes cannot fill the
// coordinator's memory and the participants' connection pools. A client is
// its remote IP: tokens are shared by every client of a cluster, so they
// tell nobody apart.
type openLimiter struct {
	max int
	mu  sync.Mutex
	// open holds the transactions each client began that were still open
	// when last looked at; pending counts begins in flight.
	open    map[string]map[engine.TxID]struct{}
	pending map[string]int
}

func newOpenLimiter(max int) *openLimiter {
	return &openLimiter{max: max, open: map[string]map[engine.TxID]struct{}{}, pending: map[string]int{}}
}

func clientIdentity(ctx context.Context) string {
	if c, ok := rpc.CallerOf(ctx); ok {
		return c.Host()
	}
	return "local"
}

// reserve claims a slot for a begin by client, or refuses with CodeLimit.
// When the client seems to be at its limit, stillOpen (which asks the
// engine) drops the transactions that ended since.
func (l *openLimiter) reserve(ctx context.Context, client string, stillOpen func(context.Context, []engine.TxID) ([]engine.TxID, error)) error {
	if l.max <= 0 {
		return nil
	}
	l.mu.Lock()
	if len(l.open[client])+l.pending[client] < l.max {
		l.pending[client]++
		l.mu.Unlock()
		return nil
	}
	ids := make([]engine.TxID, 0, len(l.open[client]))
	for id := range l.open[client] {
		ids = append(ids, id)
	}
	l.mu.Unlock()

	open, err := stillOpen(ctx, ids)
	if err != nil {
		return unavailable(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	keep := map[engine.TxID]struct{}{}
	for _, id := range open {
		if _, ok := l.open[client][id]; ok {
			keep[id] = struct{}{}
		}
	}
	// Transactions begun while stillOpen ran are kept too.
	for id := range l.open[client] {
		if !slices.Contains(ids, id) {
			keep[id] = struct{}{}
		}
	}
	if len(keep) == 0 {
		delete(l.open, client)
	} else {
		l.open[client] = keep
	}
	if len(keep)+l.pending[client] >= l.max {
		return rpc.Errorf(rpc.CodeLimit, "client %s already has %d open transactions, the most one client may have: commit or roll back one first", client, l.max)
	}
	l.pending[client]++
	return nil
}

// settle ends a reservation: tx is the transaction begun, 0 if begin failed.
func (l *openLimiter) settle(client string, tx engine.TxID) {
	if l.max <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending[client]--; l.pending[client] <= 0 {
		delete(l.pending, client)
	}
	if tx != 0 {
		if l.open[client] == nil {
			l.open[client] = map[engine.TxID]struct{}{}
		}
		l.open[client][tx] = struct{}{}
	}
}

// stillOpen returns those of ids that are undecided: active or collecting
// votes.
func (c *Coordinator) stillOpen(ctx context.Context, ids []engine.TxID) ([]engine.TxID, error) {
	var open []engine.TxID
	err := c.loop.query(ctx, func() {
		for _, id := range ids {
			switch c.eng.Status(id).State {
			case engine.PhaseActive.String(), engine.PhasePreparing.String():
				open = append(open, id)
			}
		}
	})
	return open, err
}

// begin serves api.MethodBegin within the client's open-transaction limit.
func (c *Coordinator) begin(ctx context.Context, raw json.RawMessage) (any, error) {
	if err := rpc.DecodeNoParams(raw); err != nil {
		return nil, err
	}
	return c.startTx(ctx, func(req engine.ReqID, now engine.Instant) engine.Input {
		return engine.ClientBegin{Now: now, Req: req}
	}, func(r any) engine.TxID {
		if b, ok := r.(engine.BeginReply); ok {
			return b.TxID
		}
		return 0
	})
}

// startTx runs a client input that begins a transaction (begin, or an
// exec without one) within the client's open-transaction limit; began
// finds the new transaction's id in the answer.
func (c *Coordinator) startTx(ctx context.Context, mk func(engine.ReqID, engine.Instant) engine.Input, began func(any) engine.TxID) (any, error) {
	client := clientIdentity(ctx)
	if err := c.limiter.reserve(ctx, client, c.stillOpen); err != nil {
		c.logger.Warn("begin refused", "client", client, "err", err)
		return nil, err
	}
	r, err := c.call(ctx, mk)
	var tx engine.TxID
	if err == nil {
		tx = began(r)
	}
	c.limiter.settle(client, tx)
	return r, err
}
