package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/activation"
	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/pgwire"
)

// CoordinatorCmd runs a coordinator node.
type CoordinatorCmd struct {
	Host        string   `help:"Address to serve JSON-RPC on, HOST:PORT (a HOST alone gets port 12345, as in the seed project)." default:"127.0.0.1:9990"`
	Participant []string `help:"A participant's HOST:PORT (HOST alone: port 12345); repeat once per participant, in node-id order (node 0 first)." required:""`
	LogDB       string   `name:"log-db" help:"PostgreSQL URI of the coordinator's log database. Without it an embedded PostgreSQL is started." placeholder:"URI"`

	VoteBatchFlags `embed:""`

	ExecTimeout  Seconds       `help:"Seconds to wait for one statement's result before the transaction aborts." default:"30"`
	IdleTimeout  Seconds       `help:"Abort an explicit transaction whose client made no call for this long (counted from its last call or the last successful answer to one of its statements, whichever came later; statements a client sends straight to the participants are no calls here) ($$${env})." env:"TPCD_COORDINATOR_IDLE_TIMEOUT,TPCD_IDLE_TIMEOUT" default:"60"`
	KeepOutcomes time.Duration `name:"keep-outcomes" help:"How long the outcome of an ended transaction stays answerable, by id and by its client's key, after the log forgot it (status says forgotten after that)." default:"24h"`
	StateDir     string        `help:"Keep the embedded PostgreSQL here, so a restart recovers (default: a temporary directory removed on exit)." type:"path"`
	PGBin        string        `name:"pg-bin" help:"Directory with initdb and postgres (default: PATH, then /usr/lib/postgresql/*/bin)." type:"path"`
	// Limits on what one client may ask for.
	MaxStatements    int `help:"Most statements one transaction may have; more are refused (code -32007)." default:"10000"`
	MaxOpen          int `help:"Most undecided transactions the coordinator admits at once, all clients together. Each may hold a data connection on every participant, so keep it below the participants' --max-conns (100 by default), with room for phase two. A begin beyond waits up to 5 s for a slot, then is refused (code -32007)." default:"80"`
	MaxOpenPerClient int `help:"Most undecided transactions one client (remote IP) may hold: its share is --max-open divided among the clients active in the last 10 s (at least 4), and never more than this. A begin beyond waits, then is refused (code -32007). 0: seven eighths of --max-open (70 of 80), so that others always find room." default:"0"`

	Lease time.Duration `help:"Share the log database with other coordinators of this cluster, one serving at a time: hold the log's coordinator slot by a lease this long, renewed every third of it. While another holds it, wait as a standby (its --host closed; /readyz not ready, but ready to /readyz?standby=ready, see tpcd probe --standby-ready), and take over once its lease expires: recover from the log, finish its transactions, serve. A coordinator that loses the lease exits. Needs --log-db; give participants and clients every coordinator's address. 0: no lease, the only coordinator on this log (with --log-db it holds the log lock while it runs: a second one started on the log refuses to start, and a standby does not take over from it)." default:"0s"`

	Slots int `help:"Coordinators that serve this cluster at once, each holding one slot of the shared log by --lease: any of them takes any client's call (passing on those that belong to another's slot), and a standby, or else a serving coordinator, takes over the slot of one that stops (a serving one hands it back once a coordinator has waited a --lease for it). Give coordinators and participants (tpcd participant --slots) the same number, at most 64; the log records it, and it may grow while no coordinator runs, never shrink." default:"1"`
	Slot  int `help:"With --slots: the one slot this coordinator takes (a standby for it until it is free); -1: the first free one, then whichever frees first." default:"-1"`

	PGListen string `name:"pg-listen" help:"Also serve the PostgreSQL protocol on HOST:PORT, so that psql, pgbench and any driver commit across participants (docs/PGWIRE.md). Needs --pg-user, --pg-users-file or --pg-trust." placeholder:"HOST:PORT"`

	ProtocolFlag  `embed:""`
	SecurityFlags `embed:""`
	PGWireFlags   `embed:""`
}

