package frontdoor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcluster"
)

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, pgtest.Main)) }

// psql runs psql with args and fails the test unless it succeeds.
func psql(t *testing.T, url string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, pgtest.ClientBin(t, "psql"), append([]string{url, "-X", "-v", "ON_ERROR_STOP=1"}, args...)...)
	cmd.Env = append(os.Environ(), "PSQLRC=/dev/null", "PGCONNECT_TIMEOUT=60")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitFor waits until the process printed a line matching re, and returns
// the match.
func waitFor(t *testing.T, p *testbin.Proc, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if m := re.FindStringSubmatch(p.Out.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line matching %s within 3 minutes:\n%s", re, p.Out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterPrintsPsql: tpcd cluster prints a psql command line with a
// made-up password; psql runs a transaction across both participants with
// it, and the rows are on the participants' data servers.
func TestClusterPrintsPsql(t *testing.T) {
	p := testbin.Start(t, testbin.Binary(t), nil, "cluster", "-n", "2", "--base-port", "0", "--shard", "kv:k")
	url := waitFor(t, p, regexp.MustCompile(`PostgreSQL:\s+psql '(postgresql://tpcd:[0-9a-f]+@127\.0\.0\.1:\d+/tpcd)'`))[1]
	data := regexp.MustCompile(`participant-(\d)\s+\S+\s+\S+\s+(postgres://\S+/tpcd_data\S*)`).FindAllStringSubmatch(p.Out.String(), -1)
	if len(data) != 2 {
		t.Fatalf("want two data databases in the table:\n%s", p.Out)
	}
	psql(t, url+"?sslmode=disable",
		"-c", "SET tpcd.node = all",
		"-c", "CREATE TABLE kv (k int PRIMARY KEY, v text)",
		"-c", "RESET tpcd.node",
		"-c", "BEGIN",
		"-c", "INSERT INTO kv (k, v) VALUES (1, 'one'), (3, 'three')",
		"-c", "INSERT INTO kv (k, v) VALUES (2, 'two')",
		"-c", "COMMIT")
	// FNV-1a: "1" and "3" hash to participant 0 of 2, "2" to participant 1.
	want := map[string]string{"0": "[1 3]", "1": "[2]"}
	for _, d := range data {
		wantKeys(t, d[1], d[2], want[d[1]])
	}
	p.Stop(t)
}

// wantKeys fails the test unless kv on participant who's data database,
// at uri, holds the keys want ("[1 3]") within a minute: a COMMIT returns
// once the decider committed, and another participant's branch commits in
// phase two, just after.
func wantKeys(t *testing.T, who, uri, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := pgtest.Connect(t, uri)
	for {
		rows, _ := conn.Query(ctx, "SELECT k::text FROM kv ORDER BY k")
		keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err == nil && fmt.Sprint(keys) == want {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("participant %s holds keys %v (%v), want %s", who, keys, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCoordinatorPGListen: the seed's coordinator command line with
// --pg-listen serves the users of --pg-users-file.
func TestCoordinatorPGListen(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	os.WriteFile(users, []byte("# front-door users\nbob:correct horse\n"), 0o600)
	ports := testbin.HoldPorts(t, 4)
	coord, p0, p1, pg := ports[0].Addr, ports[1].Addr, ports[2].Addr, ports[3].Addr
	var procs []*testbin.Proc
	procs = append(procs, testbin.StartServing(t, testbin.Binary(t), nil, []*testbin.Port{ports[0], ports[3]}, "coordinator", "--host", coord, "--participant", p0, "--participant", p1,
		"--log-db", pgtest.NewDB(t), "--pg-listen", pg, "--pg-users-file", users))
	for i, addr := range []string{p0, p1} {
		procs = append(procs, testbin.StartServing(t, testbin.Binary(t), nil, ports[1+i:2+i], "participant", "--node-id", fmt.Sprint(i), "--host", addr, "--coordinator", coord,
			"--log-db", pgtest.NewDB(t), "--data-db", pgtest.NewDB(t)))
	}
	for _, addr := range []string{coord, p0, p1} {
		testcluster.WaitReady(t, addr)
	}
	waitFor(t, procs[0], regexp.MustCompile(`PostgreSQL front door serving`))
	url := fmt.Sprintf("postgresql://bob:correct%%20horse@%s/tpcd?sslmode=disable", pg)
	out := psql(t, url, "-c", "/* tpcd:node=1 */ SELECT 41 + 1 AS answer")
	if !regexp.MustCompile(`answer\s*\n-+\s*\n\s*42\s*\n`).MatchString(out) {
		t.Fatalf("psql through the coordinator:\n%s", out)
	}
	for _, p := range procs {
		p.Stop(t)
	}
}

// TestCoordinatorTokenUser: a coordinator with a token and no front-door
// users lets user tpcd in with the token as password, and routes by the
// shard keys of --shard-file; the rows land where the hash puts them.
func TestCoordinatorTokenUser(t *testing.T) {
	const token = "a token, not a password"
	dir := t.TempDir()
	shards := filepath.Join(dir, "shards")
	os.WriteFile(shards, []byte("# sharded tables\nkv:k\n"), 0o600)
	env := []string{"TPCD_AUTH_TOKEN=" + token}
	ports := testbin.HoldPorts(t, 4)
	coord, p0, p1, pg := ports[0].Addr, ports[1].Addr, ports[2].Addr, ports[3].Addr
	data := []string{pgtest.NewDB(t), pgtest.NewDB(t)}
	procs := []*testbin.Proc{testbin.StartServing(t, testbin.Binary(t), env, []*testbin.Port{ports[0], ports[3]}, "coordinator", "--host", coord, "--participant", p0, "--participant", p1,
		"--log-db", pgtest.NewDB(t), "--pg-listen", pg, "--shard-file", shards)}
	for i, addr := range []string{p0, p1} {
		procs = append(procs, testbin.StartServing(t, testbin.Binary(t), env, ports[1+i:2+i], "participant", "--node-id", fmt.Sprint(i), "--host", addr, "--coordinator", coord,
			"--log-db", pgtest.NewDB(t), "--data-db", data[i]))
	}
	waitFor(t, procs[0], regexp.MustCompile(`PostgreSQL front door serving.*token_user=true`))
	for _, p := range procs[1:] {
		waitFor(t, p, regexp.MustCompile(`participant serving`))
	}
	url := fmt.Sprintf("postgresql://tpcd:a%%20token,%%20not%%20a%%20password@%s/tpcd?sslmode=disable", pg)
	psql(t, url,
		"-c", "SET tpcd.node = all",
		"-c", "CREATE TABLE kv (k int PRIMARY KEY, v text)",
		"-c", "RESET tpcd.node",
		"-c", "BEGIN",
		"-c", "INSERT INTO kv (k, v) VALUES (1, 'one')",
		"-c", "INSERT INTO kv (k, v) VALUES (2, 'two')",
		"-c", "INSERT INTO kv (k, v) VALUES (3, 'three')",
		"-c", "COMMIT")
	// FNV-1a: "1" and "3" hash to participant 0 of 2, "2" to participant 1.
	for i, want := range []string{"[1 3]", "[2]"} {
		wantKeys(t, fmt.Sprint(i), data[i], want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, bad := range []string{"tpcd:wrong", "alice:a%20token,%20not%20a%20password"} {
		_, err := pgx.Connect(ctx, fmt.Sprintf("postgresql://%s@%s/tpcd?sslmode=disable", bad, pg))
		if err == nil || !strings.Contains(err.Error(), "28P01") {
			t.Fatalf("%s: %v, want 28P01", bad, err)
		}
	}
	for _, p := range procs {
		p.Stop(t)
	}
}

// TestFrontDoorFlags: the flags refuse what would be unsafe or useless,
// in one line that says how to fix it.
func TestFrontDoorFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"coordinator", "--participant", "127.0.0.1:5", "--pg-listen", "0.0.0.0:5432", "--pg-trust"}, "loopback"},
		{[]string{"coordinator", "--participant", "127.0.0.1:5", "--pg-listen", "127.0.0.1:5432"}, "--pg-user"},
		{[]string{"coordinator", "--participant", "127.0.0.1:5", "--pg-user", "a:b"}, "--pg-listen"},
		{[]string{"coordinator", "--participant", "127.0.0.1:5", "--shard-file", "/dev/null"}, "--pg-listen"},
		{[]string{"coordinator", "--participant", "127.0.0.1:5", "--pg-listen", "127.0.0.1:5432", "--pg-user", "nopassword"}, "NAME:PASSWORD"},
		{[]string{"cluster", "--shard", "kv"}, "TABLE:COLUMN"},
		{[]string{"cluster", "-n", "2", "--base-port", "65533"}, "--no-pg"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) { testbin.WantUsageError(t, testbin.Binary(t), tc.args, tc.want) })
	}
}
