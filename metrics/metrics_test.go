package metrics_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/metrics"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/rpc"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// The observers are what the nodes accept.
var (
	_ node.Observer      = (*metrics.Coordinator)(nil)
	_ node.Observer      = (*metrics.Participant)(nil)
	_ node.PlainObserver = (*metrics.Participant)(nil)
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// sample finds the value of one series in Prometheus text output; series
// is the name with its labels exactly as exposed.
func sample(t *testing.T, text, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("series %s not exposed", series)
	return 0
}

func serve(t *testing.T, opts metrics.ServerOptions) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Logger = testcluster.Logger(t)
	s := metrics.Serve(ln, opts)
	t.Cleanup(func() { s.Close() })
	return "http://" + ln.Addr().String()
}

func TestMetricsMoveWithTransactions(t *testing.T) {
	coordReg, partReg := metrics.NewRegistry(), metrics.NewRegistry()
	coordHealth, partHealth := &metrics.Health{}, &metrics.Health{}
	coordURL := serve(t, metrics.ServerOptions{Registry: coordReg, Health: coordHealth})
	partURL := serve(t, metrics.ServerOptions{Registry: partReg, Health: partHealth})

	// Before the node is up: alive, not ready.
	if code, body := get(t, coordURL+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("/healthz before start: %d %q", code, body)
	}
	if code, body := get(t, coordURL+"/readyz"); code != 503 || !strings.Contains(body, "recovering") {
		t.Fatalf("/readyz before start: %d %q", code, body)
	}

	coordObs := metrics.NewCoordinator(coordReg)
	c := testcluster.Start(t, testcluster.Config{
		Participants: 2,
		Coordinator:  func(o *node.CoordinatorOptions) { o.Observer = coordObs },
		Participant: func(i int, o *node.ParticipantOptions) {
			if i == 0 {
				o.Observer = metrics.NewParticipant(partReg)
			}
		},
	})
	metrics.WatchCoordinator(coordReg, c.Coord, testcluster.Logger(t), nil)
	metrics.WatchParticipant(partReg, c.Parts[0], testcluster.Logger(t))
	coordHealth.SetReady(c.Coord.Health)
	partHealth.SetReady(c.Parts[0].Health)
	if code, body := get(t, coordURL+"/readyz"); code != 200 {
		t.Fatalf("/readyz after start: %d %q", code, body)
	}
	if code, body := get(t, partURL+"/readyz"); code != 200 {
		t.Fatalf("participant /readyz after start: %d %q", code, body)
	}

	_, before := get(t, coordURL+"/metrics")
	begun0 := sample(t, before, "tpcd_transactions_begun_total")
	committed0 := sample(t, before, "tpcd_transactions_committed_total")

	// Two commits across both nodes, one rollback, one failed statement.
	for k := range 2 {
		tx := c.Begin()
		c.Exec(tx, 0, "INSERT INTO kv VALUES ($1, 'a')", k)
		c.Exec(tx, 1, "INSERT INTO kv VALUES ($1, 'b')", k)
		c.CommitApplied(tx)
	}
	tx := c.Begin()
	c.Exec(tx, 0, "INSERT INTO kv VALUES (100, 'x')")
	c.Rollback(tx)
	tx = c.Begin()
	if _, err := c.TryExec(tx, 1, "INSERT INTO kv VALUES (0, 'duplicate')"); err == nil {
		t.Fatal("duplicate key accepted")
	}
	if r := c.Commit(tx); r.Outcome != engine.OutcomeAbort {
		t.Fatalf("commit after failed statement: %+v", r)
	}
	testcluster.Eventually(t, "aborts ended", func() bool { return c.Status(tx).State == "aborted" })

	_, text := get(t, coordURL+"/metrics")
	if got := sample(t, text, "tpcd_transactions_begun_total") - begun0; got != 4 {
		t.Errorf("begun moved by %v, want 4", got)
	}
	if got := sample(t, text, "tpcd_transactions_committed_total") - committed0; got != 2 {
		t.Errorf("committed moved by %v, want 2", got)
	}
	if got := sample(t, text, `tpcd_transactions_aborted_total{reason="rollback"}`); got != 1 {
		t.Errorf("aborted by rollback %v, want 1", got)
	}
	if got := sample(t, text, `tpcd_transactions_aborted_total{reason="statement_failed"}`); got != 1 {
		t.Errorf("aborted by a failed statement %v, want 1", got)
	}
	if got := sample(t, text, `tpcd_commit_latency_seconds_count{outcome="commit"}`); got < 2 {
		t.Errorf("commit latency observations %v, want at least 2 (the table creations add more)", got)
	}
	if got := sample(t, text, "tpcd_vote_round_trip_seconds_count"); got < 4 {
		t.Errorf("vote round trips %v, want at least 4", got)
	}
	if got := sample(t, text, "tpcd_decision_round_trip_seconds_count"); got < 4 {
		t.Errorf("decision round trips %v, want at least 4", got)
	}
	if got := sample(t, text, "tpcd_log_append_batch_events_count"); got < 1 {
		t.Errorf("log appends %v", got)
	}
	if got := sample(t, text, "tpcd_log_append_seconds_count"); got < 1 {
		t.Errorf("log append latencies %v", got)
	}
	// Gauges come from the snapshot the node refreshes every second.
	testcluster.Eventually(t, "nothing in doubt once everything ended", func() bool {
		_, text := get(t, coordURL+"/metrics")
		return sample(t, text, "tpcd_transactions_in_doubt") == 0
	})
	if !strings.Contains(text, "tpcd_recovery_seconds ") || !strings.Contains(text, "go_goroutines ") {
		t.Errorf("recovery or runtime metrics missing")
	}
	testcluster.Eventually(t, "participants seen by the pinger", func() bool {
		_, text := get(t, coordURL+"/metrics")
		return sample(t, text, `tpcd_participant_reachable{address="`+c.PartAddrs[0]+`",node="0"}`) == 1 &&
			sample(t, text, `tpcd_participant_reachable{address="`+c.PartAddrs[1]+`",node="1"}`) == 1
	})

	// Plain transactions at participant 0: one commits, one rolls back.
	part := rpc.NewClient(c.PartAddrs[0], rpc.ClientOptions{})
	t.Cleanup(func() { part.Close() })
	zero := engine.NodeID(0)
	for _, k := range []int{200, 0} {
		err := part.Call(context.Background(), api.MethodPlainTransact, api.TransactParams{Commit: true,
			Statements: []api.StatementParams{{Node: &zero, SQL: "INSERT INTO kv VALUES ($1, 'p')", Args: []any{k}}}}, nil)
		if (err == nil) != (k != 0) {
			t.Fatalf("plain transaction writing key %d: %v", k, err)
		}
	}

	_, ptext := get(t, partURL+"/metrics")
	if got := sample(t, ptext, `tpcd_plain_transactions_total{outcome="committed"}`); got != 1 {
		t.Errorf("plain transactions committed %v, want 1", got)
	}
	if got := sample(t, ptext, `tpcd_plain_transactions_total{outcome="rolled_back"}`); got != 1 {
		t.Errorf("plain transactions rolled back %v, want 1", got)
	}
	// A branch votes yes, or, as the decider, answers committed.
	if got := sample(t, ptext, `tpcd_votes_total{vote="yes"}`) + sample(t, ptext, `tpcd_votes_total{vote="committed"}`); got < 2 {
		t.Errorf("participant yes and committed votes %v, want at least 2", got)
	}
	testcluster.Eventually(t, "participant outcomes durable", func() bool {
		_, ptext := get(t, partURL+"/metrics")
		return sample(t, ptext, `tpcd_participant_outcomes_total{outcome="commit"}`) >= 2 &&
			sample(t, ptext, `tpcd_participant_outcomes_total{outcome="abort"}`) >= 1
	})
	testcluster.Eventually(t, "nothing in doubt on the participant", func() bool {
		_, ptext := get(t, partURL+"/metrics")
		return sample(t, ptext, "tpcd_transactions_in_doubt") == 0
	})

	// The pools' statistics: the participant's data pool served the
	// statements above, and none of its connections is held once
	// everything ended.
	if got := sample(t, ptext, `tpcd_db_acquires_total{db="data"}`); got < 4 {
		t.Errorf("data connections acquired %v, want at least 4", got)
	}
	if got, want := sample(t, ptext, `tpcd_db_max_connections{db="data"}`), float64(c.Parts[0].Databases()[1].Pool.Config().MaxConns); got != want {
		t.Errorf("data pool's most connections %v, want %v", got, want)
	}
	if got := sample(t, text, `tpcd_db_acquires_total{db="log"}`); got < 1 {
		t.Errorf("coordinator's log connections acquired %v, want at least 1", got)
	}
	for _, db := range []string{"log", "data"} {
		testcluster.Eventually(t, db+" connections given back", func() bool {
			_, ptext := get(t, partURL+"/metrics")
			return sample(t, ptext, `tpcd_db_connections{db="`+db+`",state="in_use"}`) == 0 &&
				sample(t, ptext, `tpcd_db_connections{db="`+db+`",state="idle"}`) >= 1
		})
	}

	// A participant whose node stops is reported unreachable.
	c.Parts[1].Close()
	testcluster.Eventually(t, "participant 1 unreachable", func() bool {
		_, text := get(t, coordURL+"/metrics")
		return sample(t, text, `tpcd_participant_reachable{address="`+c.PartAddrs[1]+`",node="1"}`) == 0
	})
	c.Coord.Close()
	if code, body := get(t, coordURL+"/readyz"); code != 503 {
		t.Fatalf("/readyz after the coordinator stopped: %d %q", code, body)
	}
}

