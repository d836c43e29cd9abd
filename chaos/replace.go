package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// quietness is how far the cluster is from quiet: transactions whose state
// at their coordinator is not final, and prepared transactions of tpcd
// left on the participants' servers (a server that cannot be read counts
// as one).
type quietness struct {
	open, prepared int
	// gids are the prepared transactions by participant, as last read.
	gids [][]string
}

func (q quietness) String() string {
	return fmt.Sprintf("%d transactions not ended, %d prepared transactions (or unreadable servers) left", q.open, q.prepared)
}

// waitQuiet waits until every transaction of keys is final at the
// coordinator (which must be the incarnation that issued them) and no
// prepared transaction of tpcd is left on any participant's server. It
// returns how far from quiet the cluster was when ctx ended, with ctx's
// error.
func (c *cluster) waitQuiet(ctx context.Context, poller *statusPoller, keys []TxKey) (quietness, error) {
	for {
		q := quietness{open: poller.poll(ctx, keys), gids: make([][]string, c.n)}
		for i, uri := range c.dataURIs {
			gids, err := preparedLeft(ctx, uri)
			if err != nil {
				q.prepared++ // cannot tell yet
				continue
			}
			q.gids[i] = gids
			q.prepared += len(gids)
		}
		if q.open == 0 && q.prepared == 0 {
			return q, nil
		}
		if ctx.Err() != nil {
			return q, ctx.Err()
		}
		sleepCtx(ctx, 500*time.Millisecond)
	}
}

// replaceCoordinator stops the coordinator for good and starts a fresh
// one in a new state directory: an empty log, so a new cluster id and
// transaction ids from 1 again, while the participants keep running. The
// caller has made sure nothing of the old cluster is in doubt. It returns
// once the new coordinator serves and has told its cluster id, with a
// function that removes the old coordinator's state once its server is
// gone (unless the run keeps it): that wait is left to the caller, so that
// it does not hold up the clients.
func (c *cluster) replaceCoordinator(ctx context.Context) (retire func(context.Context), err error) {
	coord := c.nodes[0]
	old := c.coordinatorStateDir(c.current())
	oldPostmaster, _ := postmasterPID(filepath.Join(old, "pg"))
	coord.Kill()
	args, err := c.nextCoordinator()
	if err != nil {
		coord.Release() // the old coordinator comes back instead
		return nil, err
	}
	coord.SetArgs(args)
	coord.Release()
	retire = func(ctx context.Context) {
		if c.keep {
			return
		}
		// The old server goes down with its node (it is asked to quit
		// when its owner dies); its directory is only taking space.
		if oldPostmaster > 0 && !waitGone(ctx, oldPostmaster, 30*time.Second) {
			c.log.Warn("the replaced coordinator's postgres is still running; its directory stays", "pid", oldPostmaster, "dir", old)
			return
		}
		if err := os.RemoveAll(old); err != nil {
			c.log.Warn("could not remove the replaced coordinator's state", "dir", old, "err", err)
		}
	}
	if err := c.waitNodeServing(ctx, 0, time.Now().Add(2*time.Minute)); err != nil {
		return retire, fmt.Errorf("the new coordinator: %w", err)
	}
	if err := c.learnClusterID(ctx); err != nil {
		return retire, err
	}
	if ids := c.ClusterIDs(); len(ids) >= 2 && ids[len(ids)-1] == ids[len(ids)-2] {
		return retire, fmt.Errorf("the new coordinator reports the old cluster id %s: its log was not new", ids[len(ids)-1])
	}
	return retire, nil
}

// openWork counts the transactions that hold uncommitted writes open on
// the participants' data databases, idle between statements. With the
// clients paused after the old cluster was quiet, those are the ones a
// replaced coordinator left open: what the next coordinator's first
// transactions must not be taken for. A server that cannot be read counts
// as none.
func (c *cluster) openWork(ctx context.Context) int {
	n := 0
	for i, uri := range c.dataURIs {
		got, err := queryStrings(ctx, uri, `SELECT count(*)::text FROM pg_stat_activity
			WHERE datname = current_database() AND state LIKE 'idle in transaction%' AND backend_xid IS NOT NULL`)
		if err != nil || len(got) != 1 {
			c.log.Warn("cannot count the open transactions of a participant", "node", nodeName(i+1), "err", err)
			continue
		}
		k, _ := strconv.Atoi(got[0])
		n += k
	}
	return n
}

