// Command tpcd is a two-phase-commit coordinator for writes that span
// several PostgreSQL servers. See the README and docs/ for the commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/tpcd/tpcd/activation"
	"github.com/tpcd/tpcd/buildinfo"
)

// Garbage-collector settings used unless GOGC or GOMEMLIMIT say otherwise.
// A node's live heap is small (tens of MiB) and it allocates per message, so
// collecting at 5x the live heap instead of 2x saves about a tenth of its
// CPU for some tens of MiB (tpcd bench, C=32: CPU per transaction -10 %,
// whole-process RSS 54 -> 92 MiB); the soft limit brings the collector back
// to its usual pace should the live heap ever grow large.
const (
	gcPercent   = 400
	gcSoftLimit = 1 << 30
)

func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(gcSoftLimit)
	}
}

// startsPostgres is implemented by the commands that may start embedded
// PostgreSQL servers on this machine.
type startsPostgres interface{ startsPostgres() bool }

// tuneProcs leaves half the CPUs (at least one for Go) to the PostgreSQL
// servers this process starts, unless GOMAXPROCS says otherwise. A node's
// work is many short hand-offs between goroutines; with as many Ps as CPUs
// the runtime wakes and spins threads for each of them, on CPUs the
// servers need (tpcd bench on 2 CPUs, C=1: p50 lower in 7 of 7 paired runs,
// by 0.75 ms at the median; C=8..64 within the noise).
func tuneProcs(cmd any) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	if s, ok := cmd.(startsPostgres); ok && s.startsPostgres() {
		runtime.GOMAXPROCS(max(1, runtime.GOMAXPROCS(0)/2))
	}
}

// Exit statuses every command shares; the client and replay add their own
// (their --help lists them).
const (
	exitFailed = 1
	// exitUsage is psql's status for a command line it cannot use, rather
	// than kong's 80 (sysexits-style codes no PostgreSQL tool uses):
	// scripts that run tpcd beside psql read one convention.
	exitUsage = 1
)

// stopSignals are the signals that stop a command cleanly (it then exits 0).
// A command that may start PostgreSQL servers stops on SIGHUP too: a closed
// terminal would otherwise kill it before it removed their temporary
// directories.
func stopSignals(kctx *kong.Context) []os.Signal {
	sigs := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if sel := kctx.Selected(); sel != nil && sel.Target.CanAddr() {
		if s, ok := sel.Target.Addr().Interface().(startsPostgres); ok && s.startsPostgres() {
			sigs = append(sigs, syscall.SIGHUP)
		}
	}
	return sigs
}

func main() {
	// Before anything can start a process that would inherit the sockets.
	if err := activation.Init(); err != nil {
		fmt.Fprintf(os.Stderr, "tpcd: %v\n", err)
		os.Exit(1)
	}
	tuneGC()
	var cli CLI
	parser, err := kong.New(&cli,
		kong.Name("tpcd"),
		kong.Description("tpcd makes writes that span several PostgreSQL servers atomic (two-phase commit).\n\n"+
			"Exit status: 0 success, 1 a failure or a command line tpcd cannot use; "+
			"tpcd client also exits 2 when it cannot reach a coordinator and 3 when a script stops at a failed command, "+
			"tpcd replay 2 when it finds an inconsistency (see their --help)."),
		kong.DefaultEnvars("TPCD"),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Vars{"version": buildinfo.Read().String()},
	)
	if err != nil {
		panic(err) // the CLI struct itself is wrong
	}
	kctx, err := parser.Parse(os.Args[1:])
	if err != nil {
		// As psql: the complaint, then where to read more, both on stderr.
		parser.Errorf("%s", err)
		fmt.Fprintf(parser.Stderr, "Run \"%s --help\" for more information.\n", helpPath(err))
		parser.Exit(exitUsage)
	}
	if sel := kctx.Selected(); sel != nil && sel.Target.CanAddr() {
		tuneProcs(sel.Target.Addr().Interface())
	}
	warnDeprecatedEnvs(kctx, os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), stopSignals(kctx)...)
	defer stop()
	kctx.BindTo(ctx, (*context.Context)(nil))
	err = kctx.Run(&cli.Globals)
	stop()
	// An error that carries its own status (kong.ExitCoder: the client's
	// and replay's) exits with it, any other with exitFailed.
	kctx.FatalIfErrorf(err)
}

// helpPath is the command whose --help explains a refused command line.
func helpPath(err error) string {
	var perr *kong.ParseError
	if errors.As(err, &perr) && perr.Context != nil {
		if cmd := perr.Context.Selected(); cmd != nil {
			return cmd.FullPath()
		}
	}
	return "tpcd"
}
