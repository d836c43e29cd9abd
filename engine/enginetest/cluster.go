package enginetest

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tpcd/tpcd/engine"
)

// Config describes a simulated cluster.
type Config struct {
	// Participants is the number of participant nodes.
	Participants int
	// Coordinator and Participant configure the engines; Participants and
	// Node are filled in.
	Coordinator engine.CoordinatorConfig
	Participant engine.ParticipantConfig
	// ClusterID is the NewCluster given to the coordinator's Start.
	ClusterID string
	// PromptAcks makes every client commit one whose client waits for it to
	// be applied (ClientCommit.PromptAcks), as the front door's are.
	PromptAcks bool
	// ForgeVotes breaks two-phase commit on purpose, to prove the checker
	// notices: the first yes vote the coordinator receives for a transaction
	// is followed by forged yes votes from every other participant asked to
	// prepare, so the coordinator commits on one real vote.
	ForgeVotes bool
	// Compact deletes a transaction's durable events (violations excepted)
	// the moment a node's compaction could: on the participant's Forget
	// effect, and when coord.ended or part.aborted becomes durable. Off,
	// logs keep every event, as with compaction disabled.
	Compact bool
	// Trace receives one line per thing that happens; nil keeps the
	// cluster silent (and fast).
	Trace func(string)
	// OnResponse is called for every answer the client gets, including
	// requests lost in a coordinator crash.
	OnResponse func(Response)
	// ForgeEarlyAbort breaks the decider rule on purpose, to prove the
	// checker notices: a decider's answer to a branch in doubt is forged
	// as abort the moment the question arrives, as a decider would answer
	// that concluded abort while its own branch could still commit.
	ForgeEarlyAbort bool
	// ForgeVoterVotes breaks the decider rule another way: a commit
	// request naming voters reaches the decider with a yes vote forged
	// from each of them, as a decider would act that committed without
	// waiting for its voters.
	ForgeVoterVotes bool
	// ForgePromptAcks breaks the prompt-ack rule on purpose: every
	// decision the coordinator sends asks for a prompt ack, its resends
	// and aborts too, as a coordinator would that never cleared the flag.
	ForgePromptAcks bool
	// CompactAfter delays Compact: a transaction's events go only this long
	// after they could, as a node keeps them (so that what ended stays
	// known for longer than a message can be late).
	CompactAfter time.Duration
	// MaxMessageAge loses a message delivered later than this after it was
	// sent, as a node's transport gives up on one (0: no limit).
	MaxMessageAge time.Duration
	// AnswerAtOnce answers a participant's AskCoordinator in the same step
	// when the coordinator is up (and with an error when it is down),
	// instead of sending the question and its answer through the network
	// like messages: golden traces stay short, while the simulation lets
	// questions and answers be lost and delayed.
	AnswerAtOnce bool
}

// Envelope is a message in flight, or a participant's question to its
// coordinator (Ask) or the coordinator's answer to it (Answer), which a
// driver makes as a call rather than a message and which travel here as
// envelopes so that they can be lost and delayed too.
type Envelope struct {
	ID     uint64
	From   engine.NodeID
	To     engine.NodeID
	Msg    engine.Message
	Ask    bool
	Answer *engine.CoordinatorAnswered
	sentAt engine.Instant
	// fromInc is the sender's incarnation, so a send failure is reported
	// only to the incarnation that sent the message; for an answer it is
	// the incarnation of the participant that asked.
	fromInc int
}

// Kind is the message's method without the "tpcd." prefix (exec, prepare,
// decide, exec_result, vote, ack, inquire), or ask or answer.
func (e Envelope) Kind() string {
	switch {
	case e.Ask:
		return "ask"
	case e.Answer != nil:
		return "answer"
	}
	return strings.TrimPrefix(e.Msg.Method(), "tpcd.")
}

// Tx is the transaction a message is about, 0 for questions and answers.
func (e Envelope) Tx() engine.TxID {
	if e.Msg == nil {
		return 0
	}
	return e.Msg.Tx()
}

func (e Envelope) String() string {
	switch {
	case e.Ask:
		return fmt.Sprintf("%s -> %s: who are you?", e.From, e.To)
	case e.Answer != nil:
		return fmt.Sprintf("%s -> %s: %s", e.From, e.To, describeAnswer(*e.Answer))
	}
	return fmt.Sprintf("%s -> %s: %s", e.From, e.To, engine.DescribeMessage(e.Msg))
}

func describeAnswer(a engine.CoordinatorAnswered) string {
	if a.Err != "" {
		return fmt.Sprintf("no answer: %s", a.Err)
	}
	return fmt.Sprintf("I am cluster=%s epoch=%d", a.Cluster, a.Epoch)
}

// Request is a client call made to the coordinator.
type Request struct {
	Req  engine.ReqID
	Kind string // begin, exec, commit, rollback, status, execute, transact
	Tx   engine.TxID
	Node engine.NodeID
	SQL  string
	// Stmts are a transact call's statements.
	Stmts []engine.Statement
	// Key is the call's idempotency key, if any.
	Key string
	// Cluster is a direct statement's cluster, from its begin's answer.
	Cluster string
}

// Response is what the client got for a request.
type Response struct {
	Request
	Reply engine.Reply
	Err   *engine.Error
	// Lost is set when the coordinator crashed (or was down) before
	// answering; the client cannot tell what happened.
	Lost bool
}

