package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// Told is what a client learned about the outcome of its transaction.
type Told uint8

const (
	// ToldCommit: commit answered "commit".
	ToldCommit Told = 1 + iota
	// ToldAbort: commit or rollback answered "abort", or commit was refused
	// because the transaction had been aborted.
	ToldAbort
	// ToldUnknown: no definite answer (no reply, a timeout, or an error that
	// names no outcome, such as an unknown transaction after a coordinator
	// restart).
	ToldUnknown
)

func (t Told) String() string {
	switch t {
	case ToldCommit:
		return "commit"
	case ToldAbort:
		return "abort"
	case ToldUnknown:
		return "unknown"
	}
	return fmt.Sprintf("Told(%d)", uint8(t))
}

// TxKey names a transaction across coordinator incarnations. A coordinator
// replaced by a fresh one (an empty log) is a new cluster and hands out the
// same transaction ids again, so an id alone does not say which
// transaction it is.
type TxKey struct {
	// Incarnation counts the coordinators of a run: 1 is the first, and
	// each replace-coordinator fault starts the next.
	Incarnation int
	TxID        uint64
}

func (k TxKey) String() string {
	if k.Incarnation == plainIncarnation {
		return fmt.Sprintf("plain transaction %d", k.TxID)
	}
	return fmt.Sprintf("tx %d of coordinator #%d", k.TxID, k.Incarnation)
}

// TxRecord is one transaction as its client saw it.
type TxRecord struct {
	TxID uint64
	// Incarnation is the coordinator incarnation that handed out TxID.
	Incarnation int
	Client      int // -1 for the harness's own probe transactions
	// Sent counts the inserts sent to each node (index = node id), Acked
	// those that were answered with success (for a transact call whose
	// answer was lost, all of its inserts meant to add a row: it commits
	// only if all of them ran).
	Sent, Acked []int
	// Failed: a statement was answered with a statement error (code
	// -32006), which makes the transaction abort-only.
	Failed bool
	// Refused: a statement was answered with another error (an unknown or
	// no longer active transaction, a coordinator that is starting).
	Refused bool
	// PlannedFail: the client sent a statement meant to fail.
	PlannedFail bool
	// Lost: a statement got no answer, so the client gave up and rolled back.
	Lost bool
	// RolledBack: the client asked for a rollback instead of a commit.
	RolledBack bool
	// OneCall: the statements and the commit went in one transact call.
	OneCall bool
	// direct, for a transaction whose statements went straight to their
	// participants (direct_exec), keeps the account its commit or
	// rollback names them with.
	direct *api.DirectTx
	// Plain: the transaction went to its one participant as a plain
	// transaction (plain_transact). No coordinator knows it: its TxID is
	// the workload's own count of them and its Incarnation is 0.
	Plain bool
	// Orphaned: the harness left the transaction open on purpose and
	// replaced its coordinator, so no coordinator can tell its state and
	// none of its rows may ever commit.
	Orphaned bool
	Told     Told
	// Reason is the abort reason or the error behind ToldUnknown.
	Reason string
}

// Key names the transaction among those of every coordinator incarnation.
func (r *TxRecord) Key() TxKey { return TxKey{Incarnation: r.Incarnation, TxID: r.TxID} }

// Per-call bounds of the workload's client calls. Exec is above the
// coordinator's --exec-timeout, so a slow statement ends in its error rather
// than in an unknown.
const (
	beginTimeout    = 5 * time.Second
	execTimeout     = 10 * time.Second
	commitTimeout   = 20 * time.Second
	rollbackTimeout = 5 * time.Second
)

// Workload mix, in percent of transactions.
const (
	pctRollback = 10
	pctFailing  = 6
	// pctTransact of the transactions send their statements and commit in
	// one transact call instead of an exec per statement.
	pctTransact = 30
	// pctDirect of the others send each statement straight to its
	// participant.
	pctDirect = 30
	// pctPlain of the transactions are one participant's, sent to it as a
	// plain transaction.
	pctPlain = 10
)