func TestReasonClass(t *testing.T) {
	for reason, want := range map[string]string{
		"rolled back by client":                           metrics.ReasonRollback,
		"p1 voted no: statement count mismatch":           metrics.ReasonVoteNo,
		"vote timeout: no vote from p0 within 5s":         metrics.ReasonVoteTimeout,
		"p2 unreachable during prepare":                   metrics.ReasonUnreachable,
		"p0 did not answer statement 3 within 30s":        metrics.ReasonExecTimeout,
		"p2: ERROR: duplicate key value (SQLSTATE 23505)": metrics.ReasonStatementFailed,
		"client idle for 1m0s":                            metrics.ReasonClientIdle,
		"coordinator restarted before deciding":           metrics.ReasonCoordinatorRestart,
		"something new":                                   metrics.ReasonOther,
	} {
		if got := metrics.ReasonClass(reason); got != want {
			t.Errorf("ReasonClass(%q) = %s, want %s", reason, got, want)
		}
	}
}

// TestSiblingCountsIntoTheSameMetrics drives a coordinator's observer and
// a sibling's (a slot the node adopted) from two goroutines at once, as
// their loops would: both count into one set of counters, and the
// sibling leaves the recovery gauges to the node's own coordinator.
func TestSiblingCountsIntoTheSameMetrics(t *testing.T) {
	reg := metrics.NewRegistry()
	own := metrics.NewCoordinator(reg)
	adopted := own.Sibling()
	own.Recovered(7, time.Second)
	adopted.Recovered(99, time.Minute)
	const each = 200
	var wg sync.WaitGroup
	for _, o := range []*metrics.Coordinator{own, adopted} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := engine.TxID(i + 1)
				o.Stepped(engine.ClientCommit{Req: engine.ReqID(i), TxID: id},
					engine.Ready{Events: []engine.Event{engine.CoordDecided{TxID: id, Outcome: engine.OutcomeCommit}}})
				o.Performed(engine.Respond{Req: engine.ReqID(i), Reply: engine.OutcomeReply{TxID: id, Outcome: engine.OutcomeCommit}})
				o.Ended([]engine.StatusReply{{TxID: id, Outcome: engine.OutcomeCommit}})
			}
			o.Performed(engine.Violation{})
		}()
	}
	wg.Wait()
	url := serve(t, metrics.ServerOptions{Registry: reg, Health: &metrics.Health{}})
	_, text := get(t, url+"/metrics")
	if got := sample(t, text, "tpcd_transactions_committed_total"); got != 2*each {
		t.Errorf("committed %v; want %d, both coordinators'", got, 2*each)
	}
	if got := sample(t, text, `tpcd_commit_latency_seconds_count{outcome="commit"}`); got != 2*each {
		t.Errorf("commit latencies observed %v; want %d", got, 2*each)
	}
	if got := sample(t, text, "tpcd_atomicity_violations_total"); got != 2 {
		t.Errorf("violations %v; want 2, one from each", got)
	}
	if got := sample(t, text, "tpcd_recovery_events"); got != 7 {
		t.Errorf("recovery events %v; want the node's own coordinator's 7", got)
	}
}

