package heal

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/db/embedpg"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testcluster"
)

// TestLogFailsOverToItsStandby gives the coordinator a log server with a
// synchronous standby and a URI naming both (target_session_attrs=
// read-write). Under load the primary is killed and the standby promoted:
// the coordinator goes on committing on the new primary, every commit a
// client heard of is on both participants, every other transaction ended
// one way on both, and nothing is left prepared.
func TestLogFailsOverToItsStandby(t *testing.T) {
	failOver(t, func(pair serverPair) ([]string, map[int][]string) {
		return []string{"--log-db", pair.uri("tpcd_log")}, nil
	}, "tpcd_log", "SELECT coalesce(max(seq), 0) FROM tpcd_log WHERE node = 'coordinator'")
}

// TestDataServerFailsOverToItsStandby does the same to participant 1's
// server, which holds its data (prepared branches, the decider's markers)
// and its log: the participant goes on on the new primary, and no
// decision, vote or commit it acted on is lost.
func TestDataServerFailsOverToItsStandby(t *testing.T) {
	failOver(t, func(pair serverPair) ([]string, map[int][]string) {
		return nil, map[int][]string{1: {"--data-db", pair.uri("tpcd_data"), "--log-db", pair.uri("tpcd_log")}}
	}, "tpcd_data", "SELECT count(*) FROM t")
}

// startServer starts a PostgreSQL server in dir, stopped when the test
// ends, with the databases named.
func startServer(t *testing.T, dir string, databases ...string) *embedpg.Cluster {
	t.Helper()
	server, err := embedpg.Start(t.Context(), embedpg.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Stop() })
	for _, name := range databases {
		if err := server.CreateDatabase(t.Context(), name); err != nil {
			t.Fatal(err)
		}
	}
	return server
}

// serverPair is a PostgreSQL server and its synchronous standby.
type serverPair struct{ primary, standby *embedpg.Cluster }

// uri names both servers, so that a node reconnects to whichever accepts
// writes.
func (p serverPair) uri(dbname string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d,127.0.0.1:%d/%s?sslmode=disable&target_session_attrs=read-write&connect_timeout=2",
		embedpg.Superuser, p.primary.Port(), p.standby.Port(), dbname)
}

// failOver starts a server pair with databases tpcd_log and tpcd_data, a
// cluster that uses it through args, and four clients; kills the primary
// under load and promotes the standby; and checks that commits go on (and
// that growing, a count read with growth on the promoted server's database
// growthDB, grows), that every acknowledged key is on both participants,
// that they agree, and that nothing is left prepared.
func failOver(t *testing.T, args func(serverPair) ([]string, map[int][]string), growthDB, growing string) {
	ctx := t.Context()
	root := stateRoot(t)
	primary := startServer(t, filepath.Join(root, "primary"), "tpcd_log", "tpcd_data")
	standby, err := primary.StartStandby(ctx, "s1", embedpg.Options{Dir: filepath.Join(root, "standby")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { standby.Stop() })
	sql(t, primary.URI("postgres"), "ALTER SYSTEM SET synchronous_standby_names = 's1'", "SELECT pg_reload_conf()")
	testcluster.EventuallyWithin(t, 30*time.Second, "the standby streams synchronously", func() bool {
		return query(t, primary.URI("postgres"), "SELECT count(*) FROM pg_stat_replication WHERE application_name = 's1' AND sync_state = 'sync'") == "1"
	})

	coordArgs, partArgs := args(serverPair{primary, standby})
	c := startClusterWith(t, coordArgs, partArgs)
	c.createTable(t)

	// Four clients commit keys of their own until told to stop; a key is
	// acknowledged when its commit answered commit.
	var mu sync.Mutex
	var acked, failed []int
	stop := clients(1000, func(_, key int) error {
		err := c.commit(key)
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			acked = append(acked, key)
		} else {
			failed = append(failed, key)
		}
		return err
	})
	ackedCount := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	testcluster.EventuallyWithin(t, time.Minute, "commits before the failover", func() bool { return ackedCount() >= 40 })
	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := ackedCount()
	sql(t, standby.URI("postgres"), "SELECT pg_promote(true, 60)")
	if got := query(t, standby.URI("postgres"), "SELECT pg_is_in_recovery()"); got != "false" {
		t.Fatalf("the promoted standby is in recovery: %s", got)
	}
	grown := func() string { return query(t, standby.URI(growthDB), growing) }
	promotedAt := grown()
	testcluster.EventuallyWithin(t, time.Minute, "commits on the promoted standby", func() bool { return ackedCount() >= killedAt+40 })
	stop()
	// Commits need no write to the coordinator's log (a decider's COMMIT
	// decides), so its appends, retried since the kill, may land on the
	// new primary only after the commits above.
	testcluster.EventuallyWithin(t, time.Minute, "writes to the promoted standby ("+growing+")", func() bool { return grown() != promotedAt })
	t.Logf("%d commits acknowledged (%d before the kill), %d calls failed", len(acked), killedAt, len(failed))

	// Every transaction ends; then each key is on both participants or on
	// neither, and every acknowledged one is on both.
	testcluster.EventuallyWithin(t, time.Minute, "no transaction left prepared", func() bool {
		return c.readAll(t, "SELECT count(*) FROM pg_prepared_xacts") == [2]string{"0", "0"}
	})
	rows := c.readAll(t, "SELECT coalesce(string_agg(k::text, ',' ORDER BY k), '') FROM t")
	if rows[0] != rows[1] {
		t.Fatalf("participants differ:\np0 %s\np1 %s", rows[0], rows[1])
	}
	have := strings.Split(rows[0], ",")
	for _, k := range acked {
		if !slices.Contains(have, fmt.Sprint(k)) {
			t.Errorf("acknowledged key %d is missing", k)
		}
	}
	if out := c.coord.proc.Out.String(); strings.Contains(out, "level=ERROR") && strings.Contains(out, "violation") {
		t.Errorf("the coordinator logged a violation:\n%s", out)
	}
}

// readAll runs a query that returns one value on each participant, in a
// transaction of its own, and returns the values.
func (c *cluster) readAll(t *testing.T, q string) [2]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got [2]string
	var b engine.BeginReply
	if err := c.call(ctx, api.MethodBegin, struct{}{}, &b); err != nil {
		t.Fatal(err)
	}
	defer c.call(ctx, api.MethodRollback, api.TxParams{TxID: b.TxID}, nil)
	for i := range 2 {
		n := engine.NodeID(i)
		var r engine.ExecReply
		if err := c.call(ctx, api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &n, SQL: q}, &r); err != nil {
			t.Fatalf("%s on p%d: %v", q, i, err)
		}
		if r.Result == nil || len(r.Result.Rows) != 1 || len(r.Result.Rows[0]) != 1 {
			t.Fatalf("%s on p%d: result %+v", q, i, r.Result)
		}
		got[i] = fmt.Sprint(r.Result.Rows[0][0])
	}
	return got
}

// sql runs statements on uri, each on its own.
func sql(t *testing.T, uri string, stmts ...string) {
	t.Helper()
	conn := pgtest.Connect(t, uri)
	for _, s := range stmts {
		if _, err := conn.Exec(t.Context(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// query reads one value from uri, on a connection of its own (it is
// polled, so the connection goes at once rather than with the test).
func query(t *testing.T, uri, q string) string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), uri)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var v any
	if err := conn.QueryRow(t.Context(), q).Scan(&v); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return fmt.Sprint(v)
}
