package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/term"

	"github.com/tpcd/tpcd/bench"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/localcluster"
)

// BenchCmd is a load generator; the logic lives in package bench.
type BenchCmd struct {
	Coordinator   []string `help:"HOST:PORT of a running coordinator (default: start a local cluster with embedded PostgreSQL in this process). Where coordinators share the log by a lease (tpcd coordinator --lease), give each one's address, comma-separated or repeated: calls go to the one serving, and where several serve at once (--slots) connections start at each address in turn." placeholder:"HOST:PORT"`
	N             int      `short:"n" help:"Participants of the local cluster bench starts (ignored with --coordinator)." default:"3"`
	PGBin         string   `name:"pg-bin" help:"Directory with initdb and postgres for the local cluster." type:"path"`
	MaxConns      int      `help:"Connections per database pool of the local cluster (as tpcd participant --max-conns)." default:"100"`
	C             int      `short:"c" name:"concurrency" help:"Concurrent clients, each running one transaction at a time." default:"8"`
	Connections   int      `help:"RPC clients the clients share round robin (0: one per client); each opens a connection, or stream, per call in flight." default:"0"`
	S             int      `short:"s" name:"statements" help:"Statements (upserts) per transaction, spread over the participants round robin from a random one." default:"3"`
	Form          string   `help:"How a transaction is sent: 'interactive' sends an exec call per statement and a commit; 'single' sends statements and commit in one transact call (and the raw baseline runs each server's statements at the same time as the others'); 'direct' is interactive with the statements sent straight to their participants (those on the first statement's participant, which begins the transaction, go through the coordinator), and the commit telling the coordinator what went where; 'plain' puts each transaction's statements on one participant, as --baseline local does, and sends them there in one call as a plain transaction (plain_transact), the coordinator and the logs left out." enum:"interactive,single,direct,plain" default:"interactive"`
	NoKeys        bool     `name:"no-keys" help:"Send --form single's transactions without idempotency keys (by default each carries one, and a call whose reply was lost is sent again and answered with the first call's outcome)."`
	Transport     string   `help:"How the clients' calls travel: 'http' as HTTP/1.1 requests on kept-alive connections through Go's net/http client, as most HTTP clients send them; 'stream' as frames of batch streams (the same JSON-RPC without HTTP's headers; docs/WIRE.md); 'mux' as messages on a few multiplexed batch streams all the clients share, so that calls made at once travel in one frame." enum:"http,stream,mux" default:"http"`
	HotFraction   float64  `help:"Fraction of statements that write one of --hot-keys keys, to provoke lock conflicts (0: every key is new)." default:"0"`
	HotKeys       int      `help:"Size of the hot key set." default:"16"`
	Duration      Seconds  `help:"How long to measure (after the warm-up) ($$${env})." env:"TPCD_BENCH_DURATION,TPCD_DURATION" default:"20"`
	Transactions  int      `help:"Measure exactly this many transactions instead of a duration." default:"0"`
	Warmup        Seconds  `help:"Run the load this long before measuring (0: none; right after the nodes start, the report's rates by second then show how fast they get up to speed)." default:"5"`
	Rounds        int      `help:"Measure this many times, tpcd and the baselines taking turns; the report is the median round's (by tpcd's throughput against the first baseline), and lists every round." default:"1"`
	Baseline      []string `help:"Also measure baselines, the same workload straight on the same PostgreSQL servers without tpcd, each after tpcd in every round (comma-separated or repeated): 'raw' two-phase commit with one forced decision row each; 'raw-grouped' the same with the decision rows of concurrent transactions in one insert and commit; 'local' BEGIN, statements, COMMIT of each transaction on one data server, round robin (against -s 1 it is the plain local transaction tpcd's one-phase commit competes with)." enum:"none,raw,raw-grouped,local" default:"none" sep:","`
	DataDB        []string `name:"data-db" help:"With --coordinator, a participant's data database URI, for the baselines and the WAL figures; repeat in node order." placeholder:"URI"`
	LogDB         string   `name:"log-db" help:"With --coordinator, a database on the coordinator's log server, for the decision rows of --baseline raw and raw-grouped and the WAL figures." placeholder:"URI"`
	Rate          float64  `help:"Transactions per second to start, due on --schedule whether or not the last ones are done (an open system, like pgbench --rate); latency then counts from each one's due time, waiting for a free client included, and the report gives the lag. 0: every client starts its next transaction when its last one ends." default:"0"`
	Schedule      string   `help:"With --rate: 'poisson' (exponential gaps, as pgbench) or 'fixed' (equal gaps)." enum:"poisson,fixed" default:"poisson"`
	LatencyLimit  Seconds  `name:"latency-limit" help:"Count committed transactions slower than this; with --rate, skip a transaction already this late when a client is free (like pgbench --latency-limit; seconds, or e.g. 50ms). 0: none." default:"0"`
	Progress      Seconds  `short:"P" help:"Print a progress line to stderr every this many seconds, as pgbench -P: committed/s, latency mean and standard deviation, aborted and failed over the interval (with --rate, lag and skipped too), warm-up included. 0: none (a terminal gets a line redrawn in place instead)." default:"0"`
	JSON          bool     `name:"json" help:"Print the report as JSON."`
	CPUProfile    string   `name:"cpuprofile" hidden:"" help:"Write a CPU profile of the (first round's) tpcd measurement (this process: with a local cluster, the nodes too)." type:"path"`
	MemProfile    string   `name:"memprofile" hidden:"" help:"Write an allocation profile at the end of the (first round's) tpcd measurement." type:"path"`
	Trace         string   `name:"trace" hidden:"" help:"Write an execution trace of the (first round's) tpcd measurement (go tool trace)." type:"path"`
	LazyPrepared  bool     `name:"lazy-prepared" hidden:"" default:"true" negatable:"" help:"Start the local cluster's participants with lazy Prepared events, as tpcd participant does by default (--no-lazy-prepared: the yes vote waits for the participant's log)."`
	DecisionRetry Seconds  `name:"decision-retry" hidden:"" help:"The local cluster's coordinator resends an unacknowledged decision first after this long, a decider's after ten times as long (default: the engine's)."`
	WatchPID      int      `name:"watch-pid" hidden:"" help:"Report the peak RSS of this process (e.g. an external coordinator) during the measurements."`

	// Protocol applies to the cluster bench starts; a coordinator given
	// with --coordinator commits with its own.
	ProtocolFlag `embed:""`
}

