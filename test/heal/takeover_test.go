package heal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
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
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/rpc"
)

// leaseTTL is the coordinators' --lease in TestStandbyTakesOver: a standby
// takes over about this long after the holder died.
const leaseTTL = 2 * time.Second

// TestStandbyTakesOver runs two coordinators on one log database, one
// serving and one a standby (--lease), and two participants that know
// both. Under load from clients that know both too, the serving one is
// SIGKILLed; the standby takes over and finishes what the dead one had in
// flight. The dead one comes back as the standby and the other is killed
// in turn. Then the serving one is paused past its lease: the standby
// takes over, and the paused one, resumed, exits. Every transaction whose
// commit a client called ends with an answer, from commit or from status;
// each committed one is on both participants, no other is on either, and
// nothing is left prepared.
func TestStandbyTakesOver(t *testing.T) {
	c, coords := startLeasedCluster(t)
	createTable(t, c)

	// Four clients run transfers of keys of their own until told to stop.
	tr := startTransfers(func(int) []string { return c.coordAddrs() }, func(int) func(*rpc.Failover, int) (txOutcome, bool) { return transfer })
	committed := func() int { return tr.committed(func(txOutcome) bool { return true }) }

	// Kill the serving one; the other serves; the dead one comes back as
	// the standby. Twice, so that each has taken over once.
	for round, victim := range []int{0, 1} {
		dead, heir := coords[victim], coords[1-victim]
		testcluster.EventuallyWithin(t, time.Minute, "commits before the kill", func() bool { return committed() >= 30*(round+1) })
		before := committed()
		dead.proc.Cmd.Process.Kill()
		<-dead.proc.Exited()
		killed := time.Now()
		heir.waitServing(t, 30*time.Second)
		t.Logf("%s serves %v after %s was killed (lease %v)", heir.name, time.Since(killed).Round(10*time.Millisecond), dead.name, leaseTTL)
		if out := heir.proc.Out.String(); !strings.Contains(out, "holding the coordinator's slot in the log") {
			t.Fatalf("%s serves without holding the slot:\n%s", heir.name, out)
		}
		testcluster.EventuallyWithin(t, time.Minute, "commits after the take-over", func() bool { return committed() >= before+30 })
		dead.startUnheld(t)
		waitOutput(t, dead, "standby: another coordinator holds the slot")
	}
	outcomes := tr.stop()

	// The serving one (c1 again) is paused past its lease: the standby
	// takes over and commits, and the paused one, resumed, exits without
	// writing.
	old, heir := coords[0], coords[1]
	if err := old.proc.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	heir.waitServing(t, 30*time.Second)
	// Calls to the paused one's port connect and get no answer: ask the
	// heir.
	if err := testcluster.CommitOn(t.Context(), heir.addr, 2, "INSERT INTO t VALUES ($1)", 1); err != nil {
		t.Fatalf("commit through the coordinator that took over from a paused one: %v", err)
	}
	if err := old.proc.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	st, out := old.waitExit(t, 30*time.Second)
	if st.Success() || !strings.Contains(out, "lease lost") {
		t.Fatalf("the resumed coordinator exited with %v; want a failure for the lost lease:\n%s", st, out)
	}
	if err := commitKey(c, 2); err != nil {
		t.Fatal(err)
	}
	outcomes = append(outcomes, txOutcome{key: 1, state: "commit"}, txOutcome{key: 2, state: "commit"})

	// Each commit a client called and heard nothing back from is asked
	// about until its outcome is known.
	cl := rpc.NewFailover(c.coordAddrs(), rpc.ClientOptions{})
	defer cl.Close()
	asked := learnOutcomes(t, cl.Call, outcomes)
	n := checkTransfers(t, c, outcomes, coords)
	t.Logf("%d transactions asked to commit, %d committed, %d learnt through status", len(outcomes), n, asked)
}

// learnOutcomes asks status, through call, about each transaction whose
// commit got no answer until its outcome is known, and returns how many it
// asked about.
func learnOutcomes(t *testing.T, call func(ctx context.Context, method string, params, result any) error, outcomes []txOutcome) int {
	t.Helper()
	asked := 0
	for i := range outcomes {
		o := &outcomes[i]
		if o.state != "" {
			continue
		}
		asked++
		testcluster.EventuallyWithin(t, time.Minute, fmt.Sprintf("the outcome of tx %d", o.tx), func() bool {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var st engine.StatusReply
			params := api.StatusParams{TxID: o.tx}
			if o.tx == 0 {
				params.Key = o.idem
			}
			if err := call(sctx, api.MethodStatus, params, &st); err != nil {
				return false
			}
			switch {
			case st.Outcome != 0:
				o.state = st.Outcome.String()
			case st.State == "forgotten":
				o.state = "forgotten"
			case o.tx == 0 && st.State == "unknown":
				o.state = "unknown"
			}
			return o.state != ""
		})
	}
	return asked
}

