package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// Admission defaults (CoordinatorOptions).
const (
	// DefaultMaxOpen is how many undecided explicit transactions the
	// coordinator admits at once, all clients together. Each may hold a
	// data connection on every participant it touched until it is
	// decided, so the bound must stay below the smallest participant pool
	// (tpcd participant --max-conns, 100 by default) with room left for
	// phase two, marker deletion and recovery, which use the same pool.
	DefaultMaxOpen = 80
	// DefaultAdmissionWait is how long a begin waits for a slot before it
	// is refused: long enough for other transactions to end under load
	// (a vote may take seconds on a busy machine), short enough that a
	// refused client hears so while it can react.
	DefaultAdmissionWait = 5 * time.Second
)

const (
	// minShare is the least share a client gets, however many are active:
	// below it a client could not even overlap two transactions.
	minShare = 4
	// activeWindow is how long a client counts as active after its last
	// begin, though it holds nothing: a steady client between two
	// transactions must not leave its share to a burst of another's.
	activeWindow = 10 * time.Second
	// sweepEvery spaces the sweeps that forget inactive clients.
	sweepEvery = time.Second
	// pollEvery spaces the coordinator's look at which transactions are
	// still undecided while begins wait: those ended by commit or
	// rollback free their slot at once, but those ended by the idle
	// timeout or a failure are seen only this way.
	pollEvery = 20 * time.Millisecond
)

// admission bounds the explicit transactions the coordinator holds
// undecided: at most total at once (so that they never need more data
// connections than the participants' pools hold), and for each client
// (remote IP; tokens are shared, so they tell nobody apart) at most its
// share: total divided among the active clients, at least minShare, at
// most perClient. A begin beyond either waits, in a bounded queue, up to
// wait for a slot; a freed slot goes to the waiting client that holds
// fewest. Past the wait, or with the queue full, the begin is refused
// with rpc.CodeLimit. Nothing here ever holds a client's transaction
// back once it is open: the bounds apply to opening them.
type admission struct {
	total, perClient int // 0: no bound
	wait             time.Duration
	logger           *slog.Logger
	// stillOpen asks the engine which of ids are undecided.
	stillOpen func(context.Context, []engine.TxID) ([]engine.TxID, error)

	mu      sync.Mutex
	clients map[string]*clientSlots
	owner   map[engine.TxID]string
	// held counts the open and pending transactions of every client.
	held      int
	queue     []*waiter // in arrival order
	polling   bool
	lastSweep time.Time
	// lastWarn and unlogged space the warnings about refusals: a flood
	// of begins would otherwise log a line each.
	lastWarn time.Time
	unlogged int
}

// clientSlots is one active client's part.
type clientSlots struct {
	open     map[engine.TxID]struct{}
	pending  int // begins admitted whose transaction is not known yet
	waiting  int
	lastSeen time.Time
}

func (cs *clientSlots) held() int { return len(cs.open) + cs.pending }

// waiter is a begin waiting for a slot; ready is closed when granted.
type waiter struct {
	client  string
	ready   chan struct{}
	granted bool
}

// admissionBounds reads the admission options: 0 selects the default,
// a negative bound is none (0 for newAdmission).
func admissionBounds(opts CoordinatorOptions) (total, perClient int, wait time.Duration) {
	switch {
	case opts.MaxOpen == 0:
		total = DefaultMaxOpen
	case opts.MaxOpen > 0:
		total = opts.MaxOpen
	}
	switch {
	case opts.MaxOpenPerClient == 0 && total > 0:
		perClient = max(1, total*7/8)
	case opts.MaxOpenPerClient > 0:
		perClient = opts.MaxOpenPerClient
	}
	wait = opts.AdmissionWait
	if wait <= 0 {
		wait = DefaultAdmissionWait
	}
	return total, perClient, wait
}

func newAdmission(total, perClient int, wait time.Duration, logger *slog.Logger, stillOpen func(context.Context, []engine.TxID) ([]engine.TxID, error)) *admission {
	return &admission{total: total, perClient: perClient, wait: wait, logger: logger, stillOpen: stillOpen,
		clients: map[string]*clientSlots{}, owner: map[engine.TxID]string{}}
}

func (a *admission) off() bool { return a.total == 0 && a.perClient == 0 }

// share is the most transactions one client may hold now; 0: no bound.
// The caller holds mu.
func (a *admission) share() int {
	switch {
	case a.perClient == 0:
		return 0
	case a.total == 0:
		return a.perClient
	}
	return min(a.perClient, max(minShare, a.total/max(1, len(a.clients))))
}

