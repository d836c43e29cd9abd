package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/rpc"
)

// CoordinatorOptions configure a coordinator node.
type CoordinatorOptions struct {
	// Participants are the participants' RPC addresses; index i is node i.
	Participants []string
	// Log is the pool of the coordinator's log database, already migrated.
	Log    *pgxpool.Pool
	Engine engine.CoordinatorConfig
	Logger *slog.Logger
	// Tick is how often timeouts and retries are checked. Default 20ms.
	Tick time.Duration
	// MaxRequestBytes bounds one RPC request. Default 1 MiB.
	MaxRequestBytes int64
	// CompactEvery is how often events of ended transactions are deleted
	// from the log. Default 10s; negative disables compaction.
	CompactEvery time.Duration
	// KeepOutcomes is how long the outcome of an ended transaction stays
	// answerable (status, a call repeated with its key) after compaction
	// removed its events. Default DefaultKeepOutcomes.
	KeepOutcomes time.Duration
	// Transport secures RPC (tokens, TLS); the zero value is plain h2c.
	Transport Transport
	// MaxOpen bounds the explicit transactions the coordinator holds
	// undecided at once, all clients together: each may hold a data
	// connection on every participant it touched, so keep it below the
	// participants' pools (tpcd participant --max-conns), with room for
	// phase two. A begin beyond it waits up to AdmissionWait for a slot,
	// then gets rpc.CodeLimit. Default DefaultMaxOpen; negative: no bound.
	MaxOpen int
	// MaxOpenPerClient bounds those of one client (remote IP) further:
	// a client's share is MaxOpen divided among the clients active in the
	// last 10 s (at least 4), and never more than this. Default: seven
	// eighths of MaxOpen, so that an eighth is always left to others
	// though one client came first and took all it could; negative: no
	// bound but the share.
	MaxOpenPerClient int
	// AdmissionWait is how long a begin waits for a slot. Default
	// DefaultAdmissionWait.
	AdmissionWait time.Duration
	// Observer, if set, watches the loop (metrics).
	Observer Observer
	// Lease, when set, is the slot this coordinator holds in a log that
	// other coordinators share (HoldLease): every append is fenced by it.
	Lease *Lease
	// Fence, when not 0, is the slot's generation a coordinator without a
	// lease claimed (ClaimSlot): every append is fenced by it, so that a
	// standby that takes the slot over shuts it out of the log.
	Fence int64
	// Slots, when more than 1, is how many coordinators serve the cluster
	// at once, each holding one slot by a lease (package api, "Slots");
	// Slot is this one's, 0 to Slots-1. Calls that belong to another slot
	// are passed on to its holder.
	Slot, Slots int
	// Address is where this coordinator serves, as its lease names it
	// (LeaseOptions.Holder): others pass it the calls of its slot.
	Address string
}

// Coordinator is a running coordinator node.
type Coordinator struct {
	opts   CoordinatorOptions
	name   string
	logger *slog.Logger
	eng    *engine.Coordinator
	loop   *loop
	store  *logstore.Store
	peers  []*rpc.Client
	out    []*outbox
	server *rpc.Server

	nextReq atomic.Uint64
	mu      sync.Mutex
	waiters map[engine.ReqID]chan engine.Respond
	health  []peerHealth
	ended   *compactor // durable CoordEnded, compacted later
	// outcomes keeps what ended transactions came to, beyond compaction.
	outcomes *outcomeKeeper

	// cluster and epoch are fixed at start; kept here so RPC handlers can
	// read them without touching the engine, which the loop owns.
	cluster string
	epoch   engine.Epoch

	// counts serves the status page, admission the bounds on open
	// transactions; counts is touched on the loop goroutine only.
	counts    outcomeCounts
	admission *admission
	// applied are the callers of WaitApplied, woken after the step that
	// applied their transaction.
	applied appliedWaiters
	// watch is what operators read (Health, LatestSnapshot).
	watch watched[CoordinatorSnapshot]
	// router passes on calls of other slots; nil with one slot.
	router *slotRouter

	cancel context.CancelFunc
	done   chan struct{}
}

type peerHealth struct {
	ok      bool
	seen    time.Time
	lastErr string
	epoch   engine.Epoch
}

