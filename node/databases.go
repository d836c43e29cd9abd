package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/db/embedpg"
	"github.com/tpcd/tpcd/db/syncrep"
)

// DatabaseSpec says where a node's databases live. An empty URI means the
// embedded default: a private PostgreSQL cluster started for this node, in
// StateDir if given (kept across restarts) or in a temporary directory
// (removed on Close).
type DatabaseSpec struct {
	LogURI, DataURI string
	// NeedData is set for participants, which have a data database.
	NeedData bool
	StateDir string
	PGBin    string
	// MaxConns bounds each pool; the data pool needs one connection per
	// open transaction.
	MaxConns int
	// WarmDataConns, if positive, is how many data connections to open at
	// start and keep open (DefaultWarmDataConns suits a node of its own;
	// tests sharing one server leave it 0).
	WarmDataConns int
	// MaxPreparedTransactions for an embedded cluster. Default 200, and
	// never fewer than MaxConns.
	MaxPreparedTransactions int
	Logger                  *slog.Logger
	// Observer, if set, counts restarts of an embedded cluster (metrics).
	Observer PostgresObserver
}

// PostgresObserver watches the PostgreSQL server a node started itself.
type PostgresObserver interface {
	// PostgresRestarted is called each time the server died and was
	// restarted; it must return quickly.
	PostgresRestarted()
}

// Databases are a node's open, migrated database pools.
//
// An embedded cluster is supervised: when its server dies it is restarted
// (PostgreSQL's crash recovery runs) and the pools drop their dead
// connections; meanwhile Down says why the databases are down. A server
// that keeps dying, or cannot be restarted, is given up on: Failed then
// delivers the reason, and the node should exit. Servers given by URI are
// not the node's to restart.
type Databases struct {
	Log, Data *pgxpool.Pool
	// Embedded is the cluster started for this node, nil when URIs were
	// given for everything.
	Embedded *embedpg.Cluster
	LogURI   string
	DataURI  string

	down           atomic.Pointer[error]
	failed         chan error
	stopSupervisor context.CancelFunc
	supervisor     chan struct{} // closed when supervision ended
}

// OpenDatabases connects to (or starts) a node's databases and applies the
// migrations. On error everything it started is stopped again.
func OpenDatabases(ctx context.Context, spec DatabaseSpec) (_ *Databases, err error) {
	d := &Databases{LogURI: spec.LogURI, DataURI: spec.DataURI}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if d.LogURI == "" || (spec.NeedData && d.DataURI == "") {
		bin, err := embedpg.FindBinDir(spec.PGBin)
		if err != nil {
			return d, err
		}
		opts := embedpg.Options{BinDir: bin, Logger: spec.Logger, MaxPreparedTransactions: spec.MaxPreparedTransactions}
		// The log and the data pool may each fill up; superusers keep a
		// few connections of their own (superuser_reserved_connections).
		if n := 2*spec.MaxConns + 10; n > defaultEmbeddedMaxConnections {
			opts.MaxConnections = n
		}
		if spec.StateDir != "" {
			abs, err := filepath.Abs(spec.StateDir)
			if err != nil {
				return d, fmt.Errorf("state dir: %w", err)
			}
			opts.Dir = filepath.Join(abs, "pg")
		}
		if opts.MaxPreparedTransactions == 0 {
			opts.MaxPreparedTransactions = 200
		}
		// Every connection of the data pool may hold a transaction that
		// prepares (checkDataServer).
		opts.MaxPreparedTransactions = max(opts.MaxPreparedTransactions, spec.MaxConns)
		c, err := embedpg.Start(ctx, opts)
		if err != nil {
			return d, fmt.Errorf("start embedded PostgreSQL: %w", err)
		}
		d.Embedded = c
		if d.LogURI == "" {
			if err := c.CreateDatabase(ctx, "tpcd_log"); err != nil {
				return d, err
			}
			d.LogURI = c.URI("tpcd_log")
		}
		if spec.NeedData && d.DataURI == "" {
			if err := c.CreateDatabase(ctx, "tpcd_data"); err != nil {
				return d, err
			}
			d.DataURI = c.URI("tpcd_data")
		}
	}
	if d.Log, err = openPool(ctx, d.LogURI, spec.MaxConns, 0); err != nil {
		return d, fmt.Errorf("log database: %w", err)
	}
	if err := db.MigrateLog(ctx, d.Log, spec.Logger); err != nil {
		return d, fmt.Errorf("migrate log database %s: %w", db.Redact(d.LogURI), err)
	}
	warnLogServer(ctx, d.Log, d.LogURI, d.Embedded != nil && spec.LogURI == "", spec.Logger)
	if spec.NeedData {
		if d.Data, err = openPool(ctx, d.DataURI, spec.MaxConns, spec.WarmDataConns); err != nil {
			return d, fmt.Errorf("data database: %w", err)
		}
		if err := checkDataServer(ctx, d.Data, d.DataURI, spec.Logger); err != nil {
			return d, err
		}
		if err := db.MigrateData(ctx, d.Data, spec.Logger); err != nil {
			return d, fmt.Errorf("migrate data database %s: %w", db.Redact(d.DataURI), err)
		}
		// A transaction holds a data connection from its first statement:
		// opened on demand, the first burst of clients waited seconds for
		// a few dozen PostgreSQL backends to start at once (32 clients ran
		// at 1 tx/s in their first second).
		if err := warm(ctx, d.Data, spec.WarmDataConns, primeBranch); err != nil && spec.Logger != nil {
			spec.Logger.Warn("could not prime the data connections; they serve all the same, their first transactions slower", "err", err)
		}
	}
	if d.Embedded != nil {
		d.supervise(spec.Observer)
	}
	return d, nil
}

