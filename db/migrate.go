package db

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// Version tables of the two migration sets. Distinct names keep the sets independent
// even when the log and the data live in one database.
const (
	LogVersionTable  = "tpcd_goose_version"
	DataVersionTable = "tpcd_data_goose_version"
)

// Advisory lock keys, one per set, so migrating the log never waits on migrating the
// data set of the same database (and neither collides with goose's default key,
// which an application's own goose migrations would use).
const (
	logLockID  int64 = 0x7470636400000001 // "tpcd" + 1
	dataLockID int64 = 0x7470636400000002 // "tpcd" + 2
)

// Waiting for the lock is retried once a second (goose's minimum period) for up to
// five minutes: a peer holds it only for the few milliseconds of a migration, so a
// longer wait means something is stuck.
const (
	lockRetryPeriodSeconds = 1
	lockRetryAttempts      = 300
)

//go:embed migrations/*.sql
var logMigrations embed.FS

//go:embed datamigrations/*.sql
var dataMigrations embed.FS

// migrationSet names one embedded set of migrations and where its progress lives.
type migrationSet struct {
	name   string
	fsys   embed.FS
	dir    string
	table  string
	lockID int64
}

var (
	logSet  = migrationSet{name: "log", fsys: logMigrations, dir: "migrations", table: LogVersionTable, lockID: logLockID}
	dataSet = migrationSet{name: "data", fsys: dataMigrations, dir: "datamigrations", table: DataVersionTable, lockID: dataLockID}
)

// MigrateLog brings the event-log schema of the database behind pool up to date.
// It is safe to call from several nodes sharing one database at the same time.
func MigrateLog(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	return migrate(ctx, pool, logger, logSet)
}

// MigrateData creates the participant's marker table in its data database, tracked
// in a version table of its own. It is safe to call concurrently.
func MigrateData(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	return migrate(ctx, pool, logger, dataSet)
}

func migrate(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger, set migrationSet) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("migrations", set.name)

	fsys, err := fs.Sub(set.fsys, set.dir)
	if err != nil {
		return fmt.Errorf("%s migrations: %w", set.name, err)
	}
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(set.lockID),
		lock.WithLockTimeout(lockRetryPeriodSeconds, lockRetryAttempts),
	)
	if err != nil {
		return fmt.Errorf("%s migrations: session locker: %w", set.name, err)
	}
	// The *sql.DB borrows connections from pool; closing it leaves pool open.
	sqlDB := stdlib.OpenDBFromPool(pool)
	provider, err := goose.NewProvider(goose.DialectPostgres, sqlDB, fsys,
		goose.WithTableName(set.table),
		goose.WithSessionLocker(locker),
		goose.WithSlog(logger),
		// Only the embedded SQL files belong to this set, never Go migrations
		// registered globally by some other package.
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		sqlDB.Close()
		return fmt.Errorf("%s migrations: new provider: %w", set.name, err)
	}
	defer provider.Close()

	results, err := provider.Up(ctx)
	// goose logs only in verbose mode, which also prints every statement; one line
	// per applied migration is what an operator wants to see.
	for _, r := range results {
		if r.Error == nil {
			logger.InfoContext(ctx, "applied migration", "file", r.Source.Path, "duration", r.Duration)
		}
	}
	if err != nil {
		return fmt.Errorf("%s migrations: up: %w", set.name, err)
	}
	version, err := provider.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("%s migrations: read version: %w", set.name, err)
	}
	logger.InfoContext(ctx, "schema up to date", "applied", len(results), "version", version)
	return nil
}
