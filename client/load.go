package client

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
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
	// loadAttempts is how often a batch is tried before the load gives up
	// (a vote timeout or a lost connection may abort a transaction that
	// would commit on a second try).
	loadAttempts = 3
)

// LoadSummary is what a load did.
type LoadSummary struct {
	Table   string   `json:"table"`
	File    string   `json:"file"`
	Key     string   `json:"key"`
	Columns []Column `json:"columns"`
	Created bool     `json:"created"`
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
	return fmt.Sprintf("loaded %d rows into %s in %d transactions (%d aborted) in %.2fs, %.0f rows/s; rows per node: %s",
		s.Rows, s.Table, s.Transactions, s.Aborts, s.Seconds, rate, strings.Join(per, ", "))
}

// Load streams a CSV file into a table split across the participants: row
// r goes to participant shard.NodeFor(r[key], N), and every opts.TxSize
// rows are committed together in one distributed transaction. With
// opts.Create the table is first created on every participant, in one
// transaction too. A progress bar is drawn on progress if it is not nil. The summary is
// returned also when the load stops early, with what was committed.
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
	f, err := os.Open(opts.File)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	defer f.Close()
	var size int64
	if st, err := f.Stat(); err == nil {
		size = st.Size()
	}
	cr := csv.NewReader(bufio.NewReaderSize(f, 1<<16))
	header, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("load %s: the file is empty; its first line must name the columns", opts.File)
		}
		return nil, fmt.Errorf("load %s: %w", opts.File, err)
	}
	keyIdx := -1
	seen := map[string]bool{}
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		header[i] = h
		if h == "" {
			return nil, fmt.Errorf("load %s: column %d of the header has no name", opts.File, i+1)
		}
		if seen[h] {
			return nil, fmt.Errorf("load %s: column %q appears twice in the header", opts.File, h)
		}
		seen[h] = true
		if h == opts.Key {
			keyIdx = i
		}
	}
	if keyIdx < 0 {
		return nil, fmt.Errorf("load %s: --key %q is not a column; the header has %s", opts.File, opts.Key, strings.Join(header, ", "))
	}

	// Read a sample first: the types are guessed from it.
	var sample [][]string
	var readErr error
	for len(sample) < sampleRows {
		rec, err := cr.Read()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				readErr = fmt.Errorf("load %s: %w", opts.File, err)
			}
			break
		}
		sample = append(sample, rec)
	}
	cols := make([]Column, len(header))
	for i, h := range header {
		vals := make([]string, len(sample))
		for j, rec := range sample {
			vals[j] = rec[i]
		}
		cols[i] = Column{Name: h, Type: InferType(vals)}
	}

	l := &loader{
		s: s, opts: opts, cols: cols, keyIdx: keyIdx, n: n,
		sum: &LoadSummary{Table: opts.Table, File: opts.File, Key: opts.Key, Columns: cols, RowsPerNode: make([]int64, n)},
	}
	started := time.Now()
	defer func() { l.sum.Seconds = time.Since(started).Seconds() }()
	if progress != nil {
		l.bar = &progressBar{w: progress, size: size, start: started, label: "loading " + opts.Table}
		defer l.bar.clear()
	}
	if opts.Create {
		if err := l.create(ctx); err != nil {
			return nil, err
		}
		l.sum.Created = true
	}

	batch := make([][]string, 0, opts.TxSize)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := l.batch(ctx, batch); err != nil {
			return err
		}
		batch = batch[:0]
		if l.bar != nil {
			l.bar.update(l.sum.Rows, cr.InputOffset(), false)
		}
		return nil
	}
	for _, rec := range sample {
		batch = append(batch, rec)
		if len(batch) == opts.TxSize {
			if err := flush(); err != nil {
				return l.sum, err
			}
		}
	}
	if readErr != nil {
		if err := flush(); err != nil {
			return l.sum, err
		}
		return l.sum, readErr
	}
	// A full sample means the file may go on.
	for more := len(sample) == sampleRows; more; {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ferr := flush(); ferr != nil {
				return l.sum, ferr
			}
			return l.sum, fmt.Errorf("load %s: %w", opts.File, err)
		}
		batch = append(batch, rec)
		if len(batch) == opts.TxSize {
			if err := flush(); err != nil {
				return l.sum, err
			}
		}
	}
	if err := flush(); err != nil {
		return l.sum, err
	}
	if l.bar != nil {
		l.bar.update(l.sum.Rows, size, true)
	}
	return l.sum, nil
}

