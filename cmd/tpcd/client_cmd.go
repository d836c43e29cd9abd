package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/tpcd/tpcd/client"
)

// ClientCmd talks to a coordinator: an interactive shell, scripts, and CSV
// loading. The logic lives in package client.
type ClientCmd struct {
	Coordinator string `help:"The coordinator's HOST:PORT." default:"127.0.0.1:9990"`
	Format      string `help:"How results are printed: table, json (one object per command and line) or csv." enum:"table,json,csv" default:"table"`

	Shell ClientShellCmd `cmd:"" default:"withargs" help:"Run commands: interactively on a terminal, else from -c, -f or standard input (the default)."`
	Load  ClientLoadCmd  `cmd:"" help:"Load a CSV file into a table split across the participants by a hash of a key column."`
}

// Help is the long help.
func (c *ClientCmd) Help() string {
	return `On a terminal, 'tpcd client' opens a shell:

  tpcd> begin
  tpcd tx 1> @0 insert into kv values (1, 'a');
  tpcd tx 1> @1 insert into kv values (2, 'b');
  tpcd tx 1> commit

Scripts: tpcd client -c 'begin; @0 select 1; commit' --format json
         tpcd client -f script.sql
Loading: tpcd client load --table sensors --key sensor_id --create testdata/sensors.csv

Type help in the shell for the commands; docs/CLIENT.md has the details.`
}

// Validate checks the coordinator address.
func (c *ClientCmd) Validate() error { return checkAddr("coordinator", c.Coordinator) }

func (c *ClientCmd) options(g *Globals) client.Options {
	return client.Options{
		Coordinator: c.Coordinator,
		Format:      client.Format(c.Format),
		Progress:    client.IsTerminal(os.Stderr),
		Logger:      g.Logger(os.Stderr),
	}
}

// ClientShellCmd runs the command language.
type ClientShellCmd struct {
	Command   string `short:"c" help:"Run these commands and exit (separate them with ';' or newlines)." placeholder:"COMMANDS"`
	File      string `short:"f" help:"Run the commands in this file and exit ('-' for standard input)." placeholder:"FILE"`
	Continue  bool   `help:"Scripts: go on after a failed command (the exit status still says one failed)."`
	History   string `help:"Interactive history file (default $XDG_STATE_HOME/tpcd/history or ~/.local/state/tpcd/history)." placeholder:"FILE"`
	NoHistory bool   `help:"Keep no interactive history."`
}

// Validate refuses contradictory inputs.
func (c *ClientShellCmd) Validate() error {
	if c.Command != "" && c.File != "" {
		return errors.New("-c and -f both give the commands; use one")
	}
	return nil
}

// Run picks interactive or scripted mode.
func (c *ClientShellCmd) Run(g *Globals, ctx context.Context, parent *ClientCmd) error {
	opts := parent.options(g)
	opts.Continue, opts.HistoryFile, opts.NoHistory = c.Continue, c.History, c.NoHistory
	switch {
	case c.Command != "":
		return client.RunScript(ctx, opts, strings.NewReader(c.Command), "")
	case c.File == "-":
		return client.RunScript(ctx, opts, os.Stdin, "stdin")
	case c.File != "":
		f, err := os.Open(c.File)
		if err != nil {
			return fmt.Errorf("-f: %w", err)
		}
		defer f.Close()
		return client.RunScript(ctx, opts, f, c.File)
	case client.IsTerminal(os.Stdin) && client.IsTerminal(os.Stdout):
		return client.RunInteractive(ctx, opts)
	}
	return client.RunScript(ctx, opts, os.Stdin, "stdin")
}

// ClientLoadCmd is the command-line form of the load command.
type ClientLoadCmd struct {
	Table  string `help:"Table to load into (schema.table allowed)." required:""`
	Key    string `help:"Column whose value picks the participant: FNV-1a(value) mod N." required:""`
	Create bool   `help:"Create the table on every participant first (CREATE TABLE IF NOT EXISTS, types guessed from the data)."`
	TxSize int    `name:"tx-size" help:"Rows per distributed transaction." default:"100"`
	File   string `arg:"" help:"CSV file; its first line names the columns." type:"existingfile"`
}

// Run loads the file and prints the summary.
func (c *ClientLoadCmd) Run(g *Globals, ctx context.Context, parent *ClientCmd) error {
	opts := parent.options(g)
	return client.LoadCommand(ctx, opts, client.LoadOptions{
		File: c.File, Table: c.Table, Key: c.Key, Create: c.Create, TxSize: c.TxSize,
	})
}
