package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/rpc"
)

// ParticipantOptions configure a participant node.
type ParticipantOptions struct {
	ID engine.NodeID
	// Coordinator is the coordinator's RPC address.
	Coordinator string
	// Standbys are the addresses of coordinators that wait to take over
	// Coordinator's log (tpcd coordinator --lease); messages go to
	// whichever of them accepts connections.
	Standbys []string
	// Log and Data are pools of the log and data databases, both migrated.
	Log, Data *pgxpool.Pool
	Engine    engine.ParticipantConfig
	Logger    *slog.Logger
	// Tick is how often timeouts and retries are checked. Default 20ms.
	Tick time.Duration
	// LockTimeout and StatementTimeout bound statements in data
	// transactions, so a distributed deadlock ends in a failed statement and
	// a no vote rather than a hang. Defaults 2s and 30s.
	LockTimeout, StatementTimeout time.Duration
	// MaxRequestBytes bounds one RPC request. Default 1 MiB.
	MaxRequestBytes int64
	// SendTimeout is how long the participant waits for the coordinator (or
	// another participant) to answer one request carrying its messages
	// before counting them lost: the seed project's --timeout on a
	// participant. Default 10s.
	SendTimeout time.Duration
	// KeepEnded is how long the events of a transaction that ended here stay
	// in the log before compaction deletes them (default keepEnded): longer
	// than a message can be late.
	KeepEnded time.Duration
	// CompactEvery is how often events of finished transactions are deleted
	// from the log. Default 10s; negative disables compaction.
	CompactEvery time.Duration
	// Transport secures RPC (tokens, TLS); the zero value is plain h2c.
	Transport Transport
	// Observer, if set, watches the loop (metrics). With several slots it
	// watches every slot's engine, from each one's loop goroutine at once.
	Observer Observer
	// Slots is how many coordinators serve the cluster at once (tpcd
	// coordinator --slots; package api, "Slots"): the participant runs an
	// engine for each slot, with a log of its own, and each engine asks
	// the coordinators which of them holds its slot. Default 1.
	Slots int
	// DatabasesDown, if set, reports why the node's databases are known to
	// be down (Databases.Down: its own PostgreSQL died and is being
	// restarted), nil while they are not. Meanwhile the participant refuses
	// pings and node-to-node messages with rpc.CodeUnavailable, as if it
	// were unreachable: the coordinator shows it not ready and fails its
	// statements at once instead of after the exec timeout.
	DatabasesDown func() error
}

// Participant is a running participant node.
type Participant struct {
	opts   ParticipantOptions
	slot   int
	name   string
	logger *slog.Logger
	eng    *engine.Participant
	loop   *loop
	store  *logstore.Store
	coord  *rpc.Failover
	out    *outbox
	data   *dataDB
	server *rpc.Server

	// asking is set while a question to the coordinator is out.
	asking atomic.Bool
	// peers carry messages to the other participants (a branch in doubt
	// asks its decider; a decider answers), opened on first use from the
	// addresses the engine learned from the coordinator. Loop goroutine
	// only.
	peers map[engine.NodeID]*peerOutbox
	// direct are the callers of api.MethodDirectExec waiting for answers.
	direct directCalls
	// runCtx lives as long as the node's goroutines: peer outboxes run in it.
	runCtx context.Context
	// slots are the engines of every slot, this one first (slot 0, which
	// serves the node's RPC); set on slot 0 only.
	slots []*Participant

	mu       sync.Mutex
	cluster  string
	epoch    engine.Epoch
	finished *compactor // ended here, compacted a while later
	// watch is what operators read (Health, LatestSnapshot).
	watch watched[ParticipantSnapshot]

	cancel context.CancelFunc
	done   chan struct{}
}