// checkTransfers waits until nothing is left prepared, then checks the
// bank-transfer invariant: both participants hold the same keys, each
// committed transfer's key and no other's, and no node logged a
// violation. It returns how many transfers committed.
func checkTransfers(t *testing.T, c *cluster, outcomes []txOutcome, nodes []*node) int {
	t.Helper()
	testcluster.EventuallyWithin(t, time.Minute, "no transaction left prepared", func() bool {
		return c.readAll(t, "SELECT count(*) FROM pg_prepared_xacts") == [2]string{"0", "0"}
	})
	rows := c.readAll(t, "SELECT coalesce(string_agg(k::text, ',' ORDER BY k), '') FROM t")
	if rows[0] != rows[1] {
		t.Fatalf("participants differ:\np0 %s\np1 %s", rows[0], rows[1])
	}
	have := map[string]bool{}
	for _, k := range strings.Split(rows[0], ",") {
		have[k] = true
	}
	n := 0
	for _, o := range outcomes {
		key := strconv.Itoa(o.key)
		switch {
		case o.state == "commit" && !have[key]:
			t.Errorf("tx %d (key %d) committed, but its key is missing", o.tx, o.key)
		case o.state != "commit" && have[key]:
			t.Errorf("tx %d (key %d) came to %s, but its key is there", o.tx, o.key, o.state)
		case o.state == "commit":
			n++
		}
	}
	for _, n := range nodes {
		if out := n.proc.Out.String(); strings.Contains(out, "violation") {
			t.Errorf("%s logged a violation:\n%s", n.name, out)
		}
	}
	return n
}

// transfers are four clients running transfers of keys of their own, with
// what became of each whose commit was called.
type transfers struct {
	end      func()
	mu       sync.Mutex
	outcomes []txOutcome
}

// startTransfers starts the clients; client w calls the coordinators at
// addrs(w), the first that takes connections, and sends each transfer
// with send (transfer, transferKeyed).
func startTransfers(addrs func(w int) []string, send func(w int) func(*rpc.Failover, int) (txOutcome, bool)) *transfers {
	tr := &transfers{}
	conns := make([]*rpc.Failover, 4)
	for w := range conns {
		conns[w] = rpc.NewFailover(addrs(w), rpc.ClientOptions{})
	}
	stop := clients(100000, func(w, key int) error {
		o, ok := send(w)(conns[w], key)
		if !ok {
			return errors.New("ended before its commit")
		}
		tr.mu.Lock()
		defer tr.mu.Unlock()
		tr.outcomes = append(tr.outcomes, o)
		return nil
	})
	tr.end = func() {
		stop()
		for _, c := range conns {
			c.Close()
		}
	}
	return tr
}

// committed counts the committed transfers that match.
func (tr *transfers) committed(match func(txOutcome) bool) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, o := range tr.outcomes {
		if o.state == "commit" && match(o) {
			n++
		}
	}
	return n
}

// stop stops the clients and returns the outcomes.
func (tr *transfers) stop() []txOutcome {
	tr.end()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.outcomes
}

// commitKey writes key on both participants through whichever coordinator
// serves.
func commitKey(c *cluster, key int) error {
	cl := rpc.NewFailover(c.coordAddrs(), rpc.ClientOptions{})
	defer cl.Close()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		o, ok := transfer(cl, key)
		if ok && o.state == "commit" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("key %d: not committed within a minute (%+v)", key, o)
		}
	}
}