// Help is the long help.
func (c *CoordinatorCmd) Help() string {
	return `Example (the seed project's command line):

  tpcd coordinator --host localhost:9990 \
      --participant localhost:9991 --participant localhost:9992 \
      --log-db postgresql://localhost:8880

Clients call begin/exec/commit/rollback/status, or the seed form execute,
over JSON-RPC on --host (see docs/WIRE.md and 'tpcd client').`
}

// Validate checks flag combinations before anything starts.
func (c *CoordinatorCmd) Validate() error {
	c.Host = withDefaultPort(c.Host)
	if err := checkAddr("host", c.Host); err != nil {
		return err
	}
	if c.Lease < 0 {
		return fmt.Errorf("--lease %s: give a positive duration, such as 5s, or 0 for none", c.Lease)
	}
	if c.Lease > 0 && c.LogDB == "" {
		return errors.New("--lease shares a log database between coordinators: give it with --log-db")
	}
	if c.Lease > 0 && c.Lease < 300*time.Millisecond {
		return fmt.Errorf("--lease %s is too short to renew reliably: give at least 300ms", c.Lease)
	}
	if c.Slots < 1 || c.Slots > api.MaxSlots {
		return fmt.Errorf("--slots %d: give 1 to %d", c.Slots, api.MaxSlots)
	}
	if c.Slots > 1 && c.Lease == 0 {
		return errors.New("--slots: coordinators that serve a cluster at once hold their slots by leases: give --lease (and a shared --log-db)")
	}
	if c.Slot < -1 || c.Slot >= c.Slots {
		return fmt.Errorf("--slot %d: give 0 to %d, or -1 for any", c.Slot, c.Slots-1)
	}
	if c.Slots > 1 {
		if host, _, err := net.SplitHostPort(c.Host); err == nil && (host == "" || net.ParseIP(host).IsUnspecified()) {
			return fmt.Errorf("--host %s: with --slots the other coordinators pass calls to this address, so give one they can reach", c.Host)
		}
	}
	if c.KeepOutcomes <= 0 {
		return fmt.Errorf("--keep-outcomes %s: give a positive duration, such as 24h", c.KeepOutcomes)
	}
	if err := checkAddrs("participant", c.Participant, "each participant needs its own address"); err != nil {
		return err
	}
	if err := c.checkBatch(); err != nil {
		return err
	}
	if c.Timeout.D() <= 0 {
		return fmt.Errorf("--timeout must be more than 0 seconds")
	}
	if c.MaxStatements < 1 || c.MaxOpen < 1 || c.MaxOpenPerClient < 0 {
		return fmt.Errorf("--max-statements and --max-open must be at least 1, --max-open-per-client at least 0")
	}
	if c.MaxOpenPerClient > c.MaxOpen {
		return fmt.Errorf("--max-open-per-client %d exceeds --max-open %d", c.MaxOpenPerClient, c.MaxOpen)
	}
	if err := c.SecurityFlags.validate(); err != nil {
		return err
	}
	if c.PGListen != "" {
		if err := checkAddr("pg-listen", c.PGListen); err != nil {
			return err
		}
		if !c.PGWireFlags.configured() && c.ClientToken == "" && c.AuthToken == "" && c.AuthTokenFile == "" {
			return errors.New("--pg-listen needs users: --pg-user NAME:PASSWORD, --pg-users-file FILE, a client token (--client-token or --auth-token: user tpcd, the token as password), or --pg-trust on a loopback address")
		}
	} else if c.PGWireFlags.configured() || len(c.Shard) > 0 || c.ShardFile != "" {
		return errors.New("--pg-user, --pg-users-file, --pg-trust, --shard and --shard-file configure the PostgreSQL front door: give --pg-listen too")
	}
	if err := c.PGWireFlags.validate(c.PGListen); err != nil {
		return err
	}
	return checkURI("log-db", c.LogDB)
}

