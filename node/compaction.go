package node

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/logstore"
)

// keepEnded is how long a participant keeps the events of a transaction
// that ended before compaction deletes them. Until then a restart still
// knows how the transaction ended, so a late copy of an old question (a
// decider asked to settle a transaction that ended) is answered from what
// happened rather than by a new tombstone; the transport never delivers a
// message that late (docs/PROTOCOL.md, "Settling").
const keepEnded = time.Minute

// compactor collects the transactions whose events may go and, every so
// often, removes from the log the events of those that have been over for
// keep (rowIndex says how: delete a row, or cut them out of a row that
// stays). The loop tells it which rows hold which transactions (track) as
// they become durable, before it reports an ended transaction's last seq.
type compactor struct {
	store  eventLog
	node   string
	keep   time.Duration
	logger *slog.Logger

	mu      sync.Mutex
	pending []endedAt
	rows    rowIndex
	// drop and cuts are what the ended transactions leave to remove, not yet
	// removed (a failed compaction leaves them for the next round).
	drop []int64
	cuts []logstore.Cut
}

type endedAt struct {
	logstore.Ended
	at time.Time
}

func newCompactor(store eventLog, node string, keep time.Duration, logger *slog.Logger) *compactor {
	return &compactor{store: store, node: node, keep: keep, logger: logger, rows: newRowIndex()}
}

// track enters row seq of the log, which holds evs. The loop calls it for
// each row it recovers or appends, in seq order, before anything it learns
// from the row can end a transaction.
func (c *compactor) track(seq int64, evs []engine.Event) {
	c.mu.Lock()
	c.rows.add(seq, evs)
	c.mu.Unlock()
}

// add queues an ended transaction; it never blocks for long (the loop
// goroutine calls it).
func (c *compactor) add(e logstore.Ended) {
	c.mu.Lock()
	c.pending = append(c.pending, endedAt{Ended: e, at: time.Now()})
	c.mu.Unlock()
}

// run compacts every interval until ctx ends (a negative interval disables
// it). A coordinator never needs an ended transaction's events again: an
// inquiry about a forgotten transaction can only be a stale duplicate, and
// transaction ids stay unique through the reservation events, which are
// kept. A participant's ended transactions have no marker left to check.
func (c *compactor) run(ctx context.Context, every time.Duration) {
	if every < 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.compact(ctx)
	}
}

// compact ends the transactions due and removes their events from the
// log, in one statement so that a crash never leaves part of one behind,
// keeping the work for the next round if the log cannot be reached.
func (c *compactor) compact(ctx context.Context) {
	cut := time.Now().Add(-c.keep)
	c.mu.Lock()
	due := 0
	keep := c.pending[:0]
	for _, e := range c.pending {
		if e.at.After(cut) {
			keep = append(keep, e)
			continue
		}
		c.drop, c.cuts = c.rows.end(e.Ended, c.drop, c.cuts)
		due++
	}
	clear(c.pending[len(keep):])
	c.pending = keep
	drop, cuts := c.drop, c.cuts
	c.drop, c.cuts = nil, nil
	c.mu.Unlock()
	if len(drop) == 0 && len(cuts) == 0 {
		return
	}
	deleted, trimmed, err := c.store.Compact(ctx, c.node, drop, cuts)
	if err != nil {
		if ctx.Err() == nil {
			c.logger.Warn("compaction failed; will retry", "node", c.node, "err", err)
		}
		c.mu.Lock()
		c.drop, c.cuts = append(c.drop, drop...), append(c.cuts, cuts...)
		c.mu.Unlock()
		return
	}
	c.logger.Debug("compacted log", "node", c.node, "transactions", due, "rows_deleted", deleted, "rows_trimmed", trimmed)
}
