package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pipeline sends several statements in one round trip (one pipeline, one
// Sync): generated queries, which it queues when they call its Exec (it is
// their DBTX), and utility statements, which sqlc cannot generate because
// they take no parameters. A statement that reads rows cannot be queued:
// its caller wants the rows before the pipeline runs.
type pipeline struct {
	batch pgconn.Batch
	// conn is the connection the pipeline is for: the participant's own
	// statements run there by name (stmtCache), parsed once per connection.
	conn *pgconn.PgConn
}

// errPipelineReads is what a generated query that reads rows gets from a
// pipeline.
var errPipelineReads = errors.New("a pipelined statement cannot read rows")

// Exec queues sql, with args sent as text parameters.
func (p *pipeline) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	params, ok := textParams(args)
	if !ok && len(args) > 0 {
		return pgconn.CommandTag{}, fmt.Errorf("queue a statement: arguments %v cannot be sent as text", args)
	}
	return pgconn.CommandTag{}, p.statement(ctx, sql, params)
}

// statement queues one of the participant's own statements with its text
// parameters, by name (naming it on the connection the first time takes a
// round trip of its own).
func (p *pipeline) statement(ctx context.Context, sql string, params [][]byte) error {
	name, _, err := stmtsOf(p.conn).name(ctx, p.conn, sql, nil, true)
	if err != nil {
		return fmt.Errorf("prepare %q: %w", sql, err)
	}
	p.batch.ExecPrepared(name, params, nil, nil)
	return nil
}

// Query refuses: see errPipelineReads.
func (p *pipeline) Query(context.Context, string, ...any) (pgx.Rows, error) {
	return nil, errPipelineReads
}

// QueryRow refuses: see errPipelineReads.
func (p *pipeline) QueryRow(context.Context, string, ...any) pgx.Row { return errRow{errPipelineReads} }

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// user queues a user's statement with its text parameters: by name when
// named is set and the connection's cache names it, else unnamed. It is
// named outside the transaction, so a statement that does not parse runs
// unnamed instead, to fail inside it as it always did.
func (p *pipeline) user(ctx context.Context, sql string, params [][]byte, types []uint32, named bool) {
	cache := stmtsOf(p.conn)
	defer cache.noteUserSQL(sql)
	if named {
		if name, ok, err := cache.name(ctx, p.conn, sql, types, false); err == nil && ok {
			p.batch.ExecPrepared(name, params, nil, []int16{pgx.TextFormatCode})
			return
		}
	}
	p.batch.ExecParams(sql, params, types, nil, []int16{pgx.TextFormatCode})
}

// utility queues a statement that takes no parameters; whatever it names
// must be in sql already, quoted (see quote).
func (p *pipeline) utility(sql string) { p.batch.ExecParams(sql, nil, nil, nil, nil) }
