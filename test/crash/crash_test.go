package crash

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/db/embedpg"
	"github.com/tpcd/tpcd/failpoint"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testcluster"
)

// clients is the number of concurrent clients of the workload.
const clients = 8

// armedHit is the hit of the failpoint that kills: a few transactions pass
// the step first, so the crash lands among others in every phase.
const armedHit = "=3"

// TestCrashMatrix kills a node at every failpoint, restarts it and checks
// that recovery finishes every transaction consistently, under both
// protocols where the step exists in both. The participant steps whose
// recovery differs when the yes vote may leave before the Prepared event is
// durable run again with --lazy-prepared.
//
// Cases run in parallel (go test's -parallel, GOMAXPROCS by default): each
// has its own processes, ports and databases, and much of a case is spent
// waiting for processes and PostgreSQL to start.
func TestCrashMatrix(t *testing.T) {
	t.Parallel()
	type matrixCase struct {
		failpoint string
		protocol  string
		lazy      bool
	}
	var cases []matrixCase
	for _, fp := range failpoint.Names() {
		switch {
		case deciderOnly[fp]:
			cases = append(cases, matrixCase{failpoint: fp, protocol: "decider"})
		case classicOnly[fp]:
			cases = append(cases, matrixCase{failpoint: fp, protocol: "classic"})
		default:
			cases = append(cases, matrixCase{failpoint: fp, protocol: "classic"}, matrixCase{failpoint: fp, protocol: "decider"})
		}
	}
	for _, fp := range []string{failpoint.PartAfterPrepare, failpoint.PartBeforePreparedLogged, failpoint.PartAfterPreparedLogged, failpoint.PartAfterVote} {
		cases = append(cases, matrixCase{failpoint: fp, protocol: "classic", lazy: true})
	}
	for _, tc := range cases {
		name := tc.protocol + "/" + tc.failpoint
		if tc.lazy {
			name += "/lazy-prepared"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			armed := partName(1)
			if strings.HasPrefix(tc.failpoint, "coordinator/") {
				armed = coordName
			}
			c := newCluster(t, clusterSpec{participants: 3, lazyPrepared: tc.lazy, protocol: tc.protocol})
			hit := armedHit
			if trigger := triggers[tc.failpoint]; trigger != nil {
				hit = "=1"
			}
			c.start(armed, tc.failpoint+hit)
			up := time.Since(began)
			w := startWorkload(t, c, clients)
			if trigger := triggers[tc.failpoint]; trigger != nil {
				trigger(c, w)
			}

			p := c.proc(armed)
			st := p.exited(t, time.Minute)
			if !killedBySIGKILL(st) {
				t.Fatalf("%s ended with %v, want SIGKILL by failpoint %s:\n%s", armed, st, tc.failpoint, tail(p.log(), 40))
			}
			if !strings.Contains(p.log(), "failpoint "+tc.failpoint+" fired") {
				t.Fatalf("%s was killed, but not by failpoint %s:\n%s", armed, tc.failpoint, tail(p.log(), 40))
			}
			died := time.Since(began)
			if check := whileDown[tc.failpoint]; check != nil && !(tc.lazy && lazyMayFinish[tc.failpoint]) && !(tc.protocol == "decider" && deciderMayFinish[tc.failpoint]) {
				check(c, w)
			}
			if p != c.coord && !c.coord.running() {
				c.restart(c.coord) // a trigger killed it
			}
			c.restart(p)
			w.waitCommits(5)
			live := time.Since(began)
			s := c.check(w.records())
			if check := afterwards[tc.failpoint]; check != nil {
				check(t, c, s)
			}
			t.Logf("%s killed at %s, restarted: %s (up %s, died %s, live again %s, settled %s)", armed, name, s,
				up.Round(time.Millisecond), died.Round(time.Millisecond), live.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
		})
	}
}

// deciderOnly and classicOnly are the failpoints of one protocol's steps.
var (
	deciderOnly = map[string]bool{
		failpoint.CoordBeforePreparingLogged: true, failpoint.CoordAfterBranchAsked: true, failpoint.PartBeforeBranchCommit: true,
		failpoint.PartAfterBranchCommit: true, failpoint.PartAfterSettle: true,
	}
	// The forced commit decision exists in the classic protocol only.
	classicOnly = map[string]bool{failpoint.CoordBeforeDecisionLogged: true, failpoint.CoordAfterDecisionLogged: true}
)

