package main

import (
	"strings"
	"testing"

	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
)

// TestUsageStatus: a command line tpcd cannot use exits 1, as psql's, with
// the complaint and where to read more, both on stderr.
func TestUsageStatus(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--no-such-flag"}, "tpcd: error: unknown flag --no-such-flag\nRun \"tpcd --help\" for more information.\n"},
		{[]string{"client", "-c", "nodes", "-f", "x.sql"}, "tpcd: error: client shell: -c and -f both give the commands; use one\nRun \"tpcd client shell --help\" for more information.\n"},
		{[]string{"replay", "--format", "yaml", "--log-db", "postgres://127.0.0.1/x"}, "Run \"tpcd replay --help\" for more information.\n"},
	} {
		out, errs, code := runBin(t, testbin.Binary(t), tc.args...)
		if code != exitUsage || out != "" || !strings.HasSuffix(errs, tc.want) || strings.Count(errs, "\n") != 2 {
			t.Errorf("tpcd %v: status %d, stdout %q, stderr %q; want status %d and stderr ending %q", tc.args, code, out, errs, exitUsage, tc.want)
		}
	}
}

// TestReplayMissingDatabase: the server's own answer is what replay says,
// on one line, not pgx's first try over TLS ("server refused TLS
// connection") that the default sslmode=prefer makes.
func TestReplayMissingDatabase(t *testing.T) {
	uri := strings.TrimSuffix(pgtest.Cluster(t).URI("no_such_log"), "?sslmode=disable")
	out, errs, code := runBin(t, testbin.Binary(t), "replay", "--log-db", uri)
	want := "tpcd: error: --log-db " + uri + ": cannot connect: FATAL: database \"no_such_log\" does not exist (SQLSTATE 3D000)\n"
	if code != exitFailed || out != "" || errs != want {
		t.Fatalf("status %d, stdout %q, stderr:\n%s\nwant:\n%s", code, out, errs, want)
	}
}

// TestPGBinToldOnce: a --pg-bin without PostgreSQL in it is one error, not
// one per node of the local cluster.
func TestPGBinToldOnce(t *testing.T) {
	dir := t.TempDir()
	_, errs, code := runBin(t, testbin.Binary(t), "cluster", "--base-port", "0", "--pg-bin", dir)
	if code != exitFailed || strings.Count(errs, "/initdb: no such file or directory") != 1 || !strings.Contains(errs, "tpcd: error: postgres bin dir "+dir+": ") {
		t.Fatalf("status %d, stderr:\n%s", code, errs)
	}
}
