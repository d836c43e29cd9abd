package client

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/shard"
)

// Limits of a load.
const (
	// sampleRows is how many rows the column types are guessed from.
	sampleRows = 1000
	// maxStmtBytes and maxStmtParams bound one INSERT, well under the
	// coordinator's 1 MiB request limit and PostgreSQL's 65535 parameters.
	maxStmtBytes  = 256 << 10
	maxStmtParams = 60000
	// loadAttempts is how often a transaction is tried before the load
	// gives up (a vote timeout or a lost connection may abort a transaction
	// that would commit on a second try).
	loadAttempts = 3
	// atomicChunkRows is how many rows an atomic load sends at a time: its
	// one transaction may hold only so many statements (the coordinator's
	// --max-statements), so they are as large as the limits above allow.
	atomicChunkRows = 5000
)

// LoadSummary is what a load did.
type LoadSummary struct {
	Table   string   `json:"table"`
	File    string   `json:"file"`
	Key     string   `json:"key"`
	Columns []Column `json:"columns"`
	Created bool     `json:"created"`
	Atomic  bool     `json:"atomic"`
	// Rows counts committed rows; RowsPerNode splits them by participant.
	Rows         int64   `json:"rows"`
	RowsPerNode  []int64 `json:"rows_per_node"`
	Transactions int     `json:"transactions"`
	// Aborts counts transactions that aborted (each was retried, or the
	// load stopped).
	Aborts  int     `json:"aborts"`
	Seconds float64 `json:"seconds"`
}

// Column is a CSV column and the SQL type guessed for it.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

func (s *LoadSummary) String() string {
	rate := 0.0
	if s.Seconds > 0 {
		rate = float64(s.Rows) / s.Seconds
	}
	per := make([]string, len(s.RowsPerNode))
	for i, n := range s.RowsPerNode {
		per[i] = fmt.Sprintf("@%d %d", i, n)
	}
	txs := fmt.Sprintf("%d transactions", s.Transactions)
	if s.Atomic {
		txs = "one transaction"
		if s.Transactions == 0 {
			txs = "no transaction"
		}
	}
	return fmt.Sprintf("loaded %d rows into %s in %s (%d aborted) in %.2fs, %.0f rows/s; rows per node: %s",
		s.Rows, s.Table, txs, s.Aborts, s.Seconds, rate, strings.Join(per, ", "))
}

// Load streams a CSV file into a table split across the participants: row
// r goes to participant shard.NodeFor(r[key], N). Every opts.TxSize rows are
// committed together in one distributed transaction, or with opts.Atomic
// all rows in one. With opts.Create the table is first created on every
// participant (in one transaction too, or in the atomic load's). A table
// that already holds rows is refused unless opts.Append. A value the
// servers refuse is reported with its line and column in the file. A
// progress bar is drawn on progress if it is not nil. The summary is
// returned also when the load stops early, with what was committed. Load
// returns once what it committed is applied on every participant.
func Load(ctx context.Context, s *Session, opts LoadOptions, progress io.Writer) (*LoadSummary, error) {
	if err := opts.Check(); err != nil {
		return nil, err
	}
	if s.Tx() != 0 {
		return nil, fmt.Errorf("load runs its own transactions; commit or rollback transaction %d first", s.Tx())
	}
	if err := s.check(ctx); err != nil {
		return nil, s.explain(err)
	}
	n := s.Participants()
	if n == 0 {
		return nil, errors.New("load: the coordinator reports no participants")
	}
	if opts.Nodes > n {
		return nil, fmt.Errorf("load: --n-nodes %d: the coordinator has only %d participants (@0..@%d)", opts.Nodes, n, n-1)
	}
	if opts.Nodes > 0 {
		n = opts.Nodes
	}
	for attempt := 1; ; attempt++ {
		l, err := openLoad(s, opts, n)
		if err != nil {
			return nil, err
		}
		started := time.Now()
		if progress != nil {
			l.bar = &progressBar{w: progress, size: l.src.size, start: started, label: "loading " + opts.Table}
		}
		var retry bool
		if opts.Atomic {
			retry, err = l.loadAtomic(ctx)
		} else {
			err = l.loadBatches(ctx)
		}
		if applied := l.waitApplied(ctx); err == nil {
			err = applied
		}
		l.sum.Seconds = time.Since(started).Seconds()
		if l.bar != nil {
			l.bar.clear()
		}
		l.src.close()
		// Only an atomic load starts over: it left nothing behind.
		if !retry || attempt == loadAttempts || ctx.Err() != nil {
			return l.sum, err
		}
		s.opts.Notice(fmt.Sprintf("load: %v; trying again from the start", err))
	}
}

