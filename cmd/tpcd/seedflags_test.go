package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// parseArgs parses args as main parses them, failing the test with the
// parser's output if it refuses them.
func parseArgs(t *testing.T, args ...string) *CLI {
	t.Helper()
	var out bytes.Buffer
	var cli CLI
	if _, err := newParserFor(t, &cli, &out).Parse(args); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return &cli
}

// debugLogs tells whether cli's global flags make the logger log at debug
// level.
func debugLogs(cli *CLI) bool {
	return cli.Globals.Logger(io.Discard).Enabled(context.Background(), slog.LevelDebug)
}

// The seed project's flags on every role, parsed as main parses them: an
// address without a port gets the seed's 12345, --timeout and --batch-size
// are taken by a participant too, and --verbose logs at debug level.
func TestSeedFlagsOnEveryRole(t *testing.T) {
	cli := parseArgs(t, "coordinator", "--verbose", "--host", "localhost", "--participant", "localhost:9991",
		"--participant", "db2", "--participant", "[::1]", "--timeout", "10", "--batch-size", "3")
	c := cli.Coordinator
	if c.Host != "localhost:12345" {
		t.Errorf("--host localhost became %q, want localhost:12345", c.Host)
	}
	if want := []string{"localhost:9991", "db2:12345", "[::1]:12345"}; strings.Join(c.Participant, " ") != strings.Join(want, " ") {
		t.Errorf("--participant became %v, want %v", c.Participant, want)
	}
	if c.Timeout.D() != 10*time.Second || c.BatchSize != 3 {
		t.Errorf("--timeout %v --batch-size %d, want 10s and 3", c.Timeout.D(), c.BatchSize)
	}
	if !debugLogs(cli) {
		t.Error("--verbose does not log at debug level")
	}

	cli = parseArgs(t, "participant", "--node-id", "0", "--host", "localhost:9991", "--coordinator", "localhost",
		"--timeout", "7", "--batch-size", "3", "--verbose")
	pc := cli.Participant
	if len(pc.Coordinator) != 1 || pc.Coordinator[0] != "localhost:12345" || pc.Host != "localhost:9991" {
		t.Errorf("participant --coordinator %q --host %q, want localhost:12345 and localhost:9991", pc.Coordinator, pc.Host)
	}
	if pc.Timeout.D() != 7*time.Second || pc.BatchSize != 3 {
		t.Errorf("participant --timeout %v --batch-size %d, want 7s and 3", pc.Timeout.D(), pc.BatchSize)
	}
	if !debugLogs(cli) {
		t.Error("participant --verbose does not log at debug level")
	}

	cli = parseArgs(t, "participant", "--node-id", "0", "--coordinator", "localhost:9990")
	if d := cli.Participant.Timeout.D(); d != 10*time.Second {
		t.Errorf("participant --timeout defaults to %v, want the seed's 10s", d)
	}
	if debugLogs(cli) {
		t.Error("debug logging without --verbose")
	}
}

// The seed client's demo loader command line parses as the shell's
// --demo, and its flags are refused where they cannot mean anything.
func TestSeedClientDemoFlags(t *testing.T) {
	cli := parseArgs(t, "client", "--coordinator", "localhost:9990", "--demo", "--n-nodes", "2",
		"--data-db", "postgresql://localhost:8870/demo")
	if s := cli.Client.Shell; !s.Demo || s.NNodes != 2 || s.DataDB != "postgresql://localhost:8870/demo" || s.TxSize != 100 {
		t.Fatalf("parsed %+v", s)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"client", "--demo"}, "--demo reads its rows from a PostgreSQL database: give --data-db URI"},
		{[]string{"client", "--demo", "--data-db", "localhost:8870"}, "--data-db: want a URI like postgresql://"},
		{[]string{"client", "--n-nodes", "2"}, "belong to --demo (the demo loader); give --demo too"},
		{[]string{"client", "--data-db", "postgresql://x/y"}, "belong to --demo"},
		{[]string{"client", "--demo", "--data-db", "postgresql://x/y", "-c", "nodes"}, "--demo loads a table and exits; it takes no -c or -f"},
		{[]string{"client", "--demo", "--data-db", "postgresql://x/y", "--n-nodes=-1"}, "--n-nodes -1: must be at least 1"},
	} {
		var out bytes.Buffer
		if _, err := newParser(t, &out).Parse(tt.args); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want %q", tt.args, err, tt.want)
		}
	}
}
