package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/node"
)

// DefaultMaxConns sizes every database pool of a cluster bench starts, as
// `tpcd participant --max-conns` does by default. localcluster (and so
// `tpcd cluster`) leaves the pools at pgxpool's default of max(4, CPUs):
// on this 2-core machine four open transactions per participant, after
// which statements fail ("no free data-database connection"), so a
// benchmark through it would measure that limit and nothing else.
const DefaultMaxConns = 100

// cluster is a coordinator and participants started in this process, each
// with its own embedded PostgreSQL server, wired like localcluster's but
// with pools as large as the daemons'.
type cluster struct {
	coordAddr string
	logURI    string
	dataURIs  []string

	dbs   []*node.Databases
	coord *node.Coordinator
	parts []*node.Participant
}

func startCluster(ctx context.Context, n, maxConns int, lazyPrepared bool, retryMin time.Duration, pgBin string, logger *slog.Logger) (_ *cluster, err error) {
	c := &cluster{dbs: make([]*node.Databases, n+1)}
	var lns []net.Listener
	defer func() {
		if err != nil {
			for _, ln := range lns {
				if ln != nil {
					ln.Close()
				}
			}
			c.close()
		}
	}()
	for range n + 1 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
		lns = append(lns, ln)
	}
	addrs := make([]string, len(lns))
	for i, ln := range lns {
		addrs[i] = ln.Addr().String()
	}

	// initdb dominates start-up; the servers start in parallel.
	errs := make([]error, n+1)
	var wg sync.WaitGroup
	for i := range n + 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.dbs[i], errs[i] = node.OpenDatabases(ctx, node.DatabaseSpec{
				NeedData: i > 0, PGBin: pgBin, MaxConns: maxConns,
				MaxPreparedTransactions: 2 * maxConns, Logger: logger,
			})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	for i := range n {
		p, err := node.StartParticipant(ctx, lns[i+1], node.ParticipantOptions{
			ID: engine.NodeID(i), Coordinator: addrs[0], Log: c.dbs[i+1].Log, Data: c.dbs[i+1].Data, Logger: logger,
			Engine: engine.ParticipantConfig{LazyPrepared: lazyPrepared},
		})
		if err != nil {
			return nil, fmt.Errorf("start participant %d: %w", i, err)
		}
		lns[i+1] = nil
		c.parts = append(c.parts, p)
		c.dataURIs = append(c.dataURIs, c.dbs[i+1].DataURI)
	}
	coord, err := node.StartCoordinator(ctx, lns[0], node.CoordinatorOptions{
		Participants: addrs[1:], Log: c.dbs[0].Log, Logger: logger,
		Engine: engine.CoordinatorConfig{RetryMin: retryMin},
	})
	if err != nil {
		return nil, fmt.Errorf("start coordinator: %w", err)
	}
	lns[0] = nil
	c.coord = coord
	c.coordAddr = addrs[0]
	c.logURI = c.dbs[0].LogURI
	return c, nil
}

// close stops the nodes, then their servers, removing the temporary
// directories.
func (c *cluster) close() error {
	var errs []error
	if c.coord != nil {
		errs = append(errs, c.coord.Close())
		c.coord = nil
	}
	for _, p := range c.parts {
		errs = append(errs, p.Close())
	}
	c.parts = nil
	for _, d := range c.dbs {
		if d != nil {
			errs = append(errs, d.Close())
		}
	}
	c.dbs = nil
	return errors.Join(errs...)
}
