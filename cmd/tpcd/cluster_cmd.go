package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/localcluster"
)

// ClusterCmd runs a whole local cluster in one process.
type ClusterCmd struct {
	N          int     `short:"n" help:"Number of participants." default:"3"`
	BasePort   int     `help:"Coordinator port; participant i gets base-port+1+i (0: free ports)." default:"9990"`
	StateDir   string  `help:"Keep every node's PostgreSQL under this directory so the next run resumes the same cluster." type:"path"`
	PGBin      string  `name:"pg-bin" help:"Directory with initdb and postgres (default: PATH, then /usr/lib/postgresql/*/bin)." type:"path"`
	Timeout    Seconds `help:"Seconds to wait for all votes before aborting." default:"5"`
	BatchSize  int     `help:"Seed form: how many execute calls make one transaction." default:"1"`
	BatchFlush Seconds `help:"Seed form: commit a partial batch this long after it began." default:"1"`

	ProtocolFlag `embed:""`
}

// Help is the long help.
func (c *ClusterCmd) Help() string {
	return `Starts a coordinator and N participants, each with its own embedded
PostgreSQL server, on 127.0.0.1, prints how to reach them, and runs until
Ctrl-C (or SIGTERM), when everything is stopped and temporary files removed.`
}

// Validate checks the flags.
func (c *ClusterCmd) Validate() error {
	if c.N < 1 {
		return fmt.Errorf("-n %d: need at least one participant", c.N)
	}
	if c.BasePort < 0 || c.BasePort+c.N > 65535 {
		return fmt.Errorf("--base-port %d: ports base-port..base-port+%d must lie within 1..65535", c.BasePort, c.N)
	}
	if c.BatchSize < 1 {
		return fmt.Errorf("--batch-size %d: must be at least 1", c.BatchSize)
	}
	return nil
}

// Run starts the cluster and waits for a signal.
func (c *ClusterCmd) Run(g *Globals, ctx context.Context) error {
	logger := stderrLogger(g)
	fmt.Fprintf(os.Stderr, "starting a coordinator and %d participants, each with its own PostgreSQL...\n", c.N)
	cl, err := localcluster.Start(ctx, localcluster.Options{
		Participants: c.N, BasePort: c.BasePort, StateDir: c.StateDir, PGBin: c.PGBin, Logger: logger,
		Coordinator: engine.CoordinatorConfig{VoteTimeout: c.Timeout.D(), BatchSize: c.BatchSize, BatchFlush: c.BatchFlush.D(), Protocol: c.protocol()},
	})
	if err != nil {
		return err
	}
	cl.PrintTable(os.Stdout)
	fmt.Println("Press Ctrl-C to stop.")
	select {
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr, "stopping...")
		return cl.Close()
	case err := <-cl.Failed():
		fmt.Fprintf(os.Stderr, "stopping: %v\n", err)
		return errors.Join(err, cl.Close())
	}
}

func (c *ClusterCmd) startsPostgres() bool { return true }