// Help is the long help.
func (c *BenchCmd) Help() string {
	return `Runs explicit transactions of upserts into bench_kv (created on every
participant) from many clients, a call per statement or (--form single)
one call per transaction, and prints committed and aborted
transactions per second, commit latency percentiles, the committed rate
second by second, and the work per committed transaction. With
--baseline raw it measures the same workload done directly on the same
PostgreSQL servers (BEGIN, statements, PREPARE TRANSACTION on each, one
decision row on the log server, COMMIT PREPARED) and prints tpcd/raw;
raw-grouped writes the decision rows of concurrent transactions
together; local runs each transaction's statements as one plain
transaction on one server.

CPU per committed transaction is given for this process (with the
cluster bench starts, the nodes too) and for all processes, read from
/proc: this one, the cluster's nodes running here as tpcd processes
(found by the addresses they listen on), and the PostgreSQL servers here
that this process or such a node started or that --data-db and --log-db
name (postmasters and their children). Nodes and servers on other
machines are not in it; the report says how many processes it counted.
The context switches of the same processes, per committed transaction,
count the hops and waits a commit took.

Examples:
  tpcd bench -c 32 --baseline raw,raw-grouped
  tpcd bench -c 32 --baseline raw --form single --transport stream
  tpcd bench -c 32 -s 1 --baseline local --form single --transport stream
  tpcd bench -c 32 -s 1 --baseline local --form plain --transport stream
  tpcd bench -c 32 --warmup 0 --duration 30
  tpcd bench -c 16 --rate 200 -P 5 --latency-limit 100ms
  tpcd bench --coordinator 127.0.0.1:9990 -c 8 --hot-fraction 0.2 --duration 60`
}

