package client

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/mattn/go-runewidth"

	"github.com/tpcd/tpcd/rpc"
)

// Format is how results are printed.
type Format string

// The output formats.
const (
	// FormatTable prints rows as aligned tables and everything else as the
	// command tag, for people.
	FormatTable Format = "table"
	// FormatJSON prints one JSON object per command on its own line, errors
	// included, for programs.
	FormatJSON Format = "json"
	// FormatCSV prints rows as CSV with a header line and other results as
	// their command tag, for spreadsheets and shell pipelines.
	FormatCSV Format = "csv"
)

// Result is what a command produced.
type Result struct {
	Kind Kind
	// Value is the command's reply as JSON shows it.
	Value any
	// Table holds rows to show (query results, the node list).
	Table *Table
	// Text is the command tag or a one-line summary.
	Text string
	// Note follows a table in table format only.
	Note string
}

// Table is rows under named columns. A nil cell is SQL NULL.
type Table struct {
	Columns []string
	Rows    [][]any
	// Count adds "(N rows)" below the table, as for query results.
	Count bool
}

// Printer writes results and errors in one format. Results go to Out;
// errors and notices to Err, except that the JSON format also writes an
// object for a failed command to Out, so that Out has one line per command.
type Printer struct {
	Format Format
	Out    io.Writer
	Err    io.Writer

	wroteTable bool // CSV: a blank line separates consecutive tables
}

// Result prints a command's result.
func (p *Printer) Result(r *Result) {
	switch p.Format {
	case FormatJSON:
		p.json(jsonLine{Command: r.Kind.String(), OK: true, Result: r.Value})
	case FormatCSV:
		if r.Table != nil {
			if p.wroteTable {
				fmt.Fprintln(p.Out)
			}
			w := csv.NewWriter(p.Out)
			w.Write(r.Table.Columns)
			for _, row := range r.Table.Rows {
				rec := make([]string, len(row))
				for i, v := range row {
					if v != nil {
						rec[i] = fmt.Sprint(v)
					}
				}
				w.Write(rec)
			}
			w.Flush()
			p.wroteTable = true
		}
		if r.Text != "" {
			fmt.Fprintln(p.Out, r.Text)
		}
	default:
		if r.Table != nil {
			writeTable(p.Out, r.Table)
		}
		if r.Text != "" {
			fmt.Fprintln(p.Out, r.Text)
		}
		if r.Note != "" {
			fmt.Fprintln(p.Out, r.Note)
		}
	}
}

// Error prints a failed command on one line. input is the command as
// typed, kind what it was understood as (0 if it did not parse).
func (p *Printer) Error(input string, kind Kind, err error) {
	msg := oneLine(err.Error())
	if rerr, ok := err.(*rpc.Error); ok {
		msg = oneLine(rerr.Message) // not "rpc error -32006: ..."
	}
	if p.Format == FormatJSON {
		line := jsonLine{Command: kind.String(), OK: false, Input: input, Error: &jsonError{Message: msg}}
		if kind == 0 {
			line.Command = ""
		}
		var rerr *rpc.Error
		if errors.As(err, &rerr) {
			line.Error.Code = rerr.Code
		}
		var oerr *OutcomeError
		if errors.As(err, &oerr) {
			line.Error.Outcome = "abort"
			line.Error.TxID = uint64(oerr.TxID)
		}
		p.json(line)
	}
	fmt.Fprintf(p.Err, "error: %s\n", msg)
}

// Notice prints a message about the session (not a command's result).
func (p *Printer) Notice(msg string) {
	fmt.Fprintln(p.Err, oneLine(msg))
}

type jsonLine struct {
	Command string     `json:"command,omitempty"`
	OK      bool       `json:"ok"`
	Input   string     `json:"input,omitempty"`
	Result  any        `json:"result,omitempty"`
	Error   *jsonError `json:"error,omitempty"`
}

type jsonError struct {
	// Code is the JSON-RPC error code when the coordinator refused the
	// command (docs/WIRE.md), 0 when the client did.
	Code    int    `json:"code,omitempty"`
	Message string `json:"message"`
	// Outcome and TxID are set when a commit ended in an abort.
	Outcome string `json:"outcome,omitempty"`
	TxID    uint64 `json:"tx,omitempty"`
}

func (p *Printer) json(v jsonLine) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(jsonLine{Command: v.Command, Error: &jsonError{Message: "encode result: " + err.Error()}})
	}
	p.Out.Write(append(b, '\n'))
}

// writeTable prints t aligned, psql style:
//
//	 id | name
//	----+------
//	 1  | ada
//	(1 row)
func writeTable(w io.Writer, t *Table) {
	cells := make([][]string, len(t.Rows))
	widths := make([]int, len(t.Columns))
	for i, c := range t.Columns {
		widths[i] = runewidth.StringWidth(c)
	}
	for r, row := range t.Rows {
		cells[r] = make([]string, len(t.Columns))
		for i := range t.Columns {
			s := "NULL"
			if i < len(row) && row[i] != nil {
				s = cellText(fmt.Sprint(row[i]))
			}
			cells[r][i] = s
			widths[i] = max(widths[i], runewidth.StringWidth(s))
		}
	}
	var b strings.Builder
	line := func(vals []string) {
		for i, v := range vals {
			if i > 0 {
				b.WriteString(" |")
			}
			b.WriteByte(' ')
			b.WriteString(v)
			if i < len(vals)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-runewidth.StringWidth(v)))
			}
		}
		b.WriteByte('\n')
	}
	line(t.Columns)
	for i, wd := range widths {
		if i > 0 {
			b.WriteByte('+')
		}
		b.WriteString(strings.Repeat("-", wd+2))
	}
	b.WriteByte('\n')
	for _, row := range cells {
		line(row)
	}
	if t.Count {
		if len(t.Rows) == 1 {
			b.WriteString("(1 row)\n")
		} else {
			fmt.Fprintf(&b, "(%d rows)\n", len(t.Rows))
		}
	}
	io.WriteString(w, b.String())
}

// cellText keeps a cell on one line of the table.
func cellText(s string) string {
	if !strings.ContainsAny(s, "\n\r\t") {
		return s
	}
	return strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(s)
}