// Node is one simulated node: an engine, its log, its held effects and, for
// a participant, its data database and the data operations issued to it.
type Node struct {
	ID      engine.NodeID
	up      bool
	inc     int
	coord   *engine.Coordinator
	part    *engine.Participant
	durable []engine.Event // every durable event, across incarnations
	// durSeq numbers durable's events in the order they became durable
	// (lastSeq the latest), so that a compaction deletes only events that
	// were durable when it was scheduled: the same id may come back in a
	// new cluster, as the node's compaction allows for.
	durSeq  []uint64
	lastSeq uint64
	pending []engine.Event // appended in this incarnation, not yet durable
	durLSN  engine.LSN     // highest durable LSN of this incarnation
	held    []heldEffect
	nextSeq uint64
	db      *DataDB
	ops     []engine.Data // issued data operations, in emission order
	// compactions wait for CompactAfter.
	compactions []compaction
	// retained is the coordinator's store of ended transactions' outcomes
	// by key (what its driver keeps beside the log, written with each
	// durable coord.ended), and lookups the keys asked of it not yet
	// answered (without AnswerAtOnce, answered at the next tick).
	retained map[string]engine.KeyLookedUp
	lookups  []string
}

type compaction struct {
	tx   engine.TxID
	at   engine.Instant
	upTo uint64
}

// Up reports whether the node is running.
func (n *Node) Up() bool { return n.up }

// Coordinator is the node's engine when it is the coordinator.
func (n *Node) Coordinator() *engine.Coordinator { return n.coord }

// Participant is the node's engine when it is a participant.
func (n *Node) Participant() *engine.Participant { return n.part }

// DB is a participant's data database.
func (n *Node) DB() *DataDB { return n.db }

// Durable is the node's durable log.
func (n *Node) Durable() []engine.Event { return n.durable }

// Pending is the number of appended events not yet durable.
func (n *Node) Pending() int { return len(n.pending) }

// Held is the number of effects waiting for durability.
func (n *Node) Held() int { return len(n.held) }

// Ops lists the data operations issued and not yet done.
func (n *Node) Ops() []engine.Data { return n.ops }

func (n *Node) step(in engine.Input) engine.Ready {
	if n.coord != nil {
		return n.coord.Step(in)
	}
	return n.part.Step(in)
}

// Cluster is one coordinator and its participants in a deterministic world.
// It is not safe for concurrent use.
type Cluster struct {
	cfg     Config
	now     engine.Instant
	coord   *Node
	parts   []*Node
	net     []Envelope
	nextMsg uint64
	nextReq engine.ReqID
	waiting map[engine.ReqID]Request
	// direct holds, by transaction, what the client knows of the
	// statements it sends participants itself; directWaiting are those
	// statements not answered yet.
	direct        map[engine.TxID]*directTx
	directWaiting map[directStmt]Request
	// prepareTargets lists, per transaction, the participants that were
	// sent a prepare request (for ForgeVotes).
	prepareTargets map[engine.TxID][]engine.NodeID
	check          *Checker
}

// New builds a cluster whose nodes are all down; Start brings them up.
func New(cfg Config) *Cluster {
	if cfg.ClusterID == "" {
		cfg.ClusterID = "sim"
	}
	cfg.Coordinator.Participants = cfg.Participants
	c := &Cluster{
		cfg:            cfg,
		now:            engine.Instant(time.Hour), // far from zero, so no deadline is ever 0
		waiting:        map[engine.ReqID]Request{},
		direct:         map[engine.TxID]*directTx{},
		directWaiting:  map[directStmt]Request{},
		prepareTargets: map[engine.TxID][]engine.NodeID{},
	}
	c.check = newChecker(c)
	c.coord = &Node{ID: engine.CoordinatorNode, coord: engine.NewCoordinator(cfg.Coordinator)}
	for i := range cfg.Participants {
		pc := cfg.Participant
		pc.Node = engine.NodeID(i)
		c.parts = append(c.parts, &Node{ID: engine.NodeID(i), part: engine.NewParticipant(pc), db: newDataDB()})
	}
	return c
}

// Checker is the cluster's invariant checker.
func (c *Cluster) Checker() *Checker { return c.check }

// Now is the cluster's clock.
func (c *Cluster) Now() engine.Instant { return c.now }

// Advance moves the clock forward.
func (c *Cluster) Advance(d time.Duration) { c.now = c.now.Add(d) }

// Node returns the coordinator for engine.CoordinatorNode, else a
// participant; nil if there is no such node.
func (c *Cluster) Node(id engine.NodeID) *Node {
	if id == engine.CoordinatorNode {
		return c.coord
	}
	if id < 0 || int(id) >= len(c.parts) {
		return nil
	}
	return c.parts[id]
}

// Nodes lists the coordinator then the participants.
func (c *Cluster) Nodes() []*Node { return append([]*Node{c.coord}, c.parts...) }

// Participants lists the participant nodes.
func (c *Cluster) Participants() []*Node { return c.parts }

// Messages lists the messages in flight, oldest first.
func (c *Cluster) Messages() []Envelope { return c.net }

func (c *Cluster) tracef(format string, args ...any) {
	if c.cfg.Trace != nil {
		c.cfg.Trace(fmt.Sprintf(format, args...))
	}
}

// Start brings a down node up: a participant is given the prepared GIDs and
// markers of its data database.
func (c *Cluster) Start(id engine.NodeID) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("no node %s", id)
	}
	if n.up {
		return fmt.Errorf("%s is already up", id)
	}
	n.up = true
	n.inc++
	in := engine.Start{Now: c.now}
	if n.coord != nil {
		in.NewCluster = c.cfg.ClusterID
	} else {
		in.PreparedGIDs, in.Markers, in.Tombstones = n.db.PreparedGIDs(), n.db.Markers(), n.db.Tombstones()
		in.PreparedXids, in.CommittedXids = n.db.PreparedXids(), n.db.CommittedXids(n.part.BranchXids())
		in.MarkerKeys = n.db.MarkerKeys()
	}
	tomb := ""
	if len(in.Tombstones) > 0 {
		tomb = " tombstones=[" + strings.Join(in.Tombstones, " ") + "]"
	}
	committed := ""
	if len(in.CommittedXids) > 0 {
		committed = fmt.Sprintf(" committed-xids=%v", in.CommittedXids)
	}
	c.tracef("%s: start prepared=[%s] markers=[%s]%s%s", id, strings.Join(in.PreparedGIDs, " "), strings.Join(in.Markers, " "), tomb, committed)
	c.stepNode(n, in)
	return nil
}

