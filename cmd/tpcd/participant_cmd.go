package main

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/tpcd/tpcd/activation"
	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/node"
)

// ParticipantCmd runs a participant node.
type ParticipantCmd struct {
	NodeID           *int     `name:"node-id" help:"This participant's id: participants are numbered 0, 1, 2, ... in the order the coordinator lists them." required:""`
	Host             string   `help:"Address to serve JSON-RPC on, HOST:PORT (a HOST alone gets port 12345, as in the seed project)." default:"127.0.0.1:9991"`
	Coordinator      []string `help:"The coordinator's HOST:PORT (HOST alone: port 12345). Where coordinators share the log by a lease (tpcd coordinator --lease), give each one's address, comma-separated or repeated: messages go to the one serving." required:""`
	Timeout          Seconds  `help:"Seconds to wait for the coordinator (or another participant) to answer a request carrying this node's messages (votes, acknowledgements, inquiries) before counting them lost, as the seed project's --timeout on a participant; the protocol sends again what matters." default:"10"`
	BatchSize        int      `help:"Accepted for the seed project's command lines, where every node took it: only the coordinator batches execute calls, so a participant ignores it." default:"1"`
	LogDB            string   `name:"log-db" help:"PostgreSQL URI of this participant's log database. Without it an embedded PostgreSQL is started." placeholder:"URI"`
	DataDB           string   `name:"data-db" help:"PostgreSQL URI of the data database the statements run on. Without it an embedded PostgreSQL is started." placeholder:"URI"`
	LockTimeout      Seconds  `help:"lock_timeout of data transactions: a distributed deadlock ends after this in a no vote." default:"2"`
	StatementTimeout Seconds  `help:"statement_timeout of data transactions." default:"30"`
	IdleTimeout      Seconds  `help:"Roll back an unprepared transaction that heard nothing from the coordinator (nor, for statements a client sends it straight, from that client) this long ($$${env})." env:"TPCD_PARTICIPANT_IDLE_TIMEOUT,TPCD_IDLE_TIMEOUT" default:"120"`
	LazyPreparedFlag `embed:""`
	MaxConns         int    `help:"Connections per database pool; the data pool needs one per open transaction, so keep the coordinator's --max-open (80 by default) below it." default:"100"`
	StateDir         string `help:"Keep the embedded PostgreSQL here, so a restart recovers (default: a temporary directory removed on exit)." type:"path"`
	PGBin            string `name:"pg-bin" help:"Directory with initdb and postgres (default: PATH, then /usr/lib/postgresql/*/bin)." type:"path"`

	Slots int `help:"Coordinators that serve the cluster at once (tpcd coordinator --slots): the participant runs an engine per slot. Give every coordinator's address with --coordinator." default:"1"`

	SecurityFlags `embed:""`
}

// Help is the long help.
func (c *ParticipantCmd) Help() string {
	return `Example (the seed project's command line):

  tpcd participant --node-id 0 --host localhost:9991 \
      --coordinator localhost:9990 \
      --log-db postgresql://localhost:8881 --data-db postgresql://localhost:8871`
}

// Validate checks flag combinations before anything starts.
func (c *ParticipantCmd) Validate() error {
	if c.NodeID == nil {
		return fmt.Errorf("--node-id is required (0 for the first participant)")
	}
	if *c.NodeID < 0 {
		return fmt.Errorf("--node-id %d: ids start at 0", *c.NodeID)
	}
	if c.Slots < 1 || c.Slots > api.MaxSlots {
		return fmt.Errorf("--slots %d: give 1 to %d", c.Slots, api.MaxSlots)
	}
	c.Host = withDefaultPort(c.Host)
	if err := checkAddr("host", c.Host); err != nil {
		return err
	}
	if err := checkAddrs("coordinator", c.Coordinator, "give each coordinator's address once"); err != nil {
		return err
	}
	if slices.Contains(c.Coordinator, c.Host) {
		return fmt.Errorf("--host and --coordinator are both %s; the participant needs an address of its own", c.Host)
	}
	if c.Timeout.D() <= 0 {
		return fmt.Errorf("--timeout must be more than 0 seconds")
	}
	if c.BatchSize < 1 {
		return fmt.Errorf("--batch-size %d: must be at least 1", c.BatchSize)
	}
	if c.MaxConns < 2 {
		return fmt.Errorf("--max-conns %d: need at least 2", c.MaxConns)
	}
	if err := checkURI("log-db", c.LogDB); err != nil {
		return err
	}
	if err := c.SecurityFlags.validate(); err != nil {
		return err
	}
	return checkURI("data-db", c.DataDB)
}

// Run starts the participant and serves until SIGINT/SIGTERM.
func (c *ParticipantCmd) Run(g *Globals, ctx context.Context) error {
	logger := stderrLogger(g)
	ln, transport, obs, err := c.listen(c.Host, logger, false)
	if err != nil {
		return err
	}
	defer ln.Close()
	defer obs.close()
	observer := obs.participantObserver()
	pgObserver, _ := observer.(node.PostgresObserver)
	dbs, err := node.OpenDatabases(ctx, node.DatabaseSpec{
		LogURI: c.LogDB, DataURI: c.DataDB, NeedData: true, StateDir: c.StateDir, PGBin: c.PGBin,
		MaxConns: c.MaxConns, MaxPreparedTransactions: 2 * c.MaxConns, WarmDataConns: node.DefaultWarmDataConns, Logger: logger, Observer: pgObserver,
	})
	if err != nil {
		return err
	}
	defer dbs.Close()
	p, err := node.StartParticipant(ctx, ln, node.ParticipantOptions{
		ID:               engine.NodeID(*c.NodeID),
		Coordinator:      c.Coordinator[0],
		Standbys:         c.Coordinator[1:],
		Slots:            c.Slots,
		Log:              dbs.Log,
		Data:             dbs.Data,
		Logger:           logger,
		LockTimeout:      c.LockTimeout.D(),
		StatementTimeout: c.StatementTimeout.D(),
		SendTimeout:      c.Timeout.D(),
		Engine: engine.ParticipantConfig{
			IdleTimeout:  c.IdleTimeout.D(),
			LazyPrepared: c.LazyPrepared,
		},
		Transport:     transport,
		Observer:      observer,
		DatabasesDown: dbs.Down,
	})
	if err != nil {
		return err
	}
	obs.participantUp(p, logger)
	for _, addr := range activation.Unused() {
		logger.Warn("a socket passed to this process (LISTEN_FDS) is bound to no address it serves on; it stays unused", "addr", addr)
	}
	logger.Info("participant serving", "node", *c.NodeID, "addr", ln.Addr().String(), "coordinator", c.Coordinator,
		"tls", transport.ServerTLS != nil, "mutual_tls", c.TLSCA != "", "auth", transport.Auth.Enabled(),
		"log_db", db.Redact(dbs.LogURI), "data_db", db.Redact(dbs.DataURI))
	err = waitForSignal(ctx, logger, dbs.Failed())
	return errors.Join(err, p.Close())
}

func (c *ParticipantCmd) startsPostgres() bool { return c.LogDB == "" || c.DataDB == "" }
