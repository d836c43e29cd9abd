package pgwire_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testcluster"
)

// run runs a client program to its end and returns its combined output
// and exit code.
func run(t *testing.T, env []string, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s: %v", name, err)
		}
		code = ee.ExitCode()
	}
	return string(out), code
}

// psqlEnv gives psql the password without putting it in the URL, as a user
// would, and no ~/.psqlrc.
func (f *frontDoor) psqlEnv(password string) []string {
	return []string{"PGPASSWORD=" + password, "PSQLRC=/dev/null", "PGCONNECT_TIMEOUT=60"}
}

func (f *frontDoor) psqlURL() string {
	host, port, _ := strings.Cut(f.addr, ":")
	return fmt.Sprintf("postgresql://%s@%s:%s/tpcd?sslmode=disable", testUser, host, port)
}

// TestPsql: psql with -c and -f runs a transaction across participants,
// a failing statement, a routing error, a script that ends inside a
// transaction, and a wrong password.
func TestPsql(t *testing.T) {
	f := startFrontDoor(t, nil)
	psql := pgtest.ClientBin(t, "psql")
	env := f.psqlEnv(testPassword)
	k0, k1 := keysOn(0, 2, 0), keysOn(1, 2, 0)

	out, code := run(t, env, psql, f.psqlURL(), "-X", "-v", "ON_ERROR_STOP=1",
		"-c", "BEGIN",
		"-c", fmt.Sprintf("INSERT INTO kv (k, v) VALUES (%d, 'psql -c')", k0[0]),
		"-c", fmt.Sprintf("INSERT INTO kv (k, v) VALUES (%d, 'psql -c')", k1[0]),
		"-c", "COMMIT")
	if code != 0 || !strings.Contains(out, "COMMIT") {
		t.Fatalf("psql -c: exit %d\n%s", code, out)
	}
	// The next psql is another session, which the front door does not
	// hold back for this one's phase two; its count must find both rows.
	testcluster.Eventually(t, "phase two of psql -c", func() bool {
		return len(f.c.Prepared(0)) == 0 && len(f.c.Prepared(1)) == 0
	})

	out, code = run(t, env, psql, f.psqlURL(), "-X", "-v", fmt.Sprintf("k0=%d", k0[1]), "-v", fmt.Sprintf("k1=%d", k1[1]),
		"-f", "testdata/psql_transaction.sql")
	if code != 0 || !strings.Contains(out, "psql -f") || !regexp.MustCompile(`rows_everywhere\s*\n-+\s*\n\s*2\s*\n\s*2\s*\n`).MatchString(out) {
		t.Fatalf("psql -f: exit %d\n%s", code, out)
	}

	// A failing statement: psql shows the participant's error and
	// SQLSTATE; COMMIT of the failed block rolls it back.
	out, code = run(t, env, psql, f.psqlURL(), "-X", "-v", "VERBOSITY=verbose",
		"-c", "BEGIN",
		"-c", fmt.Sprintf("INSERT INTO kv (k, v) VALUES (%d, 'not kept')", keysOn(0, 3, 0)[2]),
		"-c", fmt.Sprintf("INSERT INTO kv (k, v) VALUES (%d, 'duplicate')", k1[0]),
		"-c", "SELECT 1",
		"-c", "COMMIT")
	for _, want := range []string{"ERROR:  23505: duplicate key", "DETAIL:  Key (k)=", "ERROR:  25P02", "ROLLBACK"} {
		if !strings.Contains(out, want) {
			t.Fatalf("failing statement: want %q in\n%s", want, out)
		}
	}

	// Routing errors name the choices.
	out, _ = run(t, env, psql, f.psqlURL(), "-X", "-c", "DELETE FROM kv")
	if !strings.Contains(out, "without a value for k") || !strings.Contains(out, "SET tpcd.node") {
		t.Fatalf("routing error:\n%s", out)
	}

	// A script that ends inside its transaction: psql leaves, nothing stays.
	k0l, k1l := keysOn(0, 4, 0)[3], keysOn(1, 4, 0)[3]
	out, code = run(t, env, psql, f.psqlURL(), "-X", "-v", fmt.Sprintf("k0=%d", k0l), "-v", fmt.Sprintf("k1=%d", k1l), "-f", "testdata/psql_left_open.sql")
	if code != 0 {
		t.Fatalf("psql -f left open: exit %d\n%s", code, out)
	}

	out, code = run(t, f.psqlEnv("not the password"), psql, f.psqlURL(), "-X", "-c", "SELECT 1")
	if code == 0 || !strings.Contains(out, "password authentication failed") {
		t.Fatalf("wrong password: exit %d\n%s", code, out)
	}

	f.nothingLeft()
	f.wantRows(map[int]string{k0[0]: "psql -c", k1[0]: "psql -c", k0[1]: "psql -f", k1[1]: "psql -f"})
}

