package client

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/tpcd/tpcd/engine"
)

// rowError words a load's failure for the file's author. A statement that
// a participant refused is traced to the row, and where the server's
// message allows to the field, it could not take: the statement's rows are
// sent one at a time in a transaction that is then rolled back. Any other
// failure names the lines of the rows it held.
func (l *loader) rowError(ctx context.Context, recs []record, err error) error {
	var se *stmtError
	if errors.As(err, &se) && ctx.Err() == nil {
		if rec, ok := l.locate(ctx, se); ok {
			return fmt.Errorf("load: %s: %w", l.position(rec, se.Error()), err)
		}
	}
	return fmt.Errorf("load: %s: %w", lineRange(recs), err)
}

// locate finds the first row of se's statement that fails on its own.
// It finds none when the row failed only beside rows sent before it in the
// same transaction (a key given twice within an atomic load).
func (l *loader) locate(ctx context.Context, se *stmtError) (record, bool) {
	if len(se.stmt.recs) == 0 {
		return record{}, false
	}
	tx, err := l.begin(ctx)
	if err != nil {
		return record{}, false
	}
	defer tx.rollback(ctx)
	if l.opts.Create {
		// An atomic load's table went with its transaction.
		create := map[engine.NodeID][]stmt{se.node: {{sql: l.createSQL()}}}
		if err := tx.exec(ctx, create); err != nil {
			return record{}, false
		}
	}
	for _, rec := range se.stmt.recs {
		err := tx.exec(ctx, map[engine.NodeID][]stmt{se.node: l.inserts([]record{rec})})
		var failed *stmtError
		switch {
		case err == nil:
			continue
		case errors.As(err, &failed):
			return rec, true
		}
		return record{}, false
	}
	return record{}, false
}

// position names a row's line and, when the server's message points at one
// of its fields, that field's column.
func (l *loader) position(rec record, msg string) string {
	header := make([]string, len(l.cols))
	for i, c := range l.cols {
		header[i] = c.Name
	}
	if i := badField(msg, header, rec.fields); i >= 0 {
		return fmt.Sprintf("line %d, column %d (%s)", rec.lines[i], i+1, header[i])
	}
	return fmt.Sprintf("line %d", rec.lines[0])
}

var (
	// columnRe finds a column PostgreSQL names, as in `null value in
	// column "c" of relation "t" violates not-null constraint`.
	columnRe = regexp.MustCompile(`column "((?:[^"]|"")+)"`)
	// quotedRe finds the values PostgreSQL quotes, as in `invalid input
	// syntax for type bigint: "x"`.
	quotedRe = regexp.MustCompile(`"((?:[^"]|"")+)"`)
)

// badField picks the field an error message is about: the column it names,
// else the first field whose value it quotes; -1 if neither.
func badField(msg string, header, fields []string) int {
	if m := columnRe.FindStringSubmatch(msg); m != nil {
		if i := slices.Index(header, strings.ReplaceAll(m[1], `""`, `"`)); i >= 0 {
			return i
		}
	}
	for _, m := range quotedRe.FindAllStringSubmatch(msg, -1) {
		if i := slices.Index(fields, strings.ReplaceAll(m[1], `""`, `"`)); i >= 0 {
			return i
		}
	}
	return -1
}

// lineRange names the lines rows came from.
func lineRange(recs []record) string {
	if len(recs) == 0 {
		return "no rows"
	}
	first := recs[0].lines[0]
	last := recs[len(recs)-1].lines
	if end := last[len(last)-1]; end != first {
		return fmt.Sprintf("lines %d..%d", first, end)
	}
	return fmt.Sprintf("line %d", first)
}
