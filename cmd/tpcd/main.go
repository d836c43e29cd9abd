// Command tpcd is a two-phase-commit coordinator for writes that span
// several PostgreSQL servers. See the README and docs/ for the commands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"
)

func main() {
	var cli CLI
	kctx := kong.Parse(&cli,
		kong.Name("tpcd"),
		kong.Description("tpcd makes writes that span several PostgreSQL servers atomic (two-phase commit)."),
		kong.DefaultEnvars("TPCD"),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	kctx.BindTo(ctx, (*context.Context)(nil))
	err := kctx.Run(&cli.Globals)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tpcd: %v\n", err)
		os.Exit(1)
	}
}
