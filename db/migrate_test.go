package db_test

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// logVersions are the log migrations in db/migrations, in order.
var logVersions = []int64{1, 2}

// dataVersions are the data set's migrations, in order.
var dataVersions = []int64{1, 2}

func openPool(t *testing.T, uri string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), uri)
	if err != nil {
		t.Fatalf("open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// tableExists reports whether a table of that name exists in the public schema.
func tableExists(t *testing.T, pool *pgxpool.Pool, name string) bool {
	t.Helper()
	var ok bool
	err := pool.QueryRow(t.Context(),
		`SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'public' AND tablename = $1)`,
		name).Scan(&ok)
	if err != nil {
		t.Fatalf("look up table %s: %v", name, err)
	}
	return ok
}

// appliedVersions lists the migration versions a goose version table records as
// applied, once per application.
func appliedVersions(t *testing.T, pool *pgxpool.Pool, table string) []int64 {
	t.Helper()
	rows, err := pool.Query(t.Context(),
		`SELECT version_id FROM `+table+` WHERE is_applied AND version_id > 0 ORDER BY id`)
	if err != nil {
		t.Fatalf("read %s: %v", table, err)
	}
	defer rows.Close()
	var versions []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatalf("scan %s: %v", table, err)
		}
		versions = append(versions, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read %s: %v", table, err)
	}
	return versions
}

func indexNames(t *testing.T, pool *pgxpool.Pool, table string) map[string]string {
	t.Helper()
	rows, err := pool.Query(t.Context(),
		`SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1`, table)
	if err != nil {
		t.Fatalf("list indexes of %s: %v", table, err)
	}
	defer rows.Close()
	idx := map[string]string{}
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			t.Fatalf("scan index: %v", err)
		}
		idx[name] = def
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("list indexes of %s: %v", table, err)
	}
	return idx
}

func TestMigrateLogFreshDB(t *testing.T) {
	ctx := t.Context()
	pool := openPool(t, pgtest.NewDB(t))

	if err := db.MigrateLog(ctx, pool, testLogger(t)); err != nil {
		t.Fatalf("MigrateLog: %v", err)
	}
	if !tableExists(t, pool, "tpcd_events") {
		t.Fatal("tpcd_events missing after MigrateLog")
	}
	if !tableExists(t, pool, db.LogVersionTable) {
		t.Fatalf("%s missing after MigrateLog", db.LogVersionTable)
	}
	if tableExists(t, pool, "goose_db_version") {
		t.Fatal("goose's default version table was created; the log must use its own")
	}
	if tableExists(t, pool, "tpcd_markers") {
		t.Fatal("tpcd_markers belongs to the data set, not the log")
	}
	if got := appliedVersions(t, pool, db.LogVersionTable); !slices.Equal(got, logVersions) {
		t.Fatalf("applied versions = %v, want %v", got, logVersions)
	}
	idx := indexNames(t, pool, "tpcd_events")
	want := map[string]string{
		"tpcd_events_pkey":        "(node, seq)",
		"tpcd_events_node_tx_seq": "(node, tx, seq)",
	}
	if len(idx) != len(want) {
		t.Fatalf("indexes on tpcd_events: %v, want only %v", idx, want)
	}
	for name, cols := range want {
		def, ok := idx[name]
		if !ok {
			t.Fatalf("index %s missing; have %v", name, idx)
		}
		if !strings.Contains(def, cols) {
			t.Fatalf("index %s = %q, want columns %s", name, def, cols)
		}
	}

	// The defaults are part of the schema's contract: tx 0 for node-level events,
	// seq and created_at assigned by the database.
	var (
		seq, tx int64
		stamped bool
	)
	err := pool.QueryRow(ctx,
		`INSERT INTO tpcd_events (node, kind, payload) VALUES ('n', 'k', '{}')
		 RETURNING seq, tx, created_at IS NOT NULL`).Scan(&seq, &tx, &stamped)
	if err != nil {
		t.Fatalf("insert with defaults: %v", err)
	}
	if seq <= 0 || tx != 0 || !stamped {
		t.Fatalf("defaults: seq=%d tx=%d created_at set=%v", seq, tx, stamped)
	}
	_, err = pool.Exec(ctx, `INSERT INTO tpcd_events (seq, node, kind, payload) VALUES (1000, 'n', 'k', '{}')`)
	if err == nil {
		t.Fatal("explicit seq accepted; seq must be generated always")
	}
}