// python finds the system's Python 3 with psycopg2 (Debian's
// python3-psycopg2). Missing, the test fails: make ensure-psycopg2
// installs it.
func python(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if err := exec.Command(p, "-c", "import psycopg2").Run(); err == nil {
			return p
		}
	}
	t.Fatal("no python3 that can import psycopg2: run make ensure-psycopg2 (installs Debian's python3-psycopg2)")
	return ""
}

// TestPsycopg2: an application on psycopg2 (testdata/psycopg2_client.py)
// runs a transaction across participants, a failing statement, a routing
// error, leaves mid-transaction and tries a wrong password; the rows are
// then checked on the data servers.
func TestPsycopg2(t *testing.T) {
	f := startFrontDoor(t, nil)
	py := python(t)
	k0, k1, kLeft := keysOn(0, 1, 0)[0], keysOn(1, 1, 0)[0], keysOn(1, 2, 0)[1]
	host, port, _ := strings.Cut(f.addr, ":")
	dsn := func(pw string) string {
		return fmt.Sprintf("host=%s port=%s dbname=tpcd user=%s password='%s' sslmode=disable connect_timeout=60", host, port, testUser, pw)
	}
	out, code := run(t, nil, py, "testdata/psycopg2_client.py", dsn(testPassword), dsn("wrong"), strconv.Itoa(k0), strconv.Itoa(k1), strconv.Itoa(kLeft))
	if code != 0 || !strings.HasSuffix(strings.TrimSpace(out), "done") {
		t.Fatalf("psycopg2 client: exit %d\n%s", code, out)
	}
	t.Log(out)
	f.nothingLeft()
	f.wantRows(map[int]string{k0: "psycopg2", k1: "psycopg2"})
}

// nodePG finds node and the node-postgres that make ensure-node-pg
// installs (in ~/.cache/tpcd/node-pg). Missing, the test fails.
func nodePG(t *testing.T) (node, modules string) {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	modules = filepath.Join(cache, "tpcd", "node-pg", "node_modules")
	node, err = exec.LookPath("node")
	if err != nil {
		t.Fatal("no node: run make ensure-node-pg (installs Node.js and node-postgres)")
	}
	if _, err := os.Stat(filepath.Join(modules, "pg", "package.json")); err != nil {
		t.Fatalf("no node-postgres in %s: run make ensure-node-pg", modules)
	}
	return node, modules
}

// TestNodePostgres: an application on node-postgres
// (testdata/node_pg_client.js) runs a transaction across participants with
// parameters, a named prepared statement in a later transaction, a failing
// statement in a block, a routing error and a savepoint, leaves
// mid-transaction and tries a wrong password; the rows are then checked on
// the data servers.
func TestNodePostgres(t *testing.T) {
	f := startFrontDoor(t, nil)
	node, modules := nodePG(t)
	on0, on1 := keysOn(0, 2, 0), keysOn(1, 3, 0)
	host, port, _ := strings.Cut(f.addr, ":")
	args := []string{"testdata/node_pg_client.js", host, port, testUser, testPassword}
	for _, k := range []int{on0[0], on1[0], on1[2], on0[1], on1[1]} {
		args = append(args, strconv.Itoa(k))
	}
	out, code := run(t, []string{"NODE_PATH=" + modules}, node, args...)
	if code != 0 || !strings.HasSuffix(strings.TrimSpace(out), "done") {
		t.Fatalf("node-postgres client: exit %d\n%s", code, out)
	}
	t.Log(out)
	f.nothingLeft()
	f.wantRows(map[int]string{on0[0]: "node-pg", on1[0]: "node-pg", on0[1]: "named", on1[1]: "named"})
}

// jdbcDriver is where Debian's libpostgresql-jdbc-java puts the driver.
const jdbcDriver = "/usr/share/java/postgresql.jar"

// java finds a Java (11 or later, which runs a single source file) and the
// PostgreSQL JDBC driver that make ensure-jdbc installs. Missing, the test
// fails.
func java(t *testing.T) string {
	t.Helper()
	j, err := exec.LookPath("java")
	if err != nil {
		t.Fatal("no java: run make ensure-jdbc (installs Debian's default-jre-headless and libpostgresql-jdbc-java)")
	}
	if _, err := os.Stat(jdbcDriver); err != nil {
		t.Fatalf("no JDBC driver at %s: run make ensure-jdbc", jdbcDriver)
	}
	return j
}

// TestJDBC: a Java application on the PostgreSQL JDBC driver
// (testdata/JdbcClient.java) runs a transaction across participants with
// server-side prepared statements, one statement run again and again, a
// failing statement in a block, a routing error and a savepoint, leaves
// mid-transaction and tries a wrong password; the rows are then checked on
// the data servers.
func TestJDBC(t *testing.T) {
	f := startFrontDoor(t, nil)
	j := java(t)
	on0, on1 := keysOn(0, 2, 0), keysOn(1, 3, 0)
	args := []string{"-cp", jdbcDriver, "testdata/JdbcClient.java", "jdbc:postgresql://" + f.addr + "/tpcd?sslmode=disable", testUser, testPassword}
	for _, k := range []int{on0[0], on1[0], on1[2], on0[1], on1[1]} {
		args = append(args, strconv.Itoa(k))
	}
	out, code := run(t, nil, j, args...)
	if code != 0 || !strings.HasSuffix(strings.TrimSpace(out), "done") {
		t.Fatalf("JDBC client: exit %d\n%s", code, out)
	}
	t.Log(out)
	f.nothingLeft()
	f.wantRows(map[int]string{on0[0]: "jdbc", on1[0]: "jdbc", on0[1]: "jdbc prepared", on1[1]: "jdbc prepared"})
}