// Crash stops a node: events not yet durable, held effects, issued data
// operations and open data transactions are lost, and the engine is rebuilt
// from the durable log alone, ready for Start.
func (c *Cluster) Crash(id engine.NodeID) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("no node %s", id)
	}
	if !n.up {
		return fmt.Errorf("%s is already down", id)
	}
	var lostOpen []engine.TxID
	if n.db != nil {
		lostOpen = n.db.OpenTxs()
	}
	c.tracef("%s: crash: lost %d events not durable, %d held effects, %d data ops, open data txs %v",
		id, len(n.pending), len(n.held), len(n.ops), lostOpen)
	n.up = false
	n.pending, n.held, n.ops, n.durLSN, n.lookups = nil, nil, nil, 0, nil
	if n.db != nil {
		c.check.onChanges(n, n.db.crash(false))
	}
	if n.coord != nil {
		// Its answers to participants' questions travel on the calls that
		// asked, which die with it.
		c.net = slices.DeleteFunc(c.net, func(e Envelope) bool { return e.Answer != nil })
		ids := make([]engine.ReqID, 0, len(c.waiting))
		for req := range c.waiting {
			ids = append(ids, req)
		}
		slices.Sort(ids)
		for _, req := range ids {
			c.respond(Response{Request: c.waiting[req], Lost: true})
		}
		clear(c.waiting)
		n.coord = engine.NewCoordinator(c.cfg.Coordinator)
	} else {
		pc := c.cfg.Participant
		pc.Node = id
		n.part = engine.NewParticipant(pc)
	}
	for _, e := range n.durable {
		var err error
		if n.coord != nil {
			err = n.coord.Apply(e)
		} else {
			err = n.part.Apply(e)
		}
		if err != nil {
			c.check.failf("%s: replaying %s: %v", id, engine.DescribeEvent(e), err)
		}
	}
	return nil
}

// LoseLog wipes a down node's durable log, as when its log database is
// replaced by an empty one; a coordinator then starts as a new cluster with
// the given id. The data database is untouched.
func (c *Cluster) LoseLog(id engine.NodeID, newClusterID string) error {
	n := c.Node(id)
	if n == nil || n.up {
		return fmt.Errorf("%s is not a down node", id)
	}
	c.tracef("%s: log lost (%d durable events)", id, len(n.durable))
	n.durable, n.durSeq = nil, nil
	if n.coord != nil {
		clear(n.retained)
		c.cfg.ClusterID = newClusterID
		n.coord = engine.NewCoordinator(c.cfg.Coordinator)
		// The new cluster hands out ids from 1 again.
		c.check.reserved = 0
		clear(c.check.begun)
	} else {
		pc := c.cfg.Participant
		pc.Node = id
		n.part = engine.NewParticipant(pc)
	}
	return nil
}

// CrashDataDB crashes a participant's data database server alone: its open
// transactions are lost, prepared transactions and markers survive, and the
// participant keeps running with dead connections.
func (c *Cluster) CrashDataDB(id engine.NodeID) error {
	n := c.Node(id)
	if n == nil || n.db == nil {
		return fmt.Errorf("%s has no data database", id)
	}
	c.tracef("%s: data database crash: open data txs %v lost", id, n.db.OpenTxs())
	c.check.onChanges(n, n.db.crash(true))
	return nil
}

// stepNode feeds an input to a node, appends its events and releases what
// may be released.
func (c *Cluster) stepNode(n *Node, in engine.Input) {
	rd := n.step(in)
	if len(rd.Events) > 0 {
		if want := n.durLSN + engine.LSN(len(n.pending)) + 1; rd.FirstLSN != want {
			c.check.failf("%s: Ready.FirstLSN is %d, want %d", n.ID, rd.FirstLSN, want)
		}
	}
	for i, e := range rd.Events {
		c.tracef("%s: log %d: %s", n.ID, rd.FirstLSN+engine.LSN(i), engine.DescribeEvent(e))
		n.pending = append(n.pending, e)
	}
	first := n.nextSeq
	for _, e := range rd.Effects {
		n.held = append(n.held, heldEffect{seq: n.nextSeq, e: e})
		n.nextSeq++
	}
	out := c.release(n)
	if c.cfg.Trace != nil {
		for i, e := range rd.Effects {
			suffix := " [held]"
			for _, h := range out {
				if h.seq == first+uint64(i) {
					suffix = ""
				}
			}
			c.tracef("%s: %s%s", n.ID, engine.DescribeEffect(e), suffix)
		}
	}
	for _, h := range out {
		if h.seq < first {
			c.tracef("%s: released %s", n.ID, engine.DescribeEffect(h.e))
		}
		c.perform(n, h.e)
	}
}

// heldEffect is an effect waiting for its WaitLSN, numbered so that a trace
// can tell which ones a step released.
type heldEffect struct {
	seq uint64
	e   engine.Effect
}