// plainIncarnation is the Incarnation of plain transactions' records and
// rows: no coordinator issued them.
const plainIncarnation = 0

// workload runs concurrent clients against the coordinator and records
// every transaction that was given an id.
type workload struct {
	log   *slog.Logger
	ctx   context.Context // ends only when the whole run is interrupted
	addrs []string        // the coordinators', calls go to the one serving
	n     int

	mu      sync.Mutex
	records []*TxRecord

	// gate holds the clients while the coordinator is replaced and says
	// which incarnation their transactions belong to.
	gate          *gate
	beginFailures atomic.Int64
	// beginRepeats counts begins sent again with their key after the
	// answer was lost.
	beginRepeats atomic.Int64
	// plainSeq numbers the plain transactions.
	plainSeq atomic.Uint64
	wg       sync.WaitGroup
}

func newWorkload(ctx context.Context, addrs []string, participants int, log *slog.Logger) *workload {
	w := &workload{ctx: ctx, addrs: addrs, n: participants, log: log, gate: newGate()}
	context.AfterFunc(ctx, w.gate.stop)
	return w
}

// clientAddrs are the coordinators client i calls: every one, starting
// at the next in turn, so that coordinators serving at once (slots)
// share the clients; a standby takes no connections, so clients of one
// serving coordinator all land on it.
func (w *workload) clientAddrs(i int) []string {
	k := i % len(w.addrs)
	return append(slices.Clone(w.addrs[k:]), w.addrs[:k]...)
}

// start launches clients; each runs until stopAndWait.
func (w *workload) start(clients int, seed uint64) {
	for i := range clients {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			c := &client{
				w: w, id: i,
				rng: rand.New(rand.NewPCG(seed, uint64(i)+1)),
				// Clients call over h2c, batch streams or a multiplexed
				// stream in turn, so that the faults meet every way a
				// client calls.
				rpc: rpc.NewFailover(w.clientAddrs(i), clientOptions(i)),
			}
			defer c.rpc.Close()
			defer func() {
				for _, p := range c.parts {
					p.Close()
				}
			}()
			for {
				incarnation, ok := w.gate.enter()
				if !ok {
					return
				}
				c.runOne(incarnation)
				w.gate.leave()
			}
		}()
	}
}

// stopAndWait lets every client finish the transaction it is in (each call
// is bounded) and returns the records.
func (w *workload) stopAndWait() []*TxRecord {
	w.gate.stop()
	w.wg.Wait()
	return w.snapshot()
}

func (w *workload) snapshot() []*TxRecord {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*TxRecord(nil), w.records...)
}

func (w *workload) add(r *TxRecord) {
	w.mu.Lock()
	w.records = append(w.records, r)
	w.mu.Unlock()
}

// counts tallies finished records by what clients were told.
func (w *workload) counts() (attempted, committed, aborted, unknown int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.records {
		attempted++
		switch r.Told {
		case ToldCommit:
			committed++
		case ToldAbort:
			aborted++
		case ToldUnknown:
			unknown++
		}
	}
	return
}

type client struct {
	w   *workload
	id  int
	seq int
	rng *rand.Rand
	rpc *rpc.Failover
	// parts call the participants, for direct statements; opened on
	// first use from the coordinator's list of them.
	parts []*rpc.Failover
}

// stmt is one planned statement.
type stmt struct {
	node int
	sql  string
	args []any
	// fail marks a statement meant to fail; it adds no row.
	fail bool
}

// insertSQL adds one row; the row names the coordinator incarnation and
// the transaction id it was written under, so that the data says which
// transaction committed it even when two incarnations issued the same id.
const insertSQL = "INSERT INTO " + rowsTable + " (key, incarnation, tx, node) VALUES ($1, $2, $3, $4)"

