package seed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/rpc"
)

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, pgtest.Main)) }

// seedCluster starts the seed README's three commands (coordinator and two
// participants), with or without database URIs.
type seedCluster struct {
	coordAddr string
	procs     []*testbin.Proc
}

func startSeed(t *testing.T, env []string, withURIs bool, extra ...string) *seedCluster {
	t.Helper()
	return startSeedWith(t, env, withURIs, extra, nil)
}

// startSeedWith is startSeed with extra flags for the coordinator and for
// each participant.
func startSeedWith(t *testing.T, env []string, withURIs bool, extra, partExtra []string) *seedCluster {
	t.Helper()
	var coordDB []string
	partDBs := make([][]string, 2)
	if withURIs {
		coordDB = []string{"--log-db", pgtest.NewDB(t)}
		for i := range partDBs {
			partDBs[i] = []string{"--log-db", pgtest.NewDB(t), "--data-db", pgtest.NewDB(t)}
		}
	}
	// Each node serves on a port the test holds and passes to it.
	ports := testbin.HoldPorts(t, 3)
	coord, p0, p1 := ports[0].Addr, ports[1].Addr, ports[2].Addr
	args := append([]string{"coordinator", "--host", coord, "--participant", p0, "--participant", p1}, coordDB...)
	args = append(args, extra...)
	c := &seedCluster{coordAddr: coord}
	c.procs = append(c.procs, testbin.StartServing(t, testbin.Binary(t), env, ports[:1], args...))
	for i, addr := range []string{p0, p1} {
		args := append([]string{"participant", "--node-id", fmt.Sprint(i), "--host", addr, "--coordinator", coord}, partDBs[i]...)
		args = append(args, partExtra...)
		c.procs = append(c.procs, testbin.StartServing(t, testbin.Binary(t), env, ports[i+1:i+2], args...))
	}
	for _, addr := range []string{coord, p0, p1} {
		testcluster.WaitReady(t, addr)
	}
	return c
}

// commitAcrossBoth runs a distributed transaction and waits until it is
// applied everywhere.
func commitAcrossBoth(t *testing.T, addr string) {
	t.Helper()
	c := rpc.NewClient(addr, rpc.ClientOptions{})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	call := func(method string, params, result any) {
		t.Helper()
		if err := c.Call(ctx, method, params, result); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
	}
	for i := range 2 {
		var b engine.BeginReply
		call(api.MethodBegin, struct{}{}, &b)
		n := engine.NodeID(i)
		call(api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &n, SQL: "CREATE TABLE t (id int primary key)"}, nil)
		call(api.MethodCommit, api.TxParams{TxID: b.TxID}, nil)
	}
	var b engine.BeginReply
	call(api.MethodBegin, struct{}{}, &b)
	for i := range 2 {
		n := engine.NodeID(i)
		call(api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &n, SQL: "INSERT INTO t VALUES ($1)", Args: []any{7}}, nil)
	}
	var r engine.OutcomeReply
	call(api.MethodCommit, api.TxParams{TxID: b.TxID}, &r)
	if r.Outcome != engine.OutcomeCommit {
		t.Fatalf("outcome %s (%s)", r.Outcome, r.Reason)
	}
	for {
		var s engine.StatusReply
		call(api.MethodStatus, api.TxParams{TxID: b.TxID}, &s)
		if s.State == "committed" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range 2 {
		var b2 engine.BeginReply
		call(api.MethodBegin, struct{}{}, &b2)
		n := engine.NodeID(i)
		var e engine.ExecReply
		call(api.MethodExec, api.ExecParams{TxID: b2.TxID, Node: &n, SQL: "SELECT count(*) FROM t"}, &e)
		if got := e.Result.Rows[0][0]; got != "1" {
			t.Fatalf("node %d has %v rows, want 1", i, got)
		}
		call(api.MethodRollback, api.TxParams{TxID: b2.TxID}, nil)
	}
}

func TestSeedCommandsWithURIs(t *testing.T) {
	c := startSeed(t, nil, true)
	commitAcrossBoth(t, c.coordAddr)
	for _, p := range c.procs {
		p.Stop(t)
	}
}

// TestSeedFlagsOnEveryNode runs the seed's command lines with the flags its
// main.py gave every node: --timeout and --batch-size (on participants too)
// and --verbose, which logs at debug level.
func TestSeedFlagsOnEveryNode(t *testing.T) {
	seedFlags := []string{"--timeout", "10", "--batch-size", "3", "--verbose"}
	c := startSeedWith(t, nil, true, seedFlags, seedFlags)
	commitAcrossBoth(t, c.coordAddr)
	for _, p := range c.procs {
		p.Stop(t)
	}
	for _, p := range c.procs {
		if out := p.Out.String(); !strings.Contains(out, "level=DEBUG") {
			t.Errorf("tpcd %v logged nothing at debug level with --verbose:\n%s", p.Cmd.Args, out)
		}
	}
}

