package node

import (
	"context"

	"github.com/tpcd/tpcd/logstore"
)

// eventLog is what a node needs of its durable event log: the loop appends
// and scans, compaction deletes. logstore.Store is the log nodes run on;
// logstore/memlog is an in-memory one whose appends the loop's tests hold
// back, fail or release.
type eventLog interface {
	// Append durably writes recs in one round trip and returns their seqs
	// in the order of recs. After an error nothing of recs counts as
	// durable: the loop appends them again.
	Append(ctx context.Context, recs []logstore.Record) ([]int64, error)
	// Scan calls fn with each of node's events in seq order.
	Scan(ctx context.Context, node string, fn func(logstore.Record) error) error
	// DeleteTxs removes node's events of the ended transactions, each up
	// to its seq bound, and returns how many it removed.
	DeleteTxs(ctx context.Context, node string, ended []logstore.Ended) (int64, error)
}

var _ eventLog = (*logstore.Store)(nil)
