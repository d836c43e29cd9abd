package crash

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/rpc"
)

// patterns are the participants a transaction writes to, in turn; p1, the
// one the participant failpoints arm, is in most of them.
var patterns = [][]engine.NodeID{{0, 1, 2}, {0, 1}, {1, 2}, {0, 2}, {2, 1, 0}}

// txRecord is what a client did and heard in one transaction. It inserts
// row (key, txid) on each of its nodes.
type txRecord struct {
	id    engine.TxID
	nodes []engine.NodeID
	key   int
	// answer is the outcome the client was told (by commit, or by rollback
	// after a failed statement), 0 if it heard none.
	answer engine.Outcome
	reason string
	err    string
	// commitCalled: the client asked to commit (it may have had no answer).
	commitCalled bool
}

// workload runs explicit transactions from several concurrent clients until
// stopped. Failed calls are expected while nodes are down; they are
// recorded, never fatal.
type workload struct {
	t       *testing.T
	c       *cluster
	addr    string
	nextKey atomic.Int64
	commits atomic.Int64 // commit answers received
	fails   atomic.Int64 // transactions that ended in an error

	mu   sync.Mutex
	recs []*txRecord

	stop chan struct{}
	wg   sync.WaitGroup
}

func startWorkload(t *testing.T, c *cluster, clients int) *workload {
	w := &workload{t: t, c: c, addr: c.coord.addr, stop: make(chan struct{})}
	for i := range clients {
		w.wg.Go(func() { w.client(i) })
	}
	t.Cleanup(w.halt)
	return w
}

func (w *workload) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}

// records stops the workload and returns what every client did.
func (w *workload) records() []*txRecord {
	w.halt()
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.recs)
}