// fits reports whether cs may open one more transaction now.
func (a *admission) fits(cs *clientSlots) bool {
	share := a.share()
	return (a.total == 0 || a.held < a.total) && (share == 0 || cs.held() < share)
}

// reserve claims a slot for a begin by client, waiting for one if need
// be; every nil return must be followed by settle.
func (a *admission) reserve(ctx context.Context, client string) error {
	if a.off() {
		return nil
	}
	now := time.Now()
	a.mu.Lock()
	a.sweep(now)
	cs := a.clients[client]
	if cs == nil {
		cs = &clientSlots{open: map[engine.TxID]struct{}{}}
		a.clients[client] = cs
		// A newcomer shrinks the others' shares; nothing to grant.
	}
	cs.lastSeen = now
	if a.fits(cs) {
		cs.pending++
		a.held++
		a.mu.Unlock()
		return nil
	}
	// Queues are bounded too: a client may have as many begins waiting
	// as it may hold, and all clients together as many as may be open.
	perClientQueue := a.share()
	if perClientQueue == 0 {
		perClientQueue = a.total
	}
	if cs.waiting >= perClientQueue || len(a.queue) >= max(a.total, a.perClient) {
		err := a.refusal(client, cs, false)
		a.mu.Unlock()
		return err
	}
	w := &waiter{client: client, ready: make(chan struct{})}
	a.queue = append(a.queue, w)
	cs.waiting++
	if !a.polling {
		a.polling = true
		go a.poll()
	}
	a.mu.Unlock()

	timer := time.NewTimer(a.wait)
	defer timer.Stop()
	var cause error
	select {
	case <-w.ready:
		return nil
	case <-timer.C:
	case <-ctx.Done():
		cause = ctx.Err()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if w.granted {
		// Granted as the wait ended: the slot is this begin's.
		if cause != nil {
			a.settleLocked(client, 0)
			return cause
		}
		return nil
	}
	a.queue = slices.DeleteFunc(a.queue, func(q *waiter) bool { return q == w })
	cs.waiting--
	if cause != nil {
		return cause
	}
	return a.refusal(client, cs, true)
}

// refusal says which bound refused client's begin. The caller holds mu.
func (a *admission) refusal(client string, cs *clientSlots, waited bool) error {
	after := ""
	if waited {
		after = fmt.Sprintf(" (after waiting %s for a slot)", a.wait)
	}
	if share := a.share(); share > 0 && cs.held() >= share {
		return rpc.Errorf(rpc.CodeLimit, "client %s already has %d open transactions, its share of the %d the coordinator admits at once (%d active clients, at most %d each)%s: commit or roll back one first",
			client, cs.held(), a.total, len(a.clients), a.perClient, after)
	}
	return rpc.Errorf(rpc.CodeLimit, "the coordinator already has %d open transactions, the most it admits at once (--max-open, sized to the participants' connection pools)%s: retry shortly",
		a.held, after)
}

// refusalLogEvery spaces the warnings about refused begins.
const refusalLogEvery = 10 * time.Second

// warn logs a refused begin, at most one line per refusalLogEvery with
// the number of refusals since the last.
func (a *admission) warn(client string, err error) {
	a.mu.Lock()
	a.unlogged++
	now := time.Now()
	if now.Sub(a.lastWarn) < refusalLogEvery {
		a.mu.Unlock()
		return
	}
	n := a.unlogged
	a.lastWarn, a.unlogged = now, 0
	a.mu.Unlock()
	a.logger.Warn("begin refused", "client", client, "err", err, "refused_since_last_warning", n)
}

// settle ends a reservation: tx is the transaction begun, 0 if begin failed.
func (a *admission) settle(client string, tx engine.TxID) {
	if a.off() {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.settleLocked(client, tx)
}

func (a *admission) settleLocked(client string, tx engine.TxID) {
	cs := a.clients[client]
	if cs == nil {
		return // cannot happen: a client with a pending begin is kept
	}
	cs.pending--
	if tx != 0 {
		cs.open[tx] = struct{}{}
		a.owner[tx] = client
	} else {
		a.held--
		a.grant()
	}
}

// ended frees the slot of tx, which is decided (the engine answered its
// commit or rollback).
func (a *admission) ended(tx engine.TxID) {
	if a.off() {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.endedLocked(tx)
	a.grant()
}

func (a *admission) endedLocked(tx engine.TxID) {
	client, ok := a.owner[tx]
	if !ok {
		return
	}
	delete(a.owner, tx)
	delete(a.clients[client].open, tx)
	a.held--
}

// grant hands free slots to waiting begins: each to the waiter whose
// client holds fewest (the first to arrive among equals), as long as one
// fits. The caller holds mu.
func (a *admission) grant() {
	for len(a.queue) > 0 {
		best := -1
		for i, w := range a.queue {
			cs := a.clients[w.client]
			if a.fits(cs) && (best < 0 || cs.held() < a.clients[a.queue[best].client].held()) {
				best = i
			}
		}
		if best < 0 {
			return
		}
		w := a.queue[best]
		a.queue = slices.Delete(a.queue, best, best+1)
		cs := a.clients[w.client]
		cs.waiting--
		cs.pending++
		a.held++
		w.granted = true
		close(w.ready)
	}
}

// sweep forgets clients that hold nothing, wait for nothing and have not
// begun a transaction for activeWindow, which enlarges the others'
// shares. The caller holds mu.
func (a *admission) sweep(now time.Time) {
	if now.Sub(a.lastSweep) < sweepEvery {
		return
	}
	a.lastSweep = now
	n := len(a.clients)
	for client, cs := range a.clients {
		if cs.held() == 0 && cs.waiting == 0 && now.Sub(cs.lastSeen) >= activeWindow {
			delete(a.clients, client)
		}
	}
	if len(a.clients) < n {
		a.grant()
	}
}

// poll runs while begins wait: it drops the transactions the engine no
// longer has undecided (ended by the idle timeout, a failure, a client
// that went away) and grants the slots they held.
func (a *admission) poll() {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		a.mu.Lock()
		ids := make([]engine.TxID, 0, len(a.owner))
		for id := range a.owner {
			ids = append(ids, id)
		}
		a.mu.Unlock()

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		open, err := a.stillOpen(ctx, ids)
		cancel()

		a.mu.Lock()
		if err == nil {
			undecided := make(map[engine.TxID]bool, len(open))
			for _, id := range open {
				undecided[id] = true
			}
			// Transactions begun while the engine was asked are not in
			// ids, and stay.
			for _, id := range ids {
				if !undecided[id] {
					a.endedLocked(id)
				}
			}
		}
		a.sweep(time.Now())
		a.grant()
		if len(a.queue) == 0 {
			a.polling = false
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		if err != nil {
			a.logger.Debug("admission: cannot ask which transactions are open", "err", err)
		}
		<-t.C
	}
}

func clientIdentity(ctx context.Context) string {
	if c := forwardedClient(ctx); c != "" {
		// Passed on by another coordinator (slots): its client's.
		return c
	}
	if c, ok := rpc.CallerOf(ctx); ok {
		return c.Host()
	}
	return "local"
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

// begin serves api.MethodBegin within the client's share of the
// transactions the coordinator admits.
func (c *Coordinator) begin(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.BeginParams
	if len(raw) > 0 {
		if err := rpc.DecodeParams(raw, &p); err != nil {
			return nil, err
		}
	}
	if err := needKey(p.Key); err != nil {
		return nil, err
	}
	return c.startTx(ctx, func(req engine.ReqID, now engine.Instant) engine.Input {
		return engine.ClientBegin{Now: now, Req: req, Key: p.Key}
	}, func(r any) engine.TxID {
		// A repeated begin names a transaction that holds its slot already.
		if b, ok := r.(engine.BeginReply); ok && !b.Repeated {
			return b.TxID
		}
		return 0
	})
}

// startTx runs a client input that begins a transaction (begin, or an
// exec without one) once admission grants it a slot; began finds the new
// transaction's id in the answer.
func (c *Coordinator) startTx(ctx context.Context, mk func(engine.ReqID, engine.Instant) engine.Input, began func(any) engine.TxID) (any, error) {
	client := clientIdentity(ctx)
	if err := c.admission.reserve(ctx, client); err != nil {
		if rpc.IsCode(err, rpc.CodeLimit) {
			c.admission.warn(client, err)
		}
		return nil, err
	}
	r, err := c.call(ctx, mk)
	var tx engine.TxID
	if err == nil {
		tx = began(r)
	}
	c.admission.settle(client, tx)
	return r, err
}

// endsTx frees tx's admission slot once its commit or rollback got an
// answer that shows it decided (an outcome), or no longer open.
func (c *Coordinator) endsTx(tx engine.TxID, err error) {
	if err == nil || rpc.IsCode(err, rpc.CodeTxNotActive) || rpc.IsCode(err, rpc.CodeUnknownTx) {
		c.admission.ended(tx)
	}
}
