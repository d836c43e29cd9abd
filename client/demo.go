package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"
)

// DemoOptions describe the seed client's demo loader (`python client.py
// --demo --n-nodes N --data-db URI`): a table of a PostgreSQL database
// sent through the coordinator to the participants.
type DemoOptions struct {
	// DataDB is the source database's URI.
	DataDB string
	// Table is the source table, and the table the rows go into; "" for
	// the only user table of DataDB.
	Table string
	// Key is the column whose hash picks the participant; "" for the first
	// column of the table's primary key, else its first column.
	Key string
	// Nodes splits the rows over participants 0..Nodes-1; 0 for all.
	Nodes int
	// Append allows a target table that already holds rows (a second demo
	// run would otherwise be refused rather than double them).
	Append bool
	// TxSize is the number of rows per distributed transaction.
	TxSize int
}

// DemoCommand runs the demo loader: it dumps the source table with COPY
// into a temporary CSV file and hands that to `load --create`, which draws
// the progress bar and prints the summary. A file rather than a pipe,
// because the load reads the first rows twice (types, then rows), starts
// an atomic load over from the top, and sizes its progress bar by it.
func DemoCommand(ctx context.Context, opts Options, do DemoOptions) error {
	lo, dir, err := dumpDemo(ctx, do)
	if dir != "" {
		defer os.RemoveAll(dir)
	}
	if err != nil {
		return err
	}
	return LoadCommand(ctx, opts, lo)
}

// dumpDemo picks the source table and its key, and copies its rows into a
// CSV file in a new temporary directory dir, for the caller to remove.
func dumpDemo(ctx context.Context, do DemoOptions) (lo LoadOptions, dir string, err error) {
	if do.DataDB == "" {
		return lo, "", errors.New("--demo reads its rows from a PostgreSQL database: give --data-db URI")
	}
	conn, err := pgx.Connect(ctx, do.DataDB)
	if err != nil {
		return lo, "", fmt.Errorf("--demo: connect to --data-db: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	table, oid, err := demoTable(ctx, conn, do.Table)
	if err != nil {
		return lo, "", err
	}
	key, types, err := demoColumns(ctx, conn, table, oid, do.Key)
	if err != nil {
		return lo, "", err
	}
	dir, err = os.MkdirTemp("", "tpcd-demo-")
	if err != nil {
		return lo, "", fmt.Errorf("--demo: %w", err)
	}
	file := filepath.Join(dir, "rows.csv")
	f, err := os.Create(file)
	if err != nil {
		return lo, dir, fmt.Errorf("--demo: %w", err)
	}
	// The header names the columns for the load; the key is hashed in its
	// text form, as a CSV load of the same rows would hash it.
	copySQL := fmt.Sprintf("COPY (SELECT * FROM %s) TO STDOUT WITH (FORMAT csv, HEADER)", quoteTable(table))
	_, err = conn.PgConn().CopyTo(ctx, f, copySQL)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return lo, dir, fmt.Errorf("--demo: read table %s from --data-db: %w", table, err)
	}
	return LoadOptions{
		File: file, Source: "table " + table + " of --data-db", Table: table, Key: key,
		Create: true, Append: do.Append, TxSize: do.TxSize, Nodes: do.Nodes, Types: types,
	}, dir, nil
}

// demoTable resolves the source table: the one named, or the database's
// only user table (schema-qualified unless it is in public).
func demoTable(ctx context.Context, conn *pgx.Conn, name string) (string, uint32, error) {
	if name != "" {
		var oid *uint32
		if err := conn.QueryRow(ctx, "SELECT to_regclass($1)::oid", name).Scan(&oid); err != nil {
			return "", 0, fmt.Errorf("--demo-table %s: %w", name, err)
		}
		if oid == nil {
			return "", 0, fmt.Errorf("--demo-table %s: no such table in --data-db", name)
		}
		return name, *oid, nil
	}
	rows, err := conn.Query(ctx, `
		SELECT CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END, c.oid
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
		ORDER BY 1`)
	if err != nil {
		return "", 0, fmt.Errorf("--demo: list the tables of --data-db: %w", err)
	}
	var names []string
	var oids []uint32
	for rows.Next() {
		var n string
		var oid uint32
		if err := rows.Scan(&n, &oid); err != nil {
			return "", 0, fmt.Errorf("--demo: list the tables of --data-db: %w", err)
		}
		names, oids = append(names, n), append(oids, oid)
	}
	if err := rows.Err(); err != nil {
		return "", 0, fmt.Errorf("--demo: list the tables of --data-db: %w", err)
	}
	switch len(names) {
	case 0:
		return "", 0, errors.New("--demo: --data-db has no table to load; create one, or point --data-db at the database that holds it")
	case 1:
		return names[0], oids[0], nil
	}
	return "", 0, fmt.Errorf("--demo: --data-db has %d tables (%s); name one with --demo-table", len(names), strings.Join(names, ", "))
}

// demoColumns picks the key column and reads the column types, which the
// load uses instead of guessing them. Only built-in types are kept: a
// type of the source's own (an enum, a domain) does not exist on the
// participants.
func demoColumns(ctx context.Context, conn *pgx.Conn, table string, oid uint32, key string) (string, map[string]string, error) {
	rows, err := conn.Query(ctx, `
		SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typnamespace = 'pg_catalog'::regnamespace,
		       coalesce(a.attnum = (SELECT i.indkey[0] FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary), false)
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, oid)
	if err != nil {
		return "", nil, fmt.Errorf("--demo: read the columns of %s: %w", table, err)
	}
	types := map[string]string{}
	var names []string
	pk := ""
	for rows.Next() {
		var name, typ string
		var builtin, isPK bool
		if err := rows.Scan(&name, &typ, &builtin, &isPK); err != nil {
			return "", nil, fmt.Errorf("--demo: read the columns of %s: %w", table, err)
		}
		names = append(names, name)
		if builtin {
			types[name] = typ
		}
		if isPK {
			pk = name
		}
	}
	if err := rows.Err(); err != nil {
		return "", nil, fmt.Errorf("--demo: read the columns of %s: %w", table, err)
	}
	switch {
	case len(names) == 0:
		return "", nil, fmt.Errorf("--demo: table %s has no columns", table)
	case key != "":
		for _, n := range names {
			if n == key {
				return key, types, nil
			}
		}
		return "", nil, fmt.Errorf("--demo: --key %q is not a column of %s; it has %s", key, table, strings.Join(names, ", "))
	case pk != "":
		return pk, types, nil
	}
	return names[0], types, nil
}