// release takes every held effect whose WaitLSN is durable off the held
// list, in order, keeping a data operation behind an earlier held one of its
// transaction. Performing them is left to the caller, so that a trace shows
// a step's output before its consequences.
func (c *Cluster) release(n *Node) []heldEffect {
	var out, keep []heldEffect
	var blocked []engine.TxID
	for _, h := range n.held {
		d, isData := h.e.(engine.Data)
		if h.e.After() > n.durLSN || isData && slices.Contains(blocked, d.TxID) {
			keep = append(keep, h)
			if isData {
				blocked = append(blocked, d.TxID)
			}
			continue
		}
		out = append(out, h)
	}
	n.held = keep
	return out
}

// perform carries out one released effect.
func (c *Cluster) perform(n *Node, e engine.Effect) {
	switch e := e.(type) {
	case engine.Send:
		if d, ok := e.Msg.(engine.DecisionRequest); ok && c.cfg.ForgePromptAcks {
			d.PromptAck = true
			e.Msg = d
		}
		c.check.onSend(n, e)
		if pr, ok := e.Msg.(engine.PrepareRequest); ok && !slices.Contains(c.prepareTargets[pr.TxID], e.To) {
			c.prepareTargets[pr.TxID] = append(c.prepareTargets[pr.TxID], e.To)
		}
		c.nextMsg++
		c.net = append(c.net, Envelope{ID: c.nextMsg, sentAt: c.now, From: n.ID, To: e.To, Msg: e.Msg, fromInc: n.inc})
	case engine.Respond:
		req, ok := c.waiting[e.Req]
		if !ok {
			c.check.failf("%s: response to unknown request %d", n.ID, e.Req)
			return
		}
		delete(c.waiting, e.Req)
		// The header for direct statements comes with a begin's answer, or
		// with that of the exec that began the transaction.
		var h engine.Header
		var id engine.TxID
		switch r := e.Reply.(type) {
		case engine.BeginReply:
			h, id = engine.Header{Cluster: r.Cluster, Epoch: r.Epoch}, r.TxID
		case engine.ExecReply:
			h, id = engine.Header{Cluster: r.Cluster, Epoch: r.Epoch}, r.TxID
		}
		if h.Cluster != "" && (c.direct[id] == nil || c.direct[id].header.Cluster != h.Cluster) {
			c.direct[id] = &directTx{header: h, next: map[engine.NodeID]int{}, ok: map[engine.NodeID]int{}}
		}
		c.respond(Response{Request: req, Reply: e.Reply, Err: e.Err})
	case engine.Data:
		if n.db == nil {
			c.check.failf("%s: data effect on a node without a data database", n.ID)
			return
		}
		n.ops = append(n.ops, e)
	case engine.AskCoordinator:
		if c.cfg.AnswerAtOnce {
			a := c.answer()
			c.tracef("%s -> %s: %s", c.coord.ID, n.ID, describeAnswer(a))
			c.stepNode(n, a)
			return
		}
		c.nextMsg++
		c.net = append(c.net, Envelope{ID: c.nextMsg, sentAt: c.now, From: n.ID, To: engine.CoordinatorNode, Ask: true, fromInc: n.inc})
	case engine.LookupKey:
		if c.cfg.AnswerAtOnce {
			c.answerLookup(n, e.Key)
			return
		}
		n.lookups = append(n.lookups, e.Key)
	case engine.Warning:
		// Worth an operator's attention, and shown in traces; not a
		// broken invariant.
	case engine.Violation:
		c.check.failf("%s: violation effect: tx %d: %s", n.ID, e.TxID, e.Detail)
	case engine.Forget:
		// Compaction would delete the transaction's events: its marker and
		// its prepared GID, which a restart reads instead, must be gone by
		// then.
		for _, gid := range slices.Concat(n.db.Markers(), n.db.PreparedGIDs(), n.db.Tombstones()) {
			if g, ok := engine.ParseGID(gid); ok && g.Tx == e.TxID && g.Node == n.ID && g.Cluster == n.part.Cluster() {
				c.check.failf("%s: forgets tx %d while %s is marked or prepared", n.ID, e.TxID, gid)
			}
		}
		c.compactLater(n, e.TxID)
	}
}

func (c *Cluster) respond(r Response) {
	if r.Lost {
		c.tracef("client: req=%d %s lost", r.Req, r.Kind)
	}
	c.check.onResponse(r)
	if c.cfg.OnResponse != nil {
		c.cfg.OnResponse(r)
	}
}

// compact deletes a transaction's durable events but its violations, as a
// node's compaction does, at once: the harshest schedule a node could keep,
// so that a restart after it runs on a compacted log.
func (c *Cluster) compactLater(n *Node, id engine.TxID) {
	if !c.cfg.Compact {
		return
	}
	if c.cfg.CompactAfter == 0 {
		c.compact(n, id, n.lastSeq)
		return
	}
	n.compactions = append(n.compactions, compaction{tx: id, at: c.now.Add(c.cfg.CompactAfter), upTo: n.lastSeq})
}

// compactDue runs the compactions whose time came.
func (c *Cluster) compactDue(n *Node) {
	keep := n.compactions[:0]
	for _, cp := range n.compactions {
		if c.now >= cp.at {
			c.compact(n, cp.tx, cp.upTo)
		} else {
			keep = append(keep, cp)
		}
	}
	n.compactions = keep
}

func (c *Cluster) compact(n *Node, id engine.TxID, upTo uint64) {
	keep, keepSeq := n.durable[:0], n.durSeq[:0]
	for i, e := range n.durable {
		_, violation := e.(engine.PartViolation)
		if e.Tx() == id && !violation && n.durSeq[i] <= upTo {
			continue
		}
		keep, keepSeq = append(keep, e), append(keepSeq, n.durSeq[i])
	}
	n.durable, n.durSeq = keep, keepSeq
}