var pgbenchDone = regexp.MustCompile(`number of transactions actually processed: (\d+)/(\d+)`)

// pgbenchProcessed is the number of transactions a pgbench run that ended
// well processed; a run that did not process all it was to fails the test.
func pgbenchProcessed(t *testing.T, mode, out string, code int) int {
	t.Helper()
	m := pgbenchDone.FindStringSubmatch(out)
	if code != 0 || m == nil || m[1] != m[2] {
		t.Fatalf("pgbench -M %s: exit %d\n%s", mode, code, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestPgbench: pgbench's clients run a custom script whose every
// transaction spans both participants, in each protocol mode; each
// participant's counter then equals the number of transactions pgbench
// committed. A script whose statement fails or cannot be routed aborts
// its client, leaving nothing behind; a wrong password is refused.
func TestPgbench(t *testing.T) {
	f := startFrontDoor(t, nil)
	pgbench, psql := pgtest.ClientBin(t, "pgbench"), pgtest.ClientBin(t, "psql")
	env := f.psqlEnv(testPassword)
	if out, code := run(t, env, psql, f.psqlURL(), "-X", "-v", "ON_ERROR_STOP=1",
		"-c", "SET tpcd.node = all",
		"-c", "CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL)",
		"-c", "INSERT INTO counters VALUES (1, 0)"); code != 0 {
		t.Fatalf("set-up: exit %d\n%s", code, out)
	}
	// psql's INSERT answered once decided: pgbench's sessions must not
	// reach a participant that still holds the row prepared, and so unseen.
	testcluster.Eventually(t, "phase two of the set-up", func() bool {
		return len(f.c.Prepared(0)) == 0 && len(f.c.Prepared(1)) == 0
	})
	const clients, perClient = 4, 25
	total := 0
	for _, mode := range []string{"simple", "extended", "prepared"} {
		out, code := run(t, env, pgbench, "-n", "-M", mode, "-f", "testdata/pgbench_spread.sql",
			"-c", strconv.Itoa(clients), "-t", strconv.Itoa(perClient), f.psqlURL())
		total += pgbenchProcessed(t, mode, out, code)
	}
	// pgbench's last COMMIT returns once the decider committed; the other
	// participant's branch commits in phase two, just after.
	testcluster.Eventually(t, "phase two of the last transactions", func() bool {
		return len(f.c.Prepared(0)) == 0 && len(f.c.Prepared(1)) == 0
	})
	for node := range 2 {
		var n int
		if err := f.c.Data[node].QueryRow(context.Background(), "SELECT n FROM counters WHERE id = 1").Scan(&n); err != nil || n != total {
			t.Fatalf("participant %d counted %d transactions (%v), pgbench committed %d", node, n, err, total)
		}
	}

	// A failing statement mid-transaction aborts pgbench's client,
	// which leaves with its transaction open.
	script := filepath.Join(t.TempDir(), "fails.sql")
	os.WriteFile(script, []byte("BEGIN;\nSET tpcd.node = 0;\nUPDATE counters SET n = n + 1000 WHERE id = 1;\nSET tpcd.node = 1;\nINSERT INTO counters VALUES (1, 0);\nCOMMIT;\n"), 0o644)
	out, code := run(t, env, pgbench, "-n", "-f", script, "-c", "1", "-t", "1", f.psqlURL())
	if code == 0 || !strings.Contains(out, "duplicate key") {
		t.Fatalf("pgbench with a failing statement: exit %d\n%s", code, out)
	}
	os.WriteFile(script, []byte("UPDATE kv SET v = 'everywhere?';\n"), 0o644)
	out, code = run(t, env, pgbench, "-n", "-f", script, "-c", "1", "-t", "1", f.psqlURL())
	if code == 0 || !strings.Contains(out, "without a value for k") {
		t.Fatalf("pgbench with an unroutable statement: exit %d\n%s", code, out)
	}
	out, code = run(t, f.psqlEnv("wrong"), pgbench, "-n", "-f", "testdata/pgbench_spread.sql", "-c", "1", "-t", "1", f.psqlURL())
	if code == 0 || !strings.Contains(out, "password authentication failed") {
		t.Fatalf("pgbench with a wrong password: exit %d\n%s", code, out)
	}
	f.nothingLeft()
	for node := range 2 {
		var n int
		if err := f.c.Data[node].QueryRow(context.Background(), "SELECT n FROM counters WHERE id = 1").Scan(&n); err != nil || n != total {
			t.Fatalf("after the failures, participant %d counts %d (%v), want %d", node, n, err, total)
		}
	}
}