// StartParticipant recovers the participant from its log and data database
// and serves JSON-RPC on ln until Close.
func StartParticipant(ctx context.Context, ln net.Listener, opts ParticipantOptions) (_ *Participant, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 2 * time.Second
	}
	if opts.StatementTimeout <= 0 {
		opts.StatementTimeout = 30 * time.Second
	}
	if opts.CompactEvery == 0 {
		opts.CompactEvery = 10 * time.Second
	}
	if opts.KeepEnded <= 0 {
		opts.KeepEnded = keepEnded
	}
	if opts.Slots < 1 {
		opts.Slots = 1
	}
	if opts.Slots > api.MaxSlots {
		return nil, fmt.Errorf("%d slots: at most %d", opts.Slots, api.MaxSlots)
	}
	opts.Engine.Node = opts.ID
	var slots []*Participant
	var effects [][]engine.Effect
	defer func() {
		if err != nil {
			// Stop the data layers' sweepers and the coordinator clients;
			// nothing else has started yet.
			for _, q := range slots {
				q.data.closeAll()
				q.coord.Close()
			}
		}
	}()
	// Every slot's engine feeds the node's metrics (their counters are
	// the node's totals); the recovery is reported once, for all slots.
	began := time.Now()
	events := 0
	for s := range opts.Slots {
		q, eff, n, err := recoverSlot(ctx, opts, s)
		events += n
		if q != nil {
			slots = append(slots, q)
		}
		if err != nil {
			return nil, err
		}
		effects = append(effects, eff)
	}
	p := slots[0]
	p.slots = slots
	if opts.Observer != nil {
		opts.Observer.Recovered(events, time.Since(began))
	}
	p.watch.checkHealth(ctx, p.CheckHealth)
	p.server = rpc.NewServer(opts.Transport.server(rpc.ServerOptions{Logger: p.logger, MaxRequestBytes: opts.MaxRequestBytes, Methods: p.methods(),
		Inline: participantMethods}))
	var workers []func(context.Context)
	for i, q := range slots {
		q.peers = map[engine.NodeID]*peerOutbox{}
		workers = append(workers,
			func(ctx context.Context) {
				q.runCtx = ctx
				q.loop.run(ctx, effects[i])
			},
			q.out.run,
			func(ctx context.Context) {
				q.finished.run(ctx, q.opts.CompactEvery)
			})
	}
	workers = append(workers, p.watchState)
	p.cancel = background(p.server, ln, p.logger, p.done, workers...)
	return p, nil
}

// recoverSlot builds slot s's engine and recovers it from its log and the
// data database; the effects are the engine's first, to run once its loop
// does, and events how many its log replayed. A participant that is not
// returned has nothing to release.
func recoverSlot(ctx context.Context, opts ParticipantOptions, s int) (_ *Participant, _ []engine.Effect, events int, _ error) {
	logger := opts.Logger.With("role", "participant", "node", int(opts.ID))
	if opts.Slots > 1 {
		logger = logger.With("slot", s)
	}
	p := &Participant{
		opts:   opts,
		slot:   s,
		name:   api.ParticipantSlotName(opts.ID, s),
		logger: logger,
		eng:    engine.NewParticipant(opts.Engine),
		store:  logstore.New(opts.Log),
		done:   make(chan struct{}),
	}
	p.finished = newCompactor(p.store, p.name, opts.KeepEnded, p.logger)
	p.loop = newLoop(p.name, p.eng, p.store, wallClock{}, p.logger, opts.Tick)
	if opts.CompactEvery > 0 {
		p.loop.compaction = p.finished
	}
	p.loop.perform = observed(opts.Observer, p.perform)
	p.loop.onDurable = p.onDurable
	p.loop.observer = opts.Observer
	p.coord = rpc.NewFailover(append([]string{opts.Coordinator}, opts.Standbys...), opts.Transport.client(p.logger))
	// A lost message needs no handling here: the coordinator resends
	// decisions and times out votes, and in-doubt transactions keep asking.
	p.out = newOutbox(0, p.coord, p.logger, nil, nil)
	if opts.SendTimeout > 0 {
		p.out.timeout = opts.SendTimeout
	}
	p.data = newDataDB(&dataDB{
		pool: opts.Data, logger: p.logger, lockTimeout: opts.LockTimeout, statementTimeout: opts.StatementTimeout,
		acquireTimeout: max(opts.LockTimeout, time.Second),
		now:            p.loop.now,
		done:           func(d engine.DataDone) { p.loop.submit(d) },
	})

	began := time.Now()
	n, err := p.loop.recover(ctx)
	if err != nil {
		return p, nil, 0, err
	}
	start, err := recoveryFacts(ctx, opts.Data, p.eng)
	if err != nil {
		return p, nil, 0, err
	}
	start.Now = p.loop.now()
	effects, err := p.loop.startStep(ctx, start)
	if err != nil {
		return p, nil, 0, err
	}
	p.cluster, p.epoch = p.eng.Cluster(), p.eng.Epoch()
	inDoubt := 0
	for _, tx := range p.eng.Transactions() {
		if tx.Phase == engine.PartPhasePrepared {
			inDoubt++
		}
	}
	p.logger.Info("participant recovered", "events", n, "cluster", p.cluster, "epoch", p.epoch,
		"prepared_in_db", len(start.PreparedGIDs), "in_doubt", inDoubt, "took", time.Since(began).Round(time.Millisecond))
	return p, effects, n, nil
}