// Persist makes a node's appended events durable up to lsn (all of them when
// lsn is 0) and releases the effects that waited for them.
func (c *Cluster) Persist(id engine.NodeID, lsn engine.LSN) error {
	n := c.Node(id)
	if n == nil || !n.up {
		return fmt.Errorf("%s is not up", id)
	}
	k := len(n.pending)
	if lsn != 0 {
		if lsn < n.durLSN {
			return fmt.Errorf("%s: lsn %d is durable already", id, lsn)
		}
		k = min(k, int(lsn-n.durLSN))
	}
	if k == 0 && len(n.held) == 0 {
		return nil
	}
	evs := n.pending[:k]
	n.durable = append(n.durable, evs...)
	for range evs {
		n.lastSeq++
		n.durSeq = append(n.durSeq, n.lastSeq)
	}
	n.pending = slices.Clone(n.pending[k:])
	n.durLSN += engine.LSN(k)
	if k > 0 {
		c.tracef("%s: durable through lsn %d", id, n.durLSN)
	}
	c.check.onDurable(n, evs)
	for _, e := range evs {
		if end, ok := e.(engine.CoordEnded); ok {
			for _, k := range end.Keys {
				if n.retained == nil {
					n.retained = map[string]engine.KeyLookedUp{}
				}
				n.retained[k] = engine.KeyLookedUp{Key: k, Found: true, TxID: end.TxID, Outcome: end.Outcome, Reason: end.Reason}
			}
		}
		switch e.(type) {
		case engine.CoordEnded, engine.PartAborted:
			// What a node's compaction keys on besides Forget.
			c.compactLater(n, e.Tx())
		}
	}
	for _, h := range c.release(n) {
		c.tracef("%s: released %s", id, engine.DescribeEffect(h.e))
		c.perform(n, h.e)
	}
	return nil
}

// Tick tells a node that time passed.
func (c *Cluster) Tick(id engine.NodeID) error {
	n := c.Node(id)
	if n == nil || !n.up {
		return fmt.Errorf("%s is not up", id)
	}
	c.compactDue(n)
	lookups := n.lookups
	n.lookups = nil
	for _, k := range lookups {
		c.answerLookup(n, k)
	}
	if !n.up {
		return nil
	}
	c.stepNode(n, engine.Tick{Now: c.now})
	return nil
}

// answerLookup answers a LookupKey from the coordinator's retained store.
func (c *Cluster) answerLookup(n *Node, key string) {
	a, ok := n.retained[key]
	if !ok {
		a = engine.KeyLookedUp{Key: key}
	}
	a.Now = c.now
	c.tracef("%s: key %q looked up: %s", n.ID, key, describeLookup(a))
	c.stepNode(n, a)
}

func describeLookup(a engine.KeyLookedUp) string {
	if !a.Found {
		return "not found"
	}
	return fmt.Sprintf("tx=%d %s", a.TxID, a.Outcome)
}

// answer is what the coordinator says when asked who it is.
func (c *Cluster) answer() engine.CoordinatorAnswered {
	if !c.coord.up {
		return engine.CoordinatorAnswered{Now: c.now, Err: "coordinator unreachable"}
	}
	peers := make([]string, len(c.parts))
	for i := range peers {
		peers[i] = engine.NodeID(i).String()
	}
	return engine.CoordinatorAnswered{Now: c.now, Cluster: c.coord.coord.Cluster(), Epoch: c.coord.coord.Epoch(), Participants: peers}
}

// Deliver hands the i-th message in flight to its destination; a message to
// a down node is lost, and so is an answer to a participant that restarted
// since it asked.
func (c *Cluster) Deliver(i int) {
	env := c.take(i)
	if env.To == engine.ClientNode {
		c.tracef("%s", env)
		c.directAnswered(env.Msg)
		return
	}
	n := c.Node(env.To)
	if n == nil || !n.up || env.Answer != nil && n.inc != env.fromInc {
		c.tracef("%s (lost: %s is down)", env, env.To)
		return
	}
	if c.cfg.MaxMessageAge > 0 && c.now > env.sentAt.Add(c.cfg.MaxMessageAge) {
		c.tracef("%s (lost: sent %s ago)", env, time.Duration(c.now-env.sentAt))
		return
	}
	c.tracef("%s", env)
	if q, ok := env.Msg.(engine.SettleRequest); ok && c.cfg.ForgeEarlyAbort && q.From != engine.CoordinatorNode {
		if asker := c.Node(q.From); asker != nil && asker.up {
			forged := engine.SettleAnswer{Cluster: q.Cluster, From: env.To, TxID: q.TxID, Outcome: engine.OutcomeAbort}
			c.tracef("forged: %s -> %s: %s", env.To, q.From, engine.DescribeMessage(forged))
			c.stepNode(asker, engine.Receive{Now: c.now, Msg: forged})
		}
	}
	switch {
	case env.Ask:
		a := c.answer()
		c.nextMsg++
		c.net = append(c.net, Envelope{ID: c.nextMsg, sentAt: c.now, From: env.To, To: env.From, Answer: &a, fromInc: env.fromInc})
		return
	case env.Answer != nil:
		a := *env.Answer
		a.Now = c.now
		c.stepNode(n, a)
		return
	}
	c.stepNode(n, engine.Receive{Now: c.now, Msg: env.Msg})
	if r, ok := env.Msg.(engine.CommitBranchRequest); ok && c.cfg.ForgeVoterVotes && n.up {
		for _, q := range r.Voters {
			forged := engine.VoteMessage{Cluster: r.Cluster, From: q, TxID: r.TxID, Vote: engine.VoteYes, TxEpoch: r.Epoch}
			c.tracef("forged: %s -> %s: %s", q, env.To, engine.DescribeMessage(forged))
			c.stepNode(n, engine.Receive{Now: c.now, Msg: forged})
		}
	}
	if v, ok := env.Msg.(engine.VoteMessage); ok && c.cfg.ForgeVotes && v.Vote == engine.VoteYes && c.coord.up {
		for _, q := range c.prepareTargets[v.TxID] {
			if q == v.From {
				continue
			}
			forged := engine.VoteMessage{Cluster: v.Cluster, From: q, TxID: v.TxID, Vote: engine.VoteYes}
			c.tracef("forged: %s -> coordinator: %s", q, engine.DescribeMessage(forged))
			c.stepNode(c.coord, engine.Receive{Now: c.now, Msg: forged})
		}
	}
}

