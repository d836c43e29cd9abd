package replay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/replay"
)

// text renders reports of several logs as one golden file.
func text(t *testing.T, reps ...*replay.Report) string {
	t.Helper()
	return textAfter(t, nil, reps...)
}

// textAfter is text for logs a live cluster wrote before the test appended
// to them: the cluster groups events into rows as timing has it, so the
// positions of report i are shown from lives[i], its last row, on: "#L+1.0"
// is the first event of the first row appended after the cluster's.
func textAfter(t *testing.T, lives []int64, reps ...*replay.Report) string {
	t.Helper()
	var b bytes.Buffer
	for i, r := range reps {
		if i > 0 {
			b.WriteString("\n----\n\n")
		}
		var one bytes.Buffer
		if err := replay.WriteText(&one, r); err != nil {
			t.Fatal(err)
		}
		s := one.String()
		if lives != nil {
			s = positionRE.ReplaceAllStringFunc(s, func(pos string) string {
				m := positionRE.FindStringSubmatch(pos)
				seq, err := strconv.ParseInt(m[1], 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return fmt.Sprintf("#L%+d.%s", seq-lives[i], m[2])
			})
		}
		b.WriteString(s)
	}
	return normalize(b.String())
}

var positionRE = regexp.MustCompile(`#([0-9]+)\.([0-9]+)`)

// lastRows returns the last row of each log.
func lastRows(t *testing.T, logs ...logRef) []int64 {
	t.Helper()
	var out []int64
	for _, l := range logs {
		seq, _, err := logstore.New(l.log).Last(context.Background(), l.node)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, seq)
	}
	return out
}

// runTpcd runs the tpcd binary and returns its stdout and exit status.
func runTpcd(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(testbin.Binary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &exit):
		return stdout.String(), stderr.String(), exit.ExitCode()
	}
	t.Fatalf("run tpcd %v: %v", args, err)
	return "", "", 0
}

// replayJSON runs `tpcd replay ... --format json` and decodes the report.
func replayJSON(t *testing.T, wantExit int, args ...string) *replay.Report {
	t.Helper()
	out, stderr, code := runTpcd(t, append([]string{"replay", "--format", "json"}, args...)...)
	if code != wantExit {
		t.Fatalf("tpcd replay %v: exit %d, want %d; stderr: %s; stdout: %s", args, code, wantExit, stderr, out)
	}
	var rep replay.Report
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("tpcd replay %v: output is not a report: %v\n%s", args, err, out)
	}
	return &rep
}

func findTx(n replay.NodeReport, tx engine.TxID) *replay.TxReport {
	for i := range n.Transactions {
		if n.Transactions[i].Tx == uint64(tx) {
			return &n.Transactions[i]
		}
	}
	return nil
}

func findings(n replay.NodeReport) map[uint64]replay.Finding {
	out := map[uint64]replay.Finding{}
	if n.Data != nil {
		for _, f := range n.Data.Findings {
			out[f.Tx] = f
		}
	}
	return out
}

