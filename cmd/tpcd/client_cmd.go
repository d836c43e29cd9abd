package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/tpcd/tpcd/client"
	"github.com/tpcd/tpcd/rpc"
)

// ClientCmd talks to a coordinator: an interactive shell, scripts, and CSV
// loading. The logic lives in package client.
type ClientCmd struct {
	Coordinator []string `help:"The coordinator's HOST:PORT. Where coordinators share the log by a lease (tpcd coordinator --lease), give each one's address, comma-separated or repeated: calls go to the one serving." default:"127.0.0.1:9990"`
	Format      string   `help:"How results are printed: table, json (one object per command and line) or csv." enum:"table,json,csv" default:"table"`

	AuthToken     string `name:"auth-token" help:"Token the coordinator requires (its --auth-token). Prefer TPCD_AUTH_TOKEN or --auth-token-file: a flag shows in the process list." placeholder:"TOKEN"`
	AuthTokenFile string `name:"auth-token-file" help:"Read --auth-token from this file." placeholder:"FILE" type:"path"`
	ClientToken   string `name:"client-token" help:"The coordinator's --client-token, when it has one apart from --auth-token." placeholder:"TOKEN"`
	TLSCA         string `name:"tls-ca" help:"Speak TLS and verify the coordinator against these PEM CA certificates (default: the system's)." placeholder:"FILE" type:"path"`
	TLSCert       string `name:"tls-cert" help:"Speak TLS and present this PEM client certificate (for a coordinator that requires mutual TLS)." placeholder:"FILE" type:"path"`
	TLSKey        string `name:"tls-key" help:"PEM private key of --tls-cert." placeholder:"FILE" type:"path"`

	Shell ClientShellCmd `cmd:"" default:"withargs" help:"Run commands: interactively on a terminal, else from -c, -f or standard input (the default)."`
	Load  ClientLoadCmd  `cmd:"" help:"Load a CSV file into a table split across the participants by a hash of a key column."`
}

// Help is the long help.
func (c *ClientCmd) Help() string {
	return `On a terminal, 'tpcd client' opens a shell (type help there):

    tpcd> begin
    tpcd tx 1> @0 insert into kv values (1, 'a');
    tpcd tx 1> @1 insert into kv values (2, 'b');
    tpcd tx 1> commit

There Tab completes commands, SQL keywords and the participants' tables;
\timing, \x and \pset pager change the display (output taller than the
terminal goes through $TPCD_PAGER, else $PAGER, else less).

With -c COMMANDS, -f FILE, or standard input that is not a terminal, it runs
a script: -c 'begin; @0 select 1; commit' --format json. A script stops at
its first failed command unless --continue. See 'tpcd client shell --help'
for these flags, and docs/CLIENT.md.

Exit status, as psql's:
  0  everything worked (the interactive shell: it ended normally)
  1  a command failed and the run went on (--continue, load), or the
     command line is wrong
  2  no coordinator answered: unreachable, the connection lost, an address
     that is not a coordinator's, TLS or the token refused
  3  a script stopped at a failed command, or was interrupted (Ctrl-C)

Loading a CSV file split across the participants:

    tpcd client load --table sensors --key sensor_id --create testdata/sensors.csv

The seed client's demo loader copies the only table of a PostgreSQL
database (or --demo-table NAME) to the participants, creating it there
with the source's column types, split by a hash of its primary key's first
column (or its first column, or --key COLUMN), over all participants or
@0..@N-1 with --n-nodes N ('tpcd client shell --help' lists its flags):

    tpcd client --coordinator localhost:9990 --demo --n-nodes 2 --data-db postgresql://localhost:8870/demo`
}

// Validate checks flag combinations.
func (c *ClientCmd) Validate() error {
	if c.AuthToken != "" && c.AuthTokenFile != "" {
		return errors.New("--auth-token and --auth-token-file both give the token; use one")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together: give both")
	}
	return checkAddrs("coordinator", c.Coordinator, "give each coordinator's address once")
}

