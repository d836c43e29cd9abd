package node

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/tpcd/tpcd/logstore"
)

// keepEnded is how long a participant keeps the events of a transaction
// that ended before compaction deletes them. Until then a restart still
// knows how the transaction ended, so a late copy of an old question (a
// decider asked to settle a transaction that ended) is answered from what
// happened rather than by a new tombstone; the transport never delivers a
// message that late (docs/PROTOCOL.md, "Settling").
const keepEnded = time.Minute

// compactor collects the transactions whose events may go and deletes them
// from the log every so often, each once it has been over for keep.
type compactor struct {
	store  eventLog
	node   string
	keep   time.Duration
	logger *slog.Logger

	mu      sync.Mutex
	pending []endedAt
}

type endedAt struct {
	logstore.Ended
	at time.Time
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

// compact deletes the events of the transactions due, keeping them for
// the next round if the log cannot be reached.
func (c *compactor) compact(ctx context.Context) {
	cut := time.Now().Add(-c.keep)
	c.mu.Lock()
	var due []logstore.Ended
	keep := c.pending[:0]
	for _, e := range c.pending {
		if e.at.After(cut) {
			keep = append(keep, e)
		} else {
			due = append(due, e.Ended)
		}
	}
	c.pending = keep
	c.mu.Unlock()
	if len(due) == 0 {
		return
	}
	n, err := c.store.DeleteTxs(ctx, c.node, due)
	if err != nil {
		if ctx.Err() == nil {
			c.logger.Warn("compaction failed; will retry", "node", c.node, "err", err)
		}
		c.mu.Lock()
		for _, e := range due {
			c.pending = append(c.pending, endedAt{Ended: e})
		}
		c.mu.Unlock()
		return
	}
	c.logger.Debug("compacted log", "node", c.node, "transactions", len(due), "events", n)
}
