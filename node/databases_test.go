package node_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/db/embedpg"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/node"
)

// restartCounter is a node.PostgresObserver.
type restartCounter struct{ n atomic.Int64 }

func (r *restartCounter) PostgresRestarted() { r.n.Add(1) }

func queryInt(t *testing.T, pool *pgxpool.Pool, sql string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// TestEmbeddedServerIsRestartedWhenItDies kills the postmaster of a node's
// own server: the node restarts it, says it is down meanwhile, counts the
// restart, and its pools work again.
func TestEmbeddedServerIsRestartedWhenItDies(t *testing.T) {
	restarts := &restartCounter{}
	dbs := testcluster.Open(t, node.DatabaseSpec{NeedData: true, MaxConns: 250, Logger: testcluster.Logger(t), Observer: restarts,
		PGBin: os.Getenv(pgtest.BinDirEnv)})
	// Sized for its pools: a prepared transaction per data connection, and
	// room for both pools.
	if got := queryInt(t, dbs.Data, "SELECT current_setting('max_prepared_transactions')::int"); got != 250 {
		t.Errorf("max_prepared_transactions = %d, want the data pool's 250", got)
	}
	if got := queryInt(t, dbs.Data, "SELECT current_setting('max_connections')::int"); got < 500 {
		t.Errorf("max_connections = %d, want room for two pools of 250", got)
	}
	if _, err := dbs.Data.Exec(context.Background(), "CREATE TABLE t (x int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}

	// Down is watched from the start: the restart may take well under a
	// second.
	var sawDown atomic.Pointer[error]
	stop := make(chan struct{})
	var watching sync.WaitGroup
	watching.Add(1)
	go func() {
		defer watching.Done()
		for {
			if err := dbs.Down(); err != nil {
				sawDown.CompareAndSwap(nil, &err)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	pid := dbs.Embedded.PID()
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := killed.Add(30 * time.Second)
	for restarts.n.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("not restarted within 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("restarted %v after the kill", time.Since(killed).Round(time.Millisecond))
	close(stop)
	watching.Wait()
	if err := dbs.Down(); err != nil {
		t.Fatalf("still down after the restart: %v", err)
	}
	if err := sawDown.Load(); err == nil || !strings.Contains((*err).Error(), "exited on its own") {
		t.Errorf("Down while restarting: %v", err)
	}
	if got := queryInt(t, dbs.Data, "SELECT sum(x) FROM t"); got != 1 {
		t.Fatalf("data after the restart: %d", got)
	}
	if got := queryInt(t, dbs.Log, "SELECT 1"); got != 1 {
		t.Fatal("log pool")
	}
	select {
	case err := <-dbs.Failed():
		t.Fatalf("Failed: %v", err)
	default:
	}
}

// TestDataServerWithoutPreparedTransactionsIsRefused: initdb leaves
// max_prepared_transactions at 0, which lets every commit abort.
func TestDataServerWithoutPreparedTransactionsIsRefused(t *testing.T) {
	for _, tc := range []struct {
		have     string
		maxConns int
		ok       bool
	}{
		{"0", 10, false},
		{"5", 10, false},
		{"5", 5, true},
	} {
		server := pgtest.NewCluster(t, embedpg.Options{Settings: map[string]string{"max_prepared_transactions": tc.have}})
		if err := server.CreateDatabase(context.Background(), "data"); err != nil {
			t.Fatal(err)
		}
		dbs, err := node.OpenDatabases(context.Background(), node.DatabaseSpec{
			LogURI: pgtest.NewDB(t), DataURI: server.URI("data"), NeedData: true, MaxConns: tc.maxConns,
		})
		if tc.ok {
			if err != nil {
				t.Fatalf("max_prepared_transactions %s, %d connections: %v", tc.have, tc.maxConns, err)
			}
			dbs.Close()
			continue
		}
		if err == nil {
			dbs.Close()
			t.Fatalf("max_prepared_transactions %s, %d connections: accepted", tc.have, tc.maxConns)
		}
		for _, want := range []string{
			"max_prepared_transactions = " + tc.have,
			"ALTER SYSTEM SET max_prepared_transactions = 10",
			"max_prepared_transactions = 10 in its postgresql.conf",
			"--max-conns",
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q: %v", want, err)
			}
		}
	}
}

// TestLogServerWithoutSynchronousCommitWarns: the shared test server runs
// with synchronous_commit off; a connection string can turn it on.
func TestLogServerWithoutSynchronousCommitWarns(t *testing.T) {
	for _, tc := range []struct {
		query string
		warn  bool
	}{
		{"", true},
		{"&synchronous_commit=on", false},
	} {
		var out testbin.SyncBuffer
		logger := slog.New(slog.NewTextHandler(&out, nil))
		dbs := testcluster.Open(t, node.DatabaseSpec{LogURI: pgtest.NewDB(t) + tc.query, Logger: logger})
		dbs.Close()
		warned := strings.Contains(out.String(), "synchronous_commit = off")
		if warned != tc.warn {
			t.Errorf("log URI%s: warned %v, want %v:\n%s", tc.query, warned, tc.warn, out.String())
		}
	}
}

// TestSQLASCIIDataDatabaseWarns: a data database whose text PostgreSQL
// neither checks nor converts is named at start-up; a UTF8 one is not.
func TestSQLASCIIDataDatabaseWarns(t *testing.T) {
	c := pgtest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := pgtest.Connect(t, c.URI("postgres"))
	name := "sqlascii_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name+" ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	for _, tc := range []struct {
		data string
		warn bool
	}{
		{c.URI(name), true},
		{pgtest.NewDB(t), false},
	} {
		var out testbin.SyncBuffer
		logger := slog.New(slog.NewTextHandler(&out, nil))
		dbs := testcluster.Open(t, node.DatabaseSpec{LogURI: pgtest.NewDB(t), DataURI: tc.data, NeedData: true, MaxConns: 4, Logger: logger})
		dbs.Close()
		warned := strings.Contains(out.String(), "encoding is SQL_ASCII")
		if warned != tc.warn {
			t.Errorf("data database %s: warned %v, want %v:\n%s", tc.data, warned, tc.warn, out.String())
		}
	}
}

// TestParticipantRefusesWhileItsDatabasesAreDown: while a participant's
// databases are known down, the coordinator shows it not ready and its
// statements fail at once instead of after the exec timeout.
func TestParticipantRefusesWhileItsDatabasesAreDown(t *testing.T) {
	c := startCluster(t, clusterConfig{participants: 2, engine: engine.CoordinatorConfig{ExecTimeout: 30 * time.Second}})
	var down atomic.Pointer[error]
	c.StopParticipant(0)
	c.PartOpts[0].DatabasesDown = func() error {
		if err := down.Load(); err != nil {
			return *err
		}
		return nil
	}
	c.StartParticipant(0)
	testcluster.Eventually(t, "participant 0 reachable", func() bool { return c.nodes()[0].Reachable })

	why := errors.New("postgres (pid 12345) exited on its own")
	down.Store(&why)
	testcluster.Eventually(t, "participant 0 shown not ready", func() bool {
		n := c.nodes()[0]
		return !n.Reachable && strings.Contains(n.LastError, "databases are down") && strings.Contains(n.LastError, why.Error())
	})
	if !c.nodes()[1].Reachable {
		t.Fatal("participant 1 not reachable")
	}

	tx := c.Begin()
	c.Exec(tx, 1, "INSERT INTO kv VALUES (1, 'b')")
	began := time.Now()
	_, err := c.TryExec(tx, 0, "INSERT INTO kv VALUES (1, 'a')")
	if took := time.Since(began); err == nil || took > 5*time.Second {
		t.Fatalf("statement for a participant whose databases are down: %v after %v; want an error at once", err, took)
	}
	t.Logf("refused in %v: %v", time.Since(began).Round(time.Millisecond), err)
	if r := c.Commit(tx); r.Outcome != engine.OutcomeAbort {
		t.Fatalf("outcome %s, want abort", r.Outcome)
	}

	down.Store(nil)
	testcluster.Eventually(t, "participant 0 ready again", func() bool { return c.nodes()[0].Reachable })
	tx = c.Begin()
	for i := range 2 {
		c.Exec(tx, i, "INSERT INTO kv VALUES (2, 'x')")
	}
	// Applied, too: a participant stopped before COMMIT PREPARED leaves the
	// transaction prepared, and its database cannot be dropped.
	c.CommitApplied(tx)
}

func (c *testCluster) nodes() []api.NodeHealth {
	c.T.Helper()
	var r []api.NodeHealth
	if err := c.Call(api.MethodNodes, struct{}{}, &r); err != nil {
		c.T.Fatalf("nodes: %v", err)
	}
	return r
}

// TestLogServerWithoutSynchronousStandbyWarns starts a log server of its
// own, then a streaming standby of it: the node warns while commits wait
// for no standby (none yet, then one that is not synchronous), and not
// once the standby is synchronous.
func TestLogServerWithoutSynchronousStandbyWarns(t *testing.T) {
	ctx := t.Context()
	primary := pgtest.NewCluster(t, embedpg.Options{})
	if err := primary.CreateDatabase(ctx, "tpcd_log"); err != nil {
		t.Fatal(err)
	}
	const warning = "without a synchronous standby"
	warned := func() bool {
		t.Helper()
		var out testbin.SyncBuffer
		logger := slog.New(slog.NewTextHandler(&out, nil))
		testcluster.Open(t, node.DatabaseSpec{LogURI: primary.URI("tpcd_log"), Logger: logger}).Close()
		return strings.Contains(out.String(), warning)
	}
	if !warned() {
		t.Fatalf("no %q warning for a log server with no standby", warning)
	}

	// The server user must reach the standby's directory.
	parent, err := os.MkdirTemp("", "tpcd-standby-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	standby, err := primary.StartStandby(ctx, "s1", embedpg.Options{Dir: parent + "/data", Settings: map[string]string{"fsync": "off"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { standby.Stop() })
	pool, err := pgxpool.New(ctx, primary.URI("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	waitState := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			var states []string
			if err := pool.QueryRow(ctx, "SELECT coalesce(array_agg(sync_state::text), '{}') FROM pg_stat_replication WHERE application_name = 's1'").Scan(&states); err != nil {
				t.Fatal(err)
			}
			if len(states) == 1 && states[0] == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("standby s1 in states %v, want %s", states, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitState("async")
	if !warned() {
		t.Fatalf("no %q warning with an asynchronous standby", warning)
	}
	if _, err := pool.Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = 's1'"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	waitState("sync")
	if warned() {
		t.Fatalf("%q warning with a synchronous standby", warning)
	}
}