// TestReplayCluster replays the logs of a real cluster: committed and
// aborted transactions, then an in-doubt transaction made by hand (a
// Prepared event with a real PREPARE TRANSACTION behind it, and an
// undecided coordinator), which a restart must resolve as replay says it
// will; then inconsistencies of every category, made by hand.
func TestReplayCluster(t *testing.T) {
	ctx := context.Background()
	c := startCluster(t, 2, -1) // no compaction: ended transactions stay countable

	tx := c.begin()
	c.Exec(tx, 0, "INSERT INTO kv VALUES (1, 'a')")
	c.Exec(tx, 1, "INSERT INTO kv VALUES (1, 'a')")
	c.MustCommit(tx)
	c.settled()

	tx = c.begin()
	c.Exec(tx, 0, "INSERT INTO kv VALUES (2, 'b')")
	c.Exec(tx, 1, "INSERT INTO kv VALUES (2, 'b')")
	c.Rollback(tx)
	c.settled()

	tx = c.begin()
	c.Exec(tx, 0, "INSERT INTO kv VALUES (3, 'c')")
	if _, err := c.TryExec(tx, 1, "INSERT INTO kv VALUES (1, 'duplicate')"); err == nil {
		t.Fatal("a duplicate key was accepted")
	}
	if r := c.Commit(tx); r.Outcome != engine.OutcomeAbort {
		t.Fatalf("tx %d with a failed statement: %s", tx, r.Outcome)
	}
	c.settled()
	c.Stop()

	logs := c.logs()
	lives := lastRows(t, logs...)
	coord := replayOf(t, logs[0], replay.Options{}).Nodes[0]
	if coord.Coordinator.Participants != 2 || !coord.Coordinator.Inferred {
		t.Errorf("participants: %+v, want 2 inferred from the events", coord.Coordinator)
	}
	if coord.States["committed"] != 3 || coord.States["aborted"] != 2 {
		t.Errorf("coordinator states %v, want 3 committed (two CREATE TABLE and one insert) and 2 aborted", coord.States)
	}

	// An in-doubt transaction made by hand, as a crash would leave it: the
	// coordinator sent prepare and died undecided; participant 0 prepared,
	// logged Prepared and voted yes.
	inDoubt := engine.TxID(coord.Coordinator.NextTx)
	epoch := engine.Epoch(coord.Epoch)
	gid := engine.GID{Cluster: coord.Cluster, Epoch: epoch, Tx: inDoubt, Node: 0}.String()
	appendEvents(t, logs[0].log, api.CoordinatorName, engine.CoordPreparing{TxID: inDoubt, Epoch: epoch, Participants: []engine.NodeID{0}})
	appendEvents(t, logs[1].log, logs[1].node, engine.PartPrepared{TxID: inDoubt, GID: gid})
	prepareByHand(t, logs[1].data, gid, inDoubt, 10, true)

	reps := []*replay.Report{}
	for _, l := range logs {
		rep := replayOf(t, l, replay.Options{})
		if !rep.Consistent() {
			t.Errorf("%s: %d problems in a consistent log", l.node, rep.Problems)
		}
		reps = append(reps, rep)
	}
	golden(t, "cluster.golden", textAfter(t, lives, reps...))
	if tr := findTx(reps[0].Nodes[0], inDoubt); tr == nil || tr.State != "preparing" || !tr.InDoubt {
		t.Errorf("coordinator: tx %d is %+v, want preparing and undecided", inDoubt, tr)
	}
	if tr := findTx(reps[1].Nodes[0], inDoubt); tr == nil || tr.State != "prepared" || !tr.InDoubt || tr.PreparedInDB == nil || !*tr.PreparedInDB {
		t.Errorf("participant-0: tx %d is %+v, want prepared, in doubt, prepared in the database", inDoubt, tr)
	}

	// The command agrees, in JSON, with exit status 0.
	rep := replayJSON(t, 0, "--log-db", logs[1].logURI, "--data-db", logs[1].dataURI)
	if len(rep.Nodes) != 1 || rep.Nodes[0].Node != "participant-0" || rep.Nodes[0].Data == nil || rep.Nodes[0].Data.Prepared != 1 {
		t.Errorf("tpcd replay --format json: %+v", rep)
	}
	rep = replayJSON(t, 0, "--log-db", logs[0].logURI, "--tx", "4")
	if tr := rep.Nodes[0].Transactions; len(tr) != 1 || tr[0].State != "aborted" || tr[0].Outcome != "abort" || tr[0].Reason != "rolled back by client" || len(tr[0].Events) != 2 {
		t.Errorf("--tx 4 of the coordinator: %+v, want aborted by the client, with its 2 events", tr)
	}

	// What replay predicted is what a restart does: the coordinator aborts
	// the undecided transaction and the participant rolls it back. The
	// coordinator starts first so that each participant's question at
	// start (who is the coordinator?) finds it and each logs the new epoch,
	// which problems.golden shows: a participant started first may never
	// ask again when no message comes its way.
	c.StartCoordinator()
	for i := range c.Parts {
		c.StartParticipant(i)
	}
	for _, l := range logs[1:] {
		testcluster.Eventually(t, l.node+" logs the new epoch", func() bool {
			return replayOf(t, l, replay.Options{}).Nodes[0].Epoch == uint64(epoch)+1
		})
	}
	c.settled()
	var n int
	if err := logs[1].data.QueryRow(ctx, "SELECT count(*) FROM kv WHERE k = 10").Scan(&n); err != nil || n != 0 {
		t.Fatalf("the in-doubt row: count %d, err %v; want rolled back", n, err)
	}
	tx = c.begin()
	if tx <= inDoubt {
		t.Errorf("new transaction id %d reuses an id up to %d", tx, inDoubt)
	}
	c.Exec(tx, 0, "INSERT INTO kv VALUES (4, 'd')")
	c.MustCommit(tx)
	c.settled()
	c.Stop()

	injectProblems(t, logs, epoch+1)
}

