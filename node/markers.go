package node

import (
	"context"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/failpoint"
)

// maxMarkerBatch bounds the GIDs of one DELETE.
const maxMarkerBatch = 1000

// sweepPause spaces sweeps so that even a lightly loaded node deletes
// several markers per commit; a marker left a little longer costs nothing.
const sweepPause = 50 * time.Millisecond

// markerSweeper deletes the markers of transactions that are over. A marker
// deletion is its own forced commit, one per transaction and participant;
// one goroutine deletes whatever has queued meanwhile with one statement, so
// under load many transactions share that commit. Nobody waits for it but
// the compaction of the transaction's events (the engine's Forget effect).
type markerSweeper struct {
	d     *dataDB
	queue *batchQueue[engine.Data]
}

func (m *markerSweeper) push(op engine.Data) { m.queue.push(op, 0) }

// run sweeps until the data layer closes; deletions still queued then are
// left to the next start, whose recovery deletes markers of finished
// transactions again.
func (m *markerSweeper) run() {
	m.queue.drain(m.d.base.Done(), maxMarkerBatch, nil, func(batch []engine.Data) {
		m.sweep(batch)
		select {
		case <-m.d.base.Done():
		case <-time.After(sweepPause):
		}
	})
}

func (m *markerSweeper) sweep(batch []engine.Data) {
	gids := make([]string, len(batch))
	for i, op := range batch {
		gids[i] = op.GID
	}
	ctx, cancel := context.WithTimeout(m.d.base, opTimeout)
	defer cancel()
	var res engine.DataDone
	if err := m.d.q.MarkerDeleteByGIDs(ctx, m.d.pool, gids); err != nil {
		res = engine.DataDone{Err: err.Error(), Retry: true}
	}
	for _, op := range batch {
		r := res
		failpoint.AfterData(op.Op, r)
		r.Now, r.Op, r.TxID, r.Stmt = m.d.now(), op.Op, op.TxID, op.Stmt
		m.d.done(r)
	}
}
