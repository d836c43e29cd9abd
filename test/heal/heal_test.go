package heal

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/db/embedpg"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/rpc"
)

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, pgtest.Main)) }

// healWithin is how long a node may take to serve again after its server
// was killed: crash recovery, with fsync on, on a loaded machine.
const healWithin = 30 * time.Second

// node is a tpcd process with its embedded PostgreSQL in a state directory
// (where the test finds the postmaster's pid) and a metrics listener.
type node struct {
	name, addr, metrics, state string
	args                       []string
	// ports are the node's RPC and metrics ports, held by the test for
	// every start of the node.
	ports []*testbin.Port
	proc  *testbin.Proc
}

// stateRoot makes a directory the postgres user can traverse.
func stateRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tpcd-heal-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func newNode(t *testing.T, root, name string, args ...string) *node {
	ports := testbin.HoldPorts(t, 2)
	n := &node{name: name, addr: ports[0].Addr, metrics: ports[1].Addr, ports: ports, state: filepath.Join(root, name)}
	n.args = append(args, "--host", n.addr, "--metrics-addr", n.metrics, "--state-dir", n.state)
	return n
}

func (n *node) start(t *testing.T) {
	t.Helper()
	n.proc = testbin.StartServing(t, testbin.Binary(t), nil, n.ports, n.args...)
}

// exited reports the process's exit, if it has ended.
func (n *node) exited() (*os.ProcessState, bool) {
	select {
	case <-n.proc.Exited():
		return n.proc.Cmd.ProcessState, true
	default:
		return nil, false
	}
}

// waitServing waits until the node answers a ping, failing the test if
// it exits first.
func (n *node) waitServing(t *testing.T, within time.Duration) {
	t.Helper()
	testcluster.WaitServing(t, n.addr, within, func() (string, bool) {
		if st, ok := n.exited(); ok {
			return fmt.Sprintf("%s exited (%v) instead of serving:\n%s", n.name, st, n.proc.Out), true
		}
		return "", false
	})
}

// postmasterPID reads the pid of the node's postmaster from its lock file.
func (n *node) postmasterPID(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.state, "pg", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	return pid
}

// killPostmaster SIGKILLs the node's postmaster and returns its pid.
func (n *node) killPostmaster(t *testing.T) int {
	t.Helper()
	pid := n.postmasterPID(t)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s's postmaster %d: %v", n.name, pid, err)
	}
	return pid
}

