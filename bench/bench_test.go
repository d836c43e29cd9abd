package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/localcluster"
)

// startLocalCluster is Options.StartCluster for tests, as cmd/tpcd's.
func startLocalCluster(ctx context.Context, s ClusterSpec) (StartedCluster, error) {
	cl, err := localcluster.Start(ctx, localcluster.Options{
		Participants: s.Participants, PGBin: s.PGBin, MaxConns: s.MaxConns,
		EagerPrepared: !s.LazyPrepared, Coordinator: engine.CoordinatorConfig{RetryMin: s.DecisionRetry},
		Logger: s.Logger,
	})
	if err != nil {
		return StartedCluster{}, err
	}
	started := StartedCluster{Coordinator: cl.CoordinatorAddr(), LogDB: cl.Nodes[0].LogURI, Stop: cl.Close}
	for _, n := range cl.Nodes[1:] {
		started.DataDBs = append(started.DataDBs, n.DataURI)
	}
	return started, nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func queryInt(t *testing.T, uri, sql string, args ...any) int64 {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// checkCounts checks what must hold for any result.
func checkCounts(t *testing.T, res *Result, stmts int) {
	t.Helper()
	if res == nil {
		t.Fatal("no result")
	}
	if res.Committed+res.Aborted+res.Failed != res.Attempted {
		t.Errorf("%s: committed %d + aborted %d + failed %d != attempted %d", res.Mode, res.Committed, res.Aborted, res.Failed, res.Attempted)
	}
	var sum int64
	for _, n := range res.NodeStatements {
		sum += n
	}
	if sum != res.Committed*int64(stmts) {
		t.Errorf("%s: %d committed statements over the nodes, want %d × %d", res.Mode, sum, res.Committed, stmts)
	}
	if res.Committed > 0 && (res.Latency.P50 <= 0 || res.Latency.P50 > res.Latency.P99 || res.Latency.P99 > res.Latency.Max) {
		t.Errorf("%s: latencies out of order: %+v", res.Mode, res.Latency)
	}
	var reasons int64
	for _, n := range res.Reasons {
		reasons += n
	}
	if reasons != res.Aborted+res.Failed {
		t.Errorf("%s: %d reasons for %d aborted and %d failed", res.Mode, reasons, res.Aborted, res.Failed)
	}
}

// TestAgainstRunningCluster drives a cluster started by the test, through
// tpcd and then raw, with unique keys, and checks every committed
// statement left exactly one row and the baseline left nothing prepared.
func TestAgainstRunningCluster(t *testing.T) {
	ctx := context.Background()
	cl, err := localcluster.Start(ctx, localcluster.Options{Participants: 2, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cl.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	}()
	var data []string
	for _, n := range cl.Nodes[1:] {
		data = append(data, n.DataURI)
	}

	const txs, stmts, rounds = 300, 3, 2
	rep, err := Run(ctx, Options{
		Coordinator: cl.CoordinatorAddr(), Concurrency: 6, Connections: 2, Statements: stmts,
		Transactions: txs, Warmup: -1, Baseline: BaselineRaw, DataDBs: data, LogDB: cl.Nodes[0].LogURI,
		Rounds: rounds, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rounds) != rounds || rep.Config.Rounds != rounds {
		t.Fatalf("%d rounds reported (config %d), want %d", len(rep.Rounds), rep.Config.Rounds, rounds)
	}
	// Every round measured both; the report's figures are the median
	// round's (of two, the one with the lower ratio).
	median := rep.Rounds[0]
	for _, rd := range rep.Rounds {
		for _, res := range []*Result{rd.TPCD, rd.Raw} {
			checkCounts(t, res, stmts)
			if res.Attempted != txs {
				t.Errorf("%s: attempted %d, want %d", res.Mode, res.Attempted, txs)
			}
			// Unique keys: nothing conflicts, so nothing may fail or abort.
			if res.Failed != 0 || res.Aborted != 0 {
				t.Errorf("%s: %d failed, %d aborted: %v", res.Mode, res.Failed, res.Aborted, res.Reasons)
			}
		}
		if rd.Ratio == nil || rd.Ratio.Throughput != rd.TPCD.CommittedPerSec/rd.Raw.CommittedPerSec {
			t.Errorf("round ratio %+v for %.1f/%.1f", rd.Ratio, rd.TPCD.CommittedPerSec, rd.Raw.CommittedPerSec)
		}
		if rd.Ratio.Throughput < median.Ratio.Throughput {
			median = rd
		}
	}
	if rep.TPCD != median.TPCD || rep.Raw != median.Raw || rep.Ratio != median.Ratio {
		t.Errorf("report is not the median round's: ratio %+v, rounds %+v, %+v", rep.Ratio, rep.Rounds[0].Ratio, rep.Rounds[1].Ratio)
	}
	for mode, steps := range map[*Result][]string{
		rep.TPCD: {"exec", "commit"},
		rep.Raw:  {"exec", "prepare", "decision", "commit prepared"},
	} {
		for _, step := range steps {
			if l, ok := mode.Steps[step]; !ok || l.P50 <= 0 {
				t.Errorf("%s: no latency for step %q: %+v", mode.Mode, step, mode.Steps)
			}
		}
	}
	if _, ok := rep.TPCD.Steps["begin"]; ok {
		t.Errorf("tpcd: a begin step, but the first exec begins the transaction: %+v", rep.TPCD.Steps)
	}
	if rep.Config.Participants != 2 || rep.Config.StartedCluster {
		t.Errorf("config: %+v", rep.Config)
	}
	for i, uri := range data {
		rows := queryInt(t, uri, "SELECT count(*) FROM bench_kv")
		var want int64
		for _, rd := range rep.Rounds {
			want += rd.TPCD.NodeStatements[i] + rd.Raw.NodeStatements[i]
		}
		if rows != want {
			t.Errorf("participant %d: %d rows in bench_kv, want %d (committed statements of every round and mode)", i, rows, want)
		}
		if n := queryInt(t, uri, "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'bench:%'"); n != 0 {
			t.Errorf("participant %d: the raw baseline left %d prepared transactions", i, n)
		}
	}
	if rep.RawLeftoverPrepared != 0 {
		t.Errorf("report counts %d prepared transactions left behind", rep.RawLeftoverPrepared)
	}
	decisions := queryInt(t, cl.Nodes[0].LogURI, "SELECT count(*) FROM bench_decisions")
	if want := rep.Rounds[0].Raw.Committed + rep.Rounds[1].Raw.Committed; decisions != want {
		t.Errorf("%d decision rows for %d raw commits", decisions, want)
	}
	if rep.Ratio == nil || rep.Ratio.Throughput <= 0 {
		t.Errorf("ratio: %+v", rep.Ratio)
	}

	// The JSON parses back into the same figures, under the documented
	// names.
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatalf("JSON report does not parse: %v\n%s", err, buf.String())
	}
	if back.TPCD.Committed != rep.TPCD.Committed || back.Raw.Committed != rep.Raw.Committed || back.Ratio.P99 != rep.Ratio.P99 {
		t.Errorf("JSON round trip changed the figures:\n%s", buf.String())
	}
	if len(back.Rounds) != rounds || back.Rounds[1].Raw.Committed != rep.Rounds[1].Raw.Committed {
		t.Errorf("JSON rounds: %d, want %d with the same figures", len(back.Rounds), rounds)
	}
	var generic map[string]any
	if err := json.Unmarshal(buf.Bytes(), &generic); err != nil {
		t.Fatal(err)
	}
	tp := generic["tpcd"].(map[string]any)
	for _, key := range []string{"committed_per_sec", "aborted_per_sec", "statements_per_sec", "latency", "attempted"} {
		if _, ok := tp[key]; !ok {
			t.Errorf("JSON tpcd result lacks %q", key)
		}
	}
	lat := tp["latency"].(map[string]any)
	for _, key := range []string{"p50_ms", "p95_ms", "p99_ms", "max_ms"} {
		if _, ok := lat[key]; !ok {
			t.Errorf("JSON latency lacks %q", key)
		}
	}

	buf.Reset()
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"tpcd/raw: throughput", "committed/s", "p99 ms", "2 rounds (the figures above are the median round's"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, buf.String())
		}
	}
	t.Logf("\n%s", buf.String())
}

