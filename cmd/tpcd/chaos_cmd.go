package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/tpcd/tpcd/chaos"
)

// ChaosCmd runs the chaos harness.
type ChaosCmd struct {
	Duration       Seconds  `help:"How long to inject faults (seconds, or a duration like 10m) ($$${env})." env:"TPCD_CHAOS_DURATION,TPCD_DURATION" default:"60s"`
	N              int      `short:"n" help:"Number of participants." default:"3"`
	Clients        int      `help:"Concurrent clients." default:"8"`
	Coordinators   int      `help:"Coordinator processes: 1, with its log in its own embedded PostgreSQL; or 2, sharing a log server by a lease (tpcd coordinator --lease), one serving and one its standby, so that kill-node and pause-node of either make the other take over (kill-embedded-postgres and replace-coordinator do not apply)." enum:"1,2" default:"1"`
	Slots          int      `help:"With --coordinators 2: 2 makes both serve at once, each holding a slot (tpcd coordinator --slots 2), the clients starting at either; killing or pausing one makes the other take its slot over. 1: one serves, the other is its standby." enum:"1,2" default:"1"`
	Seed           uint64   `help:"Seed of every random choice (faults, targets, workload); 0 picks one and prints it." default:"0"`
	Faults         []string `help:"Fault kinds to inject, comma-separated (default: all): kill-node, kill-postgres, pause-node, link-cut, link-down, link-blackhole, link-stall, link-delay, kill-embedded-postgres, replace-coordinator." placeholder:"KIND"`
	QuiesceTimeout Seconds  `help:"How long the cluster may take, after the faults, to end every transaction." default:"3m"`
	PGBin          string   `name:"pg-bin" help:"Directory with initdb and postgres (default: PATH, then /usr/lib/postgresql/*/bin)." type:"path" placeholder:"DIR"`
	Keep           string   `help:"Keep the servers' data and the node logs in this new directory (default: a temporary directory, removed)." type:"path" placeholder:"DIR"`
}

// Help is the long help.
func (c *ChaosCmd) Help() string {
	return `Starts a coordinator and N participants as tpcd processes (this binary),
each on private PostgreSQL servers, routes node-to-node traffic through
proxies it controls, and runs concurrent client transactions while it
injects faults at random: SIGKILL and restart of nodes and PostgreSQL
servers, the coordinator's own PostgreSQL killed for it to heal, the
coordinator replaced by a fresh one with an empty log, paused nodes, cut,
refused, black-holed, stalled and delayed links. With --coordinators 2
two coordinators share a log server, one serving and one its standby, and
killing or pausing either makes the other take over. Then it restores
everything, waits until every transaction has ended and checks that each
one committed on all the nodes it touched or on none.

It prints what the clients were told, the faults injected and the
violations found, and exits non-zero if there are any. See docs/CHAOS.md.`
}

// Validate checks the flags.
func (c *ChaosCmd) Validate() error {
	if c.N < 1 {
		return fmt.Errorf("-n %d: need at least one participant", c.N)
	}
	if c.Clients < 1 {
		return fmt.Errorf("--clients %d: need at least one client", c.Clients)
	}
	if c.Duration.D() <= 0 {
		return fmt.Errorf("--duration must be more than 0 seconds")
	}
	if c.Slots == 2 && c.Coordinators != 2 {
		return errors.New("--slots 2 needs --coordinators 2")
	}
	for _, f := range c.Faults {
		if !contains(chaos.FaultKinds(), f) {
			return fmt.Errorf("--faults %s: unknown kind; use some of %s", f, strings.Join(chaos.FaultKinds(), ","))
		}
		if c.Coordinators == 2 && (f == chaos.KillEmbeddedPostgres || f == chaos.ReplaceCoordinator) {
			return fmt.Errorf("--faults %s needs the coordinator's own embedded PostgreSQL; with --coordinators 2 they share a log server", f)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Run runs the harness and prints its report.
func (c *ChaosCmd) Run(g *Globals, ctx context.Context) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the tpcd binary to run the nodes: %w", err)
	}
	rep, err := chaos.Run(ctx, chaos.Options{
		Binary: self, Duration: c.Duration.D(), Participants: c.N, Clients: c.Clients, Coordinators: c.Coordinators, Slots: c.Slots, Seed: c.Seed,
		Faults: c.Faults, QuiesceTimeout: c.QuiesceTimeout.D(), PGBin: c.PGBin, Keep: c.Keep,
		Logger: stderrLogger(g),
	})
	if rep != nil && (err == nil || rep.Attempted > 0) {
		rep.Print(os.Stdout)
	}
	if err != nil {
		return err
	}
	if !rep.OK() {
		return fmt.Errorf("chaos found %d violations and %d problems (seed %d)", len(rep.Violations), len(rep.Problems), rep.Seed)
	}
	return nil
}
