package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
)

// newParser builds the CLI as main does, help included, writing help and
// exits into out instead of the process's.
func newParser(t *testing.T, out *bytes.Buffer) *kong.Kong {
	t.Helper()
	return newParserFor(t, &CLI{}, out)
}

// newParserFor is newParser filling cli.
func newParserFor(t *testing.T, cli *CLI, out *bytes.Buffer) *kong.Kong {
	t.Helper()
	p, err := kong.New(cli, kong.Name("tpcd"), kong.DefaultEnvars("TPCD"),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Writers(out, out), kong.Exit(func(int) {}))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// envsByCommand lists, for every environment variable a flag reads, the
// commands whose flags read it: first names only, or every name.
func envsByCommand(t *testing.T, all bool) map[string][]string {
	t.Helper()
	users := map[string][]string{}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, f := range n.Flags {
			envs := f.Envs
			if !all && len(envs) > 1 {
				envs = envs[:1]
			}
			for _, e := range envs {
				users[e] = append(users[e], n.Path()+" --"+f.Name)
			}
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(newParser(t, &bytes.Buffer{}).Model.Node)
	return users
}

// sharedEnvs are the variables several commands read, each with what it
// means to all of them. A variable that would mean different things to two
// commands gets a name per command instead (TPCD_BENCH_DURATION and
// TPCD_CHAOS_DURATION): one environment often serves several commands.
var sharedEnvs = map[string]string{
	"TPCD_N":               "the number of participants of the cluster the command starts",
	"TPCD_PG_BIN":          "where initdb and postgres are",
	"TPCD_STATE_DIR":       "where embedded PostgreSQL is kept across runs",
	"TPCD_LOG_DB":          "the URI of a log database (the coordinator's, to bench)",
	"TPCD_DATA_DB":         "the URI of a participant's data database",
	"TPCD_COORDINATOR":     "the coordinator's address",
	"TPCD_HOST":            "the address a node serves on",
	"TPCD_TIMEOUT":         "how long a node waits for its peers' answers, as the seed's --timeout on every node: the coordinator for votes, a participant for the coordinator to take its messages",
	"TPCD_BATCH_SIZE":      "the coordinator's seed-form batch size (a participant accepts it and, as in the seed, ignores it)",
	"TPCD_BATCH_FLUSH":     "the coordinator's seed-form batch flush interval",
	"TPCD_PROTOCOL":        "how the coordinator commits",
	"TPCD_LAZY_PREPARED":   "whether participants log Prepared lazily",
	"TPCD_MAX_CONNS":       "a participant's connections per database pool",
	"TPCD_METRICS_ADDR":    "where a node's metrics listener serves",
	"TPCD_FORMAT":          "how output is printed (each command refuses a format it lacks)",
	"TPCD_AUTH_TOKEN":      "the shared RPC token",
	"TPCD_AUTH_TOKEN_FILE": "the file holding the shared RPC token",
	"TPCD_CLIENT_TOKEN":    "the token of client methods",
	"TPCD_PEER_TOKEN":      "the token of node-to-node methods",
	"TPCD_TLS_CERT":        "the certificate this process presents",
	"TPCD_TLS_KEY":         "the key of that certificate",
	"TPCD_TLS_CA":          "the CAs that peers are verified against",
	"TPCD_INSECURE":        "whether a node serves node-to-node methods without peer credentials",
	"TPCD_PG_LISTEN":       "where the coordinator's PostgreSQL front door listens",
	"TPCD_PG_USER":         "a user of the front door, NAME:PASSWORD",
	"TPCD_PG_USERS_FILE":   "the file of front-door users",
	"TPCD_PG_TRUST":        "whether the front door lets loopback clients in without a password",
	"TPCD_SHARD":           "a sharded table of the front door, TABLE:COLUMN",
	"TPCD_SHARD_FILE":      "the file of sharded tables",
	"TPCD_SLOTS":           "how many coordinators serve the cluster at once, the same on every coordinator and participant",
}

func TestSharedEnvsMeanOneThing(t *testing.T) {
	for env, users := range envsByCommand(t, false) {
		commands := map[string]bool{}
		for _, u := range users {
			commands[strings.Fields(u)[0]] = true
		}
		if len(commands) > 1 && sharedEnvs[env] == "" {
			t.Errorf("%s is read by %s: if it means the same to each, say so in sharedEnvs; if not, give each command a name of its own (env:\"TPCD_<COMMAND>_<FLAG>\")", env, strings.Join(users, ", "))
		}
	}
}

func TestDurationEnvPerCommand(t *testing.T) {
	users := envsByCommand(t, true)
	for env, want := range map[string][]string{
		"TPCD_BENCH_DURATION":           {"bench --duration"},
		"TPCD_CHAOS_DURATION":           {"chaos --duration"},
		"TPCD_COORDINATOR_IDLE_TIMEOUT": {"coordinator --idle-timeout"},
		"TPCD_PARTICIPANT_IDLE_TIMEOUT": {"participant --idle-timeout"},
	} {
		if !slices.Equal(users[env], want) {
			t.Errorf("%s sets %v, want %v", env, users[env], want)
		}
	}

	// Each command reads its own variable; the other's does not reach it.
	t.Setenv("TPCD_BENCH_DURATION", "7")
	t.Setenv("TPCD_CHAOS_DURATION", "9")
	var help bytes.Buffer
	p := newParser(t, &help)
	for cmd, want := range map[string]time.Duration{"bench": 7 * time.Second, "chaos": 9 * time.Second} {
		kctx, err := p.Parse([]string{cmd})
		if err != nil {
			t.Fatal(err)
		}
		var got Seconds
		switch c := kctx.Selected().Target.Addr().Interface().(type) {
		case *BenchCmd:
			got = c.Duration
		case *ChaosCmd:
			got = c.Duration
		}
		if got.D() != want {
			t.Errorf("%s --duration from the environment = %v, want %v", cmd, got.D(), want)
		}
		var warn bytes.Buffer
		warnDeprecatedEnvs(kctx, &warn)
		if warn.Len() != 0 {
			t.Errorf("%s: warning without a deprecated variable: %s", cmd, warn.String())
		}
	}
	for _, cmd := range []string{"bench", "chaos"} {
		help.Reset()
		if _, err := p.Parse([]string{cmd, "--help"}); err != nil {
			t.Fatal(err)
		}
		if want := "$TPCD_" + strings.ToUpper(cmd) + "_DURATION"; !strings.Contains(help.String(), want) || strings.Contains(help.String(), "$TPCD_DURATION") {
			t.Errorf("%s --help names the variables of --duration wrongly, want only %s:\n%s", cmd, want, help.String())
		}
	}
}

func TestDeprecatedDurationEnvStillWorks(t *testing.T) {
	t.Setenv("TPCD_DURATION", "5")
	p := newParser(t, &bytes.Buffer{})
	kctx, err := p.Parse([]string{"bench"})
	if err != nil {
		t.Fatal(err)
	}
	if d := kctx.Selected().Target.Addr().Interface().(*BenchCmd).Duration.D(); d != 5*time.Second {
		t.Errorf("bench --duration from TPCD_DURATION = %v, want 5s", d)
	}
	var warn bytes.Buffer
	warnDeprecatedEnvs(kctx, &warn)
	if !strings.Contains(warn.String(), "TPCD_DURATION is deprecated") || !strings.Contains(warn.String(), "TPCD_BENCH_DURATION") {
		t.Errorf("warning %q, want one naming TPCD_DURATION and TPCD_BENCH_DURATION", warn.String())
	}

	// The new name wins, without a warning.
	t.Setenv("TPCD_CHAOS_DURATION", "8")
	kctx, err = p.Parse([]string{"chaos"})
	if err != nil {
		t.Fatal(err)
	}
	if d := kctx.Selected().Target.Addr().Interface().(*ChaosCmd).Duration.D(); d != 8*time.Second {
		t.Errorf("chaos --duration = %v, want 8s from TPCD_CHAOS_DURATION", d)
	}
	warn.Reset()
	warnDeprecatedEnvs(kctx, &warn)
	if warn.Len() != 0 {
		t.Errorf("warning although the new variable is set: %s", warn.String())
	}
}

// TestHelpShowsNoEmptyVariable renders every command's help: kong prints
// "($-)" for a positional argument tagged env:"-", which only flags take.
func TestHelpShowsNoEmptyVariable(t *testing.T) {
	var out bytes.Buffer
	p := newParser(t, &out)
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		if n.Type == kong.CommandNode {
			out.Reset()
			// Exit does not exit here, so parsing goes on after the help
			// and may fail on a missing flag.
			_, _ = p.Parse(append(strings.Fields(n.Path()), "--help"))
			if !strings.Contains(out.String(), "Usage: tpcd "+n.Path()) {
				t.Errorf("tpcd %s --help printed no usage:\n%s", n.Path(), out.String())
			}
			if strings.Contains(out.String(), "($-)") || strings.Contains(out.String(), "${") {
				t.Errorf("tpcd %s --help:\n%s", n.Path(), out.String())
			}
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(p.Model.Node)
}