// plan picks 1 to maxNodes (at most 3) nodes, 1-2 inserts of unique keys
// on each, and now and then a statement that fails (duplicate key, syntax
// error, NOT NULL).
func (c *client) plan(incarnation int, tx uint64, maxNodes int) []stmt {
	n := c.w.n
	k := 1 + c.rng.IntN(min(maxNodes, n))
	nodes := c.rng.Perm(n)[:k]
	var out []stmt
	for _, nd := range nodes {
		for range 1 + c.rng.IntN(2) {
			key := fmt.Sprintf("c%d-%d-%d", c.id, c.seq, len(out))
			out = append(out, stmt{node: nd, sql: insertSQL, args: []any{key, incarnation, tx, nd}})
		}
	}
	if c.rng.IntN(100) < pctFailing {
		at := c.rng.IntN(len(out) + 1)
		nd := nodes[c.rng.IntN(len(nodes))]
		var bad stmt
		switch c.rng.IntN(3) {
		case 0: // duplicate key: the same new key twice on nd
			bad = stmt{node: nd, sql: insertSQL, args: []any{fmt.Sprintf("c%d-%d-dup", c.id, c.seq), incarnation, tx, nd}, fail: true}
			first := stmt{node: nd, sql: insertSQL, args: bad.args}
			out = append(out[:at], append([]stmt{first, bad}, out[at:]...)...)
			return out
		case 1:
			bad = stmt{node: nd, sql: "INSERT INTO " + rowsTable + " VALUS (1)", fail: true}
		default:
			bad = stmt{node: nd, sql: insertSQL, args: []any{fmt.Sprintf("c%d-%d-null", c.id, c.seq), incarnation, nil, nd}, fail: true}
		}
		out = append(out[:at], append([]stmt{bad}, out[at:]...)...)
	}
	return out
}

// runOne runs one transaction of the given coordinator incarnation from
// begin to its end and records it.
func (c *client) runOne(incarnation int) {
	c.seq++
	if c.rng.IntN(100) < pctPlain && c.dialParticipants() {
		c.plain()
		return
	}
	var b engine.BeginReply
	// The begin carries a key: when its answer is lost, the begin sent
	// again gets the transaction the first one opened instead of leaving it
	// to the idle timeout.
	key := api.BeginParams{Key: fmt.Sprintf("chaos-%d-c%d-%d", incarnation, c.id, c.seq)}
	err := c.call(beginTimeout, api.MethodBegin, key, &b)
	if rpc.IsTransport(err) {
		c.w.beginRepeats.Add(1)
		err = c.call(beginTimeout, api.MethodBegin, key, &b)
	}
	if err != nil {
		c.w.beginFailures.Add(1)
		// The coordinator is down or restarting; do not spin.
		time.Sleep(time.Duration(50+c.rng.IntN(200)) * time.Millisecond)
		return
	}
	r := &TxRecord{TxID: uint64(b.TxID), Incarnation: incarnation, Client: c.id, Sent: make([]int, c.w.n), Acked: make([]int, c.w.n)}
	defer c.w.add(r)
	plan := c.plan(incarnation, r.TxID, 3)
	if c.rng.IntN(100) < pctTransact {
		c.transact(r, plan)
		return
	}
	if c.rng.IntN(100) < pctDirect && c.dialParticipants() {
		r.direct = api.NewDirectTx(b.TxID, b.Cluster, b.Epoch)
	}
	for _, s := range plan {
		r.Sent[s.node]++
		r.PlannedFail = r.PlannedFail || s.fail
		nd := engine.NodeID(s.node)
		var err error
		if r.direct != nil {
			ctx, cancel := context.WithTimeout(c.w.ctx, execTimeout)
			err = c.parts[s.node].Call(ctx, api.MethodDirectExec, r.direct.Exec(nd, s.sql, s.args), nil)
			cancel()
			r.direct.Answered(nd, err == nil, true)
			if rpc.IsCode(err, rpc.CodeUnavailable) {
				// No answer in time, or a participant that is starting:
				// whether the statement ran is unknown.
				r.Lost, r.Reason = true, err.Error()
				break
			}
		} else {
			err = c.call(execTimeout, api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &nd, SQL: s.sql, Args: s.args}, nil)
		}
		if err == nil {
			r.Acked[s.node]++
			continue
		}
		r.noteExecError(err)
		break
	}
	switch {
	case r.Lost:
		// The client cannot know what happened to its statement; it gives
		// up on the transaction.
		c.finish(r, api.MethodRollback, rollbackTimeout)
	case !r.Failed && c.rng.IntN(100) < pctRollback:
		r.RolledBack = true
		c.finish(r, api.MethodRollback, rollbackTimeout)
	default:
		// After a failed statement the client still asks to commit: the
		// coordinator must answer abort.
		c.finish(r, api.MethodCommit, commitTimeout)
	}
}

