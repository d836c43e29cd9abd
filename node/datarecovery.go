package node

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/queries/dataqueries"
)

// recoveryFacts reads what survived in the data database: our prepared
// transactions, outcome markers and decider tombstones.
func recoveryFacts(ctx context.Context, pool *pgxpool.Pool) (prepared, markers, tombstones []string, err error) {
	q := dataqueries.New()
	prepared, err = q.PreparedListGIDs(ctx, pool)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read pg_prepared_xacts: %w", err)
	}
	markers, err = q.MarkerListGIDs(ctx, pool)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read markers: %w", err)
	}
	tombstones, err = q.MarkerListTombstones(ctx, pool)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read tombstones: %w", err)
	}
	return prepared, markers, tombstones, nil
}