// injectProblems breaks the logs and data databases of a stopped cluster
// in every way the data check knows, and checks replay tells each one.
func injectProblems(t *testing.T, logs []logRef, epoch engine.Epoch) {
	ctx := context.Background()
	lives := lastRows(t, logs[1], logs[2])
	coord := replayOf(t, logs[0], replay.Options{}).Nodes[0]
	next := engine.TxID(coord.Coordinator.NextTx)
	gid := func(tx engine.TxID, n engine.NodeID) string {
		return engine.GID{Cluster: coord.Cluster, Epoch: epoch, Tx: tx, Node: n}.String()
	}
	p0, p1 := logs[1], logs[2]
	marker := func(l logRef, tx engine.TxID, g string) {
		if _, err := l.data.Exec(ctx, "INSERT INTO tpcd_markers (gid, tx) VALUES ($1, $2)", g, int64(tx)); err != nil {
			t.Fatal(err)
		}
	}

	// participant-0: no problem: a commit a restart logs, and a logged
	// commit whose marker awaits deletion, which is no finding at all.
	commitUnlogged, committed := next, next+1
	appendEvents(t, p0.log, p0.node, engine.PartPrepared{TxID: commitUnlogged, GID: gid(commitUnlogged, 0)},
		engine.PartPrepared{TxID: committed, GID: gid(committed, 0)},
		engine.PartCommitted{TxID: committed, GID: gid(committed, 0)})
	marker(p0, commitUnlogged, gid(commitUnlogged, 0))
	marker(p0, committed, gid(committed, 0))
	rep := replayOf(t, p0, replay.Options{})
	if !rep.Consistent() {
		t.Errorf("participant-0 with a commit not logged yet and a marker awaiting deletion: %d problems", rep.Problems)
	}
	fs := findings(rep.Nodes[0])
	if _, ok := fs[uint64(committed)]; fs[uint64(commitUnlogged)].Category != replay.FindingCommitUnlogged || ok || len(fs) != 1 {
		t.Errorf("participant-0 findings: %+v, want tx %d's commit-unlogged alone", fs, commitUnlogged)
	}

	// participant-0: rolled back behind the log's back.
	missing := next + 2
	appendEvents(t, p0.log, p0.node, engine.PartPrepared{TxID: missing, GID: gid(missing, 0)})

	// participant-1: prepared with no event, prepared although committed in
	// the log, a marker the log does not know, a violation, and an event no
	// tpcd can decode.
	orphan, stillPrepared, stray, violated, committedViolated := next+3, next+4, next+5, next+6, next+7
	prepareByHand(t, p1.data, gid(orphan, 1), orphan, 20, true)
	appendEvents(t, p1.log, p1.node, engine.PartPrepared{TxID: stillPrepared, GID: gid(stillPrepared, 1)},
		engine.PartCommitted{TxID: stillPrepared, GID: gid(stillPrepared, 1)})
	prepareByHand(t, p1.data, gid(stillPrepared, 1), stillPrepared, 21, true)
	marker(p1, stray, gid(stray, 1))
	appendEvents(t, p1.log, p1.node, engine.PartViolation{TxID: violated, Detail: "made by hand"})
	// A violation logged after a commit (an abort decision that came while
	// the marker was being deleted) is evidence, not state: the marker
	// still awaits deletion, no finding of its own.
	appendEvents(t, p1.log, p1.node, engine.PartPrepared{TxID: committedViolated, GID: gid(committedViolated, 1)},
		engine.PartCommitted{TxID: committedViolated, GID: gid(committedViolated, 1)},
		engine.PartViolation{TxID: committedViolated, Detail: "coordinator decided abort, but this participant committed the transaction"})
	marker(p1, committedViolated, gid(committedViolated, 1))
	if _, err := logstore.New(p1.log).Append(ctx, p1.node, []logstore.Entry{{
		Tx: uint64(violated), Event: []byte(`{"type":"part.from_the_future","v":1,"data":{"tx":1}}`),
	}}); err != nil {
		t.Fatal(err)
	}

	r0, r1 := replayOf(t, p0, replay.Options{}), replayOf(t, p1, replay.Options{})
	golden(t, "problems.golden", textAfter(t, lives, r0, r1))
	if r0.Problems != 1 || findings(r0.Nodes[0])[uint64(missing)].Category != replay.FindingMissing {
		t.Errorf("participant-0: %d problems, findings %+v; want the missing one", r0.Problems, findings(r0.Nodes[0]))
	}
	want := map[engine.TxID]string{orphan: replay.FindingOrphan, stillPrepared: replay.FindingStillPrepared, stray: replay.FindingStrayMarker}
	got := findings(r1.Nodes[0])
	for tx, cat := range want {
		if f := got[uint64(tx)]; f.Category != cat || !f.Problem {
			t.Errorf("participant-1 tx %d: %+v, want a %s problem", tx, f, cat)
		}
	}
	n1 := r1.Nodes[0]
	if len(n1.Violations) != 2 || len(n1.Undecodable) != 1 || r1.Problems != 6 {
		t.Errorf("participant-1: %d violations, %d undecodable, %d problems; want 2, 1, 6", len(n1.Violations), len(n1.Undecodable), r1.Problems)
	}
	if f, ok := got[uint64(committedViolated)]; ok {
		t.Errorf("participant-1 tx %d, committed with its marker and a violation after: %+v, want no finding", committedViolated, f)
	}

	// The command exits 2 and its JSON says why; --tx narrows it down. The
	// scenario is one of a participant with eager Prepared events.
	rep = replayJSON(t, 2, "--log-db", p1.logURI, "--data-db", p1.dataURI, "--node", "participant-1", "--no-lazy-prepared")
	if rep.Problems != 6 {
		t.Errorf("tpcd replay: %d problems, want 6", rep.Problems)
	}
	rep = replayJSON(t, 2, "--log-db", p1.logURI, "--data-db", p1.dataURI, "--tx", itoa(orphan), "--no-lazy-prepared")
	if rep.Problems != 1 || len(rep.Nodes[0].Data.Findings) != 1 || rep.Nodes[0].Data.Findings[0].Category != replay.FindingOrphan {
		t.Errorf("tpcd replay --tx %d: %+v", orphan, rep.Nodes[0])
	}
	// By default replay assumes lazy Prepared events, as tpcd participant
	// does: the unlogged prepared transaction is in doubt, not a problem.
	rep = replayJSON(t, 0, "--log-db", p1.logURI, "--data-db", p1.dataURI, "--tx", itoa(orphan))
	if rep.Problems != 0 || len(rep.Nodes[0].Data.Findings) != 1 || rep.Nodes[0].Data.Findings[0].Category != replay.FindingPreparedUnlogged {
		t.Errorf("tpcd replay --tx %d (lazy by default): %+v", orphan, rep.Nodes[0])
	}
	rep = replayJSON(t, 0, "--log-db", p1.logURI, "--data-db", p1.dataURI, "--tx", itoa(next+100))
	if rep.Nodes[0].Transactions[0].State != "no events" {
		t.Errorf("tpcd replay --tx of an unknown transaction: %+v", rep.Nodes[0].Transactions)
	}
}