// Close stops serving and rolls back open (unprepared) data transactions;
// prepared ones stay prepared for recovery. The pools belong to the caller.
func (p *Participant) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := p.server.Shutdown(ctx)
	p.cancel()
	<-p.done
	for _, q := range p.slots {
		q.data.closeAll()
		q.coord.Close()
		for _, o := range q.peers {
			o.client.Close()
		}
	}
	return err
}

// participantMethods are the node-to-node messages a participant serves.
var participantMethods = messageMethods(engine.ExecRequest{}, engine.PrepareRequest{}, engine.DecisionRequest{}, engine.VoteMessage{},
	engine.CommitBranchRequest{}, engine.SettleRequest{}, engine.SettleAnswer{}, engine.ReconcileRequest{})

func (p *Participant) methods() map[string]rpc.Handler {
	m := map[string]rpc.Handler{
		api.MethodPing: func(ctx context.Context, raw json.RawMessage) (any, error) {
			var params api.PingParams
			if err := rpc.DecodeOptionalParams(raw, &params); err != nil {
				return nil, err
			}
			if err := p.notReady(); err != nil {
				return nil, err
			}
			q := p
			if params.Slot != nil {
				var err error
				if q, err = p.slotEngine(*params.Slot); err != nil {
					return nil, err
				}
			}
			q.mu.Lock()
			defer q.mu.Unlock()
			r := api.PingReply{Role: "participant", Node: q.name, Cluster: q.cluster, Epoch: q.epoch, Coordinator: p.opts.Coordinator}
			if len(p.slots) > 1 {
				r.Slot, r.Slots = q.slot, len(p.slots)
			}
			return r, nil
		},
	}
	serveMessagesVia(m, participantMethods, p.slotLoop, p.notReady)
	m[api.MethodDirectExec] = p.directExec
	m[api.MethodPlainTransact] = p.plainTransact
	return m
}

// slotEngine is this participant's engine of slot s (package api,
// "Slots"); asked on slot 0, which serves the node's RPC.
func (p *Participant) slotEngine(s int) (*Participant, error) {
	if s < 0 || s >= len(p.slots) {
		return nil, rpc.Errorf(rpc.CodeInvalidParams, "slot %d: this participant serves %d slot(s) (tpcd participant --slots)", s, len(p.slots))
	}
	return p.slots[s], nil
}

// slotLoop is the loop of the slot's engine a message belongs to.
func (p *Participant) slotLoop(_ context.Context, _ string, m engine.Message, _ json.RawMessage) (*loop, error) {
	q, err := p.slotEngine(messageSlot(m))
	if err != nil {
		return nil, err
	}
	return q.loop, nil
}

// notReady is the refusal of a request while the node's databases are
// known to be down, nil otherwise.
func (p *Participant) notReady() error {
	if p.opts.DatabasesDown == nil {
		return nil
	}
	if err := p.opts.DatabasesDown(); err != nil {
		return unavailable(fmt.Errorf("%s is not ready, its databases are down: %w", p.name, err))
	}
	return nil
}

// perform runs on the loop goroutine and must not block.
func (p *Participant) perform(e engine.Effect) {
	switch e := e.(type) {
	case engine.Send:
		switch e.To {
		case engine.CoordinatorNode:
			p.out.push(e.Msg)
			return
		case engine.ClientNode:
			if r, ok := e.Msg.(engine.ExecResult); ok {
				p.direct.answer(r)
			}
			return
		}
		p.peer(e.To).push(e.Msg)
	case engine.Data:
		p.data.do(e)
	case engine.Violation:
		p.logger.Error("ATOMICITY VIOLATION", "tx", e.TxID, "detail", e.Detail)
	case engine.Warning:
		p.logger.Warn(e.Detail)
	case engine.Forget:
		p.compactLater(e.TxID)
	case engine.AskCoordinator:
		p.askCoordinator()
	}
}

