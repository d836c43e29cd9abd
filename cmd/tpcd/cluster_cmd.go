package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/localcluster"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/pgwire"
)

// ClusterCmd runs a whole local cluster in one process.
type ClusterCmd struct {
	N        int    `short:"n" help:"Number of participants." default:"3"`
	BasePort int    `help:"Coordinator port; participant i gets base-port+1+i (0: free ports)." default:"9990"`
	StateDir string `help:"Keep every node's PostgreSQL under this directory so the next run resumes the same cluster." type:"path"`
	PGBin    string `name:"pg-bin" help:"Directory with initdb and postgres (default: PATH, then /usr/lib/postgresql/*/bin)." type:"path"`

	VoteBatchFlags `embed:""`

	MetricsAddr string `name:"metrics-addr" help:"Serve every node's Prometheus metrics (labelled tpcd_node) at /metrics, /healthz, /readyz (ready once every node is) and the coordinator's status page at / on this HOST:PORT (port 0: a free one). Off by default; it has no authentication, so keep it on loopback." placeholder:"HOST:PORT"`

	PG       bool   `name:"pg" help:"Serve the PostgreSQL protocol too (--no-pg: don't)." default:"true" negatable:""`
	PGListen string `name:"pg-listen" help:"HOST:PORT of the PostgreSQL front door (default: 127.0.0.1, port base-port+n+1; a free port with --base-port 0)." placeholder:"HOST:PORT"`

	ProtocolFlag     `embed:""`
	LazyPreparedFlag `embed:""`
	PGWireFlags      `embed:""`
}

// Help is the long help.
func (c *ClusterCmd) Help() string {
	return `Starts a coordinator and N participants, each with its own embedded
PostgreSQL server, on 127.0.0.1, prints how to reach them, and runs until
Ctrl-C, SIGTERM or SIGHUP, when everything is stopped, temporary files are
removed and it exits 0. Temporary clusters that a killed run left behind are
removed at the next start.`
}

// Validate checks the flags.
func (c *ClusterCmd) Validate() error {
	if c.N < 1 {
		return fmt.Errorf("-n %d: need at least one participant", c.N)
	}
	if c.BasePort < 0 || c.BasePort+c.N > 65535 {
		return fmt.Errorf("--base-port %d: ports base-port..base-port+%d must lie within 1..65535", c.BasePort, c.N)
	}
	if err := c.checkBatch(); err != nil {
		return err
	}
	if c.MetricsAddr != "" {
		if err := checkListenAddr("metrics-addr", c.MetricsAddr); err != nil {
			return err
		}
	}
	if c.PGListen != "" {
		if err := checkAddr("pg-listen", c.PGListen); err != nil {
			return err
		}
	} else if c.PG && c.BasePort != 0 && c.BasePort+c.N+1 > 65535 {
		return fmt.Errorf("--base-port %d: the PostgreSQL front door's port, base-port+%d, must lie within 1..65535; give --pg-listen or --no-pg", c.BasePort, c.N+1)
	}
	return c.PGWireFlags.validate(c.pgListen())
}

