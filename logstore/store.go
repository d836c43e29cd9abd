package logstore

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/queries"
)

// scanPage is how many records Scan holds at once: big enough that round trips do not
// dominate a recovery, small enough that memory stays flat however long the log is.
const scanPage = 1000

// Record is one event of a node's log.
type Record struct {
	// Seq orders all events of a log; it is assigned by the database on Append.
	Seq  int64
	Node string
	// Tx is the transaction the event belongs to; 0 marks a node-level event.
	Tx   uint64
	Kind string
	// Payload is a JSON document. The database stores it as jsonb, so it reads back
	// equal as JSON but not necessarily byte for byte (key order, spacing).
	Payload []byte
	// At is when the database stored the event; it is informational only.
	At time.Time
}

// Store reads and writes the event log in one PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool
	q    *queries.Queries
}

// New returns a Store over pool, whose database must have been migrated with
// db.MigrateLog. The caller keeps ownership of pool.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool, q: queries.New()}
}

// Append durably writes recs in one round trip, whatever their number, and returns
// their seq values in the order of recs. Only Node, Tx, Kind and Payload are used;
// recs is not modified.
func (s *Store) Append(ctx context.Context, recs []Record) ([]int64, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	arg := queries.EventAppendManyParams{
		Nodes:    make([]string, len(recs)),
		Txs:      make([]int64, len(recs)),
		Kinds:    make([]string, len(recs)),
		Payloads: make([][]byte, len(recs)),
	}
	for i, r := range recs {
		// Reject here what the database would reject anyway, with a clearer message,
		// and never let a huge tx id wrap into a negative one.
		if r.Tx > math.MaxInt64 {
			return nil, fmt.Errorf("append %d events: record %d: tx %d out of range", len(recs), i, r.Tx)
		}
		if len(r.Payload) == 0 {
			return nil, fmt.Errorf("append %d events: record %d (%s): empty payload", len(recs), i, r.Kind)
		}
		arg.Nodes[i] = r.Node
		arg.Txs[i] = int64(r.Tx)
		arg.Kinds[i] = r.Kind
		arg.Payloads[i] = r.Payload
	}
	seqs, err := s.q.EventAppendMany(ctx, s.pool, arg)
	if err != nil {
		return nil, fmt.Errorf("append %d events: %w", len(recs), err)
	}
	if len(seqs) != len(recs) {
		return nil, fmt.Errorf("append %d events: database returned %d seqs", len(recs), len(seqs))
	}
	// Rows are inserted, and their seq drawn, in array order, but SQL does not promise
	// RETURNING keeps that order; sorting restores it without relying on it.
	slices.Sort(seqs)
	return seqs, nil
}

// Scan calls fn with each of node's events in seq order, reading the log in pages so
// memory stays bounded. It stops at the first error from fn and returns it wrapped.
//
// Scan is meant for a node reading back its own log while it is not appending:
// events appended during the scan may or may not be seen.
func (s *Store) Scan(ctx context.Context, node string, fn func(Record) error) error {
	var after int64
	for {
		page, err := s.q.EventListByNode(ctx, s.pool, queries.EventListByNodeParams{
			Node:     node,
			AfterSeq: after,
			MaxRows:  scanPage,
		})
		if err != nil {
			return fmt.Errorf("scan events of %s after seq %d: %w", node, after, err)
		}
		for _, row := range page {
			if err := fn(fromRow(row)); err != nil {
				return fmt.Errorf("scan events of %s at seq %d: %w", node, row.Seq, err)
			}
		}
		if len(page) < scanPage {
			return nil
		}
		after = page[len(page)-1].Seq
	}
}

// TxEvents returns node's events of transaction tx in seq order (none if there are
// none, or if they were compacted).
func (s *Store) TxEvents(ctx context.Context, node string, tx uint64) ([]Record, error) {
	if tx > math.MaxInt64 {
		return nil, fmt.Errorf("events of %s tx %d: tx out of range", node, tx)
	}
	rows, err := s.q.EventListByTx(ctx, s.pool, queries.EventListByTxParams{Node: node, Tx: int64(tx)})
	if err != nil {
		return nil, fmt.Errorf("events of %s tx %d: %w", node, tx, err)
	}
	recs := make([]Record, len(rows))
	for i, row := range rows {
		recs[i] = fromRow(row)
	}
	return recs, nil
}

// Ended names a transaction whose events may be compacted: Tx, with every
// event of it up to UpToSeq, the last seq of the log when it ended. Events
// of the same id appended later belong to another transaction (a
// participant that joined a new cluster meets the ids again) and stay.
type Ended struct {
	Tx      uint64
	UpToSeq int64
}

// DeleteTxs removes node's events of the ended transactions, leaving other
// nodes' events, later events of the same ids and violations alone, and
// returns how many it removed.
func (s *Store) DeleteTxs(ctx context.Context, node string, ended []Ended) (int64, error) {
	if len(ended) == 0 {
		return 0, nil
	}
	arg := queries.EventDeleteByTxsParams{Node: node, Txs: make([]int64, 0, len(ended)), UpToSeqs: make([]int64, 0, len(ended))}
	for _, e := range ended {
		// No stored tx can be this large, so there is nothing to delete for it.
		if e.Tx <= math.MaxInt64 {
			arg.Txs = append(arg.Txs, int64(e.Tx))
			arg.UpToSeqs = append(arg.UpToSeqs, e.UpToSeq)
		}
	}
	n, err := s.q.EventDeleteByTxs(ctx, s.pool, arg)
	if err != nil {
		return 0, fmt.Errorf("delete events of %d txs of %s: %w", len(ended), node, err)
	}
	return n, nil
}

// Nodes returns the names of all nodes with events in the log, sorted.
func (s *Store) Nodes(ctx context.Context) ([]string, error) {
	nodes, err := s.q.EventListNodes(ctx, s.pool)
	if err != nil {
		return nil, fmt.Errorf("list log nodes: %w", err)
	}
	return nodes, nil
}

// Count returns how many events node has in the log.
func (s *Store) Count(ctx context.Context, node string) (int64, error) {
	n, err := s.q.EventCountByNode(ctx, s.pool, node)
	if err != nil {
		return 0, fmt.Errorf("count events of %s: %w", node, err)
	}
	return n, nil
}

func fromRow(row queries.TpcdEvent) Record {
	return Record{
		Seq:     row.Seq,
		Node:    row.Node,
		Tx:      uint64(row.Tx),
		Kind:    row.Kind,
		Payload: row.Payload,
		At:      row.CreatedAt,
	}
}
