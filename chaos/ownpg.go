package chaos

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The coordinator runs its own (embedded) PostgreSQL and supervises it:
// when the server dies the node restarts it, counts the restart in
// restartsMetric and is ready again. kill-embedded-postgres checks that.

// healWithin is how long a node may take, after its own PostgreSQL was
// killed, to be ready again and commit.
const healWithin = 30 * time.Second

// restartsMetric counts a node's restarts of its own PostgreSQL.
const restartsMetric = "tpcd_postgres_restarts_total"

// EmbeddedKill is one SIGKILL of the coordinator's own postmaster and how
// the coordinator healed.
type EmbeddedKill struct {
	Postmaster int
	// ReadyAfter is when, after the kill, /readyz answered ready with the
	// restart counted; CommitAfter when a transaction committed again.
	ReadyAfter, CommitAfter time.Duration
	// Failure says why the node did not heal within healWithin; "" if it
	// did.
	Failure string
}

// postmasterPID reads the pid of the server of data directory dir from
// its lock file, and checks that it is a postgres process.
func postmasterPID(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return 0, fmt.Errorf("%s/postmaster.pid: %w", dir, err)
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
		return 0, fmt.Errorf("%s/postmaster.pid names pid %d, which is not a running postgres", dir, pid)
	}
	return pid, nil
}

// coordPostmaster is the pid of the current coordinator's postmaster.
func (c *cluster) coordPostmaster() (int, error) {
	return postmasterPID(filepath.Join(c.coordinatorStateDir(c.current()), "pg"))
}

var observerClient = &http.Client{Timeout: 5 * time.Second}

// coordObserve GETs a path of the coordinator's metrics listener.
func (c *cluster) coordObserve(ctx context.Context, path string) (status int, body []byte, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.coordMetrics+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := observerClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// coordReady reports whether the coordinator's /readyz says ready.
func (c *cluster) coordReady(ctx context.Context) bool {
	status, _, err := c.coordObserve(ctx, "/readyz")
	return err == nil && status == http.StatusOK
}

// coordRestarts reads the coordinator's count of restarts of its own
// PostgreSQL (since the node process started).
func (c *cluster) coordRestarts(ctx context.Context) (float64, error) {
	status, body, err := c.coordObserve(ctx, "/metrics")
	if err != nil {
		return 0, err
	}
	if status != http.StatusOK {
		return 0, fmt.Errorf("/metrics: status %d", status)
	}
	return metricValue(string(body), restartsMetric)
}

// metricValue finds the sample of an unlabelled metric in a Prometheus
// text exposition.
func metricValue(text, name string) (float64, error) {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no metric %s", name)
}

// killEmbeddedPostgres SIGKILLs the coordinator's own postmaster, if the
// coordinator is free of other faults and ready, and watches it heal in the
// background. The coordinator stays marked busy until then, so no other
// fault hits it meanwhile. False means it cannot be done now.
func (in *injector) killEmbeddedPostgres(ctx context.Context) bool {
	name := in.target([]string{nodeName(0)})
	if name == "" {
		return false
	}
	c := in.c
	restarts, err := c.coordRestarts(ctx)
	if err != nil || !c.coordReady(ctx) {
		in.release(name) // starting after another fault: later
		return false
	}
	starts, _, _ := c.nodes[0].Stats()
	pid, err := c.coordPostmaster()
	if err != nil {
		in.release(name)
		return false
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		in.release(name)
		in.fail(fmt.Errorf("kill the coordinator's postmaster %d: %w", pid, err))
		return true
	}
	killed := time.Now()
	in.record(KillEmbeddedPostgres, name, 0, "postmaster", pid)
	in.wg.Add(1)
	go func() {
		defer in.wg.Done()
		defer in.release(name)
		k := in.watchHeal(pid, killed, restarts, starts)
		if k.Failure != "" {
			in.log.Error("the coordinator did not heal after its postgres was killed", "postmaster", pid, "failure", k.Failure)
		} else {
			in.log.Info("the coordinator healed", "postmaster", pid, "ready_after", k.ReadyAfter.Round(time.Millisecond), "commit_after", k.CommitAfter.Round(time.Millisecond))
		}
		in.mu.Lock()
		in.kills = append(in.kills, k)
		in.mu.Unlock()
	}()
	return true
}

// watchHeal checks that the coordinator heals within healWithin of the
// kill: the same process (it did not exit) is ready again with one more
// restart counted, and a transaction commits. The commit is tried on one
// participant at a time, so that a fault on another cannot hold it up.
func (in *injector) watchHeal(pid int, killed time.Time, restartsBefore float64, startsBefore int) EmbeddedKill {
	k := EmbeddedKill{Postmaster: pid}
	ctx, cancel := context.WithDeadline(in.runCtx, killed.Add(healWithin))
	defer cancel()
	c := in.c
	exited := func() bool { starts, _, _ := c.nodes[0].Stats(); return starts != startsBefore }
	for {
		if exited() {
			k.Failure = "the coordinator exited instead of restarting its postgres (see its log)"
			return k
		}
		restarts, err := c.coordRestarts(ctx)
		if err == nil && restarts > restartsBefore && c.coordReady(ctx) {
			k.ReadyAfter = time.Since(killed)
			break
		}
		if ctx.Err() != nil {
			k.Failure = fmt.Sprintf("not ready with the restart counted within %v of the kill (%s %v before, now %v, %v)",
				healWithin, restartsMetric, restartsBefore, restarts, err)
			return k
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	oneNode := func(attempt int) []int { return []int{(attempt - 1) % c.n} }
	if _, err := in.wl.probe(ctx, oneNode); err != nil {
		k.Failure = fmt.Sprintf("ready again after %v, but nothing committed within %v of the kill: %v", k.ReadyAfter.Round(time.Millisecond), healWithin, err)
		return k
	}
	k.CommitAfter = time.Since(killed)
	if exited() {
		k.Failure = "the coordinator exited after it healed (see its log)"
	}
	return k
}
