package node

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/rpc"
)

// background starts a node's goroutines: the RPC server on ln and each of
// workers, which run until the returned cancel is called. done is closed
// once every worker has returned (the server stops through its Shutdown).
func background(server *rpc.Server, ln net.Listener, logger *slog.Logger, done chan struct{}, workers ...func(context.Context)) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); w(ctx) }()
	}
	go func() {
		if err := server.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("rpc server stopped", "err", err)
		}
	}()
	go func() { wg.Wait(); close(done) }()
	return cancel
}

// compactLoop deletes the events of finished transactions every interval
// (a negative interval disables it). A coordinator never needs them again:
// an inquiry about a forgotten transaction can only be a stale duplicate,
// and transaction ids stay unique through the reservation events, which are
// kept. A participant's finished transactions have no marker left to check.
func compactLoop(ctx context.Context, every time.Duration, store eventLog, node string, mu *sync.Mutex, ids *[]logstore.Ended, logger *slog.Logger) {
	if every < 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		compact(ctx, store, node, mu, ids, logger)
	}
}