func (c *ClientCmd) options(g *Globals) (client.Options, error) {
	token := c.AuthToken
	if c.AuthTokenFile != "" {
		b, err := os.ReadFile(c.AuthTokenFile)
		if err != nil {
			return client.Options{}, fmt.Errorf("--auth-token-file: %w", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return client.Options{}, fmt.Errorf("--auth-token-file %s is empty", c.AuthTokenFile)
		}
	}
	if c.ClientToken != "" {
		token = c.ClientToken
	}
	tlsConfig, err := rpc.TLSFiles{Cert: c.TLSCert, Key: c.TLSKey, CA: c.TLSCA}.ClientTLS()
	if err != nil {
		return client.Options{}, err
	}
	return client.Options{
		Coordinator: c.Coordinator[0],
		Standbys:    c.Coordinator[1:],
		Format:      client.Format(c.Format),
		Progress:    client.IsTerminal(os.Stderr),
		Terminal:    terminal(os.Stdout),
		Logger:      g.Logger(os.Stderr),
		Token:       token,
		TLS:         tlsConfig,
	}, nil
}

// ClientShellCmd runs the command language.
type ClientShellCmd struct {
	Command   string `short:"c" env:"-" help:"Run these commands and exit (separate them with ';' or newlines)." placeholder:"COMMANDS"`
	File      string `short:"f" env:"-" help:"Run the commands in this file and exit ('-' for standard input)." placeholder:"FILE"`
	Continue  bool   `help:"Scripts: go on after a failed command (the exit status is then 1 if any failed, instead of 3 at the first)."`
	History   string `help:"Interactive history file (default $XDG_STATE_HOME/tpcd/history or ~/.local/state/tpcd/history)." placeholder:"FILE"`
	NoHistory bool   `help:"Keep no interactive history."`

	// The seed client's demo loader. No environment variables: TPCD_DATA_DB
	// and TPCD_KEY mean other things to other commands.
	Demo      bool   `env:"-" group:"Demo loader (the seed client's --demo)" help:"The seed client's demo loader: copy a table of --data-db through the coordinator to the participants (created there if missing), split by a hash of --key, with a progress bar and a summary."`
	DataDB    string `name:"data-db" env:"-" group:"Demo loader (the seed client's --demo)" help:"--demo: PostgreSQL URI of the database the rows come from." placeholder:"URI"`
	NNodes    int    `name:"n-nodes" env:"-" group:"Demo loader (the seed client's --demo)" help:"--demo: split the rows over participants @0..@N-1 (default: all the coordinator has)." placeholder:"N"`
	DemoTable string `name:"demo-table" env:"-" group:"Demo loader (the seed client's --demo)" help:"--demo: the table to copy, under the same name (default: the only table of --data-db)." placeholder:"NAME"`
	Key       string `env:"-" group:"Demo loader (the seed client's --demo)" help:"--demo: the column whose hash picks the participant (default: the first column of the primary key, else the first column)." placeholder:"COLUMN"`
	Append    bool   `env:"-" group:"Demo loader (the seed client's --demo)" help:"--demo: load into tables that already hold rows (refused without it, so that a second demo does not double them)."`
	TxSize    int    `name:"tx-size" env:"-" group:"Demo loader (the seed client's --demo)" help:"--demo: rows per distributed transaction." default:"100"`
}

// Validate refuses contradictory inputs.
func (c *ClientShellCmd) Validate() error {
	if c.Command != "" && c.File != "" {
		return errors.New("-c and -f both give the commands; use one")
	}
	if !c.Demo {
		if c.DataDB != "" || c.NNodes != 0 || c.DemoTable != "" || c.Key != "" || c.Append {
			return errors.New("--data-db, --n-nodes, --demo-table, --key and --append belong to --demo (the demo loader); give --demo too")
		}
		return nil
	}
	switch {
	case c.Command != "" || c.File != "":
		return errors.New("--demo loads a table and exits; it takes no -c or -f")
	case c.DataDB == "":
		return errors.New("--demo reads its rows from a PostgreSQL database: give --data-db URI")
	case !strings.HasPrefix(c.DataDB, "postgres://") && !strings.HasPrefix(c.DataDB, "postgresql://"):
		return errors.New("--data-db: want a URI like postgresql://user@host:5432/dbname")
	case c.NNodes < 0:
		return fmt.Errorf("--n-nodes %d: must be at least 1", c.NNodes)
	}
	return nil
}

// Run picks interactive or scripted mode.
func (c *ClientShellCmd) Run(g *Globals, ctx context.Context, parent *ClientCmd) error {
	opts, err := parent.options(g)
	if err != nil {
		return err
	}
	opts.Continue, opts.HistoryFile, opts.NoHistory = c.Continue, c.History, c.NoHistory
	switch {
	case c.Demo:
		return client.DemoCommand(ctx, opts, client.DemoOptions{
			DataDB: c.DataDB, Table: c.DemoTable, Key: c.Key, Nodes: c.NNodes, Append: c.Append, TxSize: c.TxSize,
		})
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
	Table  string `env:"-" help:"Table to load into (schema.table allowed)." required:""`
	Key    string `env:"-" help:"Column whose value picks the participant: FNV-1a(value) mod N." required:""`
	Create bool   `help:"Create the table on every participant first (CREATE TABLE IF NOT EXISTS, types guessed from the data)."`
	Atomic bool   `env:"-" help:"Load every row (and with --create the table) in one distributed transaction: all of them or none. --tx-size does not apply."`
	Append bool   `env:"-" help:"Load into a table that already holds rows (refused without it, so that loading a file twice does not double its rows)."`
	TxSize int    `name:"tx-size" help:"Rows per distributed transaction." default:"100"`
	Direct bool   `env:"-" help:"Send the rows straight to the participants (at the addresses the coordinator reaches them at), the coordinator only beginning and committing each transaction."`
	File   string `arg:"" help:"CSV file; its first line names the columns." type:"existingfile"`
}

// Run loads the file and prints the summary.
func (c *ClientLoadCmd) Run(g *Globals, ctx context.Context, parent *ClientCmd) error {
	opts, err := parent.options(g)
	if err != nil {
		return err
	}
	return client.LoadCommand(ctx, opts, client.LoadOptions{
		File: c.File, Table: c.Table, Key: c.Key, Create: c.Create, Atomic: c.Atomic, Append: c.Append, TxSize: c.TxSize, Direct: c.Direct,
	})
}

// terminal is f if it is a terminal, else nil.
func terminal(f *os.File) *os.File {
	if client.IsTerminal(f) {
		return f
	}
	return nil
}
