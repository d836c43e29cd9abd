package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/rpc"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// testCluster is a coordinator and N participants in this process, each
// with its own log and data databases on the shared test server, talking
// JSON-RPC over loopback.
type testCluster struct {
	t         *testing.T
	coordAddr string
	coordLn   net.Listener
	coordOpts node.CoordinatorOptions
	coord     *node.Coordinator
	coordDBs  *node.Databases
	partAddrs []string
	parts     []*node.Participant
	partOpts  []node.ParticipantOptions
	partDBs   []*node.Databases
	client    *rpc.Client
}

type clusterConfig struct {
	participants int
	engine       engine.CoordinatorConfig
	lockTimeout  time.Duration
	// compactEvery is the coordinator's CompactEvery (0: its default).
	compactEvery time.Duration
	// coordLog, if set, also receives the coordinator's log lines.
	coordLog io.Writer
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func openDBs(t *testing.T, spec node.DatabaseSpec) *node.Databases {
	t.Helper()
	dbs, err := node.OpenDatabases(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dbs.Close() })
	return dbs
}

func startCluster(t *testing.T, cfg clusterConfig) *testCluster {
	t.Helper()
	if cfg.participants == 0 {
		cfg.participants = 3
	}
	c := &testCluster{t: t}
	c.coordLn = listen(t)
	c.coordAddr = c.coordLn.Addr().String()
	lns := make([]net.Listener, cfg.participants)
	for i := range lns {
		lns[i] = listen(t)
		c.partAddrs = append(c.partAddrs, lns[i].Addr().String())
	}
	logger := testLogger(t)
	c.coordDBs = openDBs(t, node.DatabaseSpec{LogURI: pgtest.NewDB(t), Logger: logger})
	coordLogger := logger
	if cfg.coordLog != nil {
		coordLogger = slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, cfg.coordLog), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	c.coordOpts = node.CoordinatorOptions{Participants: c.partAddrs, Log: c.coordDBs.Log, Engine: cfg.engine, Logger: coordLogger, CompactEvery: cfg.compactEvery}
	for i := range lns {
		dbs := openDBs(t, node.DatabaseSpec{LogURI: pgtest.NewDB(t), DataURI: pgtest.NewDB(t), NeedData: true, Logger: logger, MaxConns: 60})
		c.partDBs = append(c.partDBs, dbs)
		c.partOpts = append(c.partOpts, node.ParticipantOptions{
			ID: engine.NodeID(i), Coordinator: c.coordAddr, Log: dbs.Log, Data: dbs.Data, Logger: logger,
			LockTimeout: cfg.lockTimeout,
		})
		c.parts = append(c.parts, nil)
		c.startParticipant(i, lns[i])
	}
	c.startCoordinator(c.coordLn)
	c.client = rpc.NewClient(c.coordAddr, rpc.ClientOptions{})
	t.Cleanup(func() {
		c.client.Close()
		if c.coord != nil {
			c.coord.Close()
		}
		for _, p := range c.parts {
			if p != nil {
				p.Close()
			}
		}
	})
	for i := range c.parts {
		c.exec1(i, "CREATE TABLE kv (k int PRIMARY KEY, v text)")
	}
	return c
}

func (c *testCluster) startCoordinator(ln net.Listener) {
	c.t.Helper()
	coord, err := node.StartCoordinator(context.Background(), ln, c.coordOpts)
	if err != nil {
		c.t.Fatal(err)
	}
	c.coord = coord
}

func (c *testCluster) startParticipant(i int, ln net.Listener) {
	c.t.Helper()
	p, err := node.StartParticipant(context.Background(), ln, c.partOpts[i])
	if err != nil {
		c.t.Fatal(err)
	}
	c.parts[i] = p
}

// restartCoordinator closes the coordinator and starts it again on the
// same address and log.
func (c *testCluster) restartCoordinator() {
	c.t.Helper()
	c.coord.Close()
	c.coord = nil
	ln, err := net.Listen("tcp", c.coordAddr)
	if err != nil {
		c.t.Fatal(err)
	}
	c.startCoordinator(ln)
}

// stopParticipant closes participant i; restartParticipant brings it back on
// the same address and databases.
func (c *testCluster) stopParticipant(i int) {
	c.t.Helper()
	c.parts[i].Close()
	c.parts[i] = nil
}

