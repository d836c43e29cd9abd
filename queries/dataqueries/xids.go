package dataqueries

import (
	"context"
	"fmt"
)

// CommittedOf returns those of xids (transaction ids of 64 bits) that the
// commit log shows committed: XactsCommitted with unsigned ids, as the
// engine keeps them. A restart asks it about the branches its log shows
// prepared that PostgreSQL no longer holds prepared.
func (q *Queries) CommittedOf(ctx context.Context, db DBTX, xids []uint64) ([]uint64, error) {
	if len(xids) == 0 {
		return nil, nil
	}
	asked := make([]int64, len(xids))
	for i, x := range xids {
		asked[i] = int64(x)
	}
	found, err := q.XactsCommitted(ctx, db, asked)
	if err != nil {
		return nil, fmt.Errorf("read the commit status of %d prepared branches: %w", len(xids), err)
	}
	committed := make([]uint64, len(found))
	for i, x := range found {
		committed[i] = uint64(x)
	}
	return committed, nil
}
