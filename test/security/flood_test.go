package security

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/rpc"
)

// TestObserverFloodDuringCommits floods the coordinator's status page and
// a participant's /readyz and /metrics while clients commit: the
// participant never reports itself unready and the clients keep
// committing, every transaction of theirs; afterwards, with no workload, probes take no
// connection from its pools. (Before, each /readyz pinged the databases
// with a pooled connection and each page view queued on the coordinator's
// loop.)
// Only counts are asserted, no timings.
func TestObserverFloodDuringCommits(t *testing.T) {
	const (
		pool     = 8 // --max-conns of the participants: per database
		requests = 2000
		floods   = 32
		// The flood goes on until the clients committed this many
		// transactions while it ran, or until cap requests show they
		// cannot.
		committedDuring = 20
		requestCap      = 50 * requests
	)
	logDBs := []string{pgtest.NewDB(t), pgtest.NewDB(t)}
	dataDBs := []string{pgtest.NewDB(t), pgtest.NewDB(t)}
	coordDB := pgtest.NewDB(t)
	// Ports held by the test and passed to the nodes: the coordinator's
	// RPC and metrics, each participant's RPC, and participant 0's metrics.
	coordPorts, partPorts := testbin.HoldPorts(t, 2), [][]*testbin.Port{testbin.HoldPorts(t, 2), testbin.HoldPorts(t, 1)}
	coord, parts := coordPorts[0].Addr, []string{partPorts[0][0].Addr, partPorts[1][0].Addr}
	coordMetrics, partMetrics := coordPorts[1].Addr, partPorts[0][1].Addr
	var procs []*testbin.Proc
	for i, addr := range parts {
		args := []string{"participant", "--node-id", strconv.Itoa(i), "--host", addr, "--coordinator", coord,
			"--log-db", logDBs[i], "--data-db", dataDBs[i], "--max-conns", strconv.Itoa(pool)}
		if i == 0 {
			args = append(args, "--metrics-addr", partMetrics)
		}
		procs = append(procs, testbin.StartServing(t, testbin.Binary(t), nil, partPorts[i], args...))
	}
	procs = append(procs, testbin.StartServing(t, testbin.Binary(t), nil, coordPorts, "coordinator", "--host", coord,
		"--participant", parts[0], "--participant", parts[1], "--log-db", coordDB, "--metrics-addr", coordMetrics))
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: floods}}
	defer hc.CloseIdleConnections()
	coordObs, partObs := observer{hc: hc, base: "http://" + coordMetrics}, observer{hc: hc, base: "http://" + partMetrics}
	coordObs.waitReady(t)
	partObs.waitReady(t)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	client := rpc.NewClient(coord, rpc.ClientOptions{})
	defer client.Close()
	for i := range parts {
		n := engine.NodeID(i)
		var b engine.BeginReply
		if err := client.Call(ctx, api.MethodBegin, struct{}{}, &b); err != nil {
			t.Fatal(err)
		}
		if err := client.Call(ctx, api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &n, SQL: "CREATE TABLE kv (k bigint PRIMARY KEY)"}, nil); err != nil {
			t.Fatal(err)
		}
		var out engine.OutcomeReply
		if err := client.Call(ctx, api.MethodCommit, api.TxParams{TxID: b.TxID}, &out); err != nil || out.Outcome != engine.OutcomeCommit {
			t.Fatalf("create table: %+v %v", out, err)
		}
	}

	// The workload: two clients committing transactions across both
	// participants until the flood is over.
	var flooding atomic.Bool
	var committed, committedInFlood atomic.Int64
	stop := make(chan struct{})
	var workers sync.WaitGroup
	workErrs := make(chan error, 2)
	for w := range 2 {
		workers.Go(func() {
			for k := int64(w); ; k += 2 {
				select {
				case <-stop:
					return
				default:
				}
				var b engine.BeginReply
				err := client.Call(ctx, api.MethodBegin, struct{}{}, &b)
				for i := range parts {
					if err == nil {
						n := engine.NodeID(i)
						err = client.Call(ctx, api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &n, SQL: "INSERT INTO kv VALUES ($1)", Args: []any{k}}, nil)
					}
				}
				var out engine.OutcomeReply
				if err == nil {
					err = client.Call(ctx, api.MethodCommit, api.TxParams{TxID: b.TxID}, &out)
				}
				if err == nil && out.Outcome != engine.OutcomeCommit {
					err = fmt.Errorf("transaction %d aborted: %s", b.TxID, out.Reason)
				}
				if err != nil {
					workErrs <- err
					return
				}
				committed.Add(1)
				if flooding.Load() {
					committedInFlood.Add(1)
				}
			}
		})
	}

	// The flood: status page, /readyz and /metrics in turn, from 32
	// goroutines at once.
	type tally struct{ ok, limited, unready, other int }
	var mu sync.Mutex
	tallies := map[string]*tally{"/": {}, "/readyz": {}, "/metrics": {}}
	var sent atomic.Int64
	began, committedBefore := time.Now(), committed.Load()
	flooding.Store(true)
	var flood sync.WaitGroup
	for range floods {
		flood.Go(func() {
			for {
				n := sent.Add(1)
				if n > requestCap || (n > requests && committedInFlood.Load() >= committedDuring) {
					return
				}
				path, obs := "/", coordObs
				switch n % 3 {
				case 1:
					path, obs = "/readyz", partObs
				case 2:
					path, obs = "/metrics", partObs
				}
				code, _, err := obs.get(path)
				mu.Lock()
				switch tl := tallies[path]; {
				case err == nil && code == http.StatusOK:
					tl.ok++
				case err == nil && code == http.StatusTooManyRequests:
					tl.limited++
				case err == nil && code == http.StatusServiceUnavailable:
					tl.unready++
				default:
					tl.other++
					t.Errorf("%s: %d %v", path, code, err)
				}
				mu.Unlock()
			}
		})
	}
	flood.Wait()
	flooding.Store(false)
	took := time.Since(began) // logged, never asserted
	committedAfter := committed.Load()
	close(stop)
	workers.Wait()
	close(workErrs)
	for err := range workErrs {
		t.Errorf("workload: %v", err)
	}

	total := min(sent.Load(), requestCap)
	t.Logf("%d requests in %s; page %+v, /readyz %+v, /metrics %+v; %d commits before, %d during the flood",
		total, took.Round(time.Millisecond), *tallies["/"], *tallies["/readyz"], *tallies["/metrics"], committedBefore, committedAfter-committedBefore)
	if got := committedInFlood.Load(); got < committedDuring {
		t.Errorf("%d transactions committed during a flood of %d requests, want at least %d", got, total, committedDuring)
	}
	if r := tallies["/readyz"]; r.unready > 0 || r.limited > 0 || r.ok == 0 {
		t.Errorf("/readyz during the flood: %+v; want it ready every time", *r)
	}
	if p, m := tallies["/"], tallies["/metrics"]; p.limited+m.limited == 0 || p.ok == 0 || m.ok == 0 {
		t.Errorf("page %+v, /metrics %+v: want some answered and the rest limited (429)", *p, *m)
	}
	// Probes take no database connection: with the workload stopped, a
	// flood of /readyz moves the participant's acquire counters only by
	// the node's own once-a-second check. (Under the workload the pools'
	// use follows the server's pace, so it cannot tell the two apart.)
	const probes = 300
	logBefore, dataBefore := poolAcquires(t, partObs)
	var quiet sync.WaitGroup
	var probed atomic.Int64
	for range floods {
		quiet.Go(func() {
			for probed.Add(1) <= probes {
				if code, body, err := partObs.get("/readyz"); err != nil || code != http.StatusOK {
					t.Errorf("/readyz with no workload: %d %q %v", code, body, err)
				}
			}
		})
	}
	quiet.Wait()
	logAfter, dataAfter := poolAcquires(t, partObs)
	t.Logf("%d probes with no workload: %v log and %v data connections acquired", probes, logAfter-logBefore, dataAfter-dataBefore)
	if logAfter-logBefore >= probes/4 || dataAfter-dataBefore >= probes/4 {
		t.Errorf("%d probes took %v log and %v data connections: probes reach the databases", probes, logAfter-logBefore, dataAfter-dataBefore)
	}
	if code, body, err := partObs.get("/readyz"); err != nil || code != http.StatusOK {
		t.Errorf("participant after the flood: %d %q %v", code, body, err)
	}
	for _, p := range procs {
		p.Stop(t)
	}
}

// poolAcquires reads how many log and data connections the participant
// behind obs has taken from its pools, asking /metrics again while it
// answers 429.
func poolAcquires(t *testing.T, obs observer) (log, data float64) {
	t.Helper()
	for try := 0; ; try++ {
		code, text, err := obs.get("/metrics")
		switch {
		case err == nil && code == http.StatusOK:
			return metricValue(t, text, `tpcd_db_acquires_total{db="log"}`), metricValue(t, text, `tpcd_db_acquires_total{db="data"}`)
		case err == nil && code == http.StatusTooManyRequests && try < 100:
			time.Sleep(100 * time.Millisecond)
		default:
			t.Fatalf("/metrics: %d %v", code, err)
		}
	}
}