// coordinatorStore is the coordinator's log, its appends fenced by its
// lease if it holds one.
func coordinatorStore(opts CoordinatorOptions) *logstore.Store {
	// Its own slot's outcomes only, with one slot too: a log that served
	// more keeps the others' (slots are never taken away).
	s := logstore.New(opts.Log).ForSlot(opts.Slot, uint64(api.FirstTxOfSlot(opts.Slot)), uint64(api.EndTxOfSlot(opts.Slot)))
	name := api.CoordinatorSlotName(opts.Slot)
	switch {
	case opts.Lease != nil:
		s = s.Fenced(name, opts.Lease.Generation())
	case opts.Fence != 0:
		s = s.Fenced(name, opts.Fence)
	}
	return s
}

// ClaimSlot takes the log's coordinator slot for a coordinator without a
// lease (for no time at all: a standby may take it whenever nothing else
// stops it, see LogLock) and returns the generation to fence its appends
// by (CoordinatorOptions.Fence). It refuses while another holds the slot by
// a lease. self names the coordinator in the slot.
func ClaimSlot(ctx context.Context, pool *pgxpool.Pool, self string) (int64, error) {
	return claimSlot(ctx, logstore.New(pool), self)
}

// checkNoLease refuses to start a coordinator without a lease on a log
// whose slot another holds by one: its appends would not be fenced, and the
// holder's would not fence it out. A lease that has expired is taken over
// (for no time at all), so that its holder, if it still runs, can write
// nothing more.
func checkNoLease(ctx context.Context, store *logstore.Store, self string) error {
	if _, found, err := store.LeaseOf(ctx, api.CoordinatorName); err != nil || !found {
		return err
	}
	_, err := claimSlot(ctx, store, self)
	return err
}

// claimSlot takes the slot for no time unless another holds it by a lease.
func claimSlot(ctx context.Context, store *logstore.Store, self string) (int64, error) {
	gen, taken, held, err := store.TakeLease(ctx, api.CoordinatorName, self+" (no lease)", 0)
	switch {
	case err != nil:
		return 0, fmt.Errorf("the log's coordinator slot: %w", err)
	case taken:
		return gen, nil
	case held.Remaining > 0:
		return 0, fmt.Errorf("another coordinator (%s) holds this log's slot by a lease for %v more: give --lease to run as its standby, or stop it first", held.Holder, held.Remaining.Round(time.Millisecond))
	}
	return 0, fmt.Errorf("another coordinator (%s) took this log's slot while this one started", held.Holder)
}

