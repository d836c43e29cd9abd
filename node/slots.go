package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/rpc"
)

// forwardMethod carries a call that one coordinator passes to the holder
// of the slot the call belongs to (api.SlotOfTx, api.SlotOfKey). It is a
// node-to-node method, so only peers may send it, and its receiver never
// passes it on again: two coordinators that each think the other holds a
// slot answer unavailable instead of sending a call round in circles.
const forwardMethod = "tpcd.forward"

// forwardParams are forwardMethod's params: the call as its client made
// it.
type forwardParams struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params,omitempty"`
	// OneWay marks a node message passed on: it gets no answer but the
	// acknowledgement of its receipt.
	OneWay bool `json:"one_way,omitempty"`
	// Client is who called the coordinator that passed the call on (its
	// IP): the receiver counts the call against that client's limits.
	Client string `json:"client,omitempty"`
}

// holderTTL is how long a slot's holder, read from its lease, is taken as
// known: a take-over is noticed within it (a forward to the old holder
// fails at once, since it no longer serves).
const holderTTL = time.Second

// slotRouter passes calls that belong to another slot to the coordinator
// holding it.
type slotRouter struct {
	slot int
	// self is this coordinator's address, as its lease names it.
	self      string
	store     *logstore.Store
	transport Transport
	logger    *slog.Logger

	mu      sync.Mutex
	holders map[int]slotHolder
	clients map[string]*rpc.Client
	// passing queues the node messages of each other slot on their way
	// to its coordinator, each drained by a goroutine of its own.
	passing map[int]*batchQueue[forwardParams]
	done    chan struct{}
	closed  bool
}

type slotHolder struct {
	addr string
	read time.Time
}

func newSlotRouter(slot int, self string, store *logstore.Store, transport Transport, logger *slog.Logger) *slotRouter {
	return &slotRouter{slot: slot, self: self, store: store, transport: transport, logger: logger,
		holders: map[int]slotHolder{}, clients: map[string]*rpc.Client{},
		passing: map[int]*batchQueue[forwardParams]{}, done: make(chan struct{})}
}

// forwardedKey marks the context of a call another coordinator passed on;
// its value is the client that called that coordinator.
type forwardedKey struct{}

func isForwarded(ctx context.Context) bool { return ctx.Value(forwardedKey{}) != nil }

// forwardedClient is the client a call passed on came from, "" for a call
// made here.
func forwardedClient(ctx context.Context) string {
	c, _ := ctx.Value(forwardedKey{}).(string)
	return c
}

// holder is the address of the coordinator holding slot s, from its lease.
func (r *slotRouter) holder(ctx context.Context, s int, fresh bool) (string, error) {
	r.mu.Lock()
	h, ok := r.holders[s]
	r.mu.Unlock()
	if ok && !fresh && time.Since(h.read) < holderTTL {
		return h.addr, nil
	}
	lease, found, err := r.store.LeaseOf(ctx, api.CoordinatorSlotName(s))
	switch {
	case err != nil:
		return "", unavailable(fmt.Errorf("find the coordinator of slot %d: %w", s, err))
	case !found || lease.Remaining <= 0:
		return "", unavailable(fmt.Errorf("slot %d has no coordinator now (its lease is not held); a standby takes it over within its lease's time", s))
	}
	addr := holderAddr(lease.Holder)
	r.mu.Lock()
	r.holders[s] = slotHolder{addr: addr, read: time.Now()}
	r.mu.Unlock()
	return addr, nil
}

// client is the connection to a coordinator at addr.
func (r *slotRouter) client(addr string) (*rpc.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, unavailable(errStopped)
	}
	c := r.clients[addr]
	if c == nil {
		c = rpc.NewClient(addr, r.transport.client(r.logger))
		r.clients[addr] = c
	}
	return c, nil
}