// deciderMayFinish marks the steps after which, with a decider, the
// branches left in doubt settle with the decider while the coordinator is
// down, so nothing need stay half applied.
var deciderMayFinish = map[string]bool{failpoint.CoordAfterDecisionSent: true}

// triggers bring about the situation a failpoint waits for when the
// workload alone does not.
//
// A decider settles (reads its marker, or makes its rollback final) only
// when its branch is asked about before it could commit. Votes go straight
// to the decider, so a coordinator crash seldom leaves one so: freezing a
// voter does. p1 decides the single-form transactions over {p1, p2} (a tie
// goes to the lower node); with p2 frozen, p1 waits for p2's vote, the
// coordinator gives up on it after --timeout and asks p1 to settle, and p1
// rolls back (at once if its commit request had not come yet, else after
// its patience) and settles. Killing the coordinator mid-commit, the other
// way there, is tried between rounds.
var triggers = map[string]func(*cluster, *workload){
	failpoint.PartAfterSettle: func(c *cluster, w *workload) {
		p1, p2 := c.proc(partName(1)), c.proc(partName(2))
		for round := 0; round < 5 && p1.running(); round++ {
			w.waitCommits(3)
			p2.freeze(c.t)
			frozeAt := time.Now()
			testcluster.EventuallyWithin(c.t, time.Minute, "p1 to settle a branch while p2 is frozen, or 20 seconds",
				func() bool { return !p1.running() || time.Since(frozeAt) > 20*time.Second })
			p2.thaw(c.t)
			if !p1.running() {
				return
			}
			w.waitCommits(3)
			c.coord.kill(c.t)
			testcluster.EventuallyWithin(c.t, 30*time.Second, "p1 to be asked as the decider, or a few seconds", func() bool {
				return !p1.running() || time.Since(c.coord.diedAt()) > 4*time.Second
			})
			if p1.running() {
				c.restart(c.coord)
			}
		}
	},
}

// whileDown proves, before the killed node restarts, that the crash left
// the state its failpoint promises, so that a case cannot pass without
// exercising its recovery path.
var whileDown = map[string]func(*cluster, *workload){
	failpoint.CoordAfterDecisionSent: func(c *cluster, w *workload) {
		testcluster.EventuallyWithin(c.t, 30*time.Second, "a transaction committed on some participants and not on others",
			func() bool { return c.stuckHalfApplied(w) })
	},
	failpoint.PartAfterPrepare:         preparedOnP1,
	failpoint.PartBeforePreparedLogged: preparedOnP1,
	failpoint.PartAfterPreparedLogged:  preparedOnP1,
	failpoint.PartAfterVote:            preparedOnP1,
	failpoint.CoordAfterBranchAsked: func(c *cluster, _ *workload) {
		// The branches in doubt ask the decider, not the coordinator: they
		// settle while it is down.
		n0 := c.prepared()
		if n0 == 0 {
			// On a loaded machine the branches may have settled with their
			// decider before this check ran: then the participants' logs
			// show that a branch of the transaction being decided prepared.
			tx := c.count0(c.coordLog, `SELECT coalesce(max((e->'data'->>'tx')::bigint), 0) FROM tpcd_log l, jsonb_array_elements(l.events) e
				WHERE e->>'type' = 'coord.preparing' AND e->'data' ? 'decider' AND NOT EXISTS (
					SELECT 1 FROM tpcd_log l2, jsonb_array_elements(l2.events) e2
					WHERE e2->>'type' = 'coord.decided' AND e2->'data'->>'tx' = e->'data'->>'tx')`)
			logged := 0
			for _, log := range c.logs {
				logged += c.count0(log, `SELECT count(*) FROM tpcd_log l, jsonb_array_elements(l.events) e
					WHERE e->>'type' = 'part.prepared' AND (e->'data'->>'tx')::bigint = $1`, tx)
			}
			if tx == 0 || logged == 0 {
				c.t.Fatalf("the coordinator died after asking a decider (undecided tx %d), but no branch of it prepared anywhere", tx)
			}
			return
		}
		testcluster.EventuallyWithin(c.t, 30*time.Second, fmt.Sprintf("the %d prepared branches to settle with their deciders while the coordinator is down", n0),
			func() bool { return c.prepared() == 0 })
	},
}

// prepared counts the prepared transactions of every participant.
func (c *cluster) prepared() int {
	n := 0
	for i := range c.data {
		n += c.count(i, "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'tpcd:%' AND database = current_database()")
	}
	return n
}