// StartCoordinator recovers the coordinator from its log, starts a new epoch
// and serves JSON-RPC on ln until Close.
func StartCoordinator(ctx context.Context, ln net.Listener, opts CoordinatorOptions) (*Coordinator, error) {
	if len(opts.Participants) == 0 {
		return nil, errors.New("coordinator needs at least one participant")
	}
	if opts.Slots < 1 {
		opts.Slots = 1
	}
	switch {
	case opts.Slots > api.MaxSlots:
		return nil, fmt.Errorf("%d slots: at most %d", opts.Slots, api.MaxSlots)
	case opts.Slot < 0 || opts.Slot >= opts.Slots:
		return nil, fmt.Errorf("slot %d of %d: slots are numbered from 0", opts.Slot, opts.Slots)
	case opts.Slots > 1 && opts.Lease == nil:
		return nil, errors.New("coordinators that share a cluster's slots hold them by leases")
	}
	opts.Engine.FirstTx = api.FirstTxOfSlot(opts.Slot)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CompactEvery == 0 {
		opts.CompactEvery = 10 * time.Second
	}
	if opts.KeepOutcomes <= 0 {
		opts.KeepOutcomes = DefaultKeepOutcomes
	}
	opts.Engine.Participants = len(opts.Participants)
	// Filled here so that the limits the node applies itself (write
	// timeout, transact's statement count) are the engine's.
	opts.Engine = opts.Engine.Filled()
	name := api.CoordinatorSlotName(opts.Slot)
	logger := opts.Logger.With("role", "coordinator")
	if opts.Slots > 1 {
		logger = logger.With("slot", opts.Slot)
	}
	c := &Coordinator{
		opts:    opts,
		name:    name,
		logger:  logger,
		eng:     engine.NewCoordinator(opts.Engine),
		store:   coordinatorStore(opts),
		waiters: map[engine.ReqID]chan engine.Respond{},
		health:  make([]peerHealth, len(opts.Participants)),
		done:    make(chan struct{}),
	}
	c.ended = newCompactor(c.store, name, 0, c.logger)
	c.loop = newLoop(name, c.eng, c.store, wallClock{}, c.logger, opts.Tick)
	if opts.CompactEvery > 0 {
		c.loop.compaction = c.ended
	}
	c.outcomes = newOutcomeKeeper(c.store, opts.KeepOutcomes, c.logger)
	if opts.CompactEvery > 0 {
		// Compaction may remove a transaction's events only once its
		// outcome is kept elsewhere.
		c.outcomes.saved = c.ended.add
	}
	c.outcomes.answer = func(in engine.KeyLookedUp) {
		in.Now = c.loop.now()
		c.loop.submit(in)
	}
	c.loop.perform = observed(opts.Observer, c.perform)
	c.loop.onDurable = c.onDurable
	var recoveredEnds []engine.CoordEnded
	c.loop.onRecovered = func(ev engine.Event) {
		if e, ok := ev.(engine.CoordEnded); ok {
			recoveredEnds = append(recoveredEnds, e)
		}
	}
	c.loop.observer = opts.Observer
	total, perClient, wait := admissionBounds(opts)
	c.admission = newAdmission(total, perClient, wait, c.logger, c.stillOpen)
	for i, addr := range opts.Participants {
		peer := rpc.NewClient(addr, opts.Transport.client(c.logger))
		to := engine.NodeID(i)
		c.peers = append(c.peers, peer)
		c.out = append(c.out, newOutbox(to, peer, c.logger,
			func(err error) { c.noteHealth(to, err, 0) },
			func(m engine.Message) { c.loop.submit(engine.SendFailed{Now: c.loop.now(), To: to, Msg: m}) }))
	}

	if opts.Lease == nil && opts.Fence == 0 {
		if err := checkNoLease(ctx, c.store, ln.Addr().String()); err != nil {
			return nil, err
		}
	}
	if recorded, err := c.store.Slots(ctx); err != nil {
		return nil, err
	} else if recorded != opts.Slots {
		return nil, fmt.Errorf("the coordinators of this log serve %d slot(s), this one %d: give every coordinator the same --slots (AgreeSlots records a change)", recorded, opts.Slots)
	}
	began := time.Now()
	n, err := c.loop.recover(ctx)
	if err != nil {
		return nil, err
	}
	c.loop.afterStep = c.afterStep(endedFeed(c.eng))
	effects, err := c.loop.startStep(ctx, engine.Start{Now: c.loop.now(), NewCluster: api.SlotCluster(uuid.NewString(), opts.Slot)})
	if err != nil {
		return nil, err
	}
	c.cluster, c.epoch = c.eng.Cluster(), c.eng.Epoch()
	// Transactions the log shows ended may be left over from an
	// incarnation that did not live to keep their outcomes and compact
	// them; keeping an outcome again changes nothing.
	now := time.Now()
	for _, e := range recoveredEnds {
		c.outcomes.add(e, c.loop.durableSeq, now)
	}
	c.loop.onRecovered = nil
	if err := c.outcomes.start(ctx); err != nil {
		return nil, err
	}
	c.logger.Info("coordinator recovered", "events", n, "cluster", c.eng.Cluster(), "epoch", c.eng.Epoch(),
		"in_flight", len(c.eng.Transactions()), "took", time.Since(began).Round(time.Millisecond))
	if opts.Observer != nil {
		opts.Observer.Recovered(n, time.Since(began))
	}

	c.watch.checkHealth(ctx, c.CheckHealth)
	if opts.Slots > 1 {
		c.router = newSlotRouter(opts.Slot, opts.Address, logstore.New(opts.Log), opts.Transport, c.logger)
	}
	c.server = rpc.NewServer(opts.Transport.server(rpc.ServerOptions{Logger: c.logger, MaxRequestBytes: opts.MaxRequestBytes, Methods: c.methods(),
		Inline:       coordinatorMethods,
		WriteTimeout: writeTimeout(opts.Engine)}))
	workers := []func(context.Context){
		func(ctx context.Context) { c.loop.run(ctx, effects) },
		c.pingLoop,
		func(ctx context.Context) {
			c.ended.run(ctx, c.opts.CompactEvery)
		},
		func(ctx context.Context) { c.outcomes.run(ctx, outcomesSaveEvery) },
		c.watchState,
	}
	for _, o := range c.out {
		workers = append(workers, o.run)
	}
	c.cancel = background(c.server, ln, c.logger, c.done, workers...)
	return c, nil
}