// defaultEmbeddedMaxConnections is embedpg's max_connections default.
const defaultEmbeddedMaxConnections = 200

// supervise restarts the embedded cluster whenever its server dies, until
// Close or until it gives up.
func (d *Databases) supervise(obs PostgresObserver) {
	ctx, cancel := context.WithCancel(context.Background())
	d.stopSupervisor = cancel
	d.failed = make(chan error, 1)
	d.supervisor = make(chan struct{})
	go func() {
		defer close(d.supervisor)
		err := d.Embedded.Supervise(ctx, embedpg.Supervision{
			Down: func(err error) { d.down.Store(&err) },
			Up: func() {
				// Every connection the pools hold went with the old
				// server; an idle one would fail its next user once.
				d.Log.Reset()
				if d.Data != nil {
					d.Data.Reset()
				}
				d.down.Store(nil)
				if obs != nil {
					obs.PostgresRestarted()
				}
			},
		})
		if err != nil {
			d.failed <- fmt.Errorf("embedded PostgreSQL: %w", err)
		}
	}()
}

// Down reports why the node's own PostgreSQL is known to be down (it died
// and is being restarted, or was given up on), nil while it is not. It
// knows nothing of servers given by URI.
func (d *Databases) Down() error {
	if err := d.down.Load(); err != nil {
		return *err
	}
	return nil
}

// Failed delivers, once, why the supervision of the node's own PostgreSQL
// gave up (the server kept dying or could not be restarted); the node
// cannot serve without it and should exit. Nothing is ever delivered for
// servers given by URI.
func (d *Databases) Failed() <-chan error { return d.failed }

// checkDataServer refuses a data server that cannot prepare a transaction
// on every connection of the data pool: PREPARE TRANSACTION beyond
// max_prepared_transactions fails, so (with initdb's default of 0) every
// commit would abort while the node looks healthy.
//
// It warns of a SQL_ASCII data database, in the same round trip.
// PostgreSQL converts text between any other encoding and the UTF8 tpcd's
// connections ask for; a SQL_ASCII database's bytes pass as they are, and
// text there that is not UTF-8 would reach clients with U+FFFD in its
// place (rows travel as JSON), and be stored so if written back.
func checkDataServer(ctx context.Context, pool *pgxpool.Pool, uri string, logger *slog.Logger) error {
	var have int
	var encoding string
	if err := pool.QueryRow(ctx, "SELECT current_setting('max_prepared_transactions')::int, current_setting('server_encoding')").Scan(&have, &encoding); err != nil {
		return fmt.Errorf("data database %s: read max_prepared_transactions and server_encoding: %w", db.Redact(uri), err)
	}
	if encoding == "SQL_ASCII" && logger != nil {
		logger.Warn("the data database's encoding is SQL_ASCII: PostgreSQL does not check or convert its text, and tpcd carries text as UTF-8, "+
			"so text in it that is not UTF-8 reaches clients with U+FFFD in its place, and is stored so if written back; "+
			"keep only UTF-8 text in it, or move the data to a UTF8 database",
			"data_db", db.Redact(uri))
	}
	need := int(pool.Config().MaxConns)
	if have >= need {
		return nil
	}
	return fmt.Errorf("data database %s has max_prepared_transactions = %d, fewer than the %d connections of the data pool (--max-conns), "+
		"each of which may hold a prepared transaction: commits would abort. "+
		"On that server run ALTER SYSTEM SET max_prepared_transactions = %d; and restart it "+
		"(or set max_prepared_transactions = %d in its postgresql.conf and restart it), or lower --max-conns",
		db.Redact(uri), have, need, need, need)
}

