package node

import (
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/logstore"
)

// rowIndex knows, for compaction, which rows of a node's log hold which
// transactions. The log keeps the events of one append in one row, so a row
// may go only once every transaction in it has ended. When a transaction
// ends, its events must leave every row, or a restart would fold what is
// left of it (a part.prepared without its part.committed) into a
// transaction that never ended: so the rows it shares with transactions
// still live are cut (its events removed from them) rather than left. A row
// holding a node-level event (cluster identity, epochs, id reservations:
// fencing) or a violation (evidence) is never deleted, only cut.
//
// Only rows not yet deleted are in it, and only while one of their
// transactions has not ended: rows holding no transaction at all are never
// entered. A transaction that never ends holds nothing beyond its own rows.
// The zero value is not ready; use newRowIndex. Not safe for concurrent use.
type rowIndex struct {
	// rows maps a row's seq to what still keeps it.
	rows map[int64]rowHold
	// txs maps a transaction to the rows holding its events.
	txs map[uint64]rowSeqs
}

// rowHold is what keeps a row in the log.
type rowHold struct {
	// open counts the row's transactions that have not ended (violations
	// are not counted: they stay, whoever they name).
	open int32
	// forever is set for a row with a node-level event or a violation.
	forever bool
}

func newRowIndex() rowIndex {
	return rowIndex{rows: map[int64]rowHold{}, txs: map[uint64]rowSeqs{}}
}

// add enters row seq, which holds evs. Rows must be added in seq order, and
// each once.
func (x *rowIndex) add(seq int64, evs []engine.Event) {
	var h rowHold
	for _, ev := range evs {
		tx := uint64(ev.Tx())
		if _, violation := ev.(engine.PartViolation); violation || tx == 0 {
			h.forever = true
			continue
		}
		s := x.txs[tx]
		if s.last() == seq {
			continue // another event of tx in this row
		}
		s.push(seq)
		x.txs[tx] = s
		h.open++
	}
	if h.open > 0 {
		x.rows[seq] = h
	}
}

// end notes that transaction e.Tx ended: its rows up to e.UpToSeq no longer
// wait for it (its later rows, if any, belong to another transaction of the
// same id, which a participant that joined a new cluster meets). It appends
// to drop the rows nothing keeps any more, and to cuts the rows that stay,
// whose events of e.Tx must go, and returns both.
func (x *rowIndex) end(e logstore.Ended, drop []int64, cuts []logstore.Cut) ([]int64, []logstore.Cut) {
	s, ok := x.txs[e.Tx]
	if !ok {
		return drop, cuts
	}
	n := 0
	for ; n < s.n && s.at(n) <= e.UpToSeq; n++ {
		seq := s.at(n)
		h := x.rows[seq]
		h.open--
		switch {
		case h.open > 0:
			x.rows[seq] = h
			cuts = append(cuts, logstore.Cut{Seq: seq, Tx: e.Tx})
		case h.forever:
			delete(x.rows, seq)
			cuts = append(cuts, logstore.Cut{Seq: seq, Tx: e.Tx})
		default:
			delete(x.rows, seq)
			drop = append(drop, seq)
		}
	}
	switch {
	case n == s.n:
		delete(x.txs, e.Tx)
	case n > 0:
		x.txs[e.Tx] = s.from(n)
	}
	return drop, cuts
}

// rowSeqs are the seqs of the rows holding one transaction, ascending. A
// transaction's events span a few appends, so the first seqs sit inline:
// tracking a transaction costs no allocation of its own.
type rowSeqs struct {
	n    int
	head [3]int64
	tail []int64 // the seqs after head's
}

func (s *rowSeqs) push(seq int64) {
	if s.n < len(s.head) {
		s.head[s.n] = seq
	} else {
		s.tail = append(s.tail, seq)
	}
	s.n++
}

func (s *rowSeqs) at(i int) int64 {
	if i < len(s.head) {
		return s.head[i]
	}
	return s.tail[i-len(s.head)]
}

// last returns the highest seq, 0 if there is none (no row has seq 0).
func (s *rowSeqs) last() int64 {
	if s.n == 0 {
		return 0
	}
	return s.at(s.n - 1)
}

// from returns the seqs from the i-th on.
func (s *rowSeqs) from(i int) rowSeqs {
	var r rowSeqs
	for ; i < s.n; i++ {
		r.push(s.at(i))
	}
	return r
}
