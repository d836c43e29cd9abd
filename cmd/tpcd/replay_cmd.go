package main

import (
	"context"
	"fmt"
	"os"

	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/replay"
)

// ReplayCmd prints the state recovered from a log; the logic lives in
// package replay.
type ReplayCmd struct {
	LogDB        string `name:"log-db" help:"PostgreSQL URI of the log database (only read)." required:"" placeholder:"URI"`
	Node         string `help:"Replay only this node: coordinator or participant-N, with .S for slot S of a cluster with several (tpcd coordinator --slots) (default: every node in the log)." placeholder:"NAME"`
	Tx           uint64 `help:"Show only this transaction, with all its events." placeholder:"ID"`
	DataDB       string `name:"data-db" help:"PostgreSQL URI of a participant's data database, to compare with pg_prepared_xacts and the markers (needs --node participant-N unless the log holds one participant)." placeholder:"URI"`
	Format       string `help:"Output: text or json (docs/REPLAY.md describes the JSON)." enum:"text,json" default:"text"`
	Participants int    `help:"The coordinator's number of participants (default: inferred from the log)."`
	Limit        int    `help:"List at most this many transactions per node (0: all); counts always cover all." default:"50"`
	Events       int    `help:"Show this many last events per listed transaction." default:"3"`
	Times        bool   `help:"Show when each event was logged."`
	LazyPrepared bool   `help:"The participant runs with lazy Prepared events (its default): a prepared GID it has not logged yet is in doubt, not an orphan. Give --no-lazy-prepared for a participant started with --no-lazy-prepared." default:"true" negatable:""`
}

// Help is the long help.
func (c *ReplayCmd) Help() string {
	return `Folds each node's events as a restart would (nothing is started or written)
and prints, per node, the transactions still in memory (in doubt first),
counts per state, recorded violations and undecodable events. With
--data-db it also compares a participant's log with its data database, by
running the participant's own start step on paper: what the report says a
restart does is what the engine would do (nothing is performed).

Exit status: 0 consistent, 2 an inconsistency was found (orphan, missing,
violation, undecodable event, ...), 1 the replay could not be done.

  tpcd replay --log-db postgresql://localhost:8880/tpcd_log
  tpcd replay --log-db postgresql://localhost:8881 --node participant-0 \
      --data-db postgresql://localhost:8871 --format json`
}

// Validate checks flag combinations.
func (c *ReplayCmd) Validate() error {
	if err := checkURI("log-db", c.LogDB); err != nil {
		return err
	}
	if c.LogDB == "" {
		return fmt.Errorf("--log-db is required: replay reads an existing log")
	}
	if err := checkURI("data-db", c.DataDB); err != nil {
		return err
	}
	if c.Node != "" {
		role, _, ok := replay.ParseNode(c.Node)
		if !ok {
			return fmt.Errorf("--node %q: want coordinator or participant-N, either with a slot (.S, tpcd coordinator --slots) or not", c.Node)
		}
		if c.DataDB != "" && role != replay.RoleParticipant {
			return fmt.Errorf("--data-db belongs to a participant; use --node participant-N")
		}
	}
	if c.Participants < 0 || c.Limit < 0 || c.Events < 0 {
		return fmt.Errorf("--participants, --limit and --events must not be negative")
	}
	return nil
}

// Run replays and exits with status 2 when the report has problems.
func (c *ReplayCmd) Run(g *Globals, ctx context.Context) error {
	problems, err := c.run(ctx, g)
	if err != nil {
		return err
	}
	if problems {
		os.Exit(2) // main exits 1 for every error; scripts need to tell these apart
	}
	return nil
}

func (c *ReplayCmd) run(ctx context.Context, g *Globals) (problems bool, err error) {
	logPool, err := replay.Connect(ctx, c.LogDB)
	if err != nil {
		return false, connectFailed("log-db", c.LogDB, err)
	}
	defer logPool.Close()
	opts := replay.Options{
		Log: logPool, Node: c.Node, Tx: engine.TxID(c.Tx), Participants: c.Participants,
		Limit: c.Limit, Events: c.Events, Times: c.Times, LazyPrepared: c.LazyPrepared,
		Logger: stderrLogger(g),
	}
	if c.Events == 0 {
		opts.Events = -1
	}
	if c.DataDB != "" {
		dataPool, err := replay.Connect(ctx, c.DataDB)
		if err != nil {
			return false, connectFailed("data-db", c.DataDB, err)
		}
		defer dataPool.Close()
		opts.Data = dataPool
	}
	rep, err := replay.Run(ctx, opts)
	if err != nil {
		return false, err
	}
	if c.Format == "json" {
		err = replay.WriteJSON(os.Stdout, rep)
	} else {
		err = replay.WriteText(os.Stdout, rep)
	}
	if err != nil {
		return false, fmt.Errorf("write report: %w", err)
	}
	return !rep.Consistent(), nil
}

// connectFailed words a failure to open the database a flag names on one
// line, with the cause worth reading first.
func connectFailed(flag, uri string, err error) error {
	if cause, ok := db.ConnectCause(err); ok {
		return fmt.Errorf("--%s %s: cannot connect: %w", flag, db.Redact(uri), cause)
	}
	return fmt.Errorf("--%s: %w", flag, err)
}