// warnLogServer warns about a log server that does not make commits
// durable before it acknowledges them, or only on its own disk: without a
// synchronous standby, losing that server's disk loses the decisions in
// it. The node's own embedded server (embedded) never has one, by choice
// of whoever started it so; that is said once at info level.
func warnLogServer(ctx context.Context, pool *pgxpool.Pool, uri string, embedded bool, logger *slog.Logger) {
	if logger == nil {
		return
	}
	var sync string
	if err := pool.QueryRow(ctx, "SHOW synchronous_commit").Scan(&sync); err != nil {
		logger.Warn("could not read the log database's synchronous_commit", "log_db", db.Redact(uri), "err", err)
		return
	}
	if sync == "off" {
		logger.Warn("the log database has synchronous_commit = off: decisions and votes the node takes for durable would not survive a crash of that server; "+
			"turn it on (ALTER SYSTEM SET synchronous_commit = on; SELECT pg_reload_conf();, and leave it out of the connection string)",
			"log_db", db.Redact(uri))
		return
	}
	var standby bool
	if err := pool.QueryRow(ctx, synchronousStandbySQL).Scan(&standby); err != nil {
		logger.Warn("could not tell whether the log database has a synchronous standby", "log_db", db.Redact(uri), "err", err)
		return
	}
	switch {
	case standby:
	case embedded:
		logger.Info("the log is on this node's own embedded PostgreSQL, with no standby: it lives and dies with this machine's disk (docs/OPERATIONS.md, \"The log on replicated PostgreSQL\")")
	default:
		logger.Warn("the log database commits without a synchronous standby: a decision is on that server's disk alone, and lost with it; "+
			"give it one (synchronous_standby_names, docs/OPERATIONS.md, \"The log on replicated PostgreSQL\")",
			"log_db", db.Redact(uri))
	}
}

// synchronousStandbySQL tells whether commits wait for a standby: one is
// named in synchronous_standby_names, synchronous_commit waits for it
// (remote_write or stronger), and one is streaming as synchronous now.
// A role that may not read pg_stat_replication's details sees no
// synchronous standby, and is warned: better a word too many than silence.
const synchronousStandbySQL = `SELECT current_setting('synchronous_standby_names') <> ''
	AND current_setting('synchronous_commit') IN ('on', 'remote_write', 'remote_apply')
	AND EXISTS (SELECT 1 FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum'))`

// warmable is how many of a pool of maxConns connections may be opened at
// start and kept: half, so that a small pool still grows and shrinks with
// its load.
func warmable(maxConns int32) int { return int(maxConns) / 2 }

// openPool opens a pool of at most maxConns connections that keeps at
// least minConns open once it has them (pgxpool's health check replaces
// those it closes).
func openPool(ctx context.Context, uri string, maxConns, minConns int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(uri)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", db.Redact(uri), redactErr(err))
	}
	// Every commit the node takes for durable, in its log or its data,
	// is checked for a cancelled wait for the synchronous standby.
	syncrep.Watch(cfg)
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	cfg.MinConns = int32(min(warmable(cfg.MaxConns), max(minConns, 0)))
	return db.OpenPool(ctx, cfg)
}

// DefaultWarmDataConns is how many data connections a participant opens
// at start and keeps: as many as the transactions a busy client runs at
// once (tpcd bench's 32), and at most half its pool.
const DefaultWarmDataConns = 32

// warm opens up to n connections of pool at once and keeps them open:
// the pool holds at least that many from then on; prime, if not nil, runs
// on each. A failure only leaves the pool colder; the first failure of
// prime is returned, for the log.
func warm(ctx context.Context, pool *pgxpool.Pool, n int, prime func(context.Context, *pgconn.PgConn) error) error {
	n = min(n, warmable(pool.Config().MaxConns))
	if n <= 0 {
		return nil
	}
	var wg sync.WaitGroup
	conns := make([]*pgxpool.Conn, n)
	primeErrs := make([]error, n)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := pool.Acquire(ctx)
			if err != nil {
				return
			}
			if prime != nil {
				if primeErrs[i] = prime(ctx, c.Conn().PgConn()); primeErrs[i] != nil {
					// Whatever state the failure left it in is not worth
					// keeping: the pool opens another when one is needed.
					c.Conn().Close(ctx)
				}
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	for _, c := range conns {
		if c != nil {
			c.Release()
		}
	}
	for _, err := range primeErrs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Close closes the pools and stops an embedded cluster (removing it unless
// it lives in a state dir).
func (d *Databases) Close() error {
	if d.stopSupervisor != nil {
		d.stopSupervisor()
		<-d.supervisor
	}
	if d.Log != nil {
		d.Log.Close()
	}
	if d.Data != nil {
		d.Data.Close()
	}
	if d.Embedded != nil {
		return d.Embedded.Stop()
	}
	return nil
}

// redactErr replaces a parse error, whose text may quote the password.
func redactErr(error) error { return errors.New("malformed connection string") }