func (c *BenchCmd) options() bench.Options {
	o := bench.Options{
		Coordinator: c.coordinator(), Standbys: c.standbys(), Participants: c.N, PGBin: c.PGBin, MaxConns: c.MaxConns, LazyPrepared: c.LazyPrepared, DecisionRetry: c.DecisionRetry.D(), Protocol: c.protocol(),
		Concurrency: c.C, Connections: c.Connections, Statements: c.S, Form: c.Form, NoKeys: c.NoKeys, Transport: c.Transport,
		HotFraction: c.HotFraction, HotKeys: c.HotKeys,
		Duration: c.Duration.D(), Transactions: c.Transactions, Warmup: c.Warmup.D(), Rounds: c.Rounds,
		Rate: c.Rate, Schedule: c.Schedule, LatencyLimit: c.LatencyLimit.D(), ProgressEvery: c.Progress.D(),
		Baselines: c.Baseline, DataDBs: c.DataDB, LogDB: c.LogDB,
		CPUProfile: c.CPUProfile, MemProfile: c.MemProfile, Trace: c.Trace, WatchPID: c.WatchPID,
		StartCluster: startBenchCluster,
	}
	if o.Warmup == 0 {
		o.Warmup = -1 // --warmup 0 means none, not the default
	}
	return o
}

// Validate checks the flags.
func (c *BenchCmd) Validate() error {
	if err := checkAddrs("coordinator", c.Coordinator, "give each coordinator's address once"); err != nil {
		return err
	}
	for _, u := range c.DataDB {
		if err := checkURI("data-db", u); err != nil {
			return err
		}
	}
	if err := checkURI("log-db", c.LogDB); err != nil {
		return err
	}
	if c.N < 1 || c.C < 1 || c.S < 1 || c.HotKeys < 1 || c.MaxConns < 2 {
		return errors.New("-n, -c, -s and --hot-keys must be at least 1, --max-conns at least 2")
	}
	o := c.options()
	return o.Validate()
}

// Run measures and prints the report.
func (c *BenchCmd) Run(g *Globals, ctx context.Context) error {
	o := c.options()
	o.Logger = stderrLogger(g)
	switch {
	case o.ProgressEvery > 0:
		o.ProgressLog = os.Stderr
	case term.IsTerminal(int(os.Stderr.Fd())):
		o.Progress = os.Stderr
	}
	rep, err := bench.Run(ctx, o)
	if rep != nil && rep.TPCD != nil {
		var werr error
		if c.JSON {
			werr = rep.WriteJSON(os.Stdout)
		} else {
			werr = rep.WriteText(os.Stdout)
		}
		if werr != nil && err == nil {
			err = fmt.Errorf("write report: %w", werr)
		}
	}
	if errors.Is(err, context.Canceled) && rep != nil && rep.TPCD != nil {
		return errors.New("interrupted: the figures above cover only what was measured until then")
	}
	return err
}

func (c *BenchCmd) startsPostgres() bool { return len(c.Coordinator) == 0 }

// coordinator is the first coordinator address given ("" for none: bench
// starts a cluster); standbys are the others.
func (c *BenchCmd) coordinator() string {
	if len(c.Coordinator) == 0 {
		return ""
	}
	return c.Coordinator[0]
}

func (c *BenchCmd) standbys() []string {
	if len(c.Coordinator) < 2 {
		return nil
	}
	return c.Coordinator[1:]
}

// startBenchCluster starts the local cluster bench measures without
// --coordinator: a coordinator and participants in this process, each with
// its own embedded PostgreSQL.
func startBenchCluster(ctx context.Context, s bench.ClusterSpec) (bench.StartedCluster, error) {
	cl, err := localcluster.Start(ctx, localcluster.Options{
		Participants: s.Participants, PGBin: s.PGBin, MaxConns: s.MaxConns,
		LazyPrepared: s.LazyPrepared, Coordinator: engine.CoordinatorConfig{RetryMin: s.DecisionRetry, Protocol: s.Protocol},
		Logger: s.Logger,
	})
	if err != nil {
		return bench.StartedCluster{}, err
	}
	started := bench.StartedCluster{Coordinator: cl.CoordinatorAddr(), LogDB: cl.Nodes[0].LogURI, Stop: cl.Close}
	for _, n := range cl.Nodes[1:] {
		started.DataDBs = append(started.DataDBs, n.DataURI)
	}
	return started, nil
}