func itoa(tx engine.TxID) string { return strconv.FormatUint(uint64(tx), 10) }

// TestReplaySharedLog replays a log database shared by a coordinator and a
// participant, built by hand: replay reads the coordinator's decision to
// tell an abort not yet logged from a rolled-back commit, and infers the
// coordinator's participant count from its events.
func TestReplaySharedLog(t *testing.T) {
	ctx := context.Background()
	logPool := migrated(t, db.MigrateLog)
	dataPool := migrated(t, db.MigrateData)
	const cluster = "0b9e5f3a-8d1c-4a52-9a4e-1c2d3e4f5a6b"
	g := func(tx engine.TxID) string { return engine.GID{Cluster: cluster, Epoch: 1, Tx: tx, Node: 0}.String() }
	three := []engine.NodeID{0, 2}
	appendEvents(t, logPool, api.CoordinatorName,
		engine.CoordStarted{Cluster: cluster, Epoch: 1},
		engine.CoordTxIDsReserved{Through: 1024},
		engine.CoordPreparing{TxID: 1, Epoch: 1, Participants: []engine.NodeID{0}},
		engine.CoordDecided{TxID: 1, Epoch: 1, Outcome: engine.OutcomeAbort, Participants: []engine.NodeID{0}, Reason: "p1 voted no"},
		engine.CoordPreparing{TxID: 2, Epoch: 1, Participants: three},
		engine.CoordDecided{TxID: 2, Epoch: 1, Outcome: engine.OutcomeCommit, Participants: three},
		engine.CoordPreparing{TxID: 3, Epoch: 1, Participants: three},
		engine.CoordDecided{TxID: 3, Epoch: 1, Outcome: engine.OutcomeCommit, Participants: three},
		engine.CoordEnded{TxID: 3},
	)
	appendEvents(t, logPool, api.ParticipantName(0),
		engine.PartEpochSeen{Cluster: cluster, Epoch: 1},
		engine.PartPrepared{TxID: 1, GID: g(1)},
		engine.PartPrepared{TxID: 2, GID: g(2)},
		engine.PartPrepared{TxID: 3, GID: g(3)},
		engine.PartCommitted{TxID: 3, GID: g(3)},
		engine.PartForgotten{TxID: 3},
	)

	rep, err := replay.Run(ctx, replay.Options{Log: logPool, Data: dataPool, Events: 2})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "shared.golden", text(t, rep))
	c := rep.Nodes[0].Coordinator
	if c.Participants != 3 || !c.Inferred || c.NextTx != 1025 {
		t.Errorf("coordinator facts %+v: want 3 participants inferred, next tx 1025", c)
	}
	fs := findings(rep.Nodes[1])
	if f := fs[1]; f.Category != replay.FindingAbortUnlogged || f.Problem {
		t.Errorf("tx 1 (coordinator decided abort): %+v", f)
	}
	if f := fs[2]; f.Category != replay.FindingMissing || !f.Problem || !strings.Contains(f.Detail, "decided commit") {
		t.Errorf("tx 2 (coordinator decided commit): %+v", f)
	}
	if rep.Problems != 1 {
		t.Errorf("%d problems, want 1", rep.Problems)
	}

	// Told the participant count, replay takes it; told too few, the events
	// naming other nodes are reported, as a restart would refuse them.
	rep, err = replay.Run(ctx, replay.Options{Log: logPool, Node: api.CoordinatorName, Participants: 2})
	if err != nil {
		t.Fatal(err)
	}
	if n := rep.Nodes[0]; n.Coordinator.Inferred || len(n.Undecodable) != 4 {
		t.Errorf("coordinator with 2 participants: %+v, want 4 events refused", n.Undecodable)
	}

	// Options that make no sense are errors, not reports.
	for _, opts := range []replay.Options{
		{Log: logPool, Node: "participant-7"},
		{Log: logPool, Node: "somebody"},
		{Log: logPool, Node: api.CoordinatorName, Data: dataPool},
		{Log: dataPool},
	} {
		if _, err := replay.Run(ctx, opts); err == nil {
			t.Errorf("Run with node %q: no error", opts.Node)
		} else {
			t.Logf("node %q: %v", opts.Node, err)
		}
	}
}