func TestMigrateLogTwiceIsNoop(t *testing.T) {
	ctx := t.Context()
	pool := openPool(t, pgtest.NewDB(t))

	if err := db.MigrateLog(ctx, pool, testLogger(t)); err != nil {
		t.Fatalf("first MigrateLog: %v", err)
	}
	if _, err := pool.Exec(ctx,
		`INSERT INTO tpcd_events (node, tx, kind, payload) VALUES ('n', 7, 'k', '{"a": 1}')`); err != nil {
		t.Fatalf("insert: %v", err)
	}
	if err := db.MigrateLog(ctx, pool, testLogger(t)); err != nil {
		t.Fatalf("second MigrateLog: %v", err)
	}
	if got := appliedVersions(t, pool, db.LogVersionTable); !slices.Equal(got, logVersions) {
		t.Fatalf("applied versions after second run = %v, want %v", got, logVersions)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM tpcd_events`).Scan(&n); err != nil {
		t.Fatalf("count: %v", err)
	}
	if n != 1 {
		t.Fatalf("events after second run = %d, want the 1 inserted before it", n)
	}
}

func TestMigrateLogConcurrent(t *testing.T) {
	ctx := t.Context()
	uri := pgtest.NewDB(t)
	const nodes = 4

	// Each goroutine plays a node with its own pool, as nodes sharing one log
	// server do when they start together.
	pools := make([]*pgxpool.Pool, nodes)
	for i := range pools {
		pools[i] = openPool(t, uri)
	}
	errs := make([]error, nodes)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			<-start
			errs[i] = db.MigrateLog(ctx, pools[i], testLogger(t).With("node", i))
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("node %d: MigrateLog: %v", i, err)
		}
	}
	if got := appliedVersions(t, pools[0], db.LogVersionTable); !slices.Equal(got, logVersions) {
		t.Fatalf("applied versions = %v, want %v, each migration applied exactly once", got, logVersions)
	}
	if !tableExists(t, pools[0], "tpcd_events") {
		t.Fatal("tpcd_events missing")
	}
}

func TestMigrateLogSharedPoolConcurrent(t *testing.T) {
	ctx := t.Context()
	pool := openPool(t, pgtest.NewDB(t))
	const callers = 4

	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { errs[i] = db.MigrateLog(ctx, pool, testLogger(t)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: MigrateLog: %v", i, err)
		}
	}
	if got := appliedVersions(t, pool, db.LogVersionTable); !slices.Equal(got, logVersions) {
		t.Fatalf("applied versions = %v, want %v", got, logVersions)
	}
}

func TestMigrateData(t *testing.T) {
	ctx := t.Context()
	pool := openPool(t, pgtest.NewDB(t))

	// A user table that happens to use goose's default version table name must be
	// left alone.
	if _, err := pool.Exec(ctx, `CREATE TABLE goose_db_version (x int)`); err != nil {
		t.Fatalf("create user table: %v", err)
	}
	if err := db.MigrateData(ctx, pool, testLogger(t)); err != nil {
		t.Fatalf("MigrateData: %v", err)
	}
	if err := db.MigrateData(ctx, pool, testLogger(t)); err != nil {
		t.Fatalf("second MigrateData: %v", err)
	}
	if !tableExists(t, pool, "tpcd_markers") {
		t.Fatal("tpcd_markers missing after MigrateData")
	}
	if got := appliedVersions(t, pool, db.DataVersionTable); !slices.Equal(got, dataVersions) {
		t.Fatalf("data applied versions = %v, want %v", got, dataVersions)
	}
	if tableExists(t, pool, db.LogVersionTable) || tableExists(t, pool, "tpcd_events") {
		t.Fatal("MigrateData touched the log's tables")
	}

	var tx int64
	if err := pool.QueryRow(ctx,
		`INSERT INTO tpcd_markers (gid, tx) VALUES ('tpcd-x-1', 1) RETURNING tx`).Scan(&tx); err != nil {
		t.Fatalf("insert marker: %v", err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO tpcd_markers (gid, tx) VALUES ('tpcd-x-1', 2)`); err == nil {
		t.Fatal("duplicate marker gid accepted")
	}

	// Both sets can live in one database without stepping on each other.
	if err := db.MigrateLog(ctx, pool, testLogger(t)); err != nil {
		t.Fatalf("MigrateLog next to data set: %v", err)
	}
	if got := appliedVersions(t, pool, db.LogVersionTable); !slices.Equal(got, logVersions) {
		t.Fatalf("log applied versions = %v, want %v", got, logVersions)
	}
	if got := appliedVersions(t, pool, db.DataVersionTable); !slices.Equal(got, dataVersions) {
		t.Fatalf("data applied versions after log migration = %v, want %v", got, dataVersions)
	}
}

