package client

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/node"
)

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, pgtest.Main)) }

// testCluster is a coordinator and N participants running in the test
// process (internal/testcluster), without table kv.
type testCluster struct{ *testcluster.Cluster }

// startCluster starts n participants and a coordinator configured by cfg.
// Everything stops when the test ends.
func startCluster(t testing.TB, n int, cfg engine.CoordinatorConfig) *testCluster {
	t.Helper()
	return startClusterWith(t, n, cfg, node.Transport{})
}

// startClusterWith is startCluster with every node's RPC secured by tr.
func startClusterWith(t testing.TB, n int, cfg engine.CoordinatorConfig, tr node.Transport) *testCluster {
	t.Helper()
	return &testCluster{testcluster.Start(t, testcluster.Config{
		Participants: n,
		NoTable:      true,
		Logger:       testLogger(t),
		Coordinator:  func(o *node.CoordinatorOptions) { o.Engine, o.Transport = cfg, tr },
		Participant:  func(_ int, o *node.ParticipantOptions) { o.Transport = tr },
	})}
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