func migrated(t *testing.T, migrate func(context.Context, *pgxpool.Pool, *slog.Logger) error) *pgxpool.Pool {
	t.Helper()
	return migratedURI(t, pgtest.NewDB(t), migrate)
}

// migratedURI opens a pool on uri, closed when the test ends, and migrates it.
func migratedURI(t *testing.T, uri string, migrate func(context.Context, *pgxpool.Pool, *slog.Logger) error) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := migrate(context.Background(), pool, nil); err != nil {
		t.Fatal(err)
	}
	return pool
}

// TestReplayCommandErrors checks that what is not a replay exits neither 0
// nor 2: status 1 for errors while running, and the usage status (1 too,
// as for every tpcd command) for flags it rejects before running.
func TestReplayCommandErrors(t *testing.T) {
	logURI := pgtest.NewDB(t)
	for _, tc := range []struct {
		args    []string
		running bool
	}{
		{args: []string{"replay"}},
		{args: []string{"replay", "--log-db", "mysql://nowhere"}},
		{args: []string{"replay", "--log-db", logURI, "--node", "participant-x"}},
		{args: []string{"replay", "--log-db", logURI, "--node", "coordinator", "--data-db", logURI}},
		{args: []string{"replay", "--log-db", logURI, "--format", "yaml"}},
		{args: []string{"replay", "--log-db", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=5"}, running: true},
		// A database that is not a log (never migrated).
		{args: []string{"replay", "--log-db", logURI}, running: true},
	} {
		out, stderr, code := runTpcd(t, tc.args...)
		if code == 0 || code == 2 || tc.running && code != 1 {
			t.Errorf("tpcd %v: exit %d, want 1 or a usage error; stdout %q stderr %q", tc.args, code, out, stderr)
		}
		t.Logf("tpcd %v: exit %d: %s", tc.args, code, strings.TrimSpace(stderr))
	}
}