// transact sends a begun transaction's statements and its commit in one
// call and records the answer.
func (c *client) transact(r *TxRecord, plan []stmt) {
	r.OneCall = true
	p := api.TransactParams{TxID: engine.TxID(r.TxID), Commit: true}
	// rows counts the inserts that add a row if the call commits: all but
	// those meant to fail.
	rows := make([]int, len(r.Acked))
	for _, s := range plan {
		nd := engine.NodeID(s.node)
		p.Statements = append(p.Statements, api.StatementParams{Node: &nd, SQL: s.sql, Args: s.args})
		r.Sent[s.node]++
		r.PlannedFail = r.PlannedFail || s.fail
		if !s.fail {
			rows[s.node]++
		}
	}
	var out api.TransactReply
	err := c.call(execTimeout+commitTimeout, api.MethodTransact, p, &out)
	switch {
	case err == nil && out.Outcome != nil:
		copy(r.Acked, rows)
		r.Told = ToldAbort
		if *out.Outcome == engine.OutcomeCommit {
			r.Told = ToldCommit
		}
		r.Reason = out.Reason
	case rpc.IsCode(err, rpc.CodeAborted):
		// A statement failed; the commit was never asked for, and the
		// client still asks for it: the coordinator must answer abort.
		r.Failed, r.Reason = true, err.Error()
		c.finish(r, api.MethodCommit, commitTimeout)
	default:
		// No answer, or not the expected one: the commit may have been
		// decided, which the coordinator does only once every statement
		// has run, so a commit must show all of them. A rollback ends the
		// transaction if it is still open and otherwise answers its
		// outcome.
		copy(r.Acked, rows)
		r.Reason = fmt.Sprint(err)
		c.finish(r, api.MethodRollback, rollbackTimeout)
	}
}

// plain runs a one-participant transaction at its participant and records
// the answer: commit; abort for a statement's failure or for "nothing
// committed" (-32003); unknown for anything else, which the data then
// shows.
func (c *client) plain() {
	r := &TxRecord{TxID: c.w.plainSeq.Add(1), Incarnation: plainIncarnation, Client: c.id, Sent: make([]int, c.w.n), Acked: make([]int, c.w.n), Plain: true, OneCall: true}
	defer c.w.add(r)
	plan := c.plan(plainIncarnation, r.TxID, 1)
	nd := engine.NodeID(plan[0].node)
	p := api.TransactParams{Commit: true}
	rows := make([]int, c.w.n)
	for _, s := range plan {
		p.Statements = append(p.Statements, api.StatementParams{Node: &nd, SQL: s.sql, Args: s.args})
		r.Sent[s.node]++
		r.PlannedFail = r.PlannedFail || s.fail
		if !s.fail {
			rows[s.node]++
		}
	}
	ctx, cancel := context.WithTimeout(c.w.ctx, execTimeout+commitTimeout)
	defer cancel()
	var out api.TransactReply
	err := c.parts[nd].Call(ctx, api.MethodPlainTransact, p, &out)
	switch {
	case err == nil && out.Outcome != nil && *out.Outcome == engine.OutcomeCommit:
		copy(r.Acked, rows)
		r.Told = ToldCommit
	case rpc.IsCode(err, rpc.CodeAborted):
		r.Failed, r.Told, r.Reason = true, ToldAbort, err.Error()
	case rpc.IsCode(err, rpc.CodeUnavailable):
		// The participant says nothing committed (it could not begin, or
		// its connection broke before the COMMIT went): the check holds it
		// to that.
		copy(r.Acked, rows)
		r.Told, r.Reason = ToldAbort, err.Error()
	default:
		// The rows count only if the transaction committed, all of them.
		copy(r.Acked, rows)
		r.Told, r.Reason = ToldUnknown, fmt.Sprintf("plain_transact: %v (outcome %v)", err, out.Outcome)
	}
}