// waitRestarted waits until the node has logged its restarts-th restart of
// its server and returns the new postmaster's pid.
func (n *node) waitRestarted(t *testing.T, restarts int) int {
	t.Helper()
	deadline := time.Now().Add(healWithin)
	for strings.Count(n.proc.Out.String(), `msg="postgres restarted"`) < restarts {
		if _, ok := n.exited(); ok {
			t.Fatalf("%s exited instead of restarting its server:\n%s", n.name, n.proc.Out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's server not restarted within %v", n.name, healWithin)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return n.postmasterPID(t)
}

// metric reads one sample of an unlabelled metric from the node's
// /metrics.
func (n *node) metric(t *testing.T, name string) float64 {
	t.Helper()
	v, ok, err := n.metricValue(name)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("%s has no metric %s", n.name, name)
	}
	return v
}

// metricValue reads one metric; ok is false when the node did not report
// it (a scrape fails while a collector cannot reach its database).
func (n *node) metricValue(name string) (v float64, ok bool, err error) {
	resp, err := http.Get("http://" + n.metrics + "/metrics")
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if text, found := strings.CutPrefix(s.Text(), name+" "); found {
			v, err := strconv.ParseFloat(text, 64)
			return v, err == nil, err
		}
	}
	return 0, false, s.Err()
}

// statusPage reads the coordinator's status page.
func (n *node) statusPage(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + n.metrics + "/")
	if err != nil {
		t.Fatalf("%s's status page: %v", n.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s's status page: %d %v\n%s", n.name, resp.StatusCode, err, b)
	}
	return string(b)
}

// ready reports /readyz.
func (n *node) ready() (bool, string) {
	resp, err := http.Get("http://" + n.metrics + "/readyz")
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK, strings.TrimSpace(string(b))
}

// waitExit waits for the node to exit on its own and returns its output.
func (n *node) waitExit(t *testing.T, within time.Duration) (*os.ProcessState, string) {
	t.Helper()
	select {
	case <-n.proc.Exited():
		return n.proc.Cmd.ProcessState, n.proc.Out.String()
	case <-time.After(within):
		t.Fatalf("%s still runs %v later:\n%s", n.name, within, n.proc.Out)
		return nil, ""
	}
}

// cluster is a coordinator and two participants, each with its own
// embedded PostgreSQL.
type cluster struct {
	coord *node
	parts []*node
	// standbys are coordinators waiting to take coord's log over
	// (--lease); calls go to whichever of them serves.
	standbys []*node
}

// startCluster starts the cluster; coordArgs are the coordinator's own
// flags (a log database, say).
func startCluster(t *testing.T, coordArgs ...string) *cluster {
	t.Helper()
	return startClusterWith(t, coordArgs, nil)
}

// startClusterWith is startCluster that also gives participant i the flags
// partArgs[i] (its databases, say).
func startClusterWith(t *testing.T, coordArgs []string, partArgs map[int][]string) *cluster {
	t.Helper()
	root := stateRoot(t)
	c := &cluster{}
	for i := range 2 {
		c.parts = append(c.parts, newNode(t, root, "p"+strconv.Itoa(i)))
	}
	args := append([]string{"coordinator", "--participant", c.parts[0].addr, "--participant", c.parts[1].addr}, coordArgs...)
	c.coord = newNode(t, root, "coordinator", args...)
	for i, p := range c.parts {
		p.args = slices.Concat([]string{"participant", "--node-id", strconv.Itoa(i), "--coordinator", c.coord.addr}, p.args, partArgs[i])
	}
	for _, n := range c.all() {
		n.start(t)
	}
	for _, n := range c.all() {
		n.waitServing(t, 2*time.Minute)
	}
	return c
}

func (c *cluster) all() []*node { return append([]*node{c.coord}, c.parts...) }

// clients runs four clients, each calling run with keys of its own
// (starting at base times its number, from 1), one after the other, until
// the returned stop is called, which waits for them. A client whose call
// failed pauses a little before its next key.
func clients(base int, run func(client, key int) error) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for key := base * (w + 1); ; key++ {
				select {
				case <-done:
					return
				default:
				}
				if run(w, key) != nil {
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	return func() { close(done); wg.Wait() }
}

// coordAddrs lists the address of the coordinator and of its standbys.
func (c *cluster) coordAddrs() []string {
	addrs := []string{c.coord.addr}
	for _, s := range c.standbys {
		addrs = append(addrs, s.addr)
	}
	return addrs
}

// call calls the coordinator (or the standby serving in its place).
func (c *cluster) call(ctx context.Context, method string, params, result any) error {
	cl := rpc.NewFailover(c.coordAddrs(), rpc.ClientOptions{})
	defer cl.Close()
	return cl.Call(ctx, method, params, result)
}

// commit writes key on both participants in one transaction and commits.
func (c *cluster) commit(key int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return testcluster.CommitOn(ctx, c.coord.addr, 2, "INSERT INTO t VALUES ($1)", key)
}

func (c *cluster) createTable(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := testcluster.CommitOn(ctx, c.coord.addr, 2, "CREATE TABLE t (k int PRIMARY KEY)"); err != nil {
		t.Fatalf("create table: %v", err)
	}
}

// TestNodesHealWhenTheirPostgresIsKilled kills the postmaster of a
// participant's, then of the coordinator's own server: each node restarts
// it, is ready again and commits without help.
func TestNodesHealWhenTheirPostgresIsKilled(t *testing.T) {
	c := startCluster(t)
	c.createTable(t)
	if err := c.commit(1); err != nil {
		t.Fatal(err)
	}
	for key, victim := range []*node{c.parts[0], c.coord} {
		killed := time.Now()
		pid := victim.killPostmaster(t)
		attempts := 0
		for {
			attempts++
			err := c.commit(10 + key)
			if err == nil {
				break
			}
			if time.Since(killed) > healWithin {
				t.Fatalf("no commit within %v of killing %s's postmaster: %v", healWithin, victim.name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("%s: committed %v after its postmaster %d was killed (attempt %d)", victim.name, time.Since(killed).Round(time.Millisecond), pid, attempts)
		if _, ok := victim.exited(); ok {
			t.Fatalf("%s exited", victim.name)
		}
		// A commit does not wait for the coordinator's log (the decider's
		// commit decides), so it may come before the coordinator has
		// even noticed: its restart is awaited on its own.
		testcluster.EventuallyWithin(t, healWithin, victim.name+" counts the restart", func() bool {
			v, ok, _ := victim.metricValue("tpcd_postgres_restarts_total")
			return ok && v == 1
		})
		testcluster.EventuallyWithin(t, healWithin, victim.name+" ready", func() bool { ok, _ := victim.ready(); return ok })
		out := victim.proc.Out.String()
		for _, want := range []string{`level=WARN msg="postgres exited on its own; restarting it (crash recovery)"`, `level=INFO msg="postgres restarted"`} {
			if !strings.Contains(out, want) {
				t.Errorf("%s's log lacks %s", victim.name, want)
			}
		}
	}
	testcluster.EventuallyWithin(t, 5*time.Second, "the coordinator sees both participants", func() bool {
		var nodes []api.NodeHealth
		err := c.call(context.Background(), api.MethodNodes, struct{}{}, &nodes)
		return err == nil && nodes[0].Reachable && nodes[1].Reachable
	})
	if got := c.parts[1].metric(t, "tpcd_postgres_restarts_total"); got != 0 {
		t.Errorf("p1 counted %v restarts", got)
	}
	for _, n := range c.all() {
		n.proc.Stop(t)
	}
}

// TestNodeExitsWhenItsPostgresKeepsDying kills a participant's postmaster
// each time it is back: the sixth death within a minute ends the node,
// non-zero, saying why.
func TestNodeExitsWhenItsPostgresKeepsDying(t *testing.T) {
	p := newNode(t, stateRoot(t), "p0", "participant", "--node-id", "0", "--coordinator", testbin.RefusingAddr(t))
	p.start(t)
	p.waitServing(t, 2*time.Minute)
	began := time.Now()
	pid := p.postmasterPID(t)
	for i := range embedpg.DefaultMaxRestarts {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		pid = p.waitRestarted(t, i+1)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st, out := p.waitExit(t, healWithin)
	t.Logf("exited %v after the first kill: %v", time.Since(began).Round(time.Millisecond), st)
	if st.Success() {
		t.Fatal("exit status 0")
	}
	if want := "died or failed to restart 6 times within 1m0s"; !strings.Contains(out, "tpcd: error: embedded PostgreSQL: ") || !strings.Contains(out, want) {
		t.Fatalf("output lacks the reason (%q):\n%s", want, out)
	}
}

// TestNodeExitsWhenItsPostgresCannotRestart makes the coordinator's server
// unable to start again (its configuration unreadable), then kills it.
func TestNodeExitsWhenItsPostgresCannotRestart(t *testing.T) {
	c := newNode(t, stateRoot(t), "coordinator", "coordinator", "--participant", testbin.RefusingAddr(t))
	c.start(t)
	c.waitServing(t, 2*time.Minute)
	conf := filepath.Join(c.state, "pg", "postgresql.conf")
	if err := os.Chmod(conf, 0); err != nil {
		t.Fatal(err)
	}
	c.killPostmaster(t)
	st, out := c.waitExit(t, healWithin)
	if st.Success() {
		t.Fatal("exit status 0")
	}
	if !strings.Contains(out, "restarting it failed") || !strings.Contains(out, "postgresql.conf") {
		t.Fatalf("output lacks the reason:\n%s", out)
	}
}

// TestRestartRightAfterKillStartsFirstTime kills a participant's postmaster
// and the participant at once, and starts it again on the same state
// directory: the earlier server is still going away, which PostgreSQL alone
// takes for "another postmaster".
func TestRestartRightAfterKillStartsFirstTime(t *testing.T) {
	p := newNode(t, stateRoot(t), "p0", "participant", "--node-id", "0", "--coordinator", testbin.RefusingAddr(t))
	p.start(t)
	p.waitServing(t, 2*time.Minute)
	p.killPostmaster(t)
	if err := p.proc.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	p.waitExit(t, 10*time.Second)

	p.start(t)
	p.waitServing(t, 2*time.Minute)
	out := p.proc.Out.String()
	if n := strings.Count(out, `msg="postgres starting"`); n != 1 {
		t.Errorf("%d starts of postgres, want 1:\n%s", n, out)
	}
	p.proc.Stop(t)
}

// TestDataServerWithoutPreparedTransactionsIsRefused runs a participant
// against a data server with initdb's max_prepared_transactions = 0, on
// which every commit would abort.
func TestDataServerWithoutPreparedTransactionsIsRefused(t *testing.T) {
	server := pgtest.NewCluster(t, embedpg.Options{Settings: map[string]string{"max_prepared_transactions": "0"}})
	if err := server.CreateDatabase(context.Background(), "data"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	host := testbin.HoldPort(t)
	out, err := testbin.CommandContext(ctx, testbin.Binary(t), []*testbin.Port{host}, "participant", "--node-id", "0", "--host", host.Addr, "--coordinator", testbin.RefusingAddr(t),
		"--log-db", pgtest.NewDB(t), "--data-db", server.URI("data")).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("participant: %v, want it to refuse to start:\n%s", err, out)
	}
	for _, want := range []string{"max_prepared_transactions = 0", "ALTER SYSTEM SET max_prepared_transactions = 100", "postgresql.conf"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
