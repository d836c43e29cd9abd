package memlog

import (
	"bytes"
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

// violationKind marks the events Compact never removes, as the database's
// LogCompact does not: violations are evidence for replay.
var violationKind = engine.PartViolation{}.Kind()

// Log is an in-memory event log shared by any number of nodes, as one log
// database may be. It is safe for concurrent use.
type Log struct {
	mu      sync.Mutex
	rows    []row // in seq order
	lastSeq int64
	holding bool
	held    chan *HeldAppend
}

// row is one append of one node.
type row struct {
	seq    int64
	node   string
	txs    []uint64 // txs[i] is the transaction of events[i]
	events [][]byte
	at     time.Time
}

// New returns an empty log whose appends are written at once.
func New() *Log {
	// A loop has at most two appends out (its flusher's and the one at
	// shutdown); the room is for tests that append from several goroutines.
	return &Log{held: make(chan *HeldAppend, 64)}
}

// Hold makes every later Append wait, as a HeldAppend on Held, until the
// test releases or fails it.
func (l *Log) Hold() { l.setHolding(true) }

// Pass makes later appends write at once again. Appends already held stay
// held until they are settled.
func (l *Log) Pass() { l.setHolding(false) }

func (l *Log) setHolding(on bool) {
	l.mu.Lock()
	l.holding = on
	l.mu.Unlock()
}

// Held delivers the appends held back by Hold, in the order they were
// called.
func (l *Log) Held() <-chan *HeldAppend { return l.held }

// HeldAppend is one Append waiting for the test to settle it with Release
// or Fail. Settling it a second time does nothing.
type HeldAppend struct {
	// Node and Entries are what the caller asked to append (a copy).
	Node    string
	Entries []logstore.Entry

	log  *Log
	done chan struct{}
	// Set under log.mu.
	settled, abandoned bool
	seq                int64
	err                error
}

// Release writes the row and lets Append return its seq, which it also
// returns. The row of an Append whose caller gave up (its context ended) is
// not written: Release then returns 0.
func (h *HeldAppend) Release() int64 {
	h.log.mu.Lock()
	defer h.log.mu.Unlock()
	if h.settled || h.abandoned {
		return h.seq
	}
	h.seq = h.log.write(h.Node, h.Entries)
	h.settle()
	return h.seq
}

// WriteAndFail writes the row, yet makes Append return err, wrapped as the
// database's errors are: a commit whose answer was lost. It returns the
// row's seq (0 if the caller gave up, and nothing was written).
func (h *HeldAppend) WriteAndFail(err error) int64 {
	h.log.mu.Lock()
	defer h.log.mu.Unlock()
	if h.settled || h.abandoned {
		return 0
	}
	seq := h.log.write(h.Node, h.Entries)
	h.err = fmt.Errorf("append %d events: %w", len(h.Entries), err)
	h.settle()
	return seq
}

// Fail makes Append return err, wrapped as the database's errors are, and
// writes nothing.
func (h *HeldAppend) Fail(err error) {
	h.log.mu.Lock()
	defer h.log.mu.Unlock()
	if h.settled || h.abandoned {
		return
	}
	h.err = fmt.Errorf("append %d events: %w", len(h.Entries), err)
	h.settle()
}

func (h *HeldAppend) settle() {
	h.settled = true
	close(h.done)
}

// Append writes entries as one row of node's log and returns its seq, or,
// while the log holds appends, waits until the test settles this one. It
// rejects what the database would (an empty or non-JSON event, a tx beyond
// int64), writing nothing. Appending nothing writes no row and returns 0.
func (l *Log) Append(ctx context.Context, node string, entries []logstore.Entry) (int64, error) {
	if len(entries) == 0 {
		return 0, nil
	}
	if err := check(entries); err != nil {
		return 0, err
	}
	l.mu.Lock()
	if !l.holding {
		defer l.mu.Unlock()
		return l.write(node, entries), nil
	}
	l.mu.Unlock()
	h := &HeldAppend{Node: node, Entries: clone(entries), log: l, done: make(chan struct{})}
	select {
	case l.held <- h:
	case <-ctx.Done():
		return 0, fmt.Errorf("append %d events: %w", len(entries), ctx.Err())
	}
	select {
	case <-h.done:
		return h.seq, h.err
	case <-ctx.Done():
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if h.settled {
		return h.seq, h.err
	}
	h.abandoned = true
	return 0, fmt.Errorf("append %d events: %w", len(entries), ctx.Err())
}

func check(entries []logstore.Entry) error {
	for i, e := range entries {
		switch {
		case e.Tx > math.MaxInt64:
			return fmt.Errorf("append %d events: event %d: tx %d out of range", len(entries), i, e.Tx)
		case len(e.Event) == 0:
			return fmt.Errorf("append %d events: event %d of tx %d: empty", len(entries), i, e.Tx)
		case !json.Valid(e.Event):
			return fmt.Errorf("append %d events: event %d of tx %d: not JSON", len(entries), i, e.Tx)
		}
	}
	return nil
}

// write appends entries as a row with the next seq; l.mu must be held.
func (l *Log) write(node string, entries []logstore.Entry) int64 {
	l.lastSeq++
	r := row{seq: l.lastSeq, node: node, at: time.Now()}
	for _, e := range clone(entries) {
		r.txs = append(r.txs, e.Tx)
		r.events = append(r.events, e.Event)
	}
	l.rows = append(l.rows, r)
	return r.seq
}

// clone copies entries with their events, so that neither the caller nor a
// reader can change what the log holds.
func clone(entries []logstore.Entry) []logstore.Entry {
	out := slices.Clone(entries)
	for i := range out {
		out[i].Event = slices.Clone(out[i].Event)
	}
	return out
}

// Last returns the seq of node's newest row and how many events it holds, or
// zeros if node has no row.
func (l *Log) Last(ctx context.Context, node string) (seq int64, events int, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, fmt.Errorf("last row of %s: %w", node, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.rows) - 1; i >= 0; i-- {
		if r := l.rows[i]; r.node == node {
			return r.seq, len(r.events), nil
		}
	}
	return 0, 0, nil
}

// Scan calls fn with each of node's events in log order, as they were when
// Scan began. It stops at the first error from fn and returns it wrapped.
func (l *Log) Scan(ctx context.Context, node string, fn func(logstore.Record) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("scan log of %s: %w", node, err)
	}
	for _, r := range l.records(node, func(row) bool { return true }) {
		if err := fn(r); err != nil {
			return fmt.Errorf("scan log of %s: at %s: %w", node, r.Pos, err)
		}
	}
	return nil
}

// TxRows returns every event of node's rows that hold an event of
// transaction tx, in log order.
func (l *Log) TxRows(ctx context.Context, node string, tx uint64) ([]logstore.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("rows of %s tx %d: %w", node, tx, err)
	}
	if tx > math.MaxInt64 {
		return nil, fmt.Errorf("rows of %s tx %d: tx out of range", node, tx)
	}
	return l.records(node, func(r row) bool { return slices.Contains(r.txs, tx) }), nil
}