func (r *TxRecord) noteExecError(err error) {
	switch {
	case rpc.IsTransport(err):
		r.Lost = true
	case rpc.IsCode(err, rpc.CodeAborted):
		r.Failed = true
	default:
		r.Refused = true
	}
	r.Reason = err.Error()
}

// finish sends commit or rollback and records the answer. "Unavailable"
// (the coordinator is starting) is retried a few times, as a client would.
func (c *client) finish(r *TxRecord, method string, timeout time.Duration) {
	var out engine.OutcomeReply
	var err error
	p := api.TxParams{TxID: engine.TxID(r.TxID)}
	if r.direct != nil {
		p = r.direct.End()
	}
	for attempt := 0; ; attempt++ {
		err = c.call(timeout, method, p, &out)
		if err == nil || !rpc.IsCode(err, rpc.CodeUnavailable) || attempt == 5 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	switch {
	case err == nil && out.Outcome == engine.OutcomeCommit:
		r.Told = ToldCommit
	case err == nil && out.Outcome == engine.OutcomeAbort:
		r.Told, r.Reason = ToldAbort, out.Reason
	case err == nil:
		r.Told, r.Reason = ToldUnknown, fmt.Sprintf("%s answered outcome %q", method, out.Outcome)
	case rpc.IsCode(err, rpc.CodeAborted):
		r.Told, r.Reason = ToldAbort, err.Error()
	default:
		r.Told, r.Reason = ToldUnknown, err.Error()
	}
}

// dialParticipants opens the client's connections to the participants,
// at the addresses the coordinator reaches them at; false if it could not
// learn them.
func (c *client) dialParticipants() bool {
	if c.parts != nil {
		return true
	}
	var nodes []api.NodeHealth
	if err := c.call(beginTimeout, api.MethodNodes, struct{}{}, &nodes); err != nil || len(nodes) != c.w.n {
		return false
	}
	for _, n := range nodes {
		c.parts = append(c.parts, rpc.NewFailover([]string{n.Address}, clientOptions(c.id)))
	}
	return true
}

func (c *client) call(timeout time.Duration, method string, params, result any) error {
	ctx, cancel := context.WithTimeout(c.w.ctx, timeout)
	defer cancel()
	return c.rpc.Call(ctx, method, params, result)
}

// everyNode has a probe insert on every participant.
func everyNode(n int) func(attempt int) []int {
	return func(int) []int {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out
	}
}

// probe runs transactions that insert on the nodes given for each attempt
// and commit, retrying until one commits or ctx ends. It shows that the
// cluster serves (again); its transactions are recorded like any other, as
// transactions of the coordinator incarnation current at their begin.
func (w *workload) probe(ctx context.Context, nodes func(attempt int) []int) (attempts int, err error) {
	c := &client{w: w, id: -1, rng: rand.New(rand.NewPCG(0, 0)), rpc: rpc.NewFailover(w.addrs, rpc.ClientOptions{DialTimeout: time.Second})}
	defer c.rpc.Close()
	for ctx.Err() == nil {
		attempts++
		c.seq++
		incarnation := w.gate.current()
		var b engine.BeginReply
		if err = c.call(beginTimeout, api.MethodBegin, struct{}{}, &b); err != nil {
			sleepCtx(ctx, 500*time.Millisecond)
			continue
		}
		r := &TxRecord{TxID: uint64(b.TxID), Incarnation: incarnation, Client: -1, Sent: make([]int, w.n), Acked: make([]int, w.n)}
		for _, nd := range nodes(attempts) {
			r.Sent[nd]++
			id := engine.NodeID(nd)
			key := fmt.Sprintf("probe-%d-%d-%d", incarnation, r.TxID, nd)
			if err = c.call(execTimeout, api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &id, SQL: insertSQL, Args: []any{key, incarnation, r.TxID, nd}}, nil); err != nil {
				r.noteExecError(err)
				break
			}
			r.Acked[nd]++
		}
		if r.Lost {
			c.finish(r, api.MethodRollback, rollbackTimeout)
		} else {
			c.finish(r, api.MethodCommit, commitTimeout)
		}
		w.add(r)
		if r.Told == ToldCommit {
			return attempts, nil
		}
		err = errors.New(r.Reason)
		w.log.Info("probe transaction did not commit; retrying", "tx", r.Key().String(), "told", r.Told.String(), "reason", r.Reason)
		sleepCtx(ctx, 500*time.Millisecond)
	}
	return attempts, fmt.Errorf("no probe transaction committed: %w (last: %v)", ctx.Err(), err)
}