// loader is one pass over the file.
type loader struct {
	s      *Session
	opts   LoadOptions
	src    *csvSource
	cols   []Column
	keyIdx int
	n      int
	sum    *LoadSummary
	bar    *progressBar
	// committed are the transactions the pass committed, which it waits
	// to see applied before it reports them loaded.
	committed []engine.TxID
}

// waitApplied returns once every transaction the pass committed is applied
// on every participant: commit answers once the outcome is decided, and a
// query run right after the load must find every row it reported.
func (l *loader) waitApplied(ctx context.Context) error {
	for _, tx := range l.committed {
		if err := api.WaitApplied(ctx, l.s.call, tx); err != nil {
			return fmt.Errorf("load: %w", err)
		}
	}
	return nil
}

// openLoad opens the file and reads its header and sample, from which the
// column types are guessed.
func openLoad(s *Session, opts LoadOptions, n int) (*loader, error) {
	src, err := openCSV(opts.File, opts.source())
	if err != nil {
		return nil, err
	}
	keyIdx := -1
	for i, h := range src.header {
		if h == opts.Key {
			keyIdx = i
		}
	}
	if keyIdx < 0 {
		src.close()
		return nil, fmt.Errorf("load %s: --key %q is not a column; the header has %s", opts.source(), opts.Key, strings.Join(src.header, ", "))
	}
	cols := make([]Column, len(src.header))
	for i, h := range src.header {
		vals := make([]string, len(src.sample))
		for j, rec := range src.sample {
			vals[j] = rec.fields[i]
		}
		cols[i] = Column{Name: h, Type: InferType(vals)}
		if t := opts.Types[h]; t != "" {
			cols[i].Type = t
		}
	}
	return &loader{
		s: s, opts: opts, src: src, cols: cols, keyIdx: keyIdx, n: n,
		sum: &LoadSummary{Table: opts.Table, File: opts.source(), Key: opts.Key, Columns: cols, Atomic: opts.Atomic, RowsPerNode: make([]int64, n)},
	}, nil
}

// loadBatches commits every opts.TxSize rows in a transaction of their own.
func (l *loader) loadBatches(ctx context.Context) error {
	if l.opts.Create {
		if err := l.create(ctx); err != nil {
			return err
		}
		l.sum.Created = true
	}
	if !l.opts.Append {
		if err := l.refuseNonEmpty(ctx, nil); err != nil {
			return err
		}
	}
	for {
		recs, readErr := l.src.next(l.opts.TxSize)
		if len(recs) > 0 {
			if err := l.batch(ctx, recs); err != nil {
				return err
			}
			l.drawProgress(false)
		}
		if readErr != nil {
			return l.endOfFile(readErr)
		}
	}
}

// loadAtomic sends every row in one transaction and commits it: all rows
// are loaded or none. retry reports whether starting over may work.
func (l *loader) loadAtomic(ctx context.Context) (retry bool, err error) {
	tx, err := l.begin(ctx)
	if err != nil {
		return retryable(err), fmt.Errorf("load: %w", err)
	}
	defer func() {
		if err != nil {
			tx.rollback(ctx)
			l.sum.Rows, l.sum.RowsPerNode = 0, make([]int64, l.n)
		}
	}()
	if l.opts.Create {
		if err := tx.exec(ctx, l.everyNode(l.createSQL())); err != nil {
			return retryable(err), fmt.Errorf("load: create table %s: %w", l.opts.Table, err)
		}
	}
	if !l.opts.Append {
		if err := l.refuseNonEmpty(ctx, tx); err != nil {
			return retryable(err), err
		}
	}
	for {
		recs, readErr := l.src.next(atomicChunkRows)
		if len(recs) > 0 {
			byNode, stmts := l.route(recs)
			if err := tx.exec(ctx, stmts); err != nil {
				return retryable(err), l.rowError(ctx, recs, err)
			}
			l.count(byNode)
			l.drawProgress(false)
		}
		if readErr != nil {
			if err := l.endOfFile(readErr); err != nil {
				return false, err
			}
			break
		}
	}
	retry, err = tx.commit(ctx)
	l.sum.Transactions++
	if err != nil {
		l.sum.Aborts++
		return retry, fmt.Errorf("load: no rows loaded: %w", err)
	}
	l.committed = append(l.committed, tx.id)
	l.sum.Created = l.opts.Create
	l.drawProgress(true)
	return false, nil
}

