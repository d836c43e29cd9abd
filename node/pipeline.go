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
}

// errPipelineReads is what a generated query that reads rows gets from a
// pipeline.
var errPipelineReads = errors.New("a pipelined statement cannot read rows")

// Exec queues sql, with args sent as text parameters.
func (p *pipeline) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	params, ok := textParams(args)
	if !ok && len(args) > 0 {
		return pgconn.CommandTag{}, fmt.Errorf("queue a statement: arguments %v cannot be sent as text", args)
	}
	p.batch.ExecParams(sql, params, nil, nil, nil)
	return pgconn.CommandTag{}, nil
}

// Query refuses: see errPipelineReads.
func (p *pipeline) Query(context.Context, string, ...any) (pgx.Rows, error) {
	return nil, errPipelineReads
}

// QueryRow refuses: see errPipelineReads.
func (p *pipeline) QueryRow(context.Context, string, ...any) pgx.Row { return errRow{errPipelineReads} }

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// utility queues a statement that takes no parameters; whatever it names
// must be in sql already, quoted (see quote).
func (p *pipeline) utility(sql string) { p.batch.ExecParams(sql, nil, nil, nil, nil) }

// run sends the queued statements and returns the command tag of the last
// one and the first error. After an error PostgreSQL skips the statements
// that follow it.
func (p *pipeline) run(ctx context.Context, conn *pgconn.PgConn) (pgconn.CommandTag, error) {
	results, err := conn.ExecBatch(ctx, &p.batch).ReadAll()
	var tag pgconn.CommandTag
	for _, r := range results {
		if err == nil {
			err = r.Err
		}
		tag = r.CommandTag
	}
	return tag, err
}