// forward passes a client's call to slot s's coordinator and returns its
// answer as it gave it.
func (r *slotRouter) forward(ctx context.Context, s int, method string, raw json.RawMessage) (any, error) {
	if isForwarded(ctx) {
		return nil, unavailable(fmt.Errorf("this coordinator does not hold slot %d (any more): ask again", s))
	}
	addr, err := r.holder(ctx, s, false)
	if err != nil {
		return nil, err
	}
	if addr == r.self {
		// The lease was read while this process held it, or a stale
		// cache: read it again.
		if addr, err = r.holder(ctx, s, true); err != nil {
			return nil, err
		}
		if addr == r.self {
			return nil, unavailable(fmt.Errorf("slot %d's lease names this coordinator, which serves slot %d", s, r.slot))
		}
	}
	c, err := r.client(addr)
	if err != nil {
		return nil, err
	}
	var result json.RawMessage
	err = c.Call(ctx, forwardMethod, forwardParams{Method: method, Params: raw, Client: clientIdentity(ctx)}, &result)
	switch {
	case err == nil:
		return result, nil
	case rpc.IsCode(err, rpc.CodeUnavailable):
		// It may no longer hold the slot: read the lease again next time.
		r.forget(s)
	case rpc.NotConnected(err):
		r.forget(s)
		return nil, unavailable(fmt.Errorf("the coordinator of slot %d (%s) cannot be reached; nothing was sent to it: %w", s, addr, err))
	case rpc.IsTransport(err):
		r.forget(s)
		return nil, fmt.Errorf("the coordinator of slot %d (%s) did not answer; whether the call ran there is unknown: %w", s, addr, err)
	}
	return nil, err
}

// maxPassing bounds the messages of one slot queued on their way to its
// coordinator; beyond it the oldest are dropped (lost, as the protocol
// allows), and maxPassingBatch those sent in one frame.
const (
	maxPassing      = 4096
	maxPassingBatch = 256
)

// notify passes a node message of slot s on to its coordinator, with no
// wait for its handling: messages may be lost, and the protocol sends again
// what matters. Messages of one slot go in batches, one at a time, in the
// order they came.
func (r *slotRouter) notify(s int, method string, raw json.RawMessage) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	q := r.passing[s]
	if q == nil {
		q = newBatchQueue[forwardParams]()
		r.passing[s] = q
		go q.drain(r.done, maxPassingBatch, nil, func(batch []forwardParams) { r.pass(s, batch) })
	}
	r.mu.Unlock()
	q.push(forwardParams{Method: method, Params: raw, OneWay: true}, maxPassing)
}

// pass sends a batch of slot s's messages to its coordinator.
func (r *slotRouter) pass(s int, batch []forwardParams) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addr, err := r.holder(ctx, s, false)
	if err != nil || addr == r.self {
		return
	}
	c, err := r.client(addr)
	if err != nil {
		return
	}
	calls := make([]rpc.BatchCall, len(batch))
	for i, m := range batch {
		calls[i] = rpc.BatchCall{Method: forwardMethod, Params: m}
	}
	if err := c.NotifyBatch(ctx, calls); err != nil {
		r.forget(s)
		r.logger.Debug("passing messages on to their slot's coordinator failed; they count as lost", "slot", s, "messages", len(batch), "err", err)
	}
}

func (r *slotRouter) forget(s int) {
	r.mu.Lock()
	delete(r.holders, s)
	r.mu.Unlock()
}

func (r *slotRouter) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		close(r.done)
	}
	r.closed = true
	for _, c := range r.clients {
		c.Close()
	}
}

// serveForwarded is forwardMethod's handler: it runs the call passed on
// with the handler of its method, marked so that it is not passed on again.
func serveForwarded(methods map[string]rpc.Handler) rpc.Handler {
	return func(ctx context.Context, raw json.RawMessage) (any, error) {
		var p forwardParams
		if err := rpc.DecodeParams(raw, &p); err != nil {
			return nil, err
		}
		h := methods[p.Method]
		if h == nil || p.Method == forwardMethod {
			return nil, rpc.Errorf(rpc.CodeMethodNotFound, "method %q cannot be passed on", p.Method)
		}
		return h(context.WithValue(ctx, forwardedKey{}, p.Client), p.Params)
	}
}

// messageSlot is the slot a node message belongs to: its transaction's, or
// for a message about no transaction, its cluster's.
func messageSlot(m engine.Message) int {
	if tx := m.Tx(); tx != 0 {
		return api.SlotOfTx(tx)
	}
	switch m := m.(type) {
	case engine.ReconcileRequest:
		return api.SlotOfCluster(m.Cluster)
	case engine.ReconcileAnswer:
		return api.SlotOfCluster(m.Cluster)
	}
	return 0
}
