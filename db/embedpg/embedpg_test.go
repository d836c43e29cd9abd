package embedpg

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/internal/testbin"
)

// fast are settings that keep committed data across a server kill (only an
// OS crash would lose it) while skipping fsync.
var fast = map[string]string{"fsync": "off", "full_page_writes": "off"}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// start starts a cluster that the test stops even if it fails early.
func start(t *testing.T, opts Options) *Cluster {
	t.Helper()
	if opts.Settings == nil {
		opts.Settings = fast
	}
	c, err := Start(testCtx(t), opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return c
}

func connect(t *testing.T, uri string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(testCtx(t), uri)
	if err != nil {
		t.Fatalf("connect %s: %v", uri, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(testCtx(t), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// queryOne runs a query that answers one value, failing the test if it
// fails.
func queryOne[T any](t *testing.T, conn *pgx.Conn, sql string) T {
	t.Helper()
	var v T
	if err := conn.QueryRow(testCtx(t), sql).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// sharedDir makes a directory the server user can reach.
func sharedDir(t *testing.T) string { return testbin.ServerTempDir(t) }

func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func TestTempClusterTwoPhaseCommit(t *testing.T) {
	t.Parallel()
	c, err := Start(testCtx(t), Options{Settings: fast})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer c.Stop()
	if !exists(t, filepath.Join(c.Dir(), "PG_VERSION")) || !exists(t, c.LogFile()) {
		t.Fatalf("no cluster or log in %s", c.Dir())
	}

	admin := connect(t, c.URI("postgres"))
	if got := queryOne[string](t, admin, "SHOW listen_addresses"); got != "127.0.0.1" {
		t.Errorf("listen_addresses = %q", got)
	}
	if got := queryOne[string](t, admin, "SHOW unix_socket_directories"); !strings.Contains(got, c.Dir()) {
		t.Errorf("unix_socket_directories = %q, want inside %s", got, c.Dir())
	}
	if !exists(t, filepath.Join(c.Dir(), ".s.PGSQL."+queryOne[string](t, admin, "SHOW port"))) {
		t.Errorf("no unix socket in %s", c.Dir())
	}
	if got := queryOne[string](t, admin, "SELECT current_user"); got != "postgres" {
		t.Errorf("current_user = %q", got)
	}
	if got := queryOne[int](t, admin, "SELECT current_setting('max_prepared_transactions')::int"); got != 200 {
		t.Errorf("max_prepared_transactions = %d", got)
	}
	if got := queryOne[int](t, admin, "SELECT current_setting('max_connections')::int"); got != 200 {
		t.Errorf("max_connections = %d", got)
	}
	if got := queryOne[string](t, admin, "SHOW fsync"); got != "off" {
		t.Errorf("fsync = %q, Settings not applied", got)
	}

	ctx := testCtx(t)
	for range 2 { // the second call finds it and must not fail
		if err := c.CreateDatabase(ctx, "app"); err != nil {
			t.Fatalf("CreateDatabase: %v", err)
		}
	}
	app := connect(t, c.URI("app"))
	mustExec(t, app, "BEGIN")
	mustExec(t, app, "CREATE TABLE t (x int)")
	mustExec(t, app, "INSERT INTO t VALUES (1)")
	mustExec(t, app, "PREPARE TRANSACTION 'x'")
	if n := queryOne[int](t, admin, "SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'x'"); n != 1 {
		t.Fatalf("prepared transactions named x: %d", n)
	}
	mustExec(t, app, "COMMIT PREPARED 'x'") // must run in the database it belongs to
	if n := queryOne[int](t, app, "SELECT sum(x) FROM t"); n != 1 {
		t.Fatalf("sum after COMMIT PREPARED = %d", n)
	}

	if err := c.DropDatabase(ctx, "app"); err != nil { // app is still connected: FORCE
		t.Fatalf("DropDatabase: %v", err)
	}
	if n := queryOne[int](t, admin, "SELECT count(*) FROM pg_database WHERE datname = 'app'"); n != 0 {
		t.Fatalf("app still exists")
	}

	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if exists(t, c.Dir()) {
		t.Fatalf("Stop left temporary dir %s", c.Dir())
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := c.Restart(ctx); err == nil {
		t.Fatalf("Restart after removal succeeded")
	}
}

func TestDirReusedAcrossStartStop(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(sharedDir(t), "state", "pg") // parents created too
	ctx := testCtx(t)

	c1 := start(t, Options{Dir: dir})
	if c1.Dir() != dir {
		t.Fatalf("Dir() = %s, want %s", c1.Dir(), dir)
	}
	conn := connect(t, c1.URI("postgres"))
	mustExec(t, conn, "CREATE TABLE kept (v text)")
	mustExec(t, conn, "INSERT INTO kept VALUES ('hello')")
	conn.Close(ctx)
	if err := c1.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !exists(t, filepath.Join(dir, "PG_VERSION")) {
		t.Fatalf("Stop removed a directory it did not create")
	}

	c2 := start(t, Options{Dir: dir})
	conn = connect(t, c2.URI("postgres"))
	if got := queryOne[string](t, conn, "SELECT v FROM kept"); got != "hello" {
		t.Fatalf("after reuse: %q", got)
	}
	if err := c2.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !exists(t, dir) {
		t.Fatalf("second Stop removed the directory")
	}
}

func TestKillRestartRecovers(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c := start(t, Options{})
	port := c.Port()

	conn, err := pgx.Connect(ctx, c.URI("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, conn, "CREATE TABLE t (x int)")
	mustExec(t, conn, "INSERT INTO t VALUES (1)")
	mustExec(t, conn, "BEGIN")
	mustExec(t, conn, "INSERT INTO t VALUES (2)")
	mustExec(t, conn, "PREPARE TRANSACTION 'in-doubt'")
	backend := queryOne[int](t, conn, "SELECT pg_backend_pid()")

	if err := c.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	// Backends live in sessions of their own; Kill must get them too.
	if st := procState("/proc/" + strconv.Itoa(backend)); st != "" && st != "Z" {
		t.Fatalf("backend %d survived Kill (state %s)", backend, st)
	}
	conn.Close(ctx)
	if !exists(t, filepath.Join(c.Dir(), "postmaster.pid")) {
		t.Fatalf("Kill cleaned up (no stale postmaster.pid)")
	}
	if _, err := pgx.Connect(ctx, c.URI("postgres")); err == nil {
		t.Fatalf("server still answers after Kill")
	}
	if err := c.Kill(); err == nil {
		t.Fatalf("Kill of a dead server succeeded")
	}

	if err := c.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if c.Port() != port {
		t.Fatalf("port changed across Restart: %d -> %d", port, c.Port())
	}
	if err := c.Restart(ctx); err == nil {
		t.Fatalf("Restart of a running server succeeded")
	}
	conn = connect(t, c.URI("postgres"))
	if n := queryOne[int](t, conn, "SELECT sum(x) FROM t"); n != 1 {
		t.Fatalf("committed data after crash: sum = %d, want 1", n)
	}
	if n := queryOne[int](t, conn, "SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'in-doubt'"); n != 1 {
		t.Fatalf("prepared transaction lost in crash")
	}
	mustExec(t, conn, "COMMIT PREPARED 'in-doubt'")
	if n := queryOne[int](t, conn, "SELECT sum(x) FROM t"); n != 3 {
		t.Fatalf("after COMMIT PREPARED: sum = %d, want 3", n)
	}
	conn.Close(ctx)

	// A clean shutdown keeps even a temporary directory for Restart.
	if err := c.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatalf("Restart after Shutdown: %v", err)
	}
	conn = connect(t, c.URI("postgres"))
	if n := queryOne[int](t, conn, "SELECT sum(x) FROM t"); n != 3 {
		t.Fatalf("after Shutdown/Restart: sum = %d, want 3", n)
	}
	conn.Close(ctx)
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if exists(t, c.Dir()) {
		t.Fatalf("Stop left temporary dir %s", c.Dir())
	}
}

func TestFindBinDir(t *testing.T) {
	t.Parallel()
	if _, err := FindBinDir("/nonexistent/pg/bin"); err == nil {
		t.Fatalf("bogus flag accepted")
	}
	if _, err := FindBinDir(t.TempDir()); err == nil {
		t.Fatalf("directory without initdb accepted")
	}
	dir, err := FindBinDir(os.Getenv("TPCD_TEST_PG_BIN"))
	if err != nil {
		t.Fatalf("FindBinDir: %v", err)
	}
	if !exists(t, filepath.Join(dir, "initdb")) {
		t.Fatalf("FindBinDir = %s without initdb", dir)
	}
	if _, err := Start(testCtx(t), Options{BinDir: "/nonexistent/pg/bin"}); err == nil {
		t.Fatalf("Start with bogus BinDir succeeded")
	}
}

// emptyTempDir points os.TempDir at a fresh directory, so that the test can
// see whether Start left anything behind.
func emptyTempDir(t *testing.T) string {
	base := sharedDir(t)
	t.Setenv("TMPDIR", base)
	return base
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind: %s", filepath.Join(dir, e.Name()))
	}
}

func TestStartFailureCleansUp(t *testing.T) {
	base := emptyTempDir(t)
	// A port we hold and asked for explicitly: the server cannot bind it and
	// Start must not try another.
	port := testbin.Listen(t).Addr().(*net.TCPAddr).Port

	c, err := Start(testCtx(t), Options{Port: port, Settings: fast})
	if err == nil {
		c.Stop()
		t.Fatalf("Start on a taken port succeeded")
	}
	if !bindFailed([]byte(err.Error())) {
		t.Errorf("error does not quote the server log: %v", err)
	}
	assertEmpty(t, base)
}

func TestStartCancelledCleansUp(t *testing.T) {
	base := emptyTempDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c, err := Start(ctx, Options{Settings: fast})
	if err == nil {
		c.Stop()
		t.Fatalf("Start with a cancelled context succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error does not say cancelled: %v", err)
	}
	assertEmpty(t, base)
}

func TestDirNotUsable(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	// A non-empty directory without a cluster is not ours to initdb.
	junk := filepath.Join(sharedDir(t), "junk")
	if err := os.MkdirAll(junk, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(junk, "file"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(ctx, Options{Dir: junk}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("Start in a non-empty dir: %v", err)
	}
	if !exists(t, filepath.Join(junk, "file")) {
		t.Fatalf("Start touched a foreign directory")
	}

	if os.Geteuid() == 0 {
		// The postgres user cannot enter a root-only directory.
		private := sharedDir(t)
		if err := os.Chmod(private, 0o700); err != nil {
			t.Fatal(err)
		}
		_, err := Start(ctx, Options{Dir: filepath.Join(private, "pg")})
		if err == nil || !strings.Contains(err.Error(), "cannot traverse") {
			t.Fatalf("Start below a root-only dir: %v", err)
		}
	}
}