func (c *Cluster) take(i int) Envelope {
	env := c.net[i]
	c.net = slices.Delete(c.net, i, i+1)
	return env
}

// Forge puts a message in flight to a participant as if the coordinator
// had sent it, as an outsider who can reach the participant could.
func (c *Cluster) Forge(to engine.NodeID, m engine.Message) {
	c.nextMsg++
	env := Envelope{ID: c.nextMsg, sentAt: c.now, From: engine.CoordinatorNode, To: to, Msg: m}
	c.net = append(c.net, env)
	c.tracef("forged %s", env)
}

// Drop loses the i-th message in flight.
func (c *Cluster) Drop(i int) {
	c.tracef("drop %s", c.take(i))
}

// Duplicate puts a copy of the i-th message in flight at the end of the
// queue.
func (c *Cluster) Duplicate(i int) {
	env := c.net[i]
	c.nextMsg++
	env.ID = c.nextMsg
	c.net = append(c.net, env)
	c.tracef("duplicate %s", env)
}

// FailSend removes the i-th message in flight, delivering it first when
// deliver is set, and tells its sender the send failed (a send failure says
// nothing about delivery). A sender that restarted since is not told.
func (c *Cluster) FailSend(i int, deliver bool) {
	env := c.net[i]
	if deliver {
		c.Deliver(i)
	} else {
		c.Drop(i)
	}
	n := c.Node(env.From)
	if env.Answer != nil || n == nil || !n.up || n.inc != env.fromInc {
		return
	}
	if env.Ask {
		c.tracef("%s: question to %s failed", env.From, env.To)
		c.stepNode(n, engine.CoordinatorAnswered{Now: c.now, Err: "call failed"})
		return
	}
	c.tracef("%s: send to %s failed: %s", env.From, env.To, engine.DescribeMessage(env.Msg))
	c.stepNode(n, engine.SendFailed{Now: c.now, To: env.To, Msg: env.Msg})
}

// Runnable lists the indexes of a node's issued data operations that may run
// now: the first of each transaction.
func (c *Cluster) Runnable(id engine.NodeID) []int {
	n := c.Node(id)
	if n == nil || !n.up {
		return nil
	}
	var out []int
	var seen []engine.TxID
	for i, op := range n.ops {
		if !slices.Contains(seen, op.TxID) {
			out = append(out, i)
			seen = append(seen, op.TxID)
		}
	}
	return out
}

// RunData performs the i-th issued data operation of a participant with the
// given fault and feeds the result back to its engine.
func (c *Cluster) RunData(id engine.NodeID, i int, f Fault) error {
	return c.RunDataMsg(id, i, f, "")
}

// RunDataMsg is RunData with the error text of a failed operation replaced
// by msg, when msg is not empty.
func (c *Cluster) RunDataMsg(id engine.NodeID, i int, f Fault, msg string) error {
	n, op, err := c.takeOp(id, i)
	if err != nil {
		return err
	}
	done, ch := n.db.run(op, f)
	if msg != "" && done.Err != "" {
		done.Err = msg
	}
	done.Now = c.now
	c.tracef("%s: %s -> %s", id, engine.DescribeEffect(op), describeDone(done))
	c.check.onChanges(n, ch)
	c.stepNode(n, done)
	return nil
}

// RunDataThenCrash performs the i-th issued data operation on the data
// database, then crashes the participant before it hears the result.
func (c *Cluster) RunDataThenCrash(id engine.NodeID, i int, f Fault) error {
	n, op, err := c.takeOp(id, i)
	if err != nil {
		return err
	}
	done, ch := n.db.run(op, f)
	c.tracef("%s: %s -> %s, unheard", id, engine.DescribeEffect(op), describeDone(done))
	c.check.onChanges(n, ch)
	return c.Crash(id)
}

func (c *Cluster) takeOp(id engine.NodeID, i int) (*Node, engine.Data, error) {
	n := c.Node(id)
	if n == nil || !n.up || n.db == nil {
		return nil, engine.Data{}, fmt.Errorf("%s is not an up participant", id)
	}
	if !slices.Contains(c.Runnable(id), i) {
		return nil, engine.Data{}, fmt.Errorf("%s: data op %d is not runnable", id, i)
	}
	op := n.ops[i]
	n.ops = slices.Delete(n.ops, i, i+1)
	return n, op, nil
}

func describeDone(d engine.DataDone) string {
	if d.Then != 0 {
		first := d
		first.Then, first.ThenErr, first.Retry, first.ReadOnly = 0, "", false, false
		then := "ok"
		switch {
		case d.Retry:
			then = fmt.Sprintf("retry error=%q", d.ThenErr)
		case d.ThenErr != "":
			then = fmt.Sprintf("error=%q", d.ThenErr)
		}
		return fmt.Sprintf("%s, %s %s", describeDone(first), d.Then, then)
	}
	switch {
	case d.Retry:
		return fmt.Sprintf("retry error=%q", d.Err)
	case d.Err != "":
		return fmt.Sprintf("error=%q", d.Err)
	case d.ReadOnly:
		return "read-only"
	case d.Result != nil:
		return fmt.Sprintf("ok rows_affected=%d", d.Result.RowsAffected)
	}
	return "ok"
}