// Cluster is the cluster id.
func (c *Coordinator) Cluster() string { return c.cluster }

// Epoch is this incarnation's epoch.
func (c *Coordinator) Epoch() engine.Epoch { return c.epoch }

// Close stops serving, writes what is pending and releases the peers. The
// log pool stays open; it belongs to the caller.
func (c *Coordinator) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.server.Shutdown(ctx)
	c.cancel()
	<-c.done
	for _, p := range c.peers {
		p.Close()
	}
	if c.router != nil {
		c.router.close()
	}
	return err
}

func (c *Coordinator) methods() map[string]rpc.Handler {
	m := map[string]rpc.Handler{
		api.MethodBegin: c.begin,
		api.MethodExec: func(ctx context.Context, raw json.RawMessage) (any, error) {
			var p api.ExecParams
			if err := rpc.DecodeParams(raw, &p); err != nil {
				return nil, err
			}
			return c.exec(ctx, p)
		},
		api.MethodExecute: func(ctx context.Context, raw json.RawMessage) (any, error) {
			var p api.ExecuteParams
			if err := rpc.DecodeParams(raw, &p); err != nil {
				return nil, err
			}
			node, err := needNode(p.Node)
			if err != nil {
				return nil, err
			}
			if err := needSQL(p.SQL); err != nil {
				return nil, err
			}
			if err := needKey(p.Key); err != nil {
				return nil, err
			}
			return c.call(ctx, func(req engine.ReqID, now engine.Instant) engine.Input {
				return engine.ClientExecute{Now: now, Req: req, Node: node, SQL: p.SQL, Args: p.Args, Key: p.Key}
			})
		},
		api.MethodCommit: c.txMethod(true, func(req engine.ReqID, now engine.Instant, p api.TxParams) engine.Input {
			return engine.ClientCommit{Now: now, Req: req, TxID: p.TxID, Direct: p.Direct}
		}),
		api.MethodRollback: c.txMethod(true, func(req engine.ReqID, now engine.Instant, p api.TxParams) engine.Input {
			nodes := make([]engine.NodeID, len(p.Direct))
			for i, d := range p.Direct {
				nodes[i] = d.Node
			}
			return engine.ClientRollback{Now: now, Req: req, TxID: p.TxID, Direct: nodes}
		}),
		api.MethodStatus:  c.status,
		api.MethodInDoubt: c.inDoubt,
		api.MethodResolve: c.resolve,
		api.MethodTransact: func(ctx context.Context, raw json.RawMessage) (any, error) {
			r, err := c.transact(ctx, raw)
			if reply, ok := r.(api.TransactReply); ok && reply.Outcome != nil {
				c.endsTx(reply.TxID, nil)
			}
			return r, err
		},
		api.MethodNodes: func(ctx context.Context, raw json.RawMessage) (any, error) {
			if err := rpc.DecodeNoParams(raw); err != nil {
				return nil, err
			}
			return c.Nodes(), nil
		},
		api.MethodPing: c.ping,
	}
	if c.router == nil {
		serveMessages(m, coordinatorMethods, c.loop, nil)
		return m
	}
	serveMessagesVia(m, coordinatorMethods, c.messageLoop, nil)
	for _, method := range slotMethods {
		m[method] = c.routed(method, m[method])
	}
	m[forwardMethod] = serveForwarded(m)
	return m
}