// records returns copies of the events of node's rows that pass keep, in
// log order.
func (l *Log) records(node string, keep func(row) bool) []logstore.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logstore.Record
	for _, r := range l.rows {
		if r.node != node || !keep(r) {
			continue
		}
		for i, ev := range r.events {
			out = append(out, logstore.Record{
				Pos: logstore.Pos{Seq: r.seq, Index: i}, Node: r.node, Tx: r.txs[i], Payload: slices.Clone(ev), At: r.at,
			})
		}
	}
	return out
}

// Compact deletes node's rows drop and removes from the rows that stay the
// events cuts name, sparing rows with node-level events or violations and
// violation events, as logstore.Store.Compact does, and returns how many rows
// it deleted and how many it trimmed.
func (l *Log) Compact(ctx context.Context, node string, drop []int64, cuts []logstore.Cut) (deleted, trimmed int64, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, fmt.Errorf("compact log of %s (%d rows, %d cuts): %w", node, len(drop), len(cuts), err)
	}
	dropped := make(map[int64]bool, len(drop))
	for _, seq := range drop {
		dropped[seq] = true
	}
	cut := make(map[logstore.Cut]bool, len(cuts))
	for _, c := range cuts {
		cut[c] = true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.rows)
	l.rows = slices.DeleteFunc(l.rows, func(r row) bool {
		return r.node == node && dropped[r.seq] && !kept(r)
	})
	deleted = int64(n - len(l.rows))
	if len(cut) == 0 {
		return deleted, 0, nil
	}
	for i := range l.rows {
		r := &l.rows[i]
		if r.node != node || dropped[r.seq] {
			continue
		}
		var txs []uint64
		var events [][]byte
		for j := range r.events {
			if !cut[logstore.Cut{Seq: r.seq, Tx: r.txs[j]}] || violation(r.events[j]) {
				txs, events = append(txs, r.txs[j]), append(events, r.events[j])
			}
		}
		if len(events) > 0 && len(events) < len(r.events) {
			r.txs, r.events = txs, events
			trimmed++
		}
	}
	return deleted, trimmed, nil
}

// kept reports whether r holds an event that keeps it for good.
func kept(r row) bool {
	return slices.Contains(r.txs, 0) || slices.ContainsFunc(r.events, violation)
}

func violation(event []byte) bool {
	if !bytes.Contains(event, []byte(violationKind)) {
		return false // spares most events a parse
	}
	var env struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(event, &env) == nil && env.Type == violationKind
}

// Count returns how many rows and events node has in the log.
func (l *Log) Count(ctx context.Context, node string) (logstore.Size, error) {
	if err := ctx.Err(); err != nil {
		return logstore.Size{}, fmt.Errorf("count log of %s: %w", node, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var s logstore.Size
	for _, r := range l.rows {
		if r.node == node {
			s.Rows++
			s.Events += int64(len(r.events))
		}
	}
	return s, nil
}