// askCoordinator asks the configured coordinator who it is and hands the
// answer to the engine. The answer to our own call is the one word about
// the coordinator's identity that nobody else can forge (with TLS, not even
// on the path), unlike a message anyone may send to our port. One question
// at a time: the engine asks again if an answer is lost.
func (p *Participant) askCoordinator() {
	if !p.asking.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer p.asking.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), askTimeout)
		defer cancel()
		var r api.PingReply
		var params any = struct{}{}
		if p.opts.Slots > 1 {
			params = api.PingParams{Slot: &p.slot}
		}
		err := p.coord.Call(ctx, api.MethodPing, params, &r)
		a := engine.CoordinatorAnswered{Now: p.loop.now(), Cluster: r.Cluster, Epoch: r.Epoch, Participants: r.Participants}
		switch {
		case err != nil:
			a.Err = err.Error()
		case r.Role != "coordinator":
			a.Err = fmt.Sprintf("%s answers as a %s, not a coordinator", p.coord.Addr(), r.Role)
		case max(r.Slots, 1) != p.opts.Slots || r.Slot != p.slot:
			a.Err = fmt.Sprintf("asked for slot %d of %d, %s answers for slot %d of %d: give coordinators and participants the same --slots", p.slot, p.opts.Slots, p.coord.Addr(), r.Slot, r.Slots)
		case r.Address != "":
			// Another coordinator may have passed the question on: the
			// slot's messages go to its holder from now on.
			p.coord.Prefer(r.Address)
		}
		switch {
		case err == nil && a.Err != "":
			// Misconfigured, not down: say so louder.
			p.logger.Warn("the coordinator's answer does not fit this participant; will ask again", "coordinator", p.coord.Addr(), "err", a.Err)
		case a.Err != "":
			p.logger.Debug("asking the coordinator who it is failed; will ask again", "coordinator", p.opts.Coordinator, "err", a.Err)
		}
		p.loop.submit(a)
	}()
}

// askTimeout bounds one question to the coordinator.
const askTimeout = 2 * time.Second

// compactLater queues a transaction that is over here for the next
// compaction: a committed one on the engine's Forget, an aborted one once
// its PartAborted is durable.
func (p *Participant) compactLater(id engine.TxID) {
	if p.opts.CompactEvery <= 0 {
		return
	}
	p.finished.add(logstore.Ended{Tx: uint64(id), UpToSeq: p.loop.durableSeq})
}

func (p *Participant) onDurable(ev engine.Event) {
	if _, ok := ev.(engine.PartAborted); ok {
		p.compactLater(ev.Tx())
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e := ev.(type) {
	case engine.PartEpochSeen:
		p.cluster, p.epoch = e.Cluster, e.Epoch
	case engine.PartViolation:
		p.logger.Error("violation recorded in the log", "tx", e.TxID, "detail", e.Detail)
	}
}

// peerOutbox is the outbox to another participant, with the address it was
// opened for.
type peerOutbox struct {
	*outbox
	addr   string
	client *rpc.Client
	stop   context.CancelFunc
}

// peer returns the outbox to participant id, opening it (or reopening it
// when the coordinator named a new address) on the loop goroutine. A
// participant the engine has no address for gets an outbox to nowhere, whose
// messages are lost, as the protocol allows: the question is asked again.
func (p *Participant) peer(id engine.NodeID) *peerOutbox {
	var addr string
	if peers := p.eng.Peers(); int(id) >= 0 && int(id) < len(peers) {
		addr = peers[id]
	}
	o := p.peers[id]
	if o != nil && o.addr == addr {
		return o
	}
	if o != nil {
		o.stop()
		o.client.Close()
	}
	client := rpc.NewClient(addr, p.opts.Transport.client(p.logger))
	ctx, stop := context.WithCancel(p.runCtx)
	o = &peerOutbox{outbox: newOutbox(id, client, p.logger, nil, nil), addr: addr, client: client, stop: stop}
	o.timeout = p.out.timeout
	p.peers[id] = o
	go o.run(ctx)
	return o
}
