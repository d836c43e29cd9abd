package pgtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/db/embedpg"
)

// BinDirEnv names the environment variable that overrides where the
// PostgreSQL binaries are.
const BinDirEnv = "TPCD_TEST_PG_BIN"

// timeout bounds each server start and each database creation or removal.
const timeout = 2 * time.Minute

var (
	mu         sync.Mutex
	inMain     bool             // Main is running the tests
	shared     *embedpg.Cluster // started on first use
	sharedErr  error            // why starting it failed; not retried
	dbSequence atomic.Int64     // makes database names unique
)

// Main runs the tests and then stops the shared cluster if one was started.
// Call it from TestMain: os.Exit(pgtest.Main(m)). A failure to stop the
// cluster fails the run.
func Main(m *testing.M) int {
	mu.Lock()
	inMain = true
	mu.Unlock()

	code := m.Run()

	mu.Lock()
	defer mu.Unlock()
	inMain = false
	if shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stop shared PostgreSQL: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
		shared = nil
	}
	return code
}

// Cluster returns the cluster shared by the whole test binary, starting it
// on first use. It fails the test if the cluster cannot be started or if
// the package's TestMain does not call Main (which stops the cluster).
func Cluster(t testing.TB) *embedpg.Cluster {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if !inMain {
		t.Fatal("pgtest: the shared cluster needs TestMain to call pgtest.Main, which stops it")
	}
	if shared == nil && sharedErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		shared, sharedErr = embedpg.Start(ctx, embedpg.Options{
			BinDir: os.Getenv(BinDirEnv),
			Settings: map[string]string{
				"fsync":              "off",
				"synchronous_commit": "off",
				"full_page_writes":   "off",
			},
		})
	}
	if sharedErr != nil {
		t.Fatalf("pgtest: start shared PostgreSQL: %v", sharedErr)
	}
	return shared
}

// NewDB creates a database of its own for the test on the shared cluster
// and returns its URI. The database is dropped, sessions and all, when the
// test ends.
func NewDB(t testing.TB) string {
	t.Helper()
	c := Cluster(t)
	name := dbName(t.Name(), dbSequence.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.CreateDatabase(ctx, name); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		err := c.DropDatabase(ctx, name)
		if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "55006" {
			// Prepared transactions left: a test that stops its nodes
			// right after a commit may leave its phase two undone. Tests
			// that care assert on them; here they only block the drop.
			n, rerr := rollbackPrepared(ctx, c.URI(name))
			if rerr != nil {
				t.Errorf("pgtest: %s: %v", name, rerr)
				return
			}
			t.Logf("pgtest: rolled back %d prepared transactions left in %s", n, name)
			err = c.DropDatabase(ctx, name)
		}
		if err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return c.URI(name)
}

// rollbackPrepared rolls back the prepared transactions of the database at
// uri (ROLLBACK PREPARED must run in their own database) and says how many.
func rollbackPrepared(ctx context.Context, uri string) (int, error) {
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()")
	if err != nil {
		return 0, err
	}
	gids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, err
	}
	for _, gid := range gids {
		if _, err := conn.Exec(ctx, "ROLLBACK PREPARED '"+strings.ReplaceAll(gid, "'", "''")+"'"); err != nil {
			return 0, fmt.Errorf("rollback prepared %s: %w", gid, err)
		}
	}
	return len(gids), nil
}

// Connect connects to uri for the rest of the test.
func Connect(t testing.TB, uri string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), uri)
	if err != nil {
		t.Fatalf("connect %s: %v", uri, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// MigratedPool opens a pool on a new database (NewDB) and brings its schema
// up with migrate (db.MigrateLog, db.MigrateData). The pool is closed when
// the test ends.
func MigratedPool(t testing.TB, migrate func(context.Context, *pgxpool.Pool, *slog.Logger) error) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), NewDB(t))
	if err != nil {
		t.Fatalf("pgtest: open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	if err := migrate(context.Background(), pool, nil); err != nil {
		t.Fatalf("pgtest: migrate: %v", err)
	}
	return pool
}

// dbName makes a valid, unique database name that still tells which test
// it belongs to, for whoever looks at a server during a hanging test.
func dbName(testName string, seq int64) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 40 { // names are limited to 63 bytes
			break
		}
	}
	return fmt.Sprintf("t_%s_%d", b.String(), seq)
}

// NewCluster starts a private cluster for a test that must kill, stop or
// restart a server; it is stopped when the test ends. Unless opts say
// otherwise it runs with fsync off, which keeps committed data across a
// server kill (only an OS crash would lose it), and BinDir comes from
// TPCD_TEST_PG_BIN.
func NewCluster(t testing.TB, opts embedpg.Options) *embedpg.Cluster {
	t.Helper()
	if opts.BinDir == "" {
		opts.BinDir = os.Getenv(BinDirEnv)
	}
	settings := map[string]string{"fsync": "off"}
	maps.Copy(settings, opts.Settings)
	opts.Settings = settings
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := embedpg.Start(ctx, opts)
	if err != nil {
		t.Fatalf("pgtest: start PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("pgtest: stop PostgreSQL: %v", err)
		}
	})
	return c
}
