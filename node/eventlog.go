package node

import (
	"context"

	"github.com/tpcd/tpcd/logstore"
)

// eventLog is what a node needs of its durable event log: the loop appends
// and scans, compaction removes. logstore.Store is the log nodes run on;
// logstore/memlog is an in-memory one whose appends the loop's tests hold
// back, fail or release.
type eventLog interface {
	// Append durably writes entries as one row of node's log in one round
	// trip and returns the row's seq. After an error nothing of entries
	// counts as durable: the loop appends them again.
	Append(ctx context.Context, node string, entries []logstore.Entry) (int64, error)
	// Last returns the seq of node's newest durable row and how many
	// events it holds (zeros if none): whether an append that failed was
	// written. A row the server has and its synchronous standby may not
	// (the append's wait for it was cancelled) is not reported until the
	// standby has it.
	Last(ctx context.Context, node string) (seq int64, events int, err error)
	// Scan calls fn with each of node's events in log order.
	Scan(ctx context.Context, node string, fn func(logstore.Record) error) error
	// Compact deletes node's rows drop and removes the events cuts name
	// from rows that stay, all or nothing, sparing node-level events and
	// violations; it returns the rows deleted and trimmed.
	Compact(ctx context.Context, node string, drop []int64, cuts []logstore.Cut) (deleted, trimmed int64, err error)
}

var _ eventLog = (*logstore.Store)(nil)