// pgListen is where the front door listens.
func (c *ClusterCmd) pgListen() string {
	if c.PGListen != "" {
		return c.PGListen
	}
	port := 0
	if c.BasePort != 0 {
		port = c.BasePort + c.N + 1
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// clusterPGUser is the user tpcd cluster makes up when given none.
const clusterPGUser = "tpcd"

// pgUsers are the configured users or, with none (and no --pg-trust), the
// user tpcd with a password made up for this run: printed with the
// connect command, so that only who sees the output can log in.
func (c *ClusterCmd) pgUsers() (users map[string]string, generated string, err error) {
	users, err = c.users()
	if err != nil || len(users) > 0 || c.PGTrust {
		return users, "", err
	}
	b := make([]byte, 12)
	rand.Read(b)
	generated = hex.EncodeToString(b)
	return map[string]string{clusterPGUser: generated}, generated, nil
}

// checkListenAddr validates a HOST:PORT to listen on, where port 0 asks for
// a free port.
func checkListenAddr(flag, addr string) error {
	if host, port, err := net.SplitHostPort(addr); err == nil && port == "0" {
		addr = net.JoinHostPort(host, "1")
	}
	return checkAddr(flag, addr)
}

// Run starts the cluster and waits for a signal.
func (c *ClusterCmd) Run(g *Globals, ctx context.Context) error {
	logger := stderrLogger(g)
	// No token: the listener is for whoever runs the cluster on this machine,
	// and a non-loopback address is warned about.
	obs, err := startObservability(c.MetricsAddr, logger, true, node.Transport{})
	if err != nil {
		return err
	}
	defer obs.close()
	fmt.Fprintf(os.Stderr, "starting a coordinator and %d participants, each with its own PostgreSQL...\n", c.N)
	opts := localcluster.Options{
		Participants: c.N, BasePort: c.BasePort, StateDir: c.StateDir, PGBin: c.PGBin, Logger: logger, LazyPrepared: c.LazyPrepared,
		Coordinator: engine.CoordinatorConfig{VoteTimeout: c.Timeout.D(), BatchSize: c.BatchSize, BatchFlush: c.BatchFlush.D(), Protocol: c.protocol()},
	}
	obs.observe(&opts)
	cl, err := localcluster.Start(ctx, opts)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			// Stopped on request; Start undid what it had done.
			fmt.Fprintln(os.Stderr, "interrupted while starting; stopped")
			return nil
		}
		return err
	}
	obs.clusterUp(cl, logger)
	var pg *pgwire.Server
	var pgLine string
	if c.PG {
		users, generated, err := c.pgUsers()
		if err != nil {
			cl.Close()
			return err
		}
		shards, err := c.shards()
		if err != nil {
			cl.Close()
			return err
		}
		var addr net.Addr
		pg, addr, err = startPGWire(c.pgListen(), pgwire.Options{Coordinator: cl.Coordinator(), Users: users, Trust: c.PGTrust,
			Shards: shards, Logger: logger}, logger)
		if err != nil {
			cl.Close()
			return err
		}
		defer pg.Close()
		switch {
		case generated != "":
			pgLine = fmt.Sprintf("PostgreSQL:    psql 'postgresql://%s:%s@%s/tpcd'  (user %s, password %s, made up for this run)", clusterPGUser, generated, addr, clusterPGUser, generated)
		case c.PGTrust:
			pgLine = fmt.Sprintf("PostgreSQL:    psql 'postgresql://%s@%s/tpcd'  (trust: no password)", clusterPGUser, addr)
		default:
			pgLine = fmt.Sprintf("PostgreSQL:    psql 'postgresql://USER@%s/tpcd'  (the users of --pg-user or --pg-users-file)", addr)
		}
	}
	cl.PrintTable(os.Stdout)
	fmt.Println()
	if obs != nil {
		fmt.Printf("Status page:   http://%s/\n", obs.addr)
		fmt.Printf("Metrics:       http://%s/metrics  (health: /healthz, /readyz)\n", obs.addr)
	}
	if pgLine != "" {
		fmt.Println(pgLine)
	}
	fmt.Printf("Connect with:  %s client --coordinator %s\n", selfCommand(), cl.CoordinatorAddr())
	fmt.Println("Press Ctrl-C to stop.")
	select {
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr, "stopping...")
	case err = <-cl.Failed():
		fmt.Fprintf(os.Stderr, "stopping: %v\n", err)
	}
	if pg != nil {
		// First, so that the sessions' open transactions are rolled
		// back while the coordinator still runs.
		pg.Close()
	}
	if err := errors.Join(err, cl.Close()); err != nil {
		return err
	}
	if c.StateDir != "" {
		fmt.Fprintf(os.Stderr, "stopped; the cluster is kept in %s\n", c.StateDir)
	} else {
		fmt.Fprintln(os.Stderr, "stopped; temporary files removed")
	}
	return nil
}

func (c *ClusterCmd) startsPostgres() bool { return true }
