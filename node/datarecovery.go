package node

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// recoveryFacts reads what survived in the data database: our prepared
// transactions and outcome markers.
func recoveryFacts(ctx context.Context, pool *pgxpool.Pool) (prepared, markers []string, err error) {
	prepared, err = strings1(ctx, pool, "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE 'tpcd:%' ORDER BY gid")
	if err != nil {
		return nil, nil, fmt.Errorf("read pg_prepared_xacts: %w", err)
	}
	markers, err = strings1(ctx, pool, "SELECT gid FROM tpcd_markers ORDER BY gid")
	if err != nil {
		return nil, nil, fmt.Errorf("read markers: %w", err)
	}
	return prepared, markers, nil
}

func strings1(ctx context.Context, pool *pgxpool.Pool, sql string) ([]string, error) {
	rows, err := pool.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