// ping answers who this coordinator is; asked about another slot, it
// passes the question on to that slot's coordinator.
func (c *Coordinator) ping(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.PingParams
	if err := rpc.DecodeOptionalParams(raw, &p); err != nil {
		return nil, err
	}
	if p.Slot != nil && *p.Slot != c.opts.Slot {
		if c.router == nil || *p.Slot < 0 || *p.Slot >= c.opts.Slots {
			return nil, rpc.Errorf(rpc.CodeInvalidParams, "slot %d: this cluster has %d slot(s)", *p.Slot, c.opts.Slots)
		}
		return c.router.forward(ctx, *p.Slot, api.MethodPing, raw)
	}
	r := api.PingReply{Role: "coordinator", Node: c.name, Cluster: c.cluster, Epoch: c.epoch, Participants: c.opts.Participants}
	if c.opts.Slots > 1 {
		r.Slot, r.Slots, r.Address = c.opts.Slot, c.opts.Slots, c.opts.Address
	}
	return r, nil
}

// slotMethods are the client methods whose calls belong to a slot by the
// transaction or the key they name.
var slotMethods = []string{api.MethodBegin, api.MethodExec, api.MethodExecute, api.MethodCommit, api.MethodRollback,
	api.MethodStatus, api.MethodResolve, api.MethodTransact}

// routed serves a call of method with h here if it belongs to this slot
// (or to none), and passes it on to its slot's coordinator otherwise.
func (c *Coordinator) routed(method string, h rpc.Handler) rpc.Handler {
	return func(ctx context.Context, raw json.RawMessage) (any, error) {
		// Params that do not decode here are h's to refuse.
		var names struct {
			TxID engine.TxID `json:"tx"`
			Key  string      `json:"key"`
		}
		if json.Unmarshal(raw, &names) == nil {
			slot := c.opts.Slot
			switch {
			case names.TxID != 0:
				slot = api.SlotOfTx(names.TxID)
			case names.Key != "":
				slot = api.SlotOfKey(names.Key, c.opts.Slots)
			}
			if slot != c.opts.Slot && slot < c.opts.Slots {
				return c.router.forward(ctx, slot, method, raw)
			}
		}
		return h(ctx, raw)
	}
}

// messageLoop takes a node message of this slot to the engine and passes
// one of another slot on to its coordinator.
func (c *Coordinator) messageLoop(ctx context.Context, method string, m engine.Message, raw json.RawMessage) (*loop, error) {
	s := messageSlot(m)
	switch {
	case s == c.opts.Slot:
		return c.loop, nil
	case isForwarded(ctx) || s >= c.opts.Slots:
		return nil, unavailable(fmt.Errorf("this coordinator holds slot %d, not %d", c.opts.Slot, s))
	}
	c.router.notify(s, method, raw)
	return nil, nil
}

// coordinatorMethods are the node-to-node messages a coordinator serves.
var coordinatorMethods = messageMethods(engine.ExecResult{}, engine.VoteMessage{}, engine.AckMessage{}, engine.InquireMessage{}, engine.SettleAnswer{}, engine.ReconcileAnswer{})

// exec serves api.MethodExec.
func (c *Coordinator) exec(ctx context.Context, p api.ExecParams) (any, error) {
	node, err := needNode(p.Node)
	if err != nil {
		return nil, err
	}
	if err := needSQL(p.SQL); err != nil {
		return nil, err
	}
	exec := func(req engine.ReqID, now engine.Instant) engine.Input {
		return engine.ClientExec{Now: now, Req: req, TxID: p.TxID, Node: node, SQL: p.SQL, Args: p.Args, ParamTypes: p.ParamTypes, Describe: p.Describe}
	}
	if p.TxID != 0 {
		return c.call(ctx, exec)
	}
	// Without a transaction id the exec begins one, which counts
	// against the client's open transactions as a begin does.
	return c.startTx(ctx, exec, func(r any) engine.TxID {
		if e, ok := r.(engine.ExecReply); ok {
			return e.TxID
		}
		return 0
	})
}

// txMethod serves a client method about one transaction; ends says its
// answer shows the transaction decided (commit, rollback), which frees
// its admission slot.
func (c *Coordinator) txMethod(ends bool, mk func(engine.ReqID, engine.Instant, api.TxParams) engine.Input) rpc.Handler {
	return func(ctx context.Context, raw json.RawMessage) (any, error) {
		var p api.TxParams
		if err := rpc.DecodeParams(raw, &p); err != nil {
			return nil, err
		}
		if p.TxID == 0 {
			return nil, rpc.Errorf(rpc.CodeInvalidParams, "tx is required (a transaction id from begin)")
		}
		r, err := c.call(ctx, func(req engine.ReqID, now engine.Instant) engine.Input { return mk(req, now, p) })
		if ends {
			c.endsTx(p.TxID, err)
		}
		return r, err
	}
}