// orphans begins k transactions of the given coordinator incarnation, each
// inserting one row on every participant, and leaves them open: the state
// a client that vanished leaves behind. They are recorded as orphaned, and
// returned with the first error that kept one from being begun.
func (w *workload) orphans(ctx context.Context, incarnation, k int) ([]*TxRecord, error) {
	c := &client{w: w, id: -1, rpc: rpc.NewFailover(w.addrs, rpc.ClientOptions{DialTimeout: time.Second})}
	defer c.rpc.Close()
	var out []*TxRecord
	for range k {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		b, err := c.beginPatiently(ctx, orphanBeginWithin)
		if err != nil {
			return out, fmt.Errorf("begin a transaction to leave open: %w", err)
		}
		r := &TxRecord{TxID: uint64(b.TxID), Incarnation: incarnation, Client: -1, Sent: make([]int, w.n), Acked: make([]int, w.n), Orphaned: true, Told: ToldUnknown}
		for nd := range w.n {
			r.Sent[nd]++
			id := engine.NodeID(nd)
			key := fmt.Sprintf("orphan-%d-%d-%d", incarnation, r.TxID, nd)
			if err := c.call(execTimeout, api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &id, SQL: insertSQL, Args: []any{key, incarnation, r.TxID, nd}}, nil); err != nil {
				r.noteExecError(err)
				break
			}
			r.Acked[nd]++
		}
		if r.Reason == "" {
			r.Reason = "left open; its coordinator was replaced"
		}
		w.add(r)
		out = append(out, r)
	}
	return out, nil
}

// orphanBeginWithin bounds the begins of transactions left open: the
// coordinator has just started and may still be recovering, but nothing
// else is wrong.
const orphanBeginWithin = 30 * time.Second

// beginPatiently retries begin until it gives an id or limit passes.
func (c *client) beginPatiently(ctx context.Context, limit time.Duration) (engine.BeginReply, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		var b engine.BeginReply
		err := c.call(beginTimeout, api.MethodBegin, struct{}{}, &b)
		if err == nil {
			return b, nil
		}
		sleepCtx(ctx, 200*time.Millisecond)
		if ctx.Err() != nil {
			return b, fmt.Errorf("no begin within %v: %w", limit, err)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// clientOptions are client i's: h2c, a batch stream per call, or one
// multiplexed stream, in turn. A short probe lets a multiplexed stream
// cut off by a partition go within the calls' own time scale.
func clientOptions(i int) rpc.ClientOptions {
	opts := rpc.ClientOptions{DialTimeout: time.Second}
	switch i % 3 {
	case 1:
		opts.Stream = true
	case 2:
		opts.Stream, opts.Multiplex, opts.PingTimeout = true, 1, time.Second
	}
	return opts
}