// TestStartsClusterWithHotKeys lets Run start its own cluster and provoke
// conflicts on a few hot keys, measuring by time with a warm-up, in each
// form and over each transport.
func TestStartsClusterWithHotKeys(t *testing.T) {
	for _, tc := range []struct{ form, transport, step string }{
		{FormInteractive, TransportHTTP, "commit"},
		{FormSingle, TransportHTTP, "transact"},
		{FormInteractive, TransportStream, "commit"},
	} {
		form, step := tc.form, tc.step
		t.Run(form+"-"+tc.transport, func(t *testing.T) {
			var progress bytes.Buffer
			rep, err := Run(context.Background(), Options{
				// Conflicts, but not so many that a busy machine (CI runs
				// packages in parallel) sees every transaction of the
				// short run time out.
				Participants: 2, Concurrency: 6, Statements: 4, HotFraction: 0.3, HotKeys: 8, Form: form, Transport: tc.transport,
				Duration: 3 * time.Second, Warmup: 500 * time.Millisecond, Baseline: BaselineRaw,
				LockTimeout: 200 * time.Millisecond, Progress: &progress, Logger: testLogger(t),
				StartCluster: startLocalCluster,
			})
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Config.StartedCluster || rep.Config.Participants != 2 || rep.Config.Form != form || rep.Config.Transport != tc.transport {
				t.Errorf("config: %+v", rep.Config)
			}
			for _, res := range []*Result{rep.TPCD, rep.Raw} {
				checkCounts(t, res, 4)
				if res.Committed == 0 {
					t.Errorf("%s: nothing committed: %v", res.Mode, res.Reasons)
				}
				if res.Failed != 0 {
					t.Errorf("%s: %d failed: %v", res.Mode, res.Failed, res.Reasons)
				}
			}
			if l, ok := rep.TPCD.Steps[step]; !ok || l.P50 <= 0 {
				t.Errorf("tpcd: no latency for step %q: %+v", step, rep.TPCD.Steps)
			}
			var text bytes.Buffer
			if err := rep.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			// The step on tpcd's line: the baseline's "commit prepared"
			// must not pass for tpcd's "commit".
			tpcdStep := regexp.MustCompile(`(?m)^ *tpcd +.*\b` + step + ` [0-9]`)
			if !tpcdStep.MatchString(text.String()) || !strings.Contains(text.String(), "transport="+tc.transport) {
				t.Errorf("text report lacks tpcd's step %q or transport %q:\n%s", step, tc.transport, text.String())
			}
			if rep.RawLeftoverPrepared != 0 {
				t.Errorf("the raw baseline left %d prepared transactions", rep.RawLeftoverPrepared)
			}
			if !strings.Contains(progress.String(), "committed") {
				t.Errorf("no progress line written: %q", progress.String())
			}
			if rep.Memory.ProcessPeakMB <= 0 {
				t.Errorf("peak RSS not read: %+v", rep.Memory)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"hot fraction", Options{HotFraction: 1.5}, "hot fraction"},
		{"rounds", Options{Rounds: -2}, "rounds"},
		{"baseline", Options{Baseline: "fast"}, "baseline"},
		{"raw needs URIs", Options{Coordinator: "127.0.0.1:1", Baseline: BaselineRaw}, "--data-db"},
		{"bad form", Options{Form: "batch"}, `form "batch"`},
		{"bad transport", Options{Transport: "udp"}, `transport "udp"`},
		{"URIs need coordinator", Options{LogDB: "postgres://x/y"}, "--coordinator"},
		{"nothing to drive", Options{}, "no coordinator to drive"},
	} {
		err := tc.opts.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
	ok := Options{Coordinator: "127.0.0.1:1", Baseline: BaselineRaw, DataDBs: []string{"postgres://a/b"}, LogDB: "postgres://a/c"}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid options refused: %v", err)
	}
}

func TestPlannerSpreadsAndKeys(t *testing.T) {
	keys := newKeySource(0, 16)
	p := newPlanner(keys, 3, 5)
	seen := map[int64]bool{}
	for range 200 {
		plan := p.next()
		for j := 1; j < len(plan); j++ {
			if plan[j].node != (plan[j-1].node+1)%3 {
				t.Fatalf("not round robin: %+v", plan)
			}
		}
		for _, s := range plan {
			if s.key < 1<<counterBits || s.key >= 1<<53 {
				t.Fatalf("unique key %d outside its range", s.key)
			}
			if seen[s.key] {
				t.Fatalf("key %d used twice", s.key)
			}
			seen[s.key] = true
		}
	}

	hot := newPlanner(newKeySource(1, 4), 2, 3)
	for range 100 {
		for _, s := range hot.next() {
			if s.key < 0 || s.key >= 4 {
				t.Fatalf("hot key %d outside 0..3", s.key)
			}
		}
	}
}

func TestRecorder(t *testing.T) {
	r := newRecorder(2)
	plan := []stmt{{node: 0}, {node: 1}, {node: 0}}
	sp := &spans{}
	sp.reset(time.Now())
	sp.mark("begin")
	sp.mark("exec")
	sp.mark("exec")
	r.record(outCommitted, 10*time.Millisecond, plan, "", sp)
	r.record(outCommitted, 30*time.Millisecond, plan, "", nil)
	r.record(outAborted, time.Millisecond, plan, "exec tx 17: lock timeout", sp)
	r.record(outAborted, time.Millisecond, plan, "exec tx 18: lock timeout", nil)
	r.record(outFailed, time.Millisecond, plan, "commit: connection refused", nil)
	res := r.result("tpcd", 2*time.Second, 3)
	if res.Attempted != 5 || res.Committed != 2 || res.Aborted != 2 || res.Failed != 1 {
		t.Errorf("counts: %+v", res)
	}
	if res.CommittedPerSec != 1 || res.StatementsPerSec != 3 || res.AbortedPerSec != 1 {
		t.Errorf("rates: %+v", res)
	}
	if res.NodeStatements[0] != 4 || res.NodeStatements[1] != 2 {
		t.Errorf("node statements %v, want [4 2]", res.NodeStatements)
	}
	if res.Latency.Max < 29.9 || res.Latency.Max > 30.1 || res.Latency.P50 < 9.9 || res.Latency.P50 > 10.1 {
		t.Errorf("latency: %+v", res.Latency)
	}
	if len(res.Steps) != 2 || res.Steps["exec"].Max < res.Steps["exec"].P50 {
		t.Errorf("steps of the committed transaction: %+v", res.Steps)
	}
	if res.Reasons["exec tx N: lock timeout"] != 2 {
		t.Errorf("reasons not merged by masking numbers: %v", res.Reasons)
	}
}

func TestProcStatus(t *testing.T) {
	kb, err := procStatusKB(os.Getpid(), "VmRSS")
	if err != nil || kb <= 0 {
		t.Fatalf("VmRSS of self: %d, %v", kb, err)
	}
	s := startRSSSampler(os.Getpid())
	if peak := s.stop()[os.Getpid()]; peak <= 0 {
		t.Errorf("sampled peak %f", peak)
	}
}

// The median round is the middle one by tpcd/raw throughput (the lower
// middle of an even number), or by tpcd's throughput without a baseline.
func TestMedianRound(t *testing.T) {
	withRaw := func(ratios ...float64) []Round {
		var rs []Round
		for _, r := range ratios {
			rs = append(rs, Round{TPCD: &Result{CommittedPerSec: 100}, Raw: &Result{CommittedPerSec: 100 / r}, Ratio: &Ratio{Throughput: r}})
		}
		return rs
	}
	for _, c := range []struct {
		rounds []Round
		want   float64
	}{
		{withRaw(0.5, 0.3, 0.4), 0.4},
		{withRaw(0.5, 0.3), 0.3},
		{withRaw(0.7), 0.7},
		{withRaw(0.2, 0.9, 0.6, 0.4, 0.8), 0.6},
	} {
		if got := medianRound(c.rounds).Ratio.Throughput; got != c.want {
			t.Errorf("median of %d rounds: %.1f, want %.1f", len(c.rounds), got, c.want)
		}
	}
	// A last round cut short before its baseline ran has no ratio; its
	// rate must not be sorted among the others' ratios.
	cut := append(withRaw(0.5, 0.6), Round{TPCD: &Result{CommittedPerSec: 0.55}})
	if got := medianRound(cut); got.Ratio == nil || got.Ratio.Throughput != 0.5 {
		t.Errorf("median of two ratios and a cut round: %+v, want the 0.5 round", got)
	}
	alone := []Round{{TPCD: &Result{CommittedPerSec: 30}}, {TPCD: &Result{CommittedPerSec: 10}}, {TPCD: &Result{CommittedPerSec: 20}}}
	if got := medianRound(alone).TPCD.CommittedPerSec; got != 20 {
		t.Errorf("median without a baseline: %.0f/s, want 20/s", got)
	}
}