// Run starts the coordinator and serves until SIGINT/SIGTERM.
func (c *CoordinatorCmd) Run(g *Globals, ctx context.Context) error {
	logger := stderrLogger(g)
	var (
		ln        net.Listener
		transport node.Transport
		obs       *observability
		lease     *node.Lease
		leasePool *pgxpool.Pool
		logLock   *node.LogLock
		err       error
	)
	if c.Lease > 0 {
		// A standby opens its RPC address only once it holds the slot, so
		// that participants and clients find the serving coordinator by
		// the one address that takes connections; its metrics listener
		// answers /healthz meanwhile, and /readyz says not ready (ready
		// to /readyz?standby=ready).
		bound, rerr := net.ResolveTCPAddr("tcp", c.Host)
		if rerr != nil {
			return fmt.Errorf("--host %s: %w", c.Host, rerr)
		}
		if transport, obs, err = c.observe(c.Host, bound, logger, true); err != nil {
			return err
		}
		defer obs.close()
		if leasePool, err = node.OpenLeasePool(ctx, c.LogDB, logger); err != nil {
			return err
		}
		defer leasePool.Close()
		if err := node.AgreeSlots(ctx, leasePool, c.Slots, logger); err != nil {
			return err
		}
		obs.standby(true)
		if lease, err = c.holdLease(ctx, leasePool, logger); err != nil || lease == nil {
			return err
		}
		obs.standby(false)
		defer func() {
			// Bounded: a log out of reach must not hold up the exit; the
			// lease then expires by itself.
			rctx, cancel := context.WithTimeout(context.Background(), c.Lease)
			defer cancel()
			if err := lease.Release(rctx); err != nil {
				logger.Warn("the lease was not released: a standby takes over when it expires", "err", err)
			}
		}()
		if ln, err = activation.Listen("tcp", c.Host); err != nil {
			return fmt.Errorf("listen on --host %s: %w", c.Host, err)
		}
	} else {
		if ln, transport, obs, err = c.listen(c.Host, logger, true); err != nil {
			return err
		}
		defer obs.close()
		if c.LogDB != "" {
			// A log database others can reach: hold the log lock, so
			// that a second coordinator started on it refuses to serve.
			if logLock, err = node.LockLog(ctx, c.LogDB, node.DefaultLogLockWait, logger); err != nil {
				ln.Close()
				return err
			}
			defer logLock.Close()
		}
	}
	defer ln.Close()
	observer := obs.coordinatorObserver()
	pgObserver, _ := observer.(node.PostgresObserver)
	dbs, err := node.OpenDatabases(ctx, node.DatabaseSpec{LogURI: c.LogDB, StateDir: c.StateDir, PGBin: c.PGBin, Logger: logger, Observer: pgObserver})
	if err != nil {
		return err
	}
	defer dbs.Close()
	var fence int64
	if logLock != nil {
		// Fenced by the slot's generation too: should the lock's session
		// break long enough for a standby to take the slot, the log takes
		// no more appends from this one, and the lock's watch stops it.
		if fence, err = node.ClaimSlot(ctx, dbs.Log, ln.Addr().String()); err != nil {
			return err
		}
		logLock.WatchSlot(fence)
	}
	coordOpts := c.coordinatorOptions(dbs.Log, logger, transport)
	coordOpts.Observer, coordOpts.Lease, coordOpts.Fence, coordOpts.Slot = observer, lease, fence, slotOf(lease)
	coord, err := node.StartCoordinator(ctx, ln, coordOpts)
	if err != nil {
		return err
	}
	obs.coordinatorUp(coord, logger)
	var pg *pgwire.Server
	if c.PGListen != "" {
		users, err := c.users()
		if err != nil {
			coord.Close()
			return err
		}
		tokenLogin := !c.PGWireFlags.configured()
		if tokenLogin {
			users = map[string]string{tokenUser: transport.Auth.ClientToken}
		}
		shards, err := c.shards()
		if err != nil {
			coord.Close()
			return err
		}
		var addr net.Addr
		pg, addr, err = startPGWire(c.PGListen, pgwire.Options{Coordinator: coord, Users: users, Trust: c.PGTrust,
			TLS: pgTLS(transport.ServerTLS), Shards: shards, Logger: logger}, logger)
		if err != nil {
			coord.Close()
			return err
		}
		logger.Info("PostgreSQL front door serving", "addr", addr.String(), "users", len(users), "token_user", tokenLogin, "trust", c.PGTrust,
			"tls", transport.ServerTLS != nil, "shards", shards)
	}
	for _, addr := range activation.Unused() {
		logger.Warn("a socket passed to this process (LISTEN_FDS) is bound to no address it serves on; it stays unused", "addr", addr)
	}
	logger.Info("coordinator serving", "addr", ln.Addr().String(), "participants", len(c.Participant),
		"tls", transport.ServerTLS != nil, "mutual_tls", c.TLSCA != "", "auth", transport.Auth.Enabled(),
		"log_db", db.Redact(dbs.LogURI), "cluster", coord.Cluster(), "epoch", coord.Epoch())
	failed := dbs.Failed()
	if lease != nil {
		failed = orLost(failed, lease)
	}
	if logLock != nil {
		failed = orLost(failed, logLock)
	}
	if c.Slots > 1 {
		adopted := c.adoptSlots(leasePool, dbs.Log, logger, transport, lease.Slot(), observer, obs)
		defer adopted.close()
	}
	err = waitForSignal(ctx, logger, failed)
	if pg != nil {
		// First, so that the sessions' open transactions are rolled
		// back while the coordinator still runs.
		pg.Close()
	}
	return errors.Join(err, coord.Close())
}