// waitGone waits until process pid no longer exists.
func waitGone(ctx context.Context, pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

// Replacement is one replace-coordinator fault that was carried out.
type Replacement struct {
	// Incarnation is the number of the new coordinator; Via the one
	// started in between, which left Orphans transactions open on every
	// participant before it was replaced in turn. OpenAtResume counts the
	// transactions with uncommitted writes open on the participants' data
	// databases when the clients resumed: the orphans' work, still there
	// for the new coordinator's transactions of the same ids to meet.
	Incarnation, Via, Orphans, OpenAtResume int
	// Quiet is how long the old cluster took to become quiet after the
	// clients were paused; Took the whole fault, until the new coordinator
	// served.
	Quiet, Took time.Duration
}

// replaceQuietLimit bounds the wait for the old cluster to become quiet
// before a replacement; a cluster that is not quiet by then keeps its
// coordinator, and the fault is counted as skipped.
const replaceQuietLimit = time.Minute

// replaceCoordinator is the replace-coordinator fault. A fresh coordinator
// is a new cluster that cannot settle anything of the old one, and a
// participant holding an old transaction in doubt refuses it (the
// protocol's promise). So the harness replaces the coordinator only when
// it knows nothing is in doubt: it pauses the clients between their
// transactions, lets the faults in effect heal, waits until every
// transaction of the old coordinator is final there and no participant's
// server holds a prepared transaction of tpcd, and only then starts a
// new coordinator on an empty log. That one leaves a few transactions open
// on every participant (work, nothing prepared: not in doubt) and is
// replaced by another fresh one in turn, which issues the same ids again:
// the participants must roll the open work back, and never take the
// newest coordinator's transactions for it. It runs on the injector's
// goroutine, so no other fault starts meanwhile.
func (in *injector) replaceCoordinator(ctx context.Context) {
	began := time.Now()
	old := in.c.current()
	in.log.Info("replace-coordinator: pausing the clients and waiting for quiet", "incarnation", old)
	if err := in.wl.gate.close(ctx); err != nil {
		in.wl.gate.open(old)
		return // the faults are over; this one was not carried out
	}
	for in.active() > 0 && ctx.Err() == nil {
		sleepCtx(ctx, 100*time.Millisecond)
	}
	qctx, cancel := context.WithTimeout(ctx, replaceQuietLimit)
	q, err := in.c.waitQuiet(qctx, in.poller, keysOf(in.wl.snapshot(), old))
	cancel()
	if err != nil {
		in.wl.gate.open(old)
		if ctx.Err() == nil {
			in.log.Warn("replace-coordinator skipped: the cluster was not quiet", "within", replaceQuietLimit, "state", q.String())
			in.mu.Lock()
			in.replaceSkipped = append(in.replaceSkipped, fmt.Sprintf("not quiet within %v: %s", replaceQuietLimit, q))
			in.mu.Unlock()
		}
		return
	}
	quiet := time.Since(began)
	// From here on the replacement is finished even if the faults end.
	rctx, cancel := context.WithTimeout(in.runCtx, 3*time.Minute)
	defer cancel()
	var retired []func(context.Context)
	defer func() {
		in.wl.gate.open(in.c.current())
		for _, retire := range retired {
			if retire != nil {
				retire(rctx)
			}
		}
	}()
	retire, err := in.c.replaceCoordinator(rctx)
	retired = append(retired, retire)
	if err != nil {
		in.fail(fmt.Errorf("replace the coordinator: %w", err))
		return
	}
	// The fresh coordinator's first ids are the ones the next fresh
	// coordinator will issue first, so transactions it leaves open on
	// every participant are met, within seconds and well inside the
	// participants' idle timeout, by new transactions of the same ids:
	// the case of a participant taking a new transaction for an old one
	// comes up every time instead of by chance.
	via := in.c.current()
	orphans, err := in.wl.orphans(rctx, via, orphansPerReplacement)
	if err != nil {
		in.fail(fmt.Errorf("leave transactions open on coordinator #%d: %w", via, err))
		return
	}
	retire, err = in.c.replaceCoordinator(rctx)
	retired = append(retired, retire)
	if err != nil {
		in.fail(fmt.Errorf("replace the coordinator #%d that left transactions open: %w", via, err))
		return
	}
	ids := in.c.ClusterIDs()
	rep := Replacement{Incarnation: in.c.current(), Via: via, Orphans: len(orphans), OpenAtResume: in.c.openWork(rctx), Quiet: quiet, Took: time.Since(began)}
	in.mu.Lock()
	in.replacements = append(in.replacements, rep)
	in.mu.Unlock()
	in.record(ReplaceCoordinator, nodeName(0), 0, "incarnation", rep.Incarnation, "cluster", ids[len(ids)-1],
		"via", via, "orphans", txIDs(orphans), "open_at_resume", rep.OpenAtResume, "quiet_after", quiet.Round(time.Millisecond), "took", rep.Took.Round(time.Millisecond))
}

// orphansPerReplacement is how many transactions the intermediate
// coordinator of a replacement leaves open: more than one client's worth,
// so that several of the next coordinator's first ids meet one.
const orphansPerReplacement = 3

func txIDs(records []*TxRecord) []uint64 {
	out := make([]uint64, len(records))
	for i, r := range records {
		out[i] = r.TxID
	}
	return out
}

// checkJoined reports every participant that is not bound to the cluster
// of the current coordinator. It is asked after a probe transaction wrote
// on every participant, so each one has heard of that cluster and must
// have joined it, leaving the replaced ones behind.
func (c *cluster) checkJoined(ctx context.Context) []string {
	ids := c.ClusterIDs()
	if len(ids) == 0 {
		return nil
	}
	want := ids[len(ids)-1]
	var problems []string
	for i := 1; i < len(c.nodeAddrs); i++ {
		got, err := pingCluster(ctx, []string{c.nodeAddrs[i]})
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s: cannot ask which cluster it belongs to: %v", nodeName(i), err))
		case got != want:
			problems = append(problems, fmt.Sprintf("%s belongs to cluster %q, not to the current coordinator's %s", nodeName(i), got, want))
		}
	}
	return problems
}
