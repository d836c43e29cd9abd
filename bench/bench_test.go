package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/localcluster"
)

// startLocalCluster is Options.StartCluster for tests, as cmd/tpcd's.
func startLocalCluster(ctx context.Context, s ClusterSpec) (StartedCluster, error) {
	cl, err := localcluster.Start(ctx, localcluster.Options{
		Participants: s.Participants, PGBin: s.PGBin, MaxConns: s.MaxConns,
		LazyPrepared: s.LazyPrepared, Coordinator: engine.CoordinatorConfig{RetryMin: s.DecisionRetry},
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

// runningCluster starts a cluster of two participants for bench to drive
// with Options.Coordinator; it stops when the test ends.
func runningCluster(t *testing.T) *localcluster.Cluster {
	t.Helper()
	cl, err := localcluster.Start(context.Background(), localcluster.Options{Participants: 2, LazyPrepared: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cl.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	return cl
}

// testLogger logs at level warn and above to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
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

// checkBySecond checks the committed rates by second add up to the
// result's and cover its measured time, and its start-up comparison is
// made of them.
func checkBySecond(t *testing.T, res *Result) {
	t.Helper()
	var sum int64
	for _, n := range res.CommittedBySecond {
		sum += n
	}
	if sum != res.Committed {
		t.Errorf("%s: %d committed by second %v, %d in all", res.Mode, sum, res.CommittedBySecond, res.Committed)
	}
	if want := int(math.Ceil(res.Seconds)); len(res.CommittedBySecond) != want {
		t.Errorf("%s: %d seconds of rates over %.2f s measured, want %d", res.Mode, len(res.CommittedBySecond), res.Seconds, want)
	}
	if st := res.Startup; st != nil {
		var first int64
		for _, n := range res.CommittedBySecond[:st.FirstSeconds] {
			first += n
		}
		// The later seconds are the whole ones after the first: the
		// last entry is left out when the measurement ended inside it.
		whole := min(int(res.Seconds), len(res.CommittedBySecond))
		var later int64
		for _, n := range res.CommittedBySecond[st.FirstSeconds:whole] {
			later += n
		}
		ratio := 0.0
		if later > 0 {
			ratio = st.FirstPerSec / st.LaterPerSec
		}
		if st.FirstSeconds != min(whole/3, maxStartupSeconds) || st.FirstPerSec != float64(first)/float64(st.FirstSeconds) ||
			st.LaterPerSec != float64(later)/float64(whole-st.FirstSeconds) || st.Ratio != ratio {
			t.Errorf("%s: start-up %+v does not follow from %v over %.2f s", res.Mode, st, res.CommittedBySecond, res.Seconds)
		}
	}
}

// checkMachineCPU checks the CPU of all processes counts the PostgreSQL
// servers: more than this process alone, and the sum of its parts.
func checkMachineCPU(t *testing.T, res *Result) {
	t.Helper()
	c := res.Costs
	if c == nil {
		t.Errorf("%s: no costs", res.Mode)
		return
	}
	if c.PostgresProcesses < 1 || c.PostgresCPUMsPerTx <= 0 || c.MachineCPUMsPerTx <= c.ProcessCPUMsPerTx {
		t.Errorf("%s: CPU of all processes %.3f ms per transaction, this process %.3f, %d postgres processes with %.3f: the servers are not counted",
			res.Mode, c.MachineCPUMsPerTx, c.ProcessCPUMsPerTx, c.PostgresProcesses, c.PostgresCPUMsPerTx)
	}
	if sum := c.ProcessCPUMsPerTx + c.PostgresCPUMsPerTx + c.TPCDProcessesCPUMsPerTx; math.Abs(c.MachineCPUMsPerTx-sum) > 0.001 {
		t.Errorf("%s: CPU of all processes %.4f ms per transaction, its parts add up to %.4f", res.Mode, c.MachineCPUMsPerTx, sum)
	}
}

// TestAgainstRunningCluster drives a cluster started by the test, through
// tpcd and then every baseline, with unique keys, and checks every
// committed statement left exactly one row, the two-phase baselines left
// nothing prepared and wrote one decision row per commit (the grouped one
// several in one commit), the local one kept each transaction on one
// server, and the CPU of all processes includes the servers'.
func TestAgainstRunningCluster(t *testing.T) {
	ctx := context.Background()
	cl := runningCluster(t)
	var data []string
	for _, n := range cl.Nodes[1:] {
		data = append(data, n.DataURI)
	}

	const txs, stmts, rounds = 300, 3, 2
	baselines := []string{BaselineRaw, BaselineRawGrouped, BaselineLocal}
	rep, err := Run(ctx, Options{
		Coordinator: cl.CoordinatorAddr(), Concurrency: 6, Connections: 2, Statements: stmts,
		Transactions: txs, Warmup: -1, Baselines: baselines, DataDBs: data, LogDB: cl.Nodes[0].LogURI,
		Rounds: rounds, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rounds) != rounds || rep.Config.Rounds != rounds {
		t.Fatalf("%d rounds reported (config %d), want %d", len(rep.Rounds), rep.Config.Rounds, rounds)
	}
	if rep.Config.Baseline != "raw,raw-grouped,local" || !slices.Equal(rep.Config.Baselines, baselines) {
		t.Errorf("config names baselines %q, %v", rep.Config.Baseline, rep.Config.Baselines)
	}
	// Every round measured tpcd and each baseline in the order asked; the
	// report's figures are the median round's (of two, the one with the
	// lower ratio against the first baseline).
	median := rep.Rounds[0]
	for _, rd := range rep.Rounds {
		if len(rd.Baselines) != len(baselines) {
			t.Fatalf("a round measured %d baselines, want %d", len(rd.Baselines), len(baselines))
		}
		for i, res := range append([]*Result{rd.TPCD}, rd.Baselines...) {
			if i > 0 && res.Mode != baselines[i-1] {
				t.Errorf("baseline %d is %q, want %q", i-1, res.Mode, baselines[i-1])
			}
			checkCounts(t, res, stmts)
			if res.Attempted != txs {
				t.Errorf("%s: attempted %d, want %d", res.Mode, res.Attempted, txs)
			}
			// Unique keys: nothing conflicts, so nothing may fail or abort.
			if res.Failed != 0 || res.Aborted != 0 {
				t.Errorf("%s: %d failed, %d aborted: %v", res.Mode, res.Failed, res.Aborted, res.Reasons)
			}
			checkBySecond(t, res)
			checkMachineCPU(t, res)
		}
		for _, res := range rd.Baselines {
			q := rd.Ratios[res.Mode]
			if q == nil || q.Throughput != rd.TPCD.CommittedPerSec/res.CommittedPerSec ||
				q.MachineCPU != rd.TPCD.Costs.MachineCPUMsPerTx/res.Costs.MachineCPUMsPerTx {
				t.Errorf("round ratio against %s %+v for %.1f/%.1f tx/s", res.Mode, q, rd.TPCD.CommittedPerSec, res.CommittedPerSec)
			}
		}
		// The fields of reports before there were several baselines.
		if rd.Raw != rd.Baselines[0] || rd.Ratio != rd.Ratios[BaselineRaw] {
			t.Errorf("round's raw result and ratio are not the raw baseline's: %+v", rd.Ratio)
		}
		if rd.Ratio.Throughput < median.Ratio.Throughput {
			median = rd
		}
		// Each local transaction wrote its statements on one server.
		for i, n := range rd.Baselines[2].NodeStatements {
			if n%stmts != 0 {
				t.Errorf("local: %d statements on participant %d, not a multiple of %d statements per transaction", n, i, stmts)
			}
		}
	}
	if rep.TPCD != median.TPCD || rep.Raw != median.Raw || rep.Ratio != median.Ratio {
		t.Errorf("report is not the median round's: ratio %+v, rounds %+v, %+v", rep.Ratio, rep.Rounds[0].Ratio, rep.Rounds[1].Ratio)
	}
	for mode, steps := range map[*Result][]string{
		rep.TPCD:         {"exec", "commit"},
		rep.Baselines[0]: {"exec", "prepare", "decision", "commit prepared"},
		rep.Baselines[1]: {"exec", "prepare", "decision", "commit prepared"},
		rep.Baselines[2]: {"exec", "commit"},
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
			for _, res := range append([]*Result{rd.TPCD}, rd.Baselines...) {
				want += res.NodeStatements[i]
			}
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
	// The grouped baseline's GIDs carry a "g"; a group's rows share their
	// transaction's now().
	logURI := cl.Nodes[0].LogURI
	eachDecisions := queryInt(t, logURI, "SELECT count(*) FROM bench_decisions WHERE gid NOT LIKE 'bench:%:g%'")
	if want := rep.Rounds[0].Raw.Committed + rep.Rounds[1].Raw.Committed; eachDecisions != want {
		t.Errorf("%d decision rows for %d raw commits", eachDecisions, want)
	}
	groupedDecisions := queryInt(t, logURI, "SELECT count(*) FROM bench_decisions WHERE gid LIKE 'bench:%:g%'")
	if want := rep.Rounds[0].Baselines[1].Committed + rep.Rounds[1].Baselines[1].Committed; groupedDecisions != want {
		t.Errorf("%d grouped decision rows for %d raw-grouped commits", groupedDecisions, want)
	}
	groupCommits := queryInt(t, logURI, "SELECT count(DISTINCT decided_at) FROM bench_decisions WHERE gid LIKE 'bench:%:g%'")
	if groupCommits >= groupedDecisions {
		t.Errorf("raw-grouped: %d decision rows in %d commits, none shared", groupedDecisions, groupCommits)
	}
	t.Logf("raw-grouped: %d decision rows in %d commits", groupedDecisions, groupCommits)
	if rep.Ratio == nil || rep.Ratio.Throughput <= 0 {
		t.Errorf("ratio: %+v", rep.Ratio)
	}

	// A database's server is found by its postmaster: here one this
	// process started. A server that does not answer is left out.
	servers := findServers(ctx, []string{logURI, "postgres://127.0.0.1:1/none?connect_timeout=1"})
	if len(servers) != 1 {
		t.Errorf("servers found: %v, want the log server's postmaster", servers)
	}
	for pid := range servers {
		if comm, p, err := readProcStat(pid); err != nil || comm != "postgres" || p.ppid != os.Getpid() {
			t.Errorf("server pid %d: %q, parent %d (%v), want a postgres process of this one", pid, comm, p.ppid, err)
		}
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
	if back.TPCD.Committed != rep.TPCD.Committed || back.Raw.Committed != rep.Raw.Committed || back.Ratio.P99 != rep.Ratio.P99 ||
		back.Baselines[2].Committed != rep.Baselines[2].Committed || back.Ratios[BaselineLocal].MachineCPU != rep.Ratios[BaselineLocal].MachineCPU ||
		!slices.Equal(back.TPCD.CommittedBySecond, rep.TPCD.CommittedBySecond) || *back.TPCD.Costs != *rep.TPCD.Costs {
		t.Errorf("JSON round trip changed the figures:\n%s", buf.String())
	}
	if len(back.Rounds) != rounds || back.Rounds[1].Raw.Committed != rep.Rounds[1].Raw.Committed {
		t.Errorf("JSON rounds: %d, want %d with the same figures", len(back.Rounds), rounds)
	}
	var generic map[string]any
	if err := json.Unmarshal(buf.Bytes(), &generic); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"tpcd", "raw", "ratio", "baselines", "ratios", "rounds"} {
		if _, ok := generic[key]; !ok {
			t.Errorf("JSON report lacks %q", key)
		}
	}
	tp := generic["tpcd"].(map[string]any)
	for _, key := range []string{"committed_per_sec", "aborted_per_sec", "statements_per_sec", "latency", "attempted", "committed_by_second", "costs"} {
		if _, ok := tp[key]; !ok {
			t.Errorf("JSON tpcd result lacks %q", key)
		}
	}
	costs := tp["costs"].(map[string]any)
	for _, key := range []string{"process_cpu_ms_per_tx", "machine_cpu_ms_per_tx", "postgres_cpu_ms_per_tx", "tpcd_processes_cpu_ms_per_tx", "postgres_processes", "tpcd_processes"} {
		if _, ok := costs[key]; !ok {
			t.Errorf("JSON costs lack %q", key)
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
	for _, want := range []string{"tpcd/raw: throughput", "tpcd/raw-grouped: throughput", "tpcd/local: throughput", "CPU of all processes",
		"committed/s", "p99 ms", "2 rounds (the figures above are the median round's", "CPU ms (all processes)", "committed/s over the measurement"} {
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
	// The first case starts a cluster of its own, as tpcd bench does; the
	// others go through the same path to one cluster they share, since
	// starting clusters is most of what the test costs.
	var shared *StartedCluster
	defer func() {
		if shared != nil {
			shared.Stop()
		}
	}()
	startShared := func(ctx context.Context, s ClusterSpec) (StartedCluster, error) {
		if shared == nil {
			cl, err := startLocalCluster(ctx, s)
			if err != nil {
				return StartedCluster{}, err
			}
			shared = &cl
		}
		cl := *shared
		cl.Stop = func() error { return nil }
		return cl, nil
	}
	for i, tc := range []struct {
		form, transport, step string
		baselines             []string
	}{
		{FormInteractive, TransportHTTP, "commit", []string{BaselineRaw, BaselineLocal}},
		{FormSingle, TransportHTTP, "transact", []string{BaselineRawGrouped}},
		{FormInteractive, TransportStream, "commit", []string{BaselineRaw}},
		// The clients share multiplexed streams, to the coordinator and,
		// in the direct form, to the participants.
		{FormInteractive, TransportMux, "commit", nil},
		{FormDirect, TransportMux, "commit", nil},
		{FormDirect, TransportStream, "commit", nil},
		// Every transaction is one participant's, and goes there as a
		// plain transaction.
		{FormPlain, TransportStream, "plain", []string{BaselineLocal}},
	} {
		form, step := tc.form, tc.step
		start := startShared
		if i == 0 {
			start = startLocalCluster
		}
		t.Run(form+"-"+tc.transport, func(t *testing.T) {
			var progress bytes.Buffer
			rep, err := Run(context.Background(), Options{
				// Conflicts, but not so many that a busy machine (CI runs
				// packages in parallel) sees every transaction of the
				// short run time out.
				Participants: 2, Concurrency: 6, Statements: 4, HotFraction: 0.3, HotKeys: 8, Form: form, Transport: tc.transport,
				Duration: 3 * time.Second, Warmup: 500 * time.Millisecond, Baselines: tc.baselines,
				LockTimeout: 200 * time.Millisecond, Progress: &progress, Logger: testLogger(t),
				StartCluster: start,
			})
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Config.StartedCluster || rep.Config.Participants != 2 || rep.Config.Form != form || rep.Config.Transport != tc.transport {
				t.Errorf("config: %+v", rep.Config)
			}
			if len(rep.Baselines) != len(tc.baselines) {
				t.Fatalf("%d baselines measured, want %v", len(rep.Baselines), tc.baselines)
			}
			for _, res := range append([]*Result{rep.TPCD}, rep.Baselines...) {
				checkCounts(t, res, 4)
				if res.Committed == 0 {
					t.Errorf("%s: nothing committed: %v", res.Mode, res.Reasons)
				}
				if res.Failed != 0 {
					t.Errorf("%s: %d failed: %v", res.Mode, res.Failed, res.Reasons)
				}
				checkBySecond(t, res)
				checkMachineCPU(t, res)
				// Measured by time: at least 3 whole seconds, so the
				// start-up is always reported. How many more depends on
				// how long the transactions in flight at the end take to
				// finish, which a busy machine can stretch by seconds;
				// checkBySecond checks the figures follow from the counts.
				if res.Startup == nil {
					t.Fatalf("%s: no start-up from %v over %.2f s", res.Mode, res.CommittedBySecond, res.Seconds)
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
			// tpcd's rates by second and its first second against the
			// later ones, on its own line.
			st := rep.TPCD.Startup
			bySecond := regexp.MustCompile(fmt.Sprintf(`(?m)^  tpcd +( [0-9]+)+  \| first %d s %.0f/s, later %.0f/s`, st.FirstSeconds, st.FirstPerSec, st.LaterPerSec))
			if !bySecond.MatchString(text.String()) {
				t.Errorf("text report lacks tpcd's rates by second:\n%s", text.String())
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
		{"baseline", Options{Baselines: []string{BaselineRaw, "fast"}}, `baseline "fast"`},
		{"raw needs URIs", Options{Coordinator: "127.0.0.1:1", Baselines: []string{BaselineRaw}}, "--data-db"},
		{"raw-grouped needs the log", Options{Coordinator: "127.0.0.1:1", Baselines: []string{BaselineRawGrouped}, DataDBs: []string{"postgres://a/b"}}, "--log-db"},
		{"local needs data", Options{Coordinator: "127.0.0.1:1", Baselines: []string{BaselineLocal}}, "local baseline against a running cluster needs --data-db"},
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
	for _, ok := range []Options{
		{Coordinator: "127.0.0.1:1", Baselines: []string{BaselineRaw, BaselineRawGrouped}, DataDBs: []string{"postgres://a/b"}, LogDB: "postgres://a/c"},
		{Coordinator: "127.0.0.1:1", Baselines: []string{BaselineLocal}, DataDBs: []string{"postgres://a/b"}},
		{Coordinator: "127.0.0.1:1", Baselines: []string{BaselineNone}},
	} {
		if err := ok.Validate(); err != nil {
			t.Errorf("valid options %v refused: %v", ok.Baselines, err)
		}
	}
	o := Options{Baselines: []string{BaselineNone, BaselineLocal, BaselineRaw, BaselineLocal}}
	o.fill()
	if !slices.Equal(o.Baselines, []string{BaselineLocal, BaselineRaw}) {
		t.Errorf("baselines %v, want none and repeats left out", o.Baselines)
	}
}

func TestPlannerSpreadsAndKeys(t *testing.T) {
	keys := newKeySource(0, 16)
	p := newPlanner(keys, 3, 5, false)
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

	hot := newPlanner(newKeySource(1, 4), 2, 3, false)
	for range 100 {
		for _, s := range hot.next() {
			if s.key < 0 || s.key >= 4 {
				t.Fatalf("hot key %d outside 0..3", s.key)
			}
		}
	}
}

func TestRecorder(t *testing.T) {
	r := newRecorder(2, false, 0)
	plan := []stmt{{node: 0}, {node: 1}, {node: 0}}
	sp := &spans{}
	sp.reset(time.Now())
	sp.mark("begin")
	sp.mark("exec")
	sp.mark("exec")
	r.record(true, outCommitted, 10*time.Millisecond, 0, plan, "", sp)
	r.record(true, outCommitted, 30*time.Millisecond, 0, plan, "", nil)
	r.record(true, outAborted, time.Millisecond, 0, plan, "exec tx 17: lock timeout", sp)
	r.record(true, outAborted, time.Millisecond, 0, plan, "exec tx 18: lock timeout", nil)
	r.record(true, outFailed, time.Millisecond, 0, plan, "commit: connection refused", nil)
	res := r.result("tpcd", 2*time.Second, 3, nil)
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

// Local plans put all of a transaction's statements on one participant,
// the next one round robin.
func TestPlannerOneNode(t *testing.T) {
	p := newPlanner(newKeySource(0, 16), 3, 4, true)
	prev := -1
	for range 30 {
		plan := p.next()
		for _, s := range plan {
			if s.node != plan[0].node {
				t.Fatalf("a local transaction on two participants: %+v", plan)
			}
		}
		if prev >= 0 && plan[0].node != (prev+1)%3 {
			t.Fatalf("participant %d after %d, not round robin", plan[0].node, prev)
		}
		prev = plan[0].node
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

// The median round is the middle one by tpcd's throughput against the
// first baseline (the lower middle of an even number), or by tpcd's
// throughput without a baseline.
func TestMedianRound(t *testing.T) {
	withRaw := func(ratios ...float64) []Round {
		var rs []Round
		for _, r := range ratios {
			// A second baseline whose ratios run the other way must not
			// decide.
			rs = append(rs, Round{
				TPCD:      &Result{CommittedPerSec: 100},
				Baselines: []*Result{{Mode: BaselineLocal}, {Mode: BaselineRaw}},
				Ratios:    map[string]*Ratio{BaselineLocal: {Throughput: r}, BaselineRaw: {Throughput: 1 / r}},
			})
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
		if got := medianRound(c.rounds).leadRatio().Throughput; got != c.want {
			t.Errorf("median of %d rounds: %.1f, want %.1f", len(c.rounds), got, c.want)
		}
	}
	// A last round cut short before its baseline ran has no ratio; its
	// rate must not be sorted among the others' ratios.
	cut := append(withRaw(0.5, 0.6), Round{TPCD: &Result{CommittedPerSec: 0.55}})
	if got := medianRound(cut); got.leadRatio() == nil || got.leadRatio().Throughput != 0.5 {
		t.Errorf("median of two ratios and a cut round: %+v, want the 0.5 round", got)
	}
	alone := []Round{{TPCD: &Result{CommittedPerSec: 30}}, {TPCD: &Result{CommittedPerSec: 10}}, {TPCD: &Result{CommittedPerSec: 20}}}
	if got := medianRound(alone).TPCD.CommittedPerSec; got != 20 {
		t.Errorf("median without a baseline: %.0f/s, want 20/s", got)
	}
}

// testTransactCarriesKey: the single form's calls carry idempotency keys,
// so the coordinator knows each transaction by its key, and a call sent
// again with a key is answered with the first one's outcome rather than
// run again (here, run again, it would fail: its table is gone).
func testTransactCarriesKey(t *testing.T, cl *localcluster.Cluster) {
	ctx := context.Background()
	d := newTPCDDriver([]string{cl.CoordinatorAddr()}, 1, time.Minute, FormSingle, TransportHTTP)
	defer d.close()
	d.keyPrefix = "bench-test-"
	if err := d.createTable(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if out, why := d.transact(ctx, d.conns[0], []stmt{{node: 0, key: 1, val: 1}, {node: 1, key: 2, val: 2}}, &spans{}); out != outCommitted {
		t.Fatalf("transact: %v %s", out, why)
	}
	var st engine.StatusReply
	if err := d.conns[0].Call(ctx, api.MethodStatus, api.StatusParams{Key: "bench-test-1"}, &st); err != nil || st.TxID == 0 || st.Outcome != engine.OutcomeCommit {
		t.Fatalf("status by the call's key: %+v, %v", st, err)
	}
	n0, n1 := engine.NodeID(0), engine.NodeID(1)
	var r api.TransactReply
	err := d.conns[0].Call(ctx, api.MethodTransact, api.TransactParams{Commit: true, Key: "bench-test-1", Statements: []api.StatementParams{
		{Node: &n0, SQL: "INSERT INTO no_such_table VALUES (1)"}, {Node: &n1, SQL: "INSERT INTO no_such_table VALUES (1)"}}}, &r)
	if err != nil || !r.Repeated || r.TxID != st.TxID || r.Outcome == nil || *r.Outcome != engine.OutcomeCommit {
		t.Fatalf("the call sent again with its key: %+v, %v; want tx %d's commit, repeated", r, err, st.TxID)
	}
}

// testRateAndProgress measures at a set arrival rate against a running
// cluster. At a rate far beyond what one client can do, transactions queue:
// each waits for the client (lag), latency counts from the due time and so
// holds the lag, and with a latency limit the due times already too late
// are skipped. At a modest rate, the progress lines come as pgbench -P
// writes them, and no more transactions start than were due.
// TestRunningCluster runs the tests that can share one cluster Run does
// not start (starting one costs more than most of them).
func TestRunningCluster(t *testing.T) {
	cl := runningCluster(t)
	t.Run("rate-and-progress", func(t *testing.T) { testRateAndProgress(t, cl) })
	t.Run("transact-carries-key", func(t *testing.T) { testTransactCarriesKey(t, cl) })
}

func testRateAndProgress(t *testing.T, cl *localcluster.Cluster) {
	ctx := context.Background()

	// A transaction through tpcd takes far longer than 10 µs, the gap
	// between due times at 100,000/s, and longer than a 100 µs limit.
	const txs = 20
	rep, err := Run(ctx, Options{
		Coordinator: cl.CoordinatorAddr(), Concurrency: 1, Statements: 2, Transactions: txs, Warmup: -1,
		Rate: 100000, Schedule: ScheduleFixed, LatencyLimit: 100 * time.Microsecond, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	res := rep.TPCD
	checkCounts(t, res, 2)
	sc := res.Schedule
	if res.Attempted != txs || sc == nil || sc.Rate != 100000 || sc.Kind != ScheduleFixed {
		t.Fatalf("attempted %d, schedule %+v; want %d at 100000/s fixed", res.Attempted, sc, txs)
	}
	if sc.Lag.Max <= 0 || res.Latency.Max < sc.Lag.Max {
		t.Errorf("lag %+v, latency %+v: want queued transactions, their latency holding their lag", sc.Lag, res.Latency)
	}
	if sc.Skipped == 0 || res.Late == 0 || res.LatencyLimitMS != 0.1 {
		t.Errorf("skipped %d, late %d over %g ms: want due times skipped and transactions late", sc.Skipped, res.Late, res.LatencyLimitMS)
	}
	if rep.Config.Rate != 100000 || rep.Config.Schedule != ScheduleFixed {
		t.Errorf("config %+v", rep.Config)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"arrivals: 100000/s on a fixed schedule", fmt.Sprintf("%d skipped;", sc.Skipped), fmt.Sprintf("%d committed over the 0.1 ms limit", res.Late)} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}

	// 20/s for 2 s on a fixed schedule: at most one due every 50 ms of the
	// measured time (both ends of it included), whatever the machine's
	// speed; four clients unpaced would start hundreds.
	var progress bytes.Buffer
	rep, err = Run(ctx, Options{
		Coordinator: cl.CoordinatorAddr(), Concurrency: 4, Statements: 2, Duration: 2 * time.Second, Warmup: -1,
		Rate: 20, Schedule: ScheduleFixed, ProgressEvery: 100 * time.Millisecond, ProgressLog: &progress, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, rep.TPCD, 2)
	if due := int64(20*rep.TPCD.Seconds) + 1; rep.TPCD.Attempted > due || rep.TPCD.Committed == 0 {
		t.Errorf("%d attempted, %d committed in %.3f s; want some, at most the %d due", rep.TPCD.Attempted, rep.TPCD.Committed, rep.TPCD.Seconds, due)
	}
	line := regexp.MustCompile(`^progress: tpcd [0-9]+\.[0-9] s, [0-9]+\.[0-9] tx/s, lat [0-9]+\.[0-9]{3} ms stddev [0-9]+\.[0-9]{3}, [0-9]+ aborted, [0-9]+ failed, lag [0-9]+\.[0-9]{3} ms, [0-9]+ skipped$`)
	lines := strings.Split(strings.TrimSpace(progress.String()), "\n")
	for _, l := range lines {
		if !line.MatchString(l) {
			t.Errorf("progress line %q", l)
		}
	}
	if len(lines) == 0 || lines[0] == "" {
		t.Errorf("no progress lines in 2 s at 100 ms")
	}
}
