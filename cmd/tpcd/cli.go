package main

import (
	"github.com/alecthomas/kong"

	"github.com/tpcd/tpcd/engine"

	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// CLI is the whole command line; each command lives in its own file.
type CLI struct {
	Globals

	Coordinator CoordinatorCmd `cmd:"" help:"Run the coordinator: clients talk to it, it drives two-phase commit across the participants."`
	Participant ParticipantCmd `cmd:"" help:"Run a participant: it executes statements on its data database and votes."`
	Replay      ReplayCmd      `cmd:"" help:"Print the state recovered from a node's log without starting the node."`
	Client      ClientCmd      `cmd:"" help:"Talk to a coordinator: interactive shell, scripts, and CSV loading."`
	Cluster     ClusterCmd     `cmd:"" help:"Run a coordinator and N participants with embedded PostgreSQL in one process (a local cluster to try tpcd)."`
	Chaos       ChaosCmd       `cmd:"" help:"Run a cluster under random faults (crashes, lost and delayed messages) and check that every transaction stayed atomic."`
	Bench       BenchCmd       `cmd:"" help:"Measure throughput and latency under load, optionally against raw two-phase commit on the same servers."`
	Probe       ProbeCmd       `cmd:"" help:"Ask a node's metrics listener whether it is ready (exit 0) or not (exit 1), with the node's token: an exec probe for orchestrators."`
	Version     VersionCmd     `cmd:"" help:"Print the version (the same line as --version)."`

	VersionFlag kong.VersionFlag `name:"version" env:"-" help:"Print the version (module version, commit, commit time, modified tree, Go) and exit."`
}

// ProtocolFlag chooses how a coordinator commits (docs/PROTOCOL.md).
type ProtocolFlag struct {
	Protocol string `help:"How transactions commit: decider (prepare every participant but one, whose own COMMIT decides; one phase when a transaction wrote on one participant) or classic (prepare all, force the decision to the coordinator's log, then commit all)." enum:"decider,classic" default:"decider"`
}

func (f ProtocolFlag) protocol() engine.Protocol {
	p, err := engine.ParseProtocol(f.Protocol)
	if err != nil {
		panic(err) // kong's enum admits only the names ParseProtocol knows
	}
	return p
}

// VoteBatchFlags are the coordinator's vote timeout and seed-form
// batching, which tpcd coordinator and tpcd cluster both take.
type VoteBatchFlags struct {
	Timeout    Seconds `help:"Seconds to wait for all votes before aborting." default:"5"`
	BatchSize  int     `help:"Seed form: how many execute calls make one transaction." default:"1"`
	BatchFlush Seconds `help:"Seed form: commit a partial batch this long after it began." default:"1"`
}

func (f VoteBatchFlags) checkBatch() error {
	if f.BatchSize < 1 {
		return fmt.Errorf("--batch-size %d: must be at least 1", f.BatchSize)
	}
	return nil
}

// LazyPreparedFlag is --[no-]lazy-prepared of the commands that run
// participants: engine.ParticipantConfig.LazyPrepared, on unless turned
// off.
type LazyPreparedFlag struct {
	LazyPrepared bool `help:"A participant votes yes once PREPARE TRANSACTION is durable, without waiting for the Prepared event in the log (one forced write less per commit); recovery then asks the coordinator about every prepared transaction. --no-lazy-prepared waits for the event first." default:"true" negatable:""`
}

// Globals are flags every command takes.
type Globals struct {
	LogLevel  string `help:"Log level: debug, info, warn, error." enum:"debug,info,warn,error" default:"info"`
	LogFormat string `help:"Log format: text or json." enum:"text,json" default:"text"`
	Verbose   bool   `help:"Log at debug level (--log-level debug): every message sent or refused, as the seed project's --verbose did."`
}

// Logger builds the one logger a command passes down.
func (g *Globals) Logger(w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(g.LogLevel))
	if g.Verbose {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	if g.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Seconds is a duration given as seconds ("5", "0.5") as in the seed
// project, or with a unit ("500ms", "2m").
type Seconds time.Duration

// UnmarshalText lets kong parse flags and environment variables.
func (s *Seconds) UnmarshalText(b []byte) error {
	v := strings.TrimSpace(string(b))
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 {
			return fmt.Errorf("%q: must not be negative", v)
		}
		*s = Seconds(f * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is not a number of seconds or a duration like 500ms", v)
	}
	if d < 0 {
		return fmt.Errorf("%q: must not be negative", v)
	}
	*s = Seconds(d)
	return nil
}

// D returns the duration.
func (s Seconds) D() time.Duration { return time.Duration(s) }

// checkAddr validates a HOST:PORT flag value.
// checkAddrs gives each of a repeated address flag's values the default
// port, checks it, and refuses one given twice; why says what each value
// must have of its own.
func checkAddrs(flag string, addrs []string, why string) error {
	seen := map[string]bool{}
	for i, a := range addrs {
		a = withDefaultPort(a)
		addrs[i] = a
		if err := checkAddr(flag, a); err != nil {
			return err
		}
		if seen[a] {
			return fmt.Errorf("--%s %s is given twice; %s", flag, a, why)
		}
		seen[a] = true
	}
	return nil
}

func checkAddr(flag, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--%s %q: want HOST:PORT, e.g. 127.0.0.1:9990", flag, addr)
	}
	if host == "" {
		return fmt.Errorf("--%s %q: the host is missing; use e.g. 127.0.0.1%s", flag, addr, addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("--%s %q: the port must be a number from 1 to 65535", flag, addr)
	}
	return nil
}

// seedDefaultPort is the port the seed project gave an address without
// one (--host localhost).
const seedDefaultPort = "12345"

// withDefaultPort adds seedDefaultPort to an address that names a host
// alone, so that the seed's command lines mean what they meant there.
func withDefaultPort(addr string) string {
	if addr == "" {
		return addr
	}
	if strings.HasPrefix(addr, "[") && strings.HasSuffix(addr, "]") {
		return addr + ":" + seedDefaultPort // [::1]
	}
	if !strings.Contains(addr, ":") {
		return net.JoinHostPort(addr, seedDefaultPort)
	}
	return addr
}

// checkURI validates a PostgreSQL connection URI flag.
func checkURI(flag, uri string) error {
	if uri == "" {
		return nil
	}
	if !strings.HasPrefix(uri, "postgres://") && !strings.HasPrefix(uri, "postgresql://") {
		return fmt.Errorf("--%s: want a URI like postgresql://user@host:5432/dbname (leave it out to run an embedded PostgreSQL)", flag)
	}
	return nil
}

// waitForSignal blocks until ctx ends (SIGINT/SIGTERM) and says so, or
// until failed delivers why the node cannot go on (its own PostgreSQL was
// given up on), which it returns.
func waitForSignal(ctx context.Context, logger *slog.Logger, failed <-chan error) error {
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
		return nil
	case err := <-failed:
		logger.Error("stopping: the node cannot serve without its PostgreSQL", "err", err)
		return err
	}
}

func stderrLogger(g *Globals) *slog.Logger { return g.Logger(os.Stderr) }
