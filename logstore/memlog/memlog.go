package memlog

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/logstore"
)

// violationKind is the kind DeleteTxs never removes, as the database's
// EventDeleteByTxs does not: violations are evidence for replay.
var violationKind = engine.PartViolation{}.Kind()

// Log is an in-memory event log shared by any number of nodes, as one log
// database may be. It is safe for concurrent use.
type Log struct {
	mu      sync.Mutex
	recs    []logstore.Record // in seq order
	lastSeq int64
	holding bool
	held    chan *HeldAppend
}

// New returns an empty log whose appends are written at once.
func New() *Log {
	// A loop has at most two appends out (its flusher's and the one at
	// shutdown); the room is for tests that append from several goroutines.
	return &Log{held: make(chan *HeldAppend, 64)}
}

// Hold makes every later Append wait, as a HeldAppend on Held, until the
// test releases or fails it.
func (l *Log) Hold() {
	l.mu.Lock()
	l.holding = true
	l.mu.Unlock()
}

// Pass makes later appends write at once again. Appends already held stay
// held until they are settled.
func (l *Log) Pass() {
	l.mu.Lock()
	l.holding = false
	l.mu.Unlock()
}

// Held delivers the appends held back by Hold, in the order they were
// called.
func (l *Log) Held() <-chan *HeldAppend { return l.held }

// HeldAppend is one Append waiting for the test to settle it with Release
// or Fail. Settling it a second time does nothing.
type HeldAppend struct {
	// Records are what the caller asked to append (a copy).
	Records []logstore.Record

	log  *Log
	done chan struct{}
	// Set under log.mu.
	settled, abandoned bool
	seqs               []int64
	err                error
}

// Release writes the records and lets Append return their seqs, which it
// also returns. Records of an Append whose caller gave up (its context
// ended) are not written: Release then returns nil.
func (h *HeldAppend) Release() []int64 {
	h.log.mu.Lock()
	defer h.log.mu.Unlock()
	if h.settled || h.abandoned {
		return h.seqs
	}
	h.seqs = h.log.write(h.Records)
	h.settle()
	return h.seqs
}

// Fail makes Append return err, wrapped as the database's errors are, and
// writes nothing.
func (h *HeldAppend) Fail(err error) {
	h.log.mu.Lock()
	defer h.log.mu.Unlock()
	if h.settled || h.abandoned {
		return
	}
	h.err = fmt.Errorf("append %d events: %w", len(h.Records), err)
	h.settle()
}

func (h *HeldAppend) settle() {
	h.settled = true
	close(h.done)
}

// Append writes recs and returns their seqs in the order of recs, or, while
// the log holds appends, waits until the test settles this one. It rejects
// what the database would (an empty or non-JSON payload, a tx beyond
// int64), writing none of recs. Only Node, Tx, Kind and Payload are used.
func (l *Log) Append(ctx context.Context, recs []logstore.Record) ([]int64, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	if err := check(recs); err != nil {
		return nil, err
	}
	l.mu.Lock()
	if !l.holding {
		defer l.mu.Unlock()
		return l.write(recs), nil
	}
	l.mu.Unlock()
	h := &HeldAppend{Records: clone(recs), log: l, done: make(chan struct{})}
	select {
	case l.held <- h:
	case <-ctx.Done():
		return nil, fmt.Errorf("append %d events: %w", len(recs), ctx.Err())
	}
	select {
	case <-h.done:
		return h.seqs, h.err
	case <-ctx.Done():
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if h.settled {
		return h.seqs, h.err
	}
	h.abandoned = true
	return nil, fmt.Errorf("append %d events: %w", len(recs), ctx.Err())
}

func check(recs []logstore.Record) error {
	for i, r := range recs {
		switch {
		case r.Tx > math.MaxInt64:
			return fmt.Errorf("append %d events: record %d: tx %d out of range", len(recs), i, r.Tx)
		case len(r.Payload) == 0:
			return fmt.Errorf("append %d events: record %d (%s): empty payload", len(recs), i, r.Kind)
		case !json.Valid(r.Payload):
			return fmt.Errorf("append %d events: record %d (%s): payload is not JSON", len(recs), i, r.Kind)
		}
	}
	return nil
}

// write appends recs with the next seqs; l.mu must be held.
func (l *Log) write(recs []logstore.Record) []int64 {
	seqs := make([]int64, len(recs))
	now := time.Now()
	for i, r := range clone(recs) {
		l.lastSeq++
		r.Seq, r.At = l.lastSeq, now
		l.recs = append(l.recs, r)
		seqs[i] = r.Seq
	}
	return seqs
}

// clone copies records with their payloads, so that neither the caller nor
// a reader can change what the log holds.
func clone(recs []logstore.Record) []logstore.Record {
	out := slices.Clone(recs)
	for i := range out {
		out[i].Payload = slices.Clone(out[i].Payload)
	}
	return out
}

// Scan calls fn with each of node's events in seq order, as they were when
// Scan began. It stops at the first error from fn and returns it wrapped.
func (l *Log) Scan(ctx context.Context, node string, fn func(logstore.Record) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("scan events of %s: %w", node, err)
	}
	for _, r := range l.records(node) {
		if err := fn(r); err != nil {
			return fmt.Errorf("scan events of %s at seq %d: %w", node, r.Seq, err)
		}
	}
	return nil
}

// records returns copies of node's records in seq order.
func (l *Log) records(node string) []logstore.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logstore.Record
	for _, r := range l.recs {
		if r.Node == node {
			out = append(out, r)
		}
	}
	return clone(out)
}

// DeleteTxs removes node's events of the ended transactions up to each one's
// seq bound, leaving other nodes' events, later events of the same ids and
// violations alone, and returns how many it removed.
func (l *Log) DeleteTxs(ctx context.Context, node string, ended []logstore.Ended) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("delete events of %d txs of %s: %w", len(ended), node, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.recs)
	l.recs = slices.DeleteFunc(l.recs, func(r logstore.Record) bool {
		if r.Node != node || r.Kind == violationKind {
			return false
		}
		return slices.ContainsFunc(ended, func(e logstore.Ended) bool {
			return e.Tx == r.Tx && r.Seq <= e.UpToSeq
		})
	})
	return int64(n - len(l.recs)), nil
}

// Count returns how many events node has in the log.
func (l *Log) Count(ctx context.Context, node string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("count events of %s: %w", node, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for _, r := range l.recs {
		if r.Node == node {
			n++
		}
	}
	return n, nil
}