// inDoubt lists the transactions in doubt with what each waits for; the
// participants it waits on come with the coordinator's last word from
// them.
func (c *Coordinator) inDoubt(ctx context.Context, raw json.RawMessage) (any, error) {
	if err := rpc.DecodeNoParams(raw); err != nil {
		return nil, err
	}
	var list []engine.InDoubt
	var now engine.Instant
	if err := c.loop.query(ctx, func() { list, now = c.eng.InDoubt(), c.loop.now() }); err != nil {
		return nil, unavailable(err)
	}
	health := c.Nodes()
	out := make([]api.InDoubtTx, 0, len(list))
	for _, d := range list {
		t := api.InDoubtTx{StatusReply: d.StatusReply, AgeMillis: time.Duration(now - d.Begun).Milliseconds(),
			Waiting: d.Waiting, NextTryMillis: max(0, time.Duration(d.NextTry-now).Milliseconds())}
		for _, n := range d.WaitingOn {
			if int(n) < len(health) {
				t.WaitingOn = append(t.WaitingOn, health[n])
			}
		}
		out = append(out, t)
	}
	return out, nil
}

// resolve retries an in-doubt transaction now. Operators act by hand
// rarely and must be able to tell afterwards who did what: every call is
// logged, refused or not.
func (c *Coordinator) resolve(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.TxParams
	if err := rpc.DecodeParams(raw, &p); err != nil {
		return nil, err
	}
	if p.TxID == 0 {
		return nil, rpc.Errorf(rpc.CodeInvalidParams, "tx is required (the id of a transaction in doubt)")
	}
	r, err := c.call(ctx, func(req engine.ReqID, now engine.Instant) engine.Input {
		return engine.ClientResolve{Now: now, Req: req, TxID: p.TxID}
	})
	if err != nil {
		c.logger.Warn("manual resolve refused", "tx", p.TxID, "client", clientIdentity(ctx), "err", err)
		return nil, err
	}
	st, _ := r.(engine.StatusReply)
	c.logger.Warn("manual resolve: retrying now what the transaction waits for", "tx", p.TxID, "client", clientIdentity(ctx), "state", st.State, "pending", st.Pending)
	return r, nil
}

// status answers where a transaction stands, by id or by key. What the
// engine has forgotten, the outcomes kept answer for as long as they are
// kept.
func (c *Coordinator) status(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.StatusParams
	if err := rpc.DecodeParams(raw, &p); err != nil {
		return nil, err
	}
	switch {
	case p.TxID == 0 && p.Key == "":
		return nil, rpc.Errorf(rpc.CodeInvalidParams, "tx or key is required (a transaction id from begin, or the key its client gave it)")
	case p.TxID != 0 && p.Key != "":
		return nil, rpc.Errorf(rpc.CodeInvalidParams, "give tx or key, not both")
	}
	if err := needKey(p.Key); err != nil {
		return nil, err
	}
	r, err := c.call(ctx, func(req engine.ReqID, now engine.Instant) engine.Input {
		return engine.ClientStatus{Now: now, Req: req, TxID: p.TxID, Key: p.Key}
	})
	if err != nil {
		return nil, err
	}
	st, ok := r.(engine.StatusReply)
	if !ok {
		return r, nil
	}
	st, err = c.outcomes.status(ctx, st)
	if err != nil {
		return nil, unavailable(fmt.Errorf("status of tx %d: %w", st.TxID, err))
	}
	return st, nil
}

// call submits a client input and waits for the engine's answer. If the
// client gives up, the answer is dropped when it comes; the transaction
// itself is left to its timeouts.
func (c *Coordinator) call(ctx context.Context, mk func(engine.ReqID, engine.Instant) engine.Input) (any, error) {
	req := engine.ReqID(c.nextReq.Add(1))
	ch := make(chan engine.Respond, 1)
	c.mu.Lock()
	c.waiters[req] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiters, req)
		c.mu.Unlock()
	}()
	if !c.loop.submit(mk(req, c.loop.now())) {
		return nil, unavailable(errStopped)
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, rpcError(r.Err)
		}
		return r.Reply, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.loop.stopped:
		return nil, unavailable(errStopped)
	}
}

