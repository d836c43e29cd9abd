package client

import (
	"context"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/node"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// testCluster is a coordinator and N participants running in the test
// process on databases of the shared test PostgreSQL, serving on
// 127.0.0.1 ports picked by the kernel.
type testCluster struct {
	t testing.TB
	// Addr is the coordinator's HOST:PORT.
	Addr string
	// Data are the participants' data databases, to check what landed.
	Data []*pgxpool.Pool

	engine      engine.CoordinatorConfig
	coordLogURI string
	partAddrs   []string
	coordDBs    *node.Databases
	coord       *node.Coordinator
	parts       []*node.Participant
	logger      *slog.Logger
	transport   node.Transport
}

// startCluster starts n participants and a coordinator configured by cfg
// (its Participants field is set here). Everything stops when the test
// ends.
func startCluster(t testing.TB, n int, cfg engine.CoordinatorConfig) *testCluster {
	t.Helper()
	return startClusterWith(t, n, cfg, node.Transport{})
}

// startClusterWith is startCluster with every node's RPC secured by tr.
func startClusterWith(t testing.TB, n int, cfg engine.CoordinatorConfig, tr node.Transport) *testCluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := &testCluster{t: t, engine: cfg, logger: testLogger(t), transport: tr}

	coordLn := listen(t)
	c.Addr = coordLn.Addr().String()
	lns := make([]net.Listener, n)
	for i := range lns {
		lns[i] = listen(t)
		c.partAddrs = append(c.partAddrs, lns[i].Addr().String())
	}
	for i := range n {
		dbs, err := node.OpenDatabases(ctx, node.DatabaseSpec{
			LogURI: pgtest.NewDB(t), DataURI: pgtest.NewDB(t), NeedData: true, MaxConns: 20, Logger: c.logger,
		})
		if err != nil {
			t.Fatalf("participant %d databases: %v", i, err)
		}
		t.Cleanup(func() { dbs.Close() })
		p, err := node.StartParticipant(ctx, lns[i], node.ParticipantOptions{
			ID: engine.NodeID(i), Coordinator: c.Addr, Log: dbs.Log, Data: dbs.Data, Logger: c.logger, Transport: tr,
		})
		if err != nil {
			t.Fatalf("start participant %d: %v", i, err)
		}
		c.parts = append(c.parts, p)
		c.Data = append(c.Data, dbs.Data)
	}
	c.coordLogURI = pgtest.NewDB(t)
	// Nodes take a while to shut down (their servers drain); stop them all
	// at once.
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, p := range c.parts {
			wg.Go(func() { p.Close() })
		}
		wg.Go(c.stopCoordinator)
		wg.Wait()
	})
	c.startCoordinator(ctx, coordLn)
	return c
}

func (c *testCluster) startCoordinator(ctx context.Context, ln net.Listener) {
	c.t.Helper()
	dbs, err := node.OpenDatabases(ctx, node.DatabaseSpec{LogURI: c.coordLogURI, Logger: c.logger})
	if err != nil {
		c.t.Fatalf("coordinator database: %v", err)
	}
	coord, err := node.StartCoordinator(ctx, ln, node.CoordinatorOptions{
		Participants: c.partAddrs, Log: dbs.Log, Engine: c.engine, Logger: c.logger, Transport: c.transport,
	})
	if err != nil {
		dbs.Close()
		c.t.Fatalf("start coordinator: %v", err)
	}
	c.coordDBs, c.coord = dbs, coord
}

func (c *testCluster) stopCoordinator() {
	if c.coord != nil {
		c.coord.Close()
		c.coordDBs.Close()
		c.coord, c.coordDBs = nil, nil
	}
}

// restartCoordinator stops the coordinator and starts it again on the same
// address and log, as an operator's restart would: a new epoch.
func (c *testCluster) restartCoordinator() {
	c.t.Helper()
	c.stopCoordinator()
	c.startAgain()
}

// startAgain starts the stopped coordinator on its old address and log.
func (c *testCluster) startAgain() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ln net.Listener
	var err error
	// The old listener is closed; the port is free again at once (Go sets
	// SO_REUSEADDR), but retry briefly in case the close is still settling.
	for range 50 {
		if ln, err = net.Listen("tcp", c.Addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatalf("listen again on %s: %v", c.Addr, err)
	}
	c.startCoordinator(ctx, ln)
}

// count runs a single-number query on participant i's data database.
func (c *testCluster) count(t testing.TB, i int, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := c.Data[i].QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("participant %d: %s: %v", i, sql, err)
	}
	return n
}

// createTable makes the same table on every participant, outside tpcd.
func (c *testCluster) createTable(t testing.TB, sql string) {
	t.Helper()
	for i, p := range c.Data {
		if _, err := p.Exec(context.Background(), sql); err != nil {
			t.Fatalf("participant %d: %s: %v", i, sql, err)
		}
	}
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// testLogger discards the nodes' logs unless TPCD_TEST_LOG is set, in
// which case they go to stderr (t.Log would panic on the lines the nodes
// write while shutting down after the test).
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("TPCD_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

// waitRows waits until participant i's table holds at least n rows: the
// second phase of a commit reaches participants after the client's commit
// call returned.
func (c *testCluster) waitRows(t testing.TB, i int, table string, n int64) {
	t.Helper()
	c.waitCount(t, i, "SELECT count(*) FROM "+table, n)
}

// waitCount waits until a count query on participant i reaches n.
func (c *testCluster) waitCount(t testing.TB, i int, sql string, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := c.count(t, i, sql)
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("participant %d: %s = %d, want %d", i, sql, got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
