package node

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"

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
