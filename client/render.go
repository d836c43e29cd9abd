package client

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

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
	// Types are the columns' PostgreSQL type names where known (they
	// right-align numbers); nil for a table the client made.
	Types []string
	Rows  [][]any
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

	// Timing adds how long each command took: a "Time: 1.234 ms" line,
	// time_ms in JSON (\timing).
	Timing bool
	// Expanded shows the rows of a table as blocks of "column | value"
	// lines (\x): ExpandedOn, ExpandedAuto (when the table is wider than
	// Width says the terminal is), or off ("").
	Expanded string
	// Width returns the terminal's width in columns, 0 when Out is no
	// terminal. Nil: no terminal.
	Width func() int
	// Pager, if set, shows table-format output that does not fit the
	// terminal through a pager program.
	Pager *Pager

	wroteTable bool          // CSV: a blank line separates consecutive tables
	took       time.Duration // how long the command being printed took
}

// The values of Printer.Expanded besides off ("").
const (
	ExpandedOn   = "on"
	ExpandedAuto = "auto"
)

// Took records how long the command whose outcome is printed next took;
// with Timing, Result or Error prints it. Outcomes that were not timed
// (settings, commands that did not parse) print no time.
func (p *Printer) Took(d time.Duration) { p.took = d }

// timeLine is psql's \timing line: milliseconds, and from a second on the
// time in minutes and seconds too.
func timeLine(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	if d < time.Second {
		return fmt.Sprintf("Time: %.3f ms", ms)
	}
	return fmt.Sprintf("Time: %.3f ms (%02d:%06.3f)", ms, int(d/time.Minute), (d % time.Minute).Seconds())
}

// timing ends a command's output in the table and CSV formats.
func (p *Printer) timing() {
	if p.Timing && p.took > 0 && p.Format != FormatJSON {
		fmt.Fprintln(p.Out, timeLine(p.took))
	}
	p.took = 0
}

// timeMS is the command's time for its JSON line, nil without Timing.
func (p *Printer) timeMS() *float64 {
	if !p.Timing || p.took <= 0 {
		return nil
	}
	ms := math.Round(float64(p.took)/float64(time.Microsecond)) / 1000
	return &ms
}

// Result prints a command's result.
func (p *Printer) Result(r *Result) {
	defer p.timing()
	switch p.Format {
	case FormatJSON:
		p.json(jsonLine{Command: r.Kind.String(), OK: true, Result: r.Value, TimeMS: p.timeMS()})
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
		var b strings.Builder
		if r.Table != nil {
			p.table(&b, r.Table)
		}
		if r.Text != "" {
			b.WriteString(r.Text + "\n")
		}
		if r.Note != "" {
			b.WriteString(r.Note + "\n")
		}
		p.Pager.show(p.Out, b.String())
	}
}

// table lays t out aligned, or expanded when asked to or, with
// ExpandedAuto, when it is wider than the terminal.
func (p *Printer) table(b *strings.Builder, t *Table) {
	tt := layout(t)
	width := 0
	if p.Width != nil {
		width = p.Width()
	}
	if p.Expanded == ExpandedOn || p.Expanded == ExpandedAuto && width > 0 && tt.width() > width {
		tt.expanded(b)
		return
	}
	tt.aligned(b)
}

// Error prints a failed command on one line. input is the command as
// typed, kind what it was understood as (0 if it did not parse).
func (p *Printer) Error(input string, kind Kind, err error) {
	defer p.timing()
	msg := oneLine(err.Error())
	if rerr, ok := err.(*rpc.Error); ok {
		msg = oneLine(rerr.Message) // not "rpc error -32006: ..."
	}
	if p.Format == FormatJSON {
		line := jsonLine{Command: kind.String(), OK: false, Input: input, Error: &jsonError{Message: msg}, TimeMS: p.timeMS()}
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
	// TimeMS is how long the command took, in milliseconds (\timing on).
	TimeMS *float64 `json:"time_ms,omitempty"`
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