// TestSeedClientDemo runs the seed client's demo loader command line
// (`python client.py --coordinator ... --demo --n-nodes 2 --data-db URI`
// with tpcd for python client.py) against the seed's cluster: the source
// table's rows are split over both participants and the summary printed.
func TestSeedClientDemo(t *testing.T) {
	c := startSeed(t, nil, true)
	src := pgtest.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := pgtest.Connect(t, src).Exec(ctx, `CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(8,2));
		INSERT INTO items SELECT i, 'item ' || i, i * 1.25 FROM generate_series(1, 120) i`); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, testbin.Binary(t), "client", "--coordinator", c.coordAddr, "--demo", "--n-nodes", "2", "--data-db", src).CombinedOutput()
	if err != nil || !regexp.MustCompile(`^loaded 120 rows into items in 2 transactions \(0 aborted\) in [0-9.]+s, \d+ rows/s; rows per node: @0 \d+, @1 \d+\n$`).Match(out) {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	out, err = exec.CommandContext(ctx, testbin.Binary(t), "client", "--coordinator", c.coordAddr, "--format", "csv",
		"-c", "begin; @0 select count(*), sum(price) from items; @1 select count(*), sum(price) from items; rollback").CombinedOutput()
	if err != nil {
		t.Fatalf("count: %v\n%s", err, out)
	}
	var rows, sum float64
	for _, line := range strings.Split(string(out), "\n") {
		var n, s float64
		if _, err := fmt.Sscanf(line, "%g,%g", &n, &s); err == nil {
			rows, sum = rows+n, sum+s
		}
	}
	if rows != 120 || sum != 1.25*120*121/2 {
		t.Fatalf("the participants hold %v rows summing to %v, want 120 and %v:\n%s", rows, sum, 1.25*120*121/2, out)
	}
	for _, p := range c.procs {
		p.Stop(t)
	}
}

// tempDirForPostgres makes a directory the postgres user can traverse, for
// the embedded clusters' temporary files.
func tempDirForPostgres(t *testing.T) string { return testbin.ServerTempDir(t) }

func TestSeedCommandsEmbedded(t *testing.T) {
	tmp := tempDirForPostgres(t)
	c := startSeed(t, []string{"TMPDIR=" + tmp}, false)
	commitAcrossBoth(t, c.coordAddr)
	for _, p := range c.procs {
		p.Stop(t)
	}
	left, _ := os.ReadDir(tmp)
	if len(left) != 0 {
		t.Fatalf("embedded clusters left behind after SIGTERM: %v", left)
	}
}

func TestStateDirSurvivesRestart(t *testing.T) {
	state := tempDirForPostgres(t)
	ports := testbin.HoldPorts(t, 2)
	coord, p0 := ports[0].Addr, ports[1].Addr
	args := []string{"coordinator", "--host", coord, "--participant", p0, "--state-dir", filepath.Join(state, "c")}
	part := []string{"participant", "--node-id", "0", "--host", p0, "--coordinator", coord, "--state-dir", filepath.Join(state, "p0")}
	epochs := []engine.Epoch{}
	for range 2 {
		pc, pp := testbin.StartServing(t, testbin.Binary(t), nil, ports[:1], args...), testbin.StartServing(t, testbin.Binary(t), nil, ports[1:], part...)
		testcluster.WaitReady(t, coord)
		testcluster.WaitReady(t, p0)
		cl := rpc.NewClient(coord, rpc.ClientOptions{})
		var r api.PingReply
		if err := cl.Call(context.Background(), api.MethodPing, struct{}{}, &r); err != nil {
			t.Fatal(err)
		}
		cl.Close()
		epochs = append(epochs, r.Epoch)
		pc.Stop(t)
		pp.Stop(t)
	}
	if epochs[1] != epochs[0]+1 {
		t.Fatalf("epochs %v: the second run should recover the first's log and start the next epoch", epochs)
	}
}

func TestBadFlagsSayHowToFix(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"participant", "--host", "127.0.0.1:1", "--coordinator", "127.0.0.1:2"}, "--node-id"},
		{[]string{"participant", "--node-id", "0", "--host", "127.0.0.1:nonsense", "--coordinator", "127.0.0.1:2"}, "port must be a number"},
		{[]string{"participant", "--node-id", "0", "--coordinator", "127.0.0.1:2", "--timeout", "0"}, "more than 0 seconds"},
		{[]string{"participant", "--node-id=-1", "--coordinator", "127.0.0.1:2"}, "ids start at 0"},
		{[]string{"coordinator", "--participant", "127.0.0.1:99999"}, "port"},
		{[]string{"coordinator", "--participant", "127.0.0.1:5", "--coordinator", "127.0.0.1:6"}, "unknown flag"},
		{[]string{"coordinator", "--participant", "127.0.0.1:5", "--log-db", "mysql://x"}, "postgresql://"},
		{[]string{"coordinator", "--participant", "127.0.0.1:5", "--timeout", "soon"}, "seconds"},
		{[]string{"coordinator", "--participant", "127.0.0.1:5", "--participant", "127.0.0.1:5"}, "twice"},
		{[]string{"coordinator", "--participant", "127.0.0.1:5", "--batch-size", "0"}, "at least 1"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) { testbin.WantUsageError(t, testbin.Binary(t), tc.args, tc.want) })
	}
}

func TestHelpOnEveryCommand(t *testing.T) {
	for _, cmd := range []string{"coordinator", "participant", "replay", "client", "cluster"} {
		out, err := exec.Command(testbin.Binary(t), cmd, "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("%s --help: %v\n%s", cmd, err, out)
		}
		if !strings.Contains(string(out), "Usage: tpcd "+cmd) {
			t.Fatalf("%s --help:\n%s", cmd, out)
		}
	}
}
