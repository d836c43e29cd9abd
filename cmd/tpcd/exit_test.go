package main

import (
	"strings"
	"testing"
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
		out, errs, code := runBin(t, tpcdBin, tc.args...)
		if code != exitUsage || out != "" || !strings.HasSuffix(errs, tc.want) || strings.Count(errs, "\n") != 2 {
			t.Errorf("tpcd %v: status %d, stdout %q, stderr %q; want status %d and stderr ending %q", tc.args, code, out, errs, exitUsage, tc.want)
		}
	}
}