// coordinatorOptions are the options of a coordinator this command
// starts, but for what holds its slot and what watches it.
func (c *CoordinatorCmd) coordinatorOptions(log *pgxpool.Pool, logger *slog.Logger, transport node.Transport) node.CoordinatorOptions {
	return node.CoordinatorOptions{
		Participants: c.Participant,
		KeepOutcomes: c.KeepOutcomes,
		Log:          log,
		Logger:       logger,
		Engine: engine.CoordinatorConfig{
			VoteTimeout:   c.Timeout.D(),
			ExecTimeout:   c.ExecTimeout.D(),
			IdleTimeout:   c.IdleTimeout.D(),
			BatchSize:     c.BatchSize,
			BatchFlush:    c.BatchFlush.D(),
			MaxStatements: c.MaxStatements,
			Protocol:      c.protocol(),
		},
		Transport:        transport,
		MaxOpen:          c.MaxOpen,
		MaxOpenPerClient: c.MaxOpenPerClient,
		Slots:            c.Slots,
		Address:          c.Host,
	}
}

// slotOf is the slot a lease holds; 0 without one.
func slotOf(l *node.Lease) int {
	if l == nil {
		return 0
	}
	return l.Slot()
}

// holdLease waits as a standby until this process holds the log's
// coordinator slot. It returns a nil lease when ctx ends first (a signal:
// the standby stops).
func (c *CoordinatorCmd) holdLease(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) (*node.Lease, error) {
	// With several slots a waiting coordinator says so, and one serving
	// a slot it adopted hands that back.
	opts := node.LeaseOptions{TTL: c.Lease, Holder: c.Host, Logger: logger, Announce: c.Slots > 1}
	switch {
	case c.Slot >= 0:
		opts.Slots = []int{c.Slot}
	default:
		for s := range c.Slots {
			opts.Slots = append(opts.Slots, s)
		}
	}
	lease, err := node.HoldLease(ctx, pool, opts)
	if err != nil && ctx.Err() != nil {
		logger.Info("standby shutting down")
		return nil, nil
	}
	return lease, err
}

// losable is what a coordinator holds to be the only one serving on its
// log: a lease, or the log lock.
type losable interface {
	Lost() <-chan struct{}
	Err() error
}

// orLost returns a channel that carries what failed carries, or the reason
// held was lost.
func orLost(failed <-chan error, held losable) <-chan error {
	both := make(chan error, 1)
	go func() {
		select {
		case err := <-failed:
			both <- err
		case <-held.Lost():
			both <- held.Err()
		}
	}()
	return both
}

func (c *CoordinatorCmd) startsPostgres() bool { return c.LogDB == "" }
