package node_test

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/rpc"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// testCluster is a coordinator and participants in this process
// (internal/testcluster), with the methods the tests here share.
type testCluster struct{ *testcluster.Cluster }

type clusterConfig struct {
	// participants defaults to 3.
	participants int
	engine       engine.CoordinatorConfig
	lockTimeout  time.Duration
	// compactEvery is the coordinator's CompactEvery (0: its default).
	compactEvery time.Duration
	// coordLog, if set, also receives the coordinator's log lines.
	coordLog io.Writer
}

func startCluster(t *testing.T, cfg clusterConfig) *testCluster {
	t.Helper()
	if cfg.participants == 0 {
		cfg.participants = 3
	}
	return &testCluster{testcluster.Start(t, testcluster.Config{
		Participants: cfg.participants,
		// Room for the tests that run many transactions at once.
		MaxConns: 60,
		Coordinator: func(o *node.CoordinatorOptions) {
			o.Engine, o.CompactEvery = cfg.engine, cfg.compactEvery
			if cfg.coordLog != nil {
				o.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), cfg.coordLog), &slog.HandlerOptions{Level: slog.LevelInfo}))
			}
		},
		Participant: func(_ int, o *node.ParticipantOptions) { o.LockTimeout = cfg.lockTimeout },
	})}
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