// startLeasedCluster starts two participants and two coordinators sharing
// a log database with --lease, c1 serving and c2 its standby; everyone
// knows both coordinators' addresses.
func startLeasedCluster(t *testing.T) (*cluster, []*node) {
	t.Helper()
	c, coords, _ := startSharedLog(t, 2, 1)
	if conn, err := net.DialTimeout("tcp", coords[1].addr, time.Second); err == nil {
		conn.Close()
		t.Fatalf("the standby %s accepts connections", coords[1].addr)
	}
	// A standby is alive, and not ready.
	if ready, why := coords[1].ready(); ready || !strings.Contains(why, "standby") {
		t.Fatalf("the standby's /readyz: ready %v, %q; want not ready, as a standby", ready, why)
	}
	if resp, err := http.Get("http://" + coords[1].metrics + "/readyz?standby=ready"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the standby's /readyz?standby=ready (what tpcd probe --standby-ready asks): %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if resp, err := http.Get("http://" + coords[1].metrics + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the standby's /healthz: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	return c, coords
}

// startSharedLog starts two participants and n coordinators c1, c2, ...
// sharing a log database with --lease, everyone given flags (--slots, say)
// and every coordinator's address. The first serving ones start one after
// the other, each serving before the next starts; the others wait as
// standbys. It returns the log database's URI too.
func startSharedLog(t *testing.T, n, serving int, flags ...string) (*cluster, []*node, string) {
	t.Helper()
	root := stateRoot(t)
	logServer := startServer(t, filepath.Join(root, "log"), "tpcd_log")
	logURI := fmt.Sprintf("postgres://%s@127.0.0.1:%d/tpcd_log?sslmode=disable&connect_timeout=2", embedpg.Superuser, logServer.Port())

	c := &cluster{}
	for i := range 2 {
		c.parts = append(c.parts, newNode(t, root, "p"+strconv.Itoa(i)))
	}
	// The coordinators open their address themselves, only once they
	// hold the lease: a held port would take connections while a standby
	// waits.
	var coords []*node
	for i := range n {
		coords = append(coords, standbyNode(t, root, "c"+strconv.Itoa(i+1)))
	}
	for _, n := range coords {
		n.args = slices.Concat([]string{"coordinator", "--participant", c.parts[0].addr, "--participant", c.parts[1].addr,
			"--log-db", logURI, "--lease", leaseTTL.String(), "--timeout", "1"}, flags, n.args)
	}
	c.coord, c.standbys = coords[0], coords[1:]
	for i, p := range c.parts {
		p.args = slices.Concat([]string{"participant", "--node-id", strconv.Itoa(i), "--coordinator", strings.Join(c.coordAddrs(), ",")}, flags, p.args)
	}
	for _, n := range coords[:serving] {
		n.startUnheld(t)
		n.waitServing(t, 2*time.Minute)
	}
	for _, n := range coords[serving:] {
		n.startUnheld(t)
	}
	for _, p := range c.parts {
		p.start(t)
	}
	for _, p := range c.parts {
		p.waitServing(t, 2*time.Minute)
	}
	for _, n := range coords[serving:] {
		waitOutput(t, n, "standby: another coordinator holds the slot")
	}
	return c, coords, logURI
}

// txOutcome is what became of one transaction whose commit a client
// called: state is the outcome ("commit", "abort"), "forgotten", or empty
// while unknown (the call got no answer).
type txOutcome struct {
	tx    engine.TxID
	key   int
	state string
	// idem is the idempotency key of a transfer sent whole in one call
	// (transferKeyed), by which its outcome is asked about when the call
	// got no answer (tx is 0 then). "unknown" is a state then too: no
	// transaction ever had the key.
	idem string
}

// transferKeyed is transfer in one transact call with an idempotency key.
func transferKeyed(cl *rpc.Failover, key int) (o txOutcome, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o = txOutcome{key: key, idem: "transfer-" + strconv.Itoa(key)}
	stmts := make([]api.StatementParams, 2)
	for i := range stmts {
		n := engine.NodeID(i)
		stmts[i] = api.StatementParams{Node: &n, SQL: "INSERT INTO t VALUES ($1)", Args: []any{key}}
	}
	var r api.TransactReply
	if err := cl.Call(ctx, api.MethodTransact, api.TransactParams{Commit: true, Key: o.idem, Statements: stmts}, &r); err == nil && r.Outcome != nil {
		o.tx, o.state = r.TxID, r.Outcome.String()
	}
	return o, true
}

// transfer writes key on both participants in one transaction and asks
// for its commit. ok is false when the transaction ended before its commit
// was asked for (no coordinator, a failed statement): nothing to learn.
func transfer(cl *rpc.Failover, key int) (o txOutcome, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b engine.BeginReply
	if err := cl.Call(ctx, api.MethodBegin, struct{}{}, &b); err != nil {
		return o, false
	}
	for i := range 2 {
		n := engine.NodeID(i)
		if err := cl.Call(ctx, api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &n, SQL: "INSERT INTO t VALUES ($1)", Args: []any{key}}, nil); err != nil {
			cl.Call(ctx, api.MethodRollback, api.TxParams{TxID: b.TxID}, nil)
			return o, false
		}
	}
	o = txOutcome{tx: b.TxID, key: key}
	var r engine.OutcomeReply
	if err := cl.Call(ctx, api.MethodCommit, api.TxParams{TxID: b.TxID}, &r); err == nil {
		o.state = r.Outcome.String()
	}
	return o, true
}

// standbyNode is a coordinator node whose address the test does not hold:
// it opens it itself, once it holds the lease.
func standbyNode(t *testing.T, root, name string) *node {
	t.Helper()
	n := &node{name: name, addr: freeAddr(t), metrics: freeAddr(t), state: filepath.Join(root, name)}
	n.args = []string{"--host", n.addr, "--metrics-addr", n.metrics, "--state-dir", n.state}
	return n
}

// freeAddr is a loopback address nobody listens on now, for a process to
// open later.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startUnheld starts a node whose ports the test does not hold.
func (n *node) startUnheld(t *testing.T) {
	t.Helper()
	n.proc = testbin.Start(t, testbin.Binary(t), nil, n.args...)
}

// waitOutput waits until the node has written want to its log.
func waitOutput(t *testing.T, n *node, want string) {
	t.Helper()
	testcluster.EventuallyWithin(t, time.Minute, n.name+" logs "+want, func() bool {
		if _, ok := n.exited(); ok {
			t.Fatalf("%s exited:\n%s", n.name, n.proc.Out)
		}
		return strings.Contains(n.proc.Out.String(), want)
	})
}

// createTable creates t on both participants through whichever
// coordinator serves.
func createTable(t *testing.T, c *cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := testcluster.CommitOn(ctx, c.coord.addr, 2, "CREATE TABLE t (k int PRIMARY KEY)"); err != nil {
		t.Fatalf("create table: %v", err)
	}
}