// lazyMayFinish marks the steps after which, with --lazy-prepared, the yes
// vote has already left, so the decision may come back and be applied
// before the process dies: no prepared transaction need be left then.
var lazyMayFinish = map[string]bool{
	failpoint.PartBeforePreparedLogged: true,
	failpoint.PartAfterPreparedLogged:  true,
}

// preparedOnP1 checks that the killed participant left a prepared
// transaction for its recovery to settle.
func preparedOnP1(c *cluster, _ *workload) {
	if n := c.count(1, "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'tpcd:%' AND database = current_database()"); n < 1 {
		c.t.Fatalf("p1 died at a prepared transaction, but none is prepared in its data database")
	}
}

// afterwards proves the same from the outcome, for the coordinator steps
// around the forced decision: the transaction whose client never heard an
// answer must have aborted (decision lost) or committed (decision durable).
var afterwards = map[string]func(*testing.T, *cluster, summary){
	failpoint.CoordBeforeDecisionLogged: func(t *testing.T, _ *cluster, s summary) {
		if s.abortedUnanswered < 1 {
			t.Errorf("no transaction whose commit went unanswered aborted: the lost decision was not exercised")
		}
	},
	// The deciders committed during the linger, before coord.preparing was
	// durable: the restarted coordinator must have learned of those
	// commits from their markers.
	failpoint.CoordBeforePreparingLogged: func(t *testing.T, c *cluster, _ summary) {
		if !strings.Contains(c.coord.log(), "adopted as committed") {
			t.Errorf("the restarted coordinator adopted no transaction from a decider's marker: the lost coord.preparing was not exercised")
		}
	},
	failpoint.CoordAfterDecisionLogged: func(t *testing.T, _ *cluster, s summary) {
		if s.committedUnanswered < 1 {
			t.Errorf("no transaction whose commit went unanswered committed: the durable decision was not exercised")
		}
	},
}

// TestPostgresCrash kills a PostgreSQL server under load and restarts it;
// the tpcd nodes keep running and must recover on their own.
func TestPostgresCrash(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, server string
		// place puts databases of the killed server into the cluster spec.
		place func(spec *clusterSpec, db func(string) string)
		// hit tells that the load ran into the dead server.
		hit func(c *cluster, w *workload, failsBefore int64) bool
	}{
		{
			name: "participant-data-server", server: "data server of p1",
			place: func(spec *clusterSpec, db func(string) string) { spec.partData = map[int]string{1: db("data")} },
			hit:   func(c *cluster, w *workload, before int64) bool { return w.fails.Load() >= before+3 },
		},
		{
			name: "coordinator-log-server", server: "log server of the coordinator",
			place: func(spec *clusterSpec, db func(string) string) { spec.coordLog = db("log") },
			hit: func(c *cluster, w *workload, _ int64) bool {
				return strings.Contains(c.coord.log(), "log append failed")
			},
		},
		{
			// The embedded default's layout: one server holds both.
			name: "participant-log-and-data-server", server: "log and data server of p1",
			place: func(spec *clusterSpec, db func(string) string) {
				spec.partLog, spec.partData = map[int]string{1: db("log")}, map[int]string{1: db("data")}
			},
			hit: func(c *cluster, w *workload, before int64) bool {
				return w.fails.Load() >= before+3 && strings.Contains(c.parts[1].log(), "log append failed")
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			// On its unix socket alone: the TCP port of a killed server
			// could be taken before its restart by a port some test asked
			// the kernel for.
			pg := pgtest.NewCluster(t, embedpg.Options{UnixSocketOnly: true})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			spec := clusterSpec{participants: 3}
			tc.place(&spec, func(name string) string {
				if err := pg.CreateDatabase(ctx, name); err != nil {
					t.Fatal(err)
				}
				return pg.URI(name)
			})
			c := newCluster(t, spec)
			c.start("", "")
			w := startWorkload(t, c, clients)
			w.waitCommits(20)
			if err := pg.Kill(); err != nil {
				t.Fatal(err)
			}
			fails := w.fails.Load()
			testcluster.EventuallyWithin(t, time.Minute, "the load to run into the dead server", func() bool { return tc.hit(c, w, fails) })
			if err := pg.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			w.waitCommits(10)
			s := c.check(w.records())
			t.Logf("%s killed and restarted: %s (%s)", tc.server, s, time.Since(began).Round(time.Millisecond))
		})
	}
}