// endOfFile turns the reader's last error into the load's: none at the
// end of the file.
func (l *loader) endOfFile(readErr error) error {
	if errors.Is(readErr, io.EOF) {
		l.drawProgress(true)
		return nil
	}
	return fmt.Errorf("load %s: %w", l.opts.source(), readErr)
}

func (l *loader) drawProgress(done bool) {
	if l.bar == nil {
		return
	}
	offset := l.src.offset()
	if done {
		offset = l.src.size
	}
	l.bar.update(l.sum.Rows, offset, done)
}

// createSQL creates the table with the guessed column types.
func (l *loader) createSQL() string {
	defs := make([]string, len(l.cols))
	for i, c := range l.cols {
		defs[i] = quoteIdent(c.Name) + " " + c.Type
	}
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s)", quoteTable(l.opts.Table), strings.Join(defs, ", "))
}

// everyNode runs sql once on every participant.
func (l *loader) everyNode(sql string) map[engine.NodeID][]stmt {
	stmts := make(map[engine.NodeID][]stmt, l.n)
	for i := range l.n {
		stmts[engine.NodeID(i)] = []stmt{{sql: sql}}
	}
	return stmts
}

// create makes the table on every participant in one distributed
// transaction, so that it exists everywhere or nowhere.
func (l *loader) create(ctx context.Context) error {
	tx, _, err := l.transact(ctx, l.everyNode(l.createSQL()))
	if err != nil {
		return fmt.Errorf("load: create table %s: %w", l.opts.Table, err)
	}
	// The rows must not reach a participant before its CREATE TABLE is
	// applied there.
	if err := api.WaitApplied(ctx, l.s.call, tx); err != nil {
		return fmt.Errorf("load: create table %s: %w", l.opts.Table, l.s.explain(err))
	}
	return nil
}

// refuseNonEmpty fails if the table holds rows on any participant: loading
// the same file twice would double them. It looks in tx, or in a
// transaction of its own that it rolls back.
func (l *loader) refuseNonEmpty(ctx context.Context, tx *loadTx) error {
	if tx == nil {
		var err error
		if tx, err = l.begin(ctx); err != nil {
			return fmt.Errorf("load: check that %s is empty: %w", l.opts.Table, err)
		}
		defer tx.rollback(ctx)
	}
	stmts := l.everyNode(fmt.Sprintf("SELECT 1 FROM %s LIMIT 1", quoteTable(l.opts.Table)))
	results, err := tx.query(ctx, stmts)
	if err != nil {
		return fmt.Errorf("load: check that %s is empty: %w", l.opts.Table, err)
	}
	var holding []string
	for i := range l.n {
		if r := results[engine.NodeID(i)]; r != nil && len(r.Rows) > 0 {
			holding = append(holding, fmt.Sprintf("@%d", i))
		}
	}
	if len(holding) > 0 {
		return fmt.Errorf("load: table %s already holds rows (on %s); loading would add to them: give --append if that is what you want", l.opts.Table, strings.Join(holding, ", "))
	}
	return nil
}

type stmt struct {
	sql  string
	args []any
	recs []record // the rows an INSERT carries
}

// route splits rows by participant and turns them into INSERTs.
func (l *loader) route(recs []record) ([][]record, map[engine.NodeID][]stmt) {
	byNode := make([][]record, l.n)
	for _, rec := range recs {
		i := shard.NodeFor(rec.fields[l.keyIdx], l.n)
		byNode[i] = append(byNode[i], rec)
	}
	stmts := make(map[engine.NodeID][]stmt, l.n)
	for i, rows := range byNode {
		if len(rows) > 0 {
			stmts[engine.NodeID(i)] = l.inserts(rows)
		}
	}
	return byNode, stmts
}

// count adds committed (or, in an atomic load, sent) rows to the summary.
func (l *loader) count(byNode [][]record) {
	for i, rows := range byNode {
		l.sum.RowsPerNode[i] += int64(len(rows))
		l.sum.Rows += int64(len(rows))
	}
}

