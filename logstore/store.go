package logstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/db/syncrep"
	"github.com/tpcd/tpcd/queries"
)

// scanPage is how many rows Scan holds at once: big enough that round trips do not
// dominate a recovery, small enough that memory stays flat however long the log is
// (a row holds the events of one append, rarely more than a few hundred).
const scanPage = 500

// Entry is one event to append.
type Entry struct {
	// Tx is the transaction the event belongs to; 0 marks a node-level event.
	Tx uint64
	// Event is the event's JSON document (engine.EncodeEvent's envelope).
	Event []byte
}

// Pos is where an event sits in a node's log: the seq of the row holding it and
// its index among the row's events, from 0. Positions order a node's log.
type Pos struct {
	Seq   int64
	Index int
}

// String renders p as "seq.index".
func (p Pos) String() string {
	return strconv.FormatInt(p.Seq, 10) + "." + strconv.Itoa(p.Index)
}

// Record is one event read back from a node's log.
type Record struct {
	Pos
	Node string
	// Tx is the transaction the row names for the event; 0 marks a node-level
	// event.
	Tx uint64
	// Payload is the event's JSON document. The database stores rows as jsonb,
	// so it reads back equal as JSON but not byte for byte (key order, spacing).
	Payload []byte
	// At is when the database stored the row; it is informational only.
	At time.Time
}

// Size is how much of a node's log is stored.
type Size struct {
	Rows, Events int64
}

// Store reads and writes the event log in one PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool
	q    *queries.Queries
	// fence, when set, makes appends to its node's log conditional on a
	// lease (Fenced).
	fence *fence
	// slot, firstTx and endTx name the slot whose outcomes it keeps and
	// bound the ids whose outcomes it reads by id and prunes (ForSlot);
	// endTx 0 is no bound.
	slot           int
	firstTx, endTx uint64
}

// ForSlot returns a Store that keeps the outcomes of one slot, where
// several coordinators share the log database: its lookups by id and its
// pruning touch only ids from first up to, not including, end, and it
// keeps the slot's own horizon. A Store of no slot is slot 0's.
func (s *Store) ForSlot(slot int, first, end uint64) *Store {
	f := *s
	f.slot, f.firstTx, f.endTx = slot, first, end
	return &f
}

// txEnd is the end of the ids s touches, for queries that take one.
func (s *Store) txEnd() int64 {
	if s.endTx == 0 || s.endTx > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(s.endTx)
}

// New returns a Store over pool, whose database must have been migrated with
// db.MigrateLog. The caller keeps ownership of pool.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool, q: queries.New()}
}