// Client calls. Each returns the request id; the answer arrives through
// Config.OnResponse when the coordinator's Respond effect is released.

// Begin starts an explicit transaction, with an idempotency key unless
// key is empty.
func (c *Cluster) Begin(key string) engine.ReqID {
	r := c.newReq("begin", 0, 0, "")
	r.Key = key
	return c.request(r, engine.ClientBegin{Now: c.now, Req: r.Req, Key: key})
}

// Exec runs a statement of an explicit transaction on a participant.
func (c *Cluster) Exec(tx engine.TxID, node engine.NodeID, sql string) engine.ReqID {
	r := c.newReq("exec", tx, node, sql)
	return c.request(r, engine.ClientExec{Now: c.now, Req: r.Req, TxID: tx, Node: node, SQL: sql})
}

// directTx is a client's own account of a transaction whose statements it
// sends participants directly: the header its begin was answered with,
// the next statement number and the statements answered ok, by node.
type directTx struct {
	header engine.Header
	next   map[engine.NodeID]int
	ok     map[engine.NodeID]int
	// ended is set once the client asked to commit or roll back: a
	// statement sent after that could run in a branch the commit does
	// not know, so a client sends none.
	ended bool
}

type directStmt struct {
	cluster string
	tx      engine.TxID
	node    engine.NodeID
	stmt    int
}

// CanDirect reports whether the client knows tx's header from its begin,
// which a statement sent to a participant directly carries.
func (c *Cluster) CanDirect(tx engine.TxID) bool { return c.direct[tx] != nil && !c.direct[tx].ended }

// Direct sends a statement of tx to node itself, past the coordinator
// (engine.ExecRequest.Direct). The client does not wait for the answer:
// whatever answered ok by its commit is what it counts (CommitDirect).
func (c *Cluster) Direct(tx engine.TxID, node engine.NodeID, sql string) engine.ReqID {
	d := c.direct[tx]
	r := c.newReq("direct", tx, node, sql)
	r.Cluster = d.header.Cluster
	stmt := d.next[node]
	d.next[node]++
	c.directWaiting[directStmt{d.header.Cluster, tx, node, stmt}] = r
	c.check.onRequest(r)
	if c.cfg.Trace != nil {
		c.tracef("client: req=%d direct tx=%d node=%s sql=%q", r.Req, tx, node, sql)
	}
	c.nextMsg++
	c.net = append(c.net, Envelope{ID: c.nextMsg, sentAt: c.now, From: engine.ClientNode, To: node,
		Msg: engine.ExecRequest{Header: d.header, TxID: tx, Stmt: stmt, SQL: sql, Direct: true}})
	return r.Req
}

// directAnswered hands a participant's answer to a direct statement to
// the client; a copy of one already answered is ignored, as a client's
// finished call would.
func (c *Cluster) directAnswered(m engine.Message) {
	res, ok := m.(engine.ExecResult)
	if !ok {
		c.check.failf("client got %s", engine.DescribeMessage(m))
		return
	}
	k := directStmt{res.Cluster, res.TxID, res.From, res.Stmt}
	req, ok := c.directWaiting[k]
	if !ok {
		return
	}
	delete(c.directWaiting, k)
	r := Response{Request: req}
	if res.Err != "" {
		r.Err = &engine.Error{Code: engine.ErrStatement, Message: res.Err}
	} else {
		if d := c.direct[res.TxID]; d.header.Cluster == res.Cluster {
			d.ok[res.From]++ // (not once its coordinator lost its log)
		}
		r.Reply = engine.ExecReply{TxID: res.TxID, Node: res.From, Result: res.Result}
	}
	c.respond(r)
}

// endDirect ends the direct statements of tx, whose client asked to
// commit or roll back.
func (c *Cluster) endDirect(tx engine.TxID) {
	d := c.direct[tx]
	if d == nil {
		return
	}
	d.ended = true
	// Its statements still unanswered are given up: the commit did not
	// count them, and an answer that comes later is not heard.
	for k := range c.directWaiting {
		if k.tx == tx && k.cluster == d.header.Cluster {
			delete(c.directWaiting, k)
		}
	}
}

// CommitDirect asks to commit tx, telling the coordinator of every
// participant the client sent statements directly and how many of them
// answered ok.
func (c *Cluster) CommitDirect(tx engine.TxID) engine.ReqID {
	r := c.newReq("commit", tx, 0, "")
	c.endDirect(tx)
	var direct []engine.DirectBranch
	if d := c.direct[tx]; d != nil {
		for _, n := range slices.Sorted(maps.Keys(d.next)) {
			direct = append(direct, engine.DirectBranch{Node: n, Stmts: d.ok[n], Wrote: true})
		}
	}
	return c.request(r, engine.ClientCommit{Now: c.now, Req: r.Req, TxID: tx, Direct: direct, PromptAcks: c.cfg.PromptAcks})
}

// RollbackDirect asks to abort tx, naming the participants the client sent
// statements directly.
func (c *Cluster) RollbackDirect(tx engine.TxID) engine.ReqID {
	r := c.newReq("rollback", tx, 0, "")
	c.endDirect(tx)
	var nodes []engine.NodeID
	if d := c.direct[tx]; d != nil {
		nodes = slices.Sorted(maps.Keys(d.next))
	}
	return c.request(r, engine.ClientRollback{Now: c.now, Req: r.Req, TxID: tx, Direct: nodes})
}