// batch commits one transaction's worth of rows, retrying it when it
// aborted for a reason other than a failing statement.
func (l *loader) batch(ctx context.Context, recs []record) error {
	byNode, stmts := l.route(recs)
	for attempt := 1; ; attempt++ {
		id, retry, err := l.transact(ctx, stmts)
		if err == nil {
			l.committed = append(l.committed, id)
			l.sum.Transactions++
			l.count(byNode)
			return nil
		}
		l.sum.Aborts++
		if !retry || attempt == loadAttempts || ctx.Err() != nil {
			return l.rowError(ctx, recs, err)
		}
	}
}

// inserts turns rows into INSERT statements with parameters, as few as the
// limits allow. Empty fields are NULL.
func (l *loader) inserts(rows []record) []stmt {
	names := make([]string, len(l.cols))
	for i, c := range l.cols {
		names[i] = quoteIdent(c.Name)
	}
	head := fmt.Sprintf("INSERT INTO %s (%s) VALUES ", quoteTable(l.opts.Table), strings.Join(names, ", "))
	var out []stmt
	var b strings.Builder
	var args []any
	var recs []record
	size := 0
	emit := func() {
		if len(recs) > 0 {
			out = append(out, stmt{sql: b.String(), args: args, recs: recs})
		}
		b.Reset()
		args, recs, size = nil, nil, 0
	}
	for _, rec := range rows {
		if len(recs) > 0 && (size > maxStmtBytes || len(args)+len(rec.fields) > maxStmtParams) {
			emit()
		}
		if len(recs) == 0 {
			b.WriteString(head)
		} else {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for i, v := range rec.fields {
			if i > 0 {
				b.WriteString(", ")
			}
			args = append(args, nullable(v))
			fmt.Fprintf(&b, "$%d", len(args))
			size += len(v) + 8
		}
		b.WriteByte(')')
		recs = append(recs, rec)
	}
	emit()
	return out
}

func nullable(v string) any {
	if v == "" {
		return nil
	}
	return v
}

// record is a row of the file and where its fields start there.
type record struct {
	fields []string
	lines  []int // line of each field (a quoted field may span lines)
}

// csvSource reads the file: the header, a sample of the first rows for
// the types, then the rest.
type csvSource struct {
	f      *os.File
	r      *csv.Reader
	size   int64
	header []string
	sample []record
	err    error // what ended the sample, if it ended the file early
}

func openCSV(path, file string) (*csvSource, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	src := &csvSource{f: f, r: csv.NewReader(bufio.NewReaderSize(f, 1<<16))}
	if st, err := f.Stat(); err == nil {
		src.size = st.Size()
	}
	header, err := src.r.Read()
	if err != nil {
		f.Close()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("load %s: the file is empty; its first line must name the columns", file)
		}
		return nil, fmt.Errorf("load %s: %w", file, err)
	}
	seen := map[string]bool{}
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		header[i] = h
		if h == "" {
			f.Close()
			return nil, fmt.Errorf("load %s: column %d of the header has no name", file, i+1)
		}
		if seen[h] {
			f.Close()
			return nil, fmt.Errorf("load %s: column %q appears twice in the header", file, h)
		}
		seen[h] = true
	}
	src.header = header
	for len(src.sample) < sampleRows {
		rec, err := src.read()
		if err != nil {
			src.err = err
			break
		}
		src.sample = append(src.sample, rec)
	}
	return src, nil
}

func (c *csvSource) read() (record, error) {
	fields, err := c.r.Read()
	if err != nil {
		return record{}, err
	}
	rec := record{fields: fields, lines: make([]int, len(fields))}
	for i := range fields {
		rec.lines[i], _ = c.r.FieldPos(i)
	}
	return rec, nil
}

// next returns up to n rows: the sample's first, then the file's. With
// fewer than n, the error says why (io.EOF at the end of the file).
func (c *csvSource) next(n int) ([]record, error) {
	var out []record
	for len(out) < n {
		if len(c.sample) > 0 {
			out = append(out, c.sample[0])
			c.sample = c.sample[1:]
			continue
		}
		if c.err != nil {
			return out, c.err
		}
		rec, err := c.read()
		if err != nil {
			c.err = err
			return out, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// offset is how far the reader got into the file, in bytes.
func (c *csvSource) offset() int64 { return c.r.InputOffset() }

func (c *csvSource) close() { c.f.Close() }
