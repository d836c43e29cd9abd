package node

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/queries/dataqueries"
)

// recoveryFacts reads what survived in the data database, as the start step
// of eng (a participant with its log folded in) takes it: our prepared
// transactions with their transaction ids, outcome markers, decider
// tombstones, and which of the branches the log shows prepared the commit
// log shows committed.
func recoveryFacts(ctx context.Context, pool *pgxpool.Pool, eng *engine.Participant) (engine.Start, error) {
	var in engine.Start
	q := dataqueries.New()
	prepared, err := q.PreparedList(ctx, pool)
	if err != nil {
		return in, fmt.Errorf("read pg_prepared_xacts: %w", err)
	}
	in.PreparedXids = make(map[string]uint64, len(prepared))
	for _, p := range prepared {
		in.PreparedGIDs = append(in.PreparedGIDs, p.Gid)
		in.PreparedXids[p.Gid] = uint64(p.Xid)
	}
	markers, err := q.MarkerList(ctx, pool)
	if err != nil {
		return in, fmt.Errorf("read markers: %w", err)
	}
	in.MarkerKeys = map[string][]string{}
	for _, m := range markers {
		in.Markers = append(in.Markers, m.Gid)
		if len(m.Keys) > 0 {
			in.MarkerKeys[m.Gid] = m.Keys
		}
	}
	if in.Tombstones, err = q.MarkerListTombstones(ctx, pool); err != nil {
		return in, fmt.Errorf("read tombstones: %w", err)
	}
	in.CommittedXids, err = q.CommittedOf(ctx, pool, eng.BranchXids())
	return in, err
}