func (w *workload) client(worker int) {
	cl := rpc.NewClient(w.addr, rpc.ClientOptions{})
	defer cl.Close()
	for i := 0; ; i++ {
		select {
		case <-w.stop:
			return
		default:
		}
		if !w.one(cl, patterns[(worker+i)%len(patterns)]) {
			// Nobody is listening (the coordinator is down): do not spin.
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// one runs a transaction; it returns false when it could not even begin.
func (w *workload) one(cl *rpc.Client, nodes []engine.NodeID) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var b engine.BeginReply
	if err := cl.Call(ctx, api.MethodBegin, struct{}{}, &b); err != nil {
		return false
	}
	rec := &txRecord{id: b.TxID, nodes: nodes, key: int(w.nextKey.Add(1))}
	w.mu.Lock()
	w.recs = append(w.recs, rec)
	w.mu.Unlock()
	if rec.key%2 == 0 {
		w.oneCall(ctx, cl, rec)
		return true
	}
	for _, n := range nodes {
		p := api.ExecParams{TxID: rec.id, Node: &n, SQL: "INSERT INTO kv VALUES ($1, $2)", Args: []any{rec.key, fmt.Sprint(rec.id)}}
		if err := cl.Call(ctx, api.MethodExec, p, nil); err != nil {
			rec.err = fmt.Sprintf("exec on %s: %v", n, err)
			w.fails.Add(1)
			var r engine.OutcomeReply
			if cl.Call(ctx, api.MethodRollback, api.TxParams{TxID: rec.id}, &r) == nil {
				rec.answer, rec.reason = r.Outcome, r.Reason
			}
			return true
		}
	}
	var r engine.OutcomeReply
	rec.commitCalled = true
	if err := cl.Call(ctx, api.MethodCommit, api.TxParams{TxID: rec.id}, &r); err != nil {
		rec.err = fmt.Sprintf("commit: %v", err)
		w.fails.Add(1)
		return true
	}
	rec.answer, rec.reason = r.Outcome, r.Reason
	if r.Outcome == engine.OutcomeCommit {
		w.commits.Add(1)
		w.checkApplied(ctx, cl, rec)
	}
	return true
}

// oneCall sends every statement of rec and its commit in one transact
// call, as a client of the single form does: each participant but the
// decider prepares right after its statement and votes to the decider.
func (w *workload) oneCall(ctx context.Context, cl *rpc.Client, rec *txRecord) {
	p := api.TransactParams{TxID: rec.id, Commit: true}
	for _, n := range rec.nodes {
		p.Statements = append(p.Statements, api.StatementParams{Node: &n, SQL: "INSERT INTO kv VALUES ($1, $2)", Args: []any{rec.key, fmt.Sprint(rec.id)}})
	}
	rec.commitCalled = true
	var r api.TransactReply
	err := cl.Call(ctx, api.MethodTransact, p, &r)
	switch {
	case err == nil && r.Outcome != nil:
		rec.answer, rec.reason = *r.Outcome, r.Reason
	case err == nil:
		rec.err = "transact answered without an outcome"
		w.fails.Add(1)
		return
	case rpc.IsCode(err, rpc.CodeAborted):
		// A statement failed, or the transaction was aborted: the answer
		// is an error, and the transaction rolled back.
		rec.answer, rec.err = engine.OutcomeAbort, fmt.Sprintf("transact: %v", err)
		w.fails.Add(1)
		return
	default:
		// No answer, or one that names no outcome: it may have committed.
		rec.err = fmt.Sprintf("transact: %v", err)
		w.fails.Add(1)
		return
	}
	if rec.answer == engine.OutcomeCommit {
		w.commits.Add(1)
		w.checkApplied(ctx, cl, rec)
	}
}

// checkApplied asks for the status of a transaction just committed. The
// commit answer only means decided; "committed" means applied on every
// participant, so then the row must already be visible on each of them.
func (w *workload) checkApplied(ctx context.Context, cl *rpc.Client, rec *txRecord) {
	var s engine.StatusReply
	if cl.Call(ctx, api.MethodStatus, api.TxParams{TxID: rec.id}, &s) != nil || s.State != "committed" {
		return
	}
	for _, n := range rec.nodes {
		var v string
		err := w.c.data[n].QueryRow(ctx, "SELECT v FROM kv WHERE k = $1", rec.key).Scan(&v)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			w.t.Errorf("tx %d: status says committed, but %s does not have its row yet", rec.id, n)
		case err == nil && v != fmt.Sprint(rec.id):
			w.t.Errorf("tx %d: key %d on %s holds %q", rec.id, rec.key, n, v)
		}
	}
}

// waitCommits waits for n more commit answers than there are now, which
// proves the cluster makes progress.
func (w *workload) waitCommits(n int64) {
	w.t.Helper()
	target := w.commits.Load() + n
	testcluster.EventuallyWithin(w.t, time.Minute, fmt.Sprintf("%d more commits", n), func() bool { return w.commits.Load() >= target })
}

// summary counts what happened, for the test log.
type summary struct {
	txs, committed, aborted            int
	toldCommit, toldAbort, toldNothing int
	forgotten                          int
	// Transactions whose client asked to commit and got no answer.
	committedUnanswered, abortedUnanswered int
}

func (s summary) String() string {
	return fmt.Sprintf("%d transactions: %d committed, %d aborted; clients told commit %d, abort %d, nothing %d "+
		"(of which asked to commit: %d committed, %d aborted); status forgotten %d",
		s.txs, s.committed, s.aborted, s.toldCommit, s.toldAbort, s.toldNothing,
		s.committedUnanswered, s.abortedUnanswered, s.forgotten)
}

// unsettledStates are coordinator states of transactions not yet ended.
var unsettledStates = []string{"active", "preparing", "committing", "aborting"}

// check waits until every transaction ended and nothing of ours is left
// prepared or marked, then proves the invariants on the data.
func (c *cluster) check(recs []*txRecord) summary {
	t := c.t
	t.Helper()
	status := map[engine.TxID]engine.StatusReply{}
	pending := slices.Clone(recs)
	testcluster.EventuallyWithin(t, 90*time.Second, "every transaction to end and no prepared transaction or marker to remain", func() bool {
		still := pending[:0]
		for _, r := range pending {
			s, err := c.txStatus(r.id)
			if err != nil || slices.Contains(unsettledStates, s.State) {
				still = append(still, r)
				continue
			}
			status[r.id] = s
		}
		pending = still
		if len(pending) > 0 {
			return false
		}
		for i := range c.data {
			if c.count(i, "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'tpcd:%' AND database = current_database()") > 0 ||
				c.count(i, "SELECT count(*) FROM tpcd_markers") > 0 {
				return false
			}
		}
		return true
	})

	rows := make([]map[int]string, len(c.data))
	for i := range c.data {
		rows[i] = c.rows(i)
	}
	logged := make([]map[engine.TxID]map[string]bool, len(c.logs))
	for i := range c.logs {
		logged[i] = c.outcomesLogged(i)
	}
	var s summary
	known := map[int]bool{}
	for _, r := range recs {
		known[r.key] = true
		s.txs++
		var on, off []string
		for _, n := range r.nodes {
			v, ok := rows[n][r.key]
			switch {
			case !ok:
				off = append(off, n.String())
			case v != fmt.Sprint(r.id):
				t.Errorf("tx %d: key %d on %s holds %q, not this transaction's row", r.id, r.key, n, v)
			default:
				on = append(on, n.String())
			}
		}
		for _, n := range r.nodes {
			_, has := rows[n][r.key]
			kinds := logged[n][r.id]
			if has && kinds[engine.PartAborted{}.Kind()] || !has && kinds[engine.PartCommitted{}.Kind()] {
				t.Errorf("tx %d: the log of %s records %v, but its row is there=%v", r.id, n, kinds, has)
			}
		}
		committed := len(off) == 0
		if len(on) > 0 && len(off) > 0 {
			t.Errorf("ATOMICITY: tx %d committed on %v and aborted on %v (client: %s %s %s; status %+v)",
				r.id, on, off, r.answer, r.reason, r.err, status[r.id])
			continue
		}
		if committed {
			s.committed++
		} else {
			s.aborted++
		}
		st := status[r.id]
		switch {
		case st.Outcome == engine.OutcomeCommit && !committed, st.Outcome == engine.OutcomeAbort && committed:
			t.Errorf("tx %d: coordinator says %s (%s), data says committed=%v", r.id, st.Outcome, st.State, committed)
		case st.State == "forgotten":
			s.forgotten++
		case st.Outcome == 0:
			t.Errorf("tx %d: coordinator status %+v names no outcome", r.id, st)
		}
		switch r.answer {
		case engine.OutcomeCommit:
			s.toldCommit++
			if !committed {
				t.Errorf("tx %d: client was told commit, but no participant has its rows", r.id)
			}
		case engine.OutcomeAbort:
			s.toldAbort++
			if committed {
				t.Errorf("tx %d: client was told abort (%s), but it committed", r.id, r.reason)
			}
		default:
			s.toldNothing++
			if r.commitCalled && committed {
				s.committedUnanswered++
			} else if r.commitCalled {
				s.abortedUnanswered++
			}
		}
	}
	for i, m := range rows {
		for k := range m {
			if !known[k] {
				t.Errorf("%s holds key %d that no client wrote", partName(i), k)
			}
		}
	}
	if v := c.violations(); len(v) > 0 {
		t.Errorf("nodes reported violations:\n%s", strings.Join(v, "\n"))
	}
	return s
}

// partiallyApplied returns the transactions of the workload that have
// their row on some of their participants and not on others: committed
// there, still prepared elsewhere.
func (c *cluster) partiallyApplied(w *workload) map[engine.TxID]bool {
	w.mu.Lock()
	recs := slices.Clone(w.recs)
	w.mu.Unlock()
	rows := make([]map[int]string, len(c.data))
	for i := range c.data {
		rows[i] = c.rows(i)
	}
	out := map[engine.TxID]bool{}
	for _, r := range recs {
		on := 0
		for _, n := range r.nodes {
			if _, ok := rows[n][r.key]; ok {
				on++
			}
		}
		if on > 0 && on < len(r.nodes) {
			out[r.id] = true
		}
	}
	return out
}

// stuckHalfApplied reports whether a transaction stays committed on some of
// its participants and not on others across a second look a moment later,
// so that a decision merely being applied right now does not count. With
// the coordinator down, only a crash between decision messages leaves that.
func (c *cluster) stuckHalfApplied(w *workload) bool {
	first := c.partiallyApplied(w)
	if len(first) == 0 {
		return false
	}
	time.Sleep(time.Second)
	for id := range c.partiallyApplied(w) {
		if first[id] {
			c.t.Logf("tx %d stays committed on some of its participants only while the coordinator is down", id)
			return true
		}
	}
	return false
}

// outcomesLogged reads participant i's log: the outcome event kinds it
// holds for each transaction. Events of finished transactions are
// compacted after a while, so a missing outcome proves nothing; a wrong one
// is a log that would mislead recovery and replay.
func (c *cluster) outcomesLogged(i int) map[engine.TxID]map[string]bool {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := map[engine.TxID]map[string]bool{}
	err := logstore.New(c.logs[i]).Scan(ctx, api.ParticipantName(engine.NodeID(i)), func(r logstore.Record) error {
		ev, err := engine.DecodeEvent(r.Payload)
		if err != nil {
			return fmt.Errorf("event %s: %w", r.Pos, err)
		}
		switch ev.(type) {
		case engine.PartCommitted, engine.PartAborted:
			if out[ev.Tx()] == nil {
				out[ev.Tx()] = map[string]bool{}
			}
			out[ev.Tx()][ev.Kind()] = true
		}
		return nil
	})
	if err != nil {
		c.t.Fatalf("read the log of %s: %v", partName(i), err)
	}
	return out
}

func (c *cluster) txStatus(id engine.TxID) (engine.StatusReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var s engine.StatusReply
	err := c.status.Call(ctx, api.MethodStatus, api.TxParams{TxID: id}, &s)
	return s, err
}

// count runs a count query on participant i's data database; when it fails
// (the server may be restarting) it answers 1, which is never "settled".
func (c *cluster) count(i int, sql string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var n int
	if err := c.data[i].QueryRow(ctx, sql).Scan(&n); err != nil {
		return 1
	}
	return n
}

func (c *cluster) rows(i int) map[int]string {
	c.t.Helper()
	return testcluster.KV(c.t, c.data[i])
}

// count0 runs a counting query on pool, which must answer.
func (c *cluster) count0(pool *pgxpool.Pool, sql string, args ...any) int {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var n int
	if err := pool.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		c.t.Fatalf("%s: %v", sql, err)
	}
	return n
}