// Append durably writes entries as one row of node's log, in one round trip
// whatever their number, and returns the row's seq; entry i is at Pos{seq, i}.
// Appending nothing writes no row and returns 0. entries is not modified.
func (s *Store) Append(ctx context.Context, node string, entries []Entry) (int64, error) {
	if len(entries) == 0 {
		return 0, nil
	}
	txs, events, err := rowOf(entries)
	if err != nil {
		return 0, err
	}
	var seq int64
	err = s.durably(ctx, func(conn *pgx.Conn) (err error) {
		seq, err = s.appendRow(ctx, conn, node, txs, events)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("append %d events: %w", len(entries), err)
	}
	return seq, nil
}

// durably runs commit on a connection of the pool and returns once what
// it committed is durable (syncrep.Durably): a row the server has and its
// standby may lack would be lost in a failover.
func (s *Store) durably(ctx context.Context, commit func(*pgx.Conn) error) error {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	return syncrep.Durably(ctx, c.Conn(), func() error { return commit(c.Conn()) })
}

// rowOf checks entries and returns the row that stores them: the transaction
// of each event, and the events as one JSON array. It rejects what the
// database would reject anyway, with a clearer message, and what it would not:
// a huge tx id that would wrap into a negative one, and an event that is not
// one JSON value, which would shift the positions of the events after it.
func rowOf(entries []Entry) ([]int64, []byte, error) {
	txs := make([]int64, len(entries))
	size := len(entries) + 1
	for i, e := range entries {
		switch {
		case e.Tx > math.MaxInt64:
			return nil, nil, fmt.Errorf("append %d events: event %d: tx %d out of range", len(entries), i, e.Tx)
		case len(e.Event) == 0:
			return nil, nil, fmt.Errorf("append %d events: event %d of tx %d: empty", len(entries), i, e.Tx)
		case !json.Valid(e.Event):
			return nil, nil, fmt.Errorf("append %d events: event %d of tx %d: not JSON", len(entries), i, e.Tx)
		}
		txs[i] = int64(e.Tx)
		size += len(e.Event)
	}
	events := make([]byte, 0, size)
	events = append(events, '[')
	for i, e := range entries {
		if i > 0 {
			events = append(events, ',')
		}
		events = append(events, e.Event...)
	}
	events = append(events, ']')
	return txs, events, nil
}

// Last returns the seq of node's newest row and how many events it holds, or
// zeros if node has no row. After an Append that failed, it tells whether the
// row was written all the same (the answer to a commit can be lost).
func (s *Store) Last(ctx context.Context, node string) (seq int64, events int, err error) {
	// The row may be on the server and not yet on its synchronous standby
	// (the append's wait for it was cancelled): report it only once it is
	// on both, or it could be taken for durable and lost in a failover.
	// A fenced store asks only while its lease holds: after a take-over
	// the newest row is the new holder's, and could pass for the one an
	// append of the old holder failed to confirm.
	var row queries.LogLastByNodeRow
	c, err := s.pool.Acquire(ctx)
	if err == nil {
		err = syncrep.Barrier(ctx, c.Conn())
		c.Release()
	}
	if err == nil {
		err = s.fenced(ctx, node, func(db queries.DBTX) (err error) {
			row, err = s.q.LogLastByNode(ctx, db, node)
			return err
		})
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, 0, nil
	case err != nil:
		return 0, 0, fmt.Errorf("last row of %s: %w", node, err)
	}
	return row.Seq, int(row.Events), nil
}

// Scan calls fn with each of node's events in log order, reading the log in pages so
// memory stays bounded. It stops at the first error from fn and returns it wrapped.
//
// Scan is meant for a node reading back its own log while it is not appending:
// rows appended during the scan may or may not be seen.
func (s *Store) Scan(ctx context.Context, node string, fn func(Record) error) error {
	var after int64
	for {
		page, err := s.q.LogListByNode(ctx, s.pool, queries.LogListByNodeParams{
			Node:     node,
			AfterSeq: after,
			MaxRows:  scanPage,
		})
		if err != nil {
			return fmt.Errorf("scan log of %s after seq %d: %w", node, after, err)
		}
		for _, row := range page {
			if err := eachRecord(row, fn); err != nil {
				return fmt.Errorf("scan log of %s: %w", node, err)
			}
		}
		if len(page) < scanPage {
			return nil
		}
		after = page[len(page)-1].Seq
	}
}

// eachRecord calls fn with each event of row, in order.
func eachRecord(row queries.TpcdLog, fn func(Record) error) error {
	var events []json.RawMessage
	if err := json.Unmarshal(row.Events, &events); err != nil {
		return fmt.Errorf("row %d: events are not a JSON array: %w", row.Seq, err)
	}
	if len(events) != len(row.Txs) {
		return fmt.Errorf("row %d: %d events but %d transactions", row.Seq, len(events), len(row.Txs))
	}
	for i, ev := range events {
		r := Record{Pos: Pos{Seq: row.Seq, Index: i}, Node: row.Node, Tx: uint64(row.Txs[i]), Payload: ev, At: row.CreatedAt}
		if err := fn(r); err != nil {
			return fmt.Errorf("at %s: %w", r.Pos, err)
		}
	}
	return nil
}

// TxRows returns every event of node's rows that hold an event of transaction
// tx, in log order: the transaction's own events and those of other
// transactions appended with them (Record.Tx tells them apart). It returns
// none if tx has no events, or if they were compacted.
func (s *Store) TxRows(ctx context.Context, node string, tx uint64) ([]Record, error) {
	if tx > math.MaxInt64 {
		return nil, fmt.Errorf("rows of %s tx %d: tx out of range", node, tx)
	}
	rows, err := s.q.LogListByTx(ctx, s.pool, queries.LogListByTxParams{Node: node, Tx: int64(tx)})
	if err != nil {
		return nil, fmt.Errorf("rows of %s tx %d: %w", node, tx, err)
	}
	var recs []Record
	for _, row := range rows {
		err := eachRecord(row, func(r Record) error {
			recs = append(recs, r)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("rows of %s tx %d: %w", node, tx, err)
		}
	}
	return recs, nil
}

// Ended names a transaction that is over, for compaction: Tx, whose events
// up to row UpToSeq, the last row of the log when it ended, may go. Events of
// the same id appended later belong to another transaction (a participant
// that joined a new cluster meets the ids again) and stay.
type Ended struct {
	Tx      uint64
	UpToSeq int64
}

// Cut names the events of transaction Tx in row Seq.
type Cut struct {
	Seq int64
	Tx  uint64
}

// Compact removes the events of ended transactions from node's log, all of it
// or, on an error, none: it deletes the rows drop, every transaction of which
// has ended, and removes from each row that stays the events cuts name, so
// that no row keeps part of an ended transaction's history (a restart would
// fold it into a transaction that never ends). The caller decides what has
// ended; the log only refuses to delete a row with a node-level event (tx 0)
// or a violation, and to cut a violation. Compact returns how many rows it
// deleted and how many it trimmed.
// A fenced store (Fenced) compacts its node's log only while its lease
// holds, and a take-over waits for a compaction under way: a compaction
// cut short by a take-over would otherwise remove rows while the new
// holder reads them.
func (s *Store) Compact(ctx context.Context, node string, drop []int64, cuts []Cut) (deleted, trimmed int64, err error) {
	if len(drop) == 0 && len(cuts) == 0 {
		return 0, 0, nil
	}
	arg := queries.LogCompactParams{Node: node, Drop: drop, CutSeqs: make([]int64, 0, len(cuts)), CutTxs: make([]int64, 0, len(cuts))}
	if arg.Drop == nil {
		arg.Drop = []int64{} // NULL would make = ANY unknown, not false
	}
	for _, c := range cuts {
		// No stored tx can be this large, so there is nothing to cut.
		if c.Tx <= math.MaxInt64 {
			arg.CutSeqs = append(arg.CutSeqs, c.Seq)
			arg.CutTxs = append(arg.CutTxs, int64(c.Tx))
		}
	}
	var n queries.LogCompactRow
	err = s.fenced(ctx, node, func(db queries.DBTX) (err error) {
		n, err = s.q.LogCompact(ctx, db, arg)
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("compact log of %s (%d rows, %d cuts): %w", node, len(drop), len(cuts), err)
	}
	return n.Deleted, n.Trimmed, nil
}

// Nodes returns the names of all nodes with rows in the log, sorted.
func (s *Store) Nodes(ctx context.Context) ([]string, error) {
	nodes, err := s.q.LogListNodes(ctx, s.pool)
	if err != nil {
		return nil, fmt.Errorf("list log nodes: %w", err)
	}
	return nodes, nil
}

// Count returns how many rows and events node has in the log.
func (s *Store) Count(ctx context.Context, node string) (Size, error) {
	c, err := s.q.LogCountByNode(ctx, s.pool, node)
	if err != nil {
		return Size{}, fmt.Errorf("count log of %s: %w", node, err)
	}
	return Size{Rows: c.Rows, Events: c.Events}, nil
}