type loader struct {
	s      *Session
	opts   LoadOptions
	cols   []Column
	keyIdx int
	n      int
	sum    *LoadSummary
	bar    *progressBar
}

// create makes the table on every participant in one distributed
// transaction, so that it exists everywhere or nowhere.
func (l *loader) create(ctx context.Context) error {
	defs := make([]string, len(l.cols))
	for i, c := range l.cols {
		defs[i] = quoteIdent(c.Name) + " " + c.Type
	}
	sql := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (%s)", quoteTable(l.opts.Table), strings.Join(defs, ", "))
	stmts := make(map[engine.NodeID][]stmt, l.n)
	for i := range l.n {
		stmts[engine.NodeID(i)] = []stmt{{sql: sql}}
	}
	tx, _, err := l.transact(ctx, stmts)
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

type stmt struct {
	sql  string
	args []any
	rows int
}

// batch commits one transaction's worth of rows, retrying it when it
// aborted for a reason other than a failing statement.
func (l *loader) batch(ctx context.Context, recs [][]string) error {
	byNode := make([][][]string, l.n)
	for _, rec := range recs {
		i := shard.NodeFor(rec[l.keyIdx], l.n)
		byNode[i] = append(byNode[i], rec)
	}
	stmts := make(map[engine.NodeID][]stmt, l.n)
	for i, rows := range byNode {
		if len(rows) > 0 {
			stmts[engine.NodeID(i)] = l.inserts(rows)
		}
	}
	for attempt := 1; ; attempt++ {
		_, retry, err := l.transact(ctx, stmts)
		if err == nil {
			l.sum.Transactions++
			for i, rows := range byNode {
				l.sum.RowsPerNode[i] += int64(len(rows))
				l.sum.Rows += int64(len(rows))
			}
			return nil
		}
		l.sum.Aborts++
		if !retry || attempt == loadAttempts || ctx.Err() != nil {
			return fmt.Errorf("load: rows %d..%d: %w", l.sum.Rows+1, l.sum.Rows+int64(len(recs)), err)
		}
	}
}

// inserts turns rows into INSERT statements with parameters, as few as the
// limits allow. Empty fields are NULL.
func (l *loader) inserts(rows [][]string) []stmt {
	names := make([]string, len(l.cols))
	for i, c := range l.cols {
		names[i] = quoteIdent(c.Name)
	}
	head := fmt.Sprintf("INSERT INTO %s (%s) VALUES ", quoteTable(l.opts.Table), strings.Join(names, ", "))
	var out []stmt
	var b strings.Builder
	var args []any
	size, count := 0, 0
	emit := func() {
		if count > 0 {
			out = append(out, stmt{sql: b.String(), args: args, rows: count})
		}
		b.Reset()
		args, size, count = nil, 0, 0
	}
	for _, rec := range rows {
		if count > 0 && (size > maxStmtBytes || len(args)+len(rec) > maxStmtParams) {
			emit()
		}
		if count == 0 {
			b.WriteString(head)
		} else {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for i, v := range rec {
			if i > 0 {
				b.WriteString(", ")
			}
			args = append(args, nullable(v))
			fmt.Fprintf(&b, "$%d", len(args))
			size += len(v) + 8
		}
		b.WriteByte(')')
		count++
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

// transact runs stmts (per participant, in order) in one distributed
// transaction and commits it. retry reports whether trying again may work:
// the transaction aborted for a reason other than a failing statement, or
// the coordinator did not answer.
func (l *loader) transact(ctx context.Context, stmts map[engine.NodeID][]stmt) (tx engine.TxID, retry bool, err error) {
	s := l.s
	if s.broken {
		if err := s.check(ctx); err != nil {
			return 0, true, s.explain(err)
		}
	}
	var b engine.BeginReply
	if err := s.call(ctx, api.MethodBegin, struct{}{}, &b); err != nil {
		return 0, rpc.IsTransport(err), s.explain(err)
	}
	// Participants work in parallel; each one's statements run in order.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for nd, list := range stmts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, st := range list {
				var r engine.ExecReply
				err := s.rpc.Call(ctx, api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &nd, SQL: st.sql, Args: st.args}, &r)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		if rpc.IsTransport(firstErr) && ctx.Err() == nil {
			s.broken = true
		}
		// The transaction is doomed; say so now rather than leave it to
		// the idle timeout.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = s.rpc.Call(rctx, api.MethodRollback, api.TxParams{TxID: b.TxID}, nil)
		cancel()
		return b.TxID, rpc.IsTransport(firstErr) && ctx.Err() == nil, fmt.Errorf("transaction %d: %s", b.TxID, describe(firstErr, s.addr))
	}
	var out engine.OutcomeReply
	if err := s.call(ctx, api.MethodCommit, api.TxParams{TxID: b.TxID}, &out); err != nil {
		if !rpc.IsTransport(err) || ctx.Err() != nil {
			return b.TxID, false, fmt.Errorf("commit transaction %d: %s", b.TxID, describe(err, s.addr))
		}
		// The commit may or may not have happened: ask once the
		// coordinator answers again, so rows are neither lost nor doubled.
		if cerr := s.check(ctx); cerr != nil {
			return b.TxID, false, fmt.Errorf("commit transaction %d: outcome unknown, the coordinator is unreachable: %s", b.TxID, describe(cerr, s.addr))
		}
		var st engine.StatusReply
		if serr := s.call(ctx, api.MethodStatus, api.TxParams{TxID: b.TxID}, &st); serr != nil {
			return b.TxID, false, fmt.Errorf("commit transaction %d: outcome unknown: %s", b.TxID, describe(serr, s.addr))
		}
		switch st.State {
		case engine.PhaseCommitted.String(), engine.PhaseCommitting.String():
			return b.TxID, false, nil
		case engine.PhaseAborted.String(), engine.PhaseAborting.String(), "forgotten":
			return b.TxID, true, fmt.Errorf("transaction %d: %s", b.TxID, describeState(st))
		}
		return b.TxID, false, fmt.Errorf("commit transaction %d: outcome unknown (%s)", b.TxID, describeState(st))
	}
	if out.Outcome != engine.OutcomeCommit {
		// A failed statement would have failed its exec; an abort decided
		// at commit is a no vote or a timeout, which may pass next time.
		return b.TxID, true, &OutcomeError{TxID: b.TxID, Reason: out.Reason}
	}
	return b.TxID, false, nil
}

var (
	intRe   = regexp.MustCompile(`^[+-]?[0-9]+$`)
	floatRe = regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$`)
	dateRe  = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}$`)
	tsRe    = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$`)
)

// InferType guesses a column's SQL type from its values: bigint, double
// precision, boolean, date or timestamptz when every non-empty value reads
// as one, text otherwise (and for a column with no values).
func InferType(values []string) string {
	kinds := []struct {
		typ string
		ok  func(string) bool
	}{
		{"bigint", func(v string) bool {
			_, err := strconv.ParseInt(v, 10, 64)
			return err == nil && intRe.MatchString(v)
		}},
		{"double precision", floatRe.MatchString},
		{"boolean", func(v string) bool {
			switch strings.ToLower(v) {
			case "true", "false":
				return true
			}
			return false
		}},
		{"date", dateRe.MatchString},
		{"timestamptz", tsRe.MatchString},
	}
	if !slices.ContainsFunc(values, func(v string) bool { return v != "" }) {
		return "text"
	}
next:
	for _, k := range kinds {
		for _, v := range values {
			if v != "" && !k.ok(v) {
				continue next
			}
		}
		return k.typ
	}
	return "text"
}

// quoteIdent quotes a name for SQL, so any CSV header works as a column.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// quoteTable quotes schema.table or table.
func quoteTable(s string) string {
	parts := strings.Split(s, ".")
	for i, p := range parts {
		parts[i] = quoteIdent(p)
	}
	return strings.Join(parts, ".")
}
