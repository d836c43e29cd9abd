// Package localcluster runs a whole tpcd cluster in one process: a
// coordinator and N participants, each with its own embedded PostgreSQL
// server (or given URIs), on consecutive loopback ports. It is what
// `tpcd cluster` runs, so that a newcomer gets a working cluster from one
// command.
//
// The nodes share a peer token made at random for each start and never
// shown: node-to-node methods (tpcd.*) refuse every caller but the
// cluster's own nodes, while clients need no token.
package localcluster

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"text/tabwriter"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/db/embedpg"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/rpc"
)

// Options configure a local cluster.
type Options struct {
	// Participants is the number of participants. Default 3.
	Participants int
	// Host is the interface to listen on. Default 127.0.0.1.
	Host string
	// BasePort is the coordinator's port; participant i listens on
	// BasePort+1+i. 0 picks free ports.
	BasePort int
	// StateDir keeps every node's embedded PostgreSQL under it, so a second
	// run resumes the same cluster (and recovers it). Empty: temporary.
	StateDir string
	PGBin    string
	// Coordinator configures the coordinator's engine (timeouts, batches).
	Coordinator engine.CoordinatorConfig
	// MaxConns sizes every database pool, as `tpcd participant --max-conns`
	// does: the data pool needs one connection per open transaction.
	// Default 100.
	MaxConns int
	// LazyPrepared is the participants' engine.ParticipantConfig.LazyPrepared,
	// which `tpcd cluster` and `tpcd participant` turn on unless given
	// --no-lazy-prepared.
	LazyPrepared bool
	// CoordinatorObserver and ParticipantObserver, if set, give the nodes
	// their observers (metrics), as --metrics-addr does for a single node.
	CoordinatorObserver node.Observer
	ParticipantObserver func(id engine.NodeID) node.Observer
	Logger              *slog.Logger
}

// Node describes one running node.
type Node struct {
	Role    string
	Name    string
	Addr    string
	LogURI  string
	DataURI string
}

// Cluster is a running local cluster.
type Cluster struct {
	Nodes []Node
	// peers is the secret the nodes present to each other.
	peers node.Transport
	coord *node.Coordinator
	parts []*node.Participant
	dbs   []*node.Databases
	// failed carries the first node whose PostgreSQL was given up on;
	// closing ends the goroutines that watch for one.
	failed    chan error
	closing   chan struct{}
	closeOnce sync.Once
}

// Start brings the cluster up. If anything fails, whatever was started is
// stopped again (and temporary directories removed) before it returns.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Participants <= 0 {
		opts.Participants = 3
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 100
	}
	// 128 random bits: only the cluster's own nodes know it, so nobody
	// else may send them node-to-node messages, even on this machine.
	token := rand.Text()
	c := &Cluster{failed: make(chan error, 1), closing: make(chan struct{}), peers: node.Transport{Auth: rpc.Auth{PeerToken: token}, PeerToken: token}}
	var lns []net.Listener
	defer func() {
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			c.Close()
		}
	}()

	// Listen first: the addresses are needed to wire the nodes together,
	// and a taken port should fail before any database is started.
	n := opts.Participants
	for i := 0; i <= n; i++ {
		port := 0
		if opts.BasePort != 0 {
			port = opts.BasePort + i
		}
		addr := net.JoinHostPort(opts.Host, strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s (choose another --base-port): %w", addr, err)
		}
		lns = append(lns, ln)
	}
	coordAddr := lns[0].Addr().String()
	var partAddrs []string
	for _, ln := range lns[1:] {
		partAddrs = append(partAddrs, ln.Addr().String())
	}

	// Every node would find the same binaries, or fail alike: look once,
	// so that a wrong --pg-bin is told once rather than per node.
	if _, err := embedpg.FindBinDir(opts.PGBin); err != nil {
		return nil, err
	}
	// Databases start in parallel: initdb dominates start-up time.
	names := []string{api.CoordinatorName}
	for i := range n {
		names = append(names, api.ParticipantName(engine.NodeID(i)))
	}
	c.dbs = make([]*node.Databases, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			spec := node.DatabaseSpec{NeedData: i > 0, PGBin: opts.PGBin, Logger: opts.Logger.With("node", name),
				MaxConns: opts.MaxConns, MaxPreparedTransactions: 2 * opts.MaxConns, WarmDataConns: node.DefaultWarmDataConns}
			if opts.StateDir != "" {
				spec.StateDir = filepath.Join(opts.StateDir, name)
			}
			c.dbs[i], errs[i] = node.OpenDatabases(ctx, spec)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	for i := range n {
		popts := node.ParticipantOptions{
			ID: engine.NodeID(i), Coordinator: coordAddr, Log: c.dbs[i+1].Log, Data: c.dbs[i+1].Data,
			Logger: opts.Logger, DatabasesDown: c.dbs[i+1].Down, Transport: c.peers,
			Engine: engine.ParticipantConfig{LazyPrepared: opts.LazyPrepared},
		}
		if opts.ParticipantObserver != nil {
			popts.Observer = opts.ParticipantObserver(engine.NodeID(i))
		}
		p, err := node.StartParticipant(ctx, lns[i+1], popts)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", names[i+1], err)
		}
		lns[i+1] = nil
		c.parts = append(c.parts, p)
	}
	coord, err := node.StartCoordinator(ctx, lns[0], node.CoordinatorOptions{
		Participants: partAddrs, Log: c.dbs[0].Log, Engine: opts.Coordinator, Logger: opts.Logger, Transport: c.peers,
		Observer: opts.CoordinatorObserver,
	})
	if err != nil {
		return nil, fmt.Errorf("start coordinator: %w", err)
	}
	lns[0] = nil
	lns = nil
	c.coord = coord

	for i, d := range c.dbs {
		go c.watch(names[i], d)
	}

	c.Nodes = append(c.Nodes, Node{Role: "coordinator", Name: names[0], Addr: coordAddr, LogURI: c.dbs[0].LogURI})
	for i := range n {
		c.Nodes = append(c.Nodes, Node{Role: "participant", Name: names[i+1], Addr: partAddrs[i], LogURI: c.dbs[i+1].LogURI, DataURI: c.dbs[i+1].DataURI})
	}
	return c, nil
}

// watch passes on why a node's PostgreSQL was given up on.
func (c *Cluster) watch(name string, d *node.Databases) {
	select {
	case err := <-d.Failed():
		select {
		case c.failed <- fmt.Errorf("%s: %w", name, err):
		default: // another node's failure is reported already
		}
	case <-c.closing:
	}
}

// Failed delivers why the cluster cannot go on: a node's own PostgreSQL
// kept dying or could not be restarted, and was given up on. Each node's
// server is otherwise restarted whenever it dies (node.Databases).
func (c *Cluster) Failed() <-chan error { return c.failed }

// Coordinator is the running coordinator, for front doors served in the
// same process (the PostgreSQL protocol).
func (c *Cluster) Coordinator() *node.Coordinator { return c.coord }

// CoordinatorAddr is where clients connect.
func (c *Cluster) CoordinatorAddr() string { return c.Nodes[0].Addr }

// Participants are the running participants, by node id.
func (c *Cluster) Participants() []*node.Participant { return c.parts }

// PrintTable writes the nodes as an aligned table.
func (c *Cluster) PrintTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tNODE\tRPC\tLOG DB\tDATA DB")
	for _, n := range c.Nodes {
		data := n.DataURI
		if data == "" {
			data = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Role, n.Name, n.Addr, db.Redact(n.LogURI), db.Redact(data))
	}
	tw.Flush()
}

// Close stops every node and database; temporary directories are removed.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() { close(c.closing) })
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
