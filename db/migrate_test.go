package db_test

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strconv"
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
var logVersions = []int64{1, 2, 3, 4, 5, 6, 7, 8}

// dataVersions are the data set's migrations, in order.
var dataVersions = []int64{1, 2, 3}

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

// query runs q, which returns one text value (NULL as "").
func query(t *testing.T, pool *pgxpool.Pool, q string) string {
	t.Helper()
	var v *string
	if err := pool.QueryRow(t.Context(), q).Scan(&v); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if v == nil {
		return ""
	}
	return *v
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
	if !tableExists(t, pool, "tpcd_log") {
		t.Fatal("tpcd_log missing after MigrateLog")
	}
	if tableExists(t, pool, "tpcd_events") {
		t.Fatal("tpcd_events left after MigrateLog; migration 3 replaces it")
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
	// Every append updates every index: the primary key is the only one.
	idx := indexNames(t, pool, "tpcd_log")
	if len(idx) != 1 || !strings.Contains(idx["tpcd_log_pkey"], "(node, seq)") {
		t.Fatalf("indexes on tpcd_log: %v, want only the primary key on (node, seq)", idx)
	}

	// seq and created_at are the database's; a row holds one tx per event.
	var (
		seq     int64
		stamped bool
	)
	err := pool.QueryRow(ctx,
		`INSERT INTO tpcd_log (node, txs, events) VALUES ('n', '{0,7}', '[{}, {}]')
		 RETURNING seq, created_at IS NOT NULL`).Scan(&seq, &stamped)
	if err != nil {
		t.Fatalf("insert with defaults: %v", err)
	}
	if seq <= 0 || !stamped {
		t.Fatalf("defaults: seq=%d created_at set=%v", seq, stamped)
	}
	_, err = pool.Exec(ctx, `INSERT INTO tpcd_log (seq, node, txs, events) VALUES (1000, 'n', '{1}', '[{}]')`)
	if err == nil {
		t.Fatal("explicit seq accepted; seq must be generated always")
	}
	for _, bad := range []string{`'{1}', '[{}, {}]'`, `'{1, 2}', '[{}]'`, `'{1}', '{}'`} {
		if _, err := pool.Exec(ctx, `INSERT INTO tpcd_log (node, txs, events) VALUES ('n', `+bad+`)`); err == nil {
			t.Fatalf("row (%s) accepted; txs must name one transaction per event of an array", bad)
		}
	}
}

func TestMigrateLogTwiceIsNoop(t *testing.T) {
	ctx := t.Context()
	pool := openPool(t, pgtest.NewDB(t))

	if err := db.MigrateLog(ctx, pool, testLogger(t)); err != nil {
		t.Fatalf("first MigrateLog: %v", err)
	}
	if _, err := pool.Exec(ctx,
		`INSERT INTO tpcd_log (node, txs, events) VALUES ('n', '{7}', '[{"a": 1}]')`); err != nil {
		t.Fatalf("insert: %v", err)
	}
	if err := db.MigrateLog(ctx, pool, testLogger(t)); err != nil {
		t.Fatalf("second MigrateLog: %v", err)
	}
	if got := appliedVersions(t, pool, db.LogVersionTable); !slices.Equal(got, logVersions) {
		t.Fatalf("applied versions after second run = %v, want %v", got, logVersions)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM tpcd_log`).Scan(&n); err != nil {
		t.Fatalf("count: %v", err)
	}
	if n != 1 {
		t.Fatalf("rows after second run = %d, want the 1 inserted before it", n)
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
	if !tableExists(t, pools[0], "tpcd_log") {
		t.Fatal("tpcd_log missing")
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
	if tableExists(t, pool, db.LogVersionTable) || tableExists(t, pool, "tpcd_log") {
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

// logProvider returns a goose provider over the first n log migrations.
func logProvider(t *testing.T, pool *pgxpool.Pool, n int) *goose.Provider {
	t.Helper()
	files := []string{"00001_events.sql", "00002_events_primary_key.sql", "00003_log_rows.sql", "00004_outcomes.sql", "00005_leases.sql", "00006_outcomes_horizon_per_slot.sql", "00007_slots.sql", "00008_standbys.sql"}[:n]
	fsys := fstest.MapFS{}
	for _, name := range files {
		data, err := os.ReadFile("migrations/" + name)
		if err != nil {
			t.Fatal(err)
		}
		fsys[name] = &fstest.MapFile{Data: data}
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, stdlib.OpenDBFromPool(pool), fsys,
		goose.WithTableName(db.LogVersionTable), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { provider.Close() })
	return provider
}

// logRow is a row of tpcd_log as text, for comparisons.
type logRow struct {
	seq    int64
	node   string
	txs    []int64
	events string
}

func logRows(t *testing.T, pool *pgxpool.Pool) []logRow {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT seq, node, txs, events::text FROM tpcd_log ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	var out []logRow
	for rows.Next() {
		var r logRow
		if err := rows.Scan(&r.seq, &r.node, &r.txs, &r.events); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// A log created by an older tpcd (migration 1 only) keeps its events through
// the upgrade: each becomes a row of its own under its old seq, in order.
func TestMigrateLogUpgradesVersion1(t *testing.T) {
	ctx := t.Context()
	pool := openPool(t, pgtest.NewDB(t))

	if _, err := logProvider(t, pool, 1).Up(ctx); err != nil {
		t.Fatalf("migration 1: %v", err)
	}
	var seqs []int64
	for i, node := range []string{"a", "b", "a"} {
		var seq int64
		if err := pool.QueryRow(ctx, `INSERT INTO tpcd_events (node, tx, kind, payload) VALUES ($1, $2::bigint, 'k', jsonb_build_object('i', $2::bigint)) RETURNING seq`,
			node, i).Scan(&seq); err != nil {
			t.Fatalf("insert: %v", err)
		}
		seqs = append(seqs, seq)
	}

	if err := db.MigrateLog(ctx, pool, testLogger(t)); err != nil {
		t.Fatalf("MigrateLog over version 1: %v", err)
	}
	if got := appliedVersions(t, pool, db.LogVersionTable); !slices.Equal(got, logVersions) {
		t.Fatalf("applied versions = %v, want %v", got, logVersions)
	}
	want := []logRow{
		{seqs[0], "a", []int64{0}, `[{"i": 0}]`},
		{seqs[1], "b", []int64{1}, `[{"i": 1}]`},
		{seqs[2], "a", []int64{2}, `[{"i": 2}]`},
	}
	if got := logRows(t, pool); !slices.EqualFunc(got, want, sameRow) {
		t.Fatalf("rows after the upgrade: %v, want %v", got, want)
	}
	var next int64
	if err := pool.QueryRow(ctx, `INSERT INTO tpcd_log (node, txs, events) VALUES ('c', '{1}', '[{}]') RETURNING seq`).Scan(&next); err != nil {
		t.Fatalf("append after the upgrade: %v", err)
	}
	if next <= seqs[2] {
		t.Fatalf("seq %d after the upgrade, want one after the old events' (%d)", next, seqs[2])
	}
}

// Migration 3's Down turns every event of a row back into a row of
// tpcd_events, in log order, and Up again makes each one a row. Migration
// 4's Down, on the way, drops the kept outcomes, and 5's the leases.
func TestMigrateLogDownFromRows(t *testing.T) {
	ctx := t.Context()
	pool := openPool(t, pgtest.NewDB(t))
	if err := db.MigrateLog(ctx, pool, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{
		`('a', '{0,5}', '[{"type": "coord.txids_reserved", "data": {"through": 9}}, {"type": "coord.preparing", "data": {"tx": 5}}]')`,
		`('a', '{5}', '[{"type": "coord.ended", "data": {"tx": 5}}]')`,
	} {
		if _, err := pool.Exec(ctx, `INSERT INTO tpcd_log (node, txs, events) VALUES `+r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := logProvider(t, pool, len(logVersions)).DownTo(ctx, 2); err != nil {
		t.Fatalf("down to version 2: %v", err)
	}
	for _, table := range []string{"tpcd_log", "tpcd_outcomes", "tpcd_outcome_keys", "tpcd_outcomes_horizon", "tpcd_leases", "tpcd_lease_fences", "tpcd_slots", "tpcd_standbys"} {
		if tableExists(t, pool, table) {
			t.Fatalf("%s left after Down", table)
		}
	}
	rows, err := pool.Query(ctx, `SELECT node, tx, kind FROM tpcd_events ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var node, kind string
		var tx int64
		if err := rows.Scan(&node, &tx, &kind); err != nil {
			t.Fatal(err)
		}
		got = append(got, node+" "+kind+" "+strconv.FormatInt(tx, 10))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"a coord.txids_reserved 0", "a coord.preparing 5", "a coord.ended 5"}
	if !slices.Equal(got, want) {
		t.Fatalf("events after Down: %q, want %q", got, want)
	}
	if err := db.MigrateLog(ctx, pool, testLogger(t)); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if n := len(logRows(t, pool)); n != 3 {
		t.Fatalf("%d rows after Up again, want one per event", n)
	}
}

func sameRow(a, b logRow) bool {
	return a.seq == b.seq && a.node == b.node && slices.Equal(a.txs, b.txs) && a.events == b.events
}

// Migration 6 keeps the one outcomes horizon there was as slot 0's, and
// its Down keeps the largest of the slots' as the one again: a horizon too
// high says forgotten where aborted was known, one too low says aborted
// where an outcome was deleted.
func TestMigrateLogHorizonPerSlot(t *testing.T) {
	ctx := t.Context()
	pool := openPool(t, pgtest.NewDB(t))
	if _, err := logProvider(t, pool, 5).Up(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO tpcd_outcomes_horizon (max_tx) VALUES (42)`); err != nil {
		t.Fatal(err)
	}
	if _, err := logProvider(t, pool, 6).Up(ctx); err != nil {
		t.Fatalf("up to 6: %v", err)
	}
	if got := query(t, pool, `SELECT string_agg(slot || ':' || max_tx, ',' ORDER BY slot) FROM tpcd_outcomes_horizon`); got != "0:42" {
		t.Fatalf("horizons after the upgrade: %s, want slot 0's 42", got)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO tpcd_outcomes_horizon (slot, max_tx) VALUES (1, 1099511627800)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO tpcd_outcomes_horizon (slot, max_tx) VALUES (1, 7)`); err == nil {
		t.Fatal("a second horizon of slot 1 was taken")
	}
	if _, err := logProvider(t, pool, 6).DownTo(ctx, 5); err != nil {
		t.Fatalf("down to 5: %v", err)
	}
	if got := query(t, pool, `SELECT string_agg(max_tx::text, ',') FROM tpcd_outcomes_horizon`); got != "1099511627800" {
		t.Fatalf("the horizon after Down: %s, want the largest of the slots', 1099511627800, alone", got)
	}
}