func TestMigrateDataConcurrent(t *testing.T) {
	ctx := t.Context()
	uri := pgtest.NewDB(t)
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for i := range errs {
		pool := openPool(t, uri)
		wg.Go(func() { errs[i] = db.MigrateData(ctx, pool, testLogger(t)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: MigrateData: %v", i, err)
		}
	}
	if got := appliedVersions(t, openPool(t, uri), db.DataVersionTable); !slices.Equal(got, dataVersions) {
		t.Fatalf("data applied versions = %v, want %v", got, dataVersions)
	}
}

func TestMigrateCanceledContext(t *testing.T) {
	pool := openPool(t, pgtest.NewDB(t))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := db.MigrateLog(ctx, pool, nil); err == nil {
		t.Fatal("MigrateLog with a canceled context succeeded")
	}
}

// A log created by an older tpcd (migration 1 only) keeps its events through
// the upgrade, and its primary key becomes (node, seq).
func TestMigrateLogUpgradesVersion1(t *testing.T) {
	ctx := t.Context()
	pool := openPool(t, pgtest.NewDB(t))

	first, err := os.ReadFile("migrations/00001_events.sql")
	if err != nil {
		t.Fatal(err)
	}
	old := fstest.MapFS{"00001_events.sql": {Data: first}}
	sqlDB := stdlib.OpenDBFromPool(pool)
	provider, err := goose.NewProvider(goose.DialectPostgres, sqlDB, old,
		goose.WithTableName(db.LogVersionTable), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := provider.Up(ctx); err != nil {
		t.Fatalf("migration 1: %v", err)
	}
	provider.Close()
	for _, node := range []string{"a", "b", "a"} {
		if _, err := pool.Exec(ctx, `INSERT INTO tpcd_events (node, tx, kind, payload) VALUES ($1, 1, 'k', '{}')`, node); err != nil {
			t.Fatalf("insert: %v", err)
		}
	}

	if err := db.MigrateLog(ctx, pool, testLogger(t)); err != nil {
		t.Fatalf("MigrateLog over version 1: %v", err)
	}
	if got := appliedVersions(t, pool, db.LogVersionTable); !slices.Equal(got, logVersions) {
		t.Fatalf("applied versions = %v, want %v", got, logVersions)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM tpcd_events WHERE node = 'a'`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("events of node a after the upgrade: %d, %v; want 2", n, err)
	}
	if def := indexNames(t, pool, "tpcd_events")["tpcd_events_pkey"]; !strings.Contains(def, "(node, seq)") {
		t.Fatalf("primary key after the upgrade: %q, want (node, seq)", def)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO tpcd_events (node, tx, kind, payload) VALUES ('c', 1, 'k', '{}')`); err != nil {
		t.Fatalf("append after the upgrade: %v", err)
	}
}