// TestAdoptedSlotsCountInTheGauges watches a coordinator that serves a
// slot it adopted (another coordinator, of a cluster of its own here):
// the transaction gauges count both coordinators' open transactions while
// the slot is listed, and the node's own alone once it is not.
func TestAdoptedSlotsCountInTheGauges(t *testing.T) {
	own := testcluster.Start(t, testcluster.Config{Participants: 1})
	other := testcluster.Start(t, testcluster.Config{Participants: 1})
	var mu sync.Mutex
	adopted := []*node.Coordinator{other.Coord}
	reg := metrics.NewRegistry()
	metrics.WatchCoordinator(reg, own.Coord, testcluster.Logger(t), func() []*node.Coordinator {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(adopted)
	})
	url := serve(t, metrics.ServerOptions{Registry: reg, Health: &metrics.Health{}})
	// -1 until the node's first snapshot, which the gauges wait for.
	active := func() float64 {
		_, text := get(t, url+"/metrics")
		for line := range strings.Lines(text) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), `tpcd_transactions_in_flight{state="active"} `); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%s: %v", line, err)
				}
				return f
			}
		}
		return -1
	}

	var open []engine.TxID
	for k, c := range []*testcluster.Cluster{own, other, other} {
		tx := c.Begin()
		c.Exec(tx, 0, "INSERT INTO kv VALUES ($1, 'open')", k)
		open = append(open, tx)
	}
	// Snapshots are refreshed every second.
	testcluster.Eventually(t, "three open transactions, one the node's own and two of the adopted slot", func() bool { return active() == 3 })

	mu.Lock()
	adopted = nil
	mu.Unlock()
	if got := active(); got != 1 {
		t.Errorf("active transactions %v once the slot went back; want the node's own 1", got)
	}
	own.Rollback(open[0])
	other.Rollback(open[1])
	other.Rollback(open[2])
}
