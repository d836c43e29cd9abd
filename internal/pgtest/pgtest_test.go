package pgtest

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/tpcd/tpcd/db/embedpg"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func mustExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func queryInt(t *testing.T, conn *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func TestNewDBGivesDistinctDatabases(t *testing.T) {
	var names []string
	t.Run("use", func(t *testing.T) {
		uris := []string{NewDB(t), NewDB(t)}
		if uris[0] == uris[1] {
			t.Fatalf("same URI twice: %s", uris[0])
		}
		var conns []*pgx.Conn
		for i, uri := range uris {
			conn := Connect(t, uri)
			conns = append(conns, conn)
			var name string
			if err := conn.QueryRow(context.Background(), "SELECT current_database()").Scan(&name); err != nil {
				t.Fatal(err)
			}
			names = append(names, name)
			// The same table in both: only separate databases allow it.
			mustExec(t, conn, "CREATE TABLE t (v int)")
			mustExec(t, conn, "INSERT INTO t VALUES ($1)", i)
		}
		if names[0] == names[1] {
			t.Fatalf("both URIs lead to database %s", names[0])
		}
		for i, conn := range conns {
			if v := queryInt(t, conn, "SELECT v FROM t"); v != i {
				t.Errorf("database %s holds %d, want %d", names[i], v, i)
			}
		}
		// Connections left open: the clean-up must force them out, and a
		// prepared transaction left behind must not keep it from dropping.
		mustExec(t, conns[0], "BEGIN")
		mustExec(t, conns[0], "INSERT INTO t VALUES (7)")
		mustExec(t, conns[0], "PREPARE TRANSACTION 'left-behind'")
	})
	if len(names) != 2 {
		t.FailNow()
	}
	admin := Connect(t, Cluster(t).URI("postgres"))
	for _, name := range names {
		if n := queryInt(t, admin, "SELECT count(*) FROM pg_database WHERE datname = $1", name); n != 0 {
			t.Errorf("database %s not dropped after its test", name)
		}
	}
}

func TestDBName(t *testing.T) {
	name := dbName("TestX/sub-test with spaces and a very long name indeed, longer than sixty-three", 12)
	if len(name) > 63 || !strings.HasPrefix(name, "t_testx_sub_test_with") || !strings.HasSuffix(name, "_12") {
		t.Fatalf("dbName = %q", name)
	}
	if u, err := url.Parse(Cluster(t).URI(name)); err != nil || u.Path != "/"+name {
		t.Fatalf("URI of %s: %v %v", name, u, err)
	}
}

func TestNewClusterSurvivesKill(t *testing.T) {
	c := NewCluster(t, embedpg.Options{})
	if c.Port() == Cluster(t).Port() {
		t.Fatalf("private cluster shares the shared cluster's port")
	}
	conn, err := pgx.Connect(context.Background(), c.URI("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, conn, "CREATE TABLE t (v int)")
	mustExec(t, conn, "INSERT INTO t VALUES (7)")
	if err := c.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	conn.Close(context.Background())
	if err := c.Restart(context.Background()); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if v := queryInt(t, Connect(t, c.URI("postgres")), "SELECT v FROM t"); v != 7 {
		t.Fatalf("after kill and restart: %d", v)
	}
}