// callAll submits client inputs in order, without waiting in between, and
// waits for all their answers, which it returns in the same order, with
// the index of the first answer to arrive that was an error (-1 if none
// was). The engine's errors stay in the answers; err is set only when ctx
// ends or the node stops first.
func (c *Coordinator) callAll(ctx context.Context, mks ...func(engine.ReqID, engine.Instant) engine.Input) (answers []engine.Respond, firstErr int, err error) {
	n := len(mks)
	// The requests take consecutive ids, so an answer's index is its id's
	// distance from the first.
	first := engine.ReqID(c.nextReq.Add(uint64(n))) - engine.ReqID(n) + 1
	ch := make(chan engine.Respond, n)
	c.mu.Lock()
	for i := range n {
		c.waiters[first+engine.ReqID(i)] = ch
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		for i := range n {
			delete(c.waiters, first+engine.ReqID(i))
		}
		c.mu.Unlock()
	}()
	for i, mk := range mks {
		if !c.loop.submit(mk(first+engine.ReqID(i), c.loop.now())) {
			return nil, -1, unavailable(errStopped)
		}
	}
	answers, firstErr = make([]engine.Respond, n), -1
	// The engine answers each request exactly once.
	for left := n; left > 0; left-- {
		select {
		case r := <-ch:
			i := int(r.Req - first)
			answers[i] = r
			if r.Err != nil && firstErr < 0 {
				firstErr = i
			}
		case <-ctx.Done():
			return nil, -1, ctx.Err()
		case <-c.loop.stopped:
			return nil, -1, unavailable(errStopped)
		}
	}
	return answers, firstErr, nil
}

// perform runs on the loop goroutine and must not block.
func (c *Coordinator) perform(e engine.Effect) {
	switch e := e.(type) {
	case engine.Respond:
		c.mu.Lock()
		ch := c.waiters[e.Req]
		c.mu.Unlock()
		if ch != nil {
			select {
			case ch <- e:
			default:
				c.logger.Error("second answer to one request dropped", "req", e.Req)
			}
		}
	case engine.Send:
		c.out[e.To].push(e.Msg)
	case engine.Violation:
		c.logger.Error("ATOMICITY VIOLATION", "tx", e.TxID, "detail", e.Detail)
	case engine.Warning:
		c.logger.Warn(e.Detail)
	case engine.LookupKey:
		c.outcomes.lookUp(e.Key)
	}
}

// outcomesSaveEvery is how often the outcomes of ended transactions move
// from memory to the store, in one transaction for all of them.
const outcomesSaveEvery = time.Second

func (c *Coordinator) noteHealth(to engine.NodeID, err error, epoch engine.Epoch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := &c.health[to]
	if err != nil {
		h.ok, h.lastErr = false, err.Error()
		return
	}
	h.ok, h.seen, h.lastErr = true, time.Now(), ""
	if epoch != 0 {
		h.epoch = epoch
	}
}

func (c *Coordinator) pingLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		for i, p := range c.peers {
			go func() {
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				defer cancel()
				var r api.PingReply
				var params any = struct{}{}
				if c.opts.Slots > 1 {
					// The participant's engine for this slot answers.
					params = api.PingParams{Slot: &c.opts.Slot}
				}
				err := p.Call(cctx, api.MethodPing, params, &r)
				if ctx.Err() == nil {
					c.noteHealth(engine.NodeID(i), err, r.Epoch)
				}
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Nodes reports the participants' health.
func (c *Coordinator) Nodes() []api.NodeHealth {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]api.NodeHealth, len(c.health))
	for i, h := range c.health {
		age := int64(-1)
		if !h.seen.IsZero() {
			age = time.Since(h.seen).Milliseconds()
		}
		out[i] = api.NodeHealth{Node: engine.NodeID(i), Address: c.opts.Participants[i], Reachable: h.ok, Epoch: h.epoch, LastError: h.lastErr, LastSeenMillis: age}
	}
	return out
}

func (c *Coordinator) onDurable(ev engine.Event) {
	if e, ok := ev.(engine.CoordEnded); ok {
		c.outcomes.add(e, c.loop.durableSeq, time.Now())
	}
}