// Commit asks to commit an explicit transaction.
func (c *Cluster) Commit(tx engine.TxID) engine.ReqID {
	c.endDirect(tx)
	r := c.newReq("commit", tx, 0, "")
	return c.request(r, engine.ClientCommit{Now: c.now, Req: r.Req, TxID: tx, PromptAcks: c.cfg.PromptAcks})
}

// Rollback asks to abort an explicit transaction.
func (c *Cluster) Rollback(tx engine.TxID) engine.ReqID {
	c.endDirect(tx)
	r := c.newReq("rollback", tx, 0, "")
	return c.request(r, engine.ClientRollback{Now: c.now, Req: r.Req, TxID: tx})
}

// Status asks where a transaction stands, by id or, with tx 0, by key.
func (c *Cluster) Status(tx engine.TxID, key string) engine.ReqID {
	r := c.newReq("status", tx, 0, "")
	r.Key = key
	return c.request(r, engine.ClientStatus{Now: c.now, Req: r.Req, TxID: tx, Key: key})
}

// Resolve asks the coordinator to retry an in-doubt transaction now.
func (c *Cluster) Resolve(tx engine.TxID) engine.ReqID {
	r := c.newReq("resolve", tx, 0, "")
	return c.request(r, engine.ClientResolve{Now: c.now, Req: r.Req, TxID: tx})
}

// Transact runs statements in one call, committing when commit is set; tx
// 0 begins a transaction, named by key unless it is empty.
func (c *Cluster) Transact(tx engine.TxID, stmts []engine.Statement, commit bool, key string) engine.ReqID {
	if commit {
		c.endDirect(tx)
	}
	r := c.newReq("transact", tx, 0, "")
	r.Stmts, r.Key = stmts, key
	return c.request(r, engine.ClientTransact{Now: c.now, Req: r.Req, TxID: tx, Stmts: stmts, Commit: commit, Key: key, PromptAcks: c.cfg.PromptAcks})
}

// Execute is the seed form: a statement that joins the current batch,
// named by key unless it is empty.
func (c *Cluster) Execute(node engine.NodeID, sql string, key string) engine.ReqID {
	r := c.newReq("execute", 0, node, sql)
	r.Key = key
	return c.request(r, engine.ClientExecute{Now: c.now, Req: r.Req, Node: node, SQL: sql, Key: key})
}

func (c *Cluster) newReq(kind string, tx engine.TxID, node engine.NodeID, sql string) Request {
	c.nextReq++
	return Request{Req: c.nextReq, Kind: kind, Tx: tx, Node: node, SQL: sql}
}

func (c *Cluster) request(r Request, in engine.Input) engine.ReqID {
	if c.cfg.Trace != nil {
		s := fmt.Sprintf("client: req=%d %s", r.Req, r.Kind)
		if r.Tx != 0 {
			s += fmt.Sprintf(" tx=%d", r.Tx)
		}
		if r.Kind == "exec" || r.Kind == "execute" || r.Kind == "direct" {
			s += fmt.Sprintf(" node=%s sql=%q", r.Node, r.SQL)
		}
		for _, st := range r.Stmts {
			s += fmt.Sprintf(" %s:%q", st.Node, st.SQL)
		}
		if r.Key != "" {
			s += fmt.Sprintf(" key=%q", r.Key)
		}
		switch in := in.(type) {
		case engine.ClientCommit:
			for _, d := range in.Direct {
				s += fmt.Sprintf(" direct=%s:%d", d.Node, d.Stmts)
			}
		case engine.ClientRollback:
			for _, n := range in.Direct {
				s += fmt.Sprintf(" direct=%s", n)
			}
		}
		c.tracef("%s", s)
	}
	if !c.coord.up {
		c.respond(Response{Request: r, Lost: true})
		return r.Req
	}
	c.waiting[r.Req] = r
	c.check.onRequest(r)
	c.stepNode(c.coord, in)
	return r.Req
}

// Quiet reports whether nothing is left to do: every node up with nothing
// pending, held or issued, and no message in flight.
func (c *Cluster) Quiet() bool {
	if len(c.net) > 0 {
		return false
	}
	for _, n := range c.Nodes() {
		if !n.up || len(n.pending) > 0 || len(n.held) > 0 || len(n.ops) > 0 {
			return false
		}
		// Work the engines wait to do at a later tick: a restarted
		// coordinator still asking for markers, a participant holding
		// messages until its coordinator says who it is.
		if n.coord != nil && n.coord.Reconciling() || n.part != nil && len(n.part.Held()) > 0 {
			return false
		}
	}
	return true
}

// State renders every node's engine state, log, held effects and data
// database, and the messages in flight.
func (c *Cluster) State() string {
	var b strings.Builder
	for _, n := range c.Nodes() {
		status := "up"
		if !n.up {
			status = "down"
		}
		var st string
		if n.coord != nil {
			st = n.coord.Describe()
		} else {
			st = n.part.Describe()
		}
		fmt.Fprintf(&b, "%s (%s, %d durable events, %d not durable)\n", n.ID, status, len(n.durable), len(n.pending))
		for _, line := range strings.Split(strings.TrimRight(st, "\n"), "\n") {
			fmt.Fprintf(&b, "  %s\n", line)
		}
		for _, h := range n.held {
			fmt.Fprintf(&b, "  held: %s\n", engine.DescribeEffect(h.e))
		}
		for _, op := range n.ops {
			fmt.Fprintf(&b, "  issued: %s\n", engine.DescribeEffect(op))
		}
		if n.db != nil {
			b.WriteString("  ")
			n.db.describe(&b, n.ID.String())
		}
	}
	for _, env := range c.net {
		fmt.Fprintf(&b, "in flight: %s\n", env)
	}
	return b.String()
}