func (c *testCluster) restartParticipant(i int) {
	c.t.Helper()
	ln, err := net.Listen("tcp", c.partAddrs[i])
	if err != nil {
		c.t.Fatal(err)
	}
	c.startParticipant(i, ln)
}

func (c *testCluster) call(method string, params, result any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return c.client.Call(ctx, method, params, result)
}

func (c *testCluster) begin() engine.TxID {
	c.t.Helper()
	var r engine.BeginReply
	if err := c.call(api.MethodBegin, struct{}{}, &r); err != nil {
		c.t.Fatalf("begin: %v", err)
	}
	return r.TxID
}

func (c *testCluster) exec(tx engine.TxID, n int, sql string, args ...any) (*engine.ExecReply, error) {
	id := engine.NodeID(n)
	var r engine.ExecReply
	err := c.call(api.MethodExec, api.ExecParams{TxID: tx, Node: &id, SQL: sql, Args: args}, &r)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func (c *testCluster) mustExec(tx engine.TxID, n int, sql string, args ...any) *engine.ExecReply {
	c.t.Helper()
	r, err := c.exec(tx, n, sql, args...)
	if err != nil {
		c.t.Fatalf("exec tx %d on %d: %v", tx, n, err)
	}
	return r
}

func (c *testCluster) commit(tx engine.TxID) engine.OutcomeReply {
	c.t.Helper()
	var r engine.OutcomeReply
	if err := c.call(api.MethodCommit, api.TxParams{TxID: tx}, &r); err != nil {
		c.t.Fatalf("commit %d: %v", tx, err)
	}
	return r
}

// exec1 runs sql on one node in a transaction of its own and commits it.
func (c *testCluster) exec1(n int, sql string, args ...any) {
	c.t.Helper()
	tx := c.begin()
	c.mustExec(tx, n, sql, args...)
	if r := c.commit(tx); r.Outcome != engine.OutcomeCommit {
		c.t.Fatalf("%s on node %d: %s (%s)", sql, n, r.Outcome, r.Reason)
	}
	// The reply means decided; wait until it is applied, so the next
	// statement sees it.
	eventually(c.t, "applied", func() bool { return c.status(tx).State == "committed" })
}

func (c *testCluster) status(tx engine.TxID) engine.StatusReply {
	c.t.Helper()
	var r engine.StatusReply
	if err := c.call(api.MethodStatus, api.TxParams{TxID: tx}, &r); err != nil {
		c.t.Fatalf("status %d: %v", tx, err)
	}
	return r
}

func (c *testCluster) data(i int) *pgxpool.Pool { return c.partDBs[i].Data }

// rows returns the keys in kv on node i, in order.
func (c *testCluster) keys(i int) []int {
	c.t.Helper()
	rows, err := c.data(i).Query(context.Background(), "SELECT k FROM kv ORDER BY k")
	if err != nil {
		c.t.Fatal(err)
	}
	defer rows.Close()
	var ks []int
	for rows.Next() {
		var k int
		if err := rows.Scan(&k); err != nil {
			c.t.Fatal(err)
		}
		ks = append(ks, k)
	}
	if err := rows.Err(); err != nil {
		c.t.Fatal(err)
	}
	return ks
}

// prepared returns the prepared transactions left on node i.
func (c *testCluster) prepared(i int) []string {
	c.t.Helper()
	rows, err := c.data(i).Query(context.Background(), "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()")
	if err != nil {
		c.t.Fatal(err)
	}
	defer rows.Close()
	var gids []string
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			c.t.Fatal(err)
		}
		gids = append(gids, g)
	}
	return gids
}

// eventually polls cond until it holds; the deadline is generous because
// it only bounds a broken run, it does not measure anything.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settled waits until every transaction ended and nothing is left prepared
// on any node.
func (c *testCluster) settled() {
	c.t.Helper()
	for i := range c.parts {
		eventually(c.t, fmt.Sprintf("no prepared transactions on node %d", i), func() bool { return len(c.prepared(i)) == 0 })
	}
}

func rpcCode(err error) int {
	var e *rpc.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

// concurrently runs f(i) for i in [0,n) and waits.
func concurrently(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); f(i) }()
	}
	wg.Wait()
}
