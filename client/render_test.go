package client

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// TestRender prints results in each format and compares what reaches the
// output and what the error stream.
func TestRender(t *testing.T) {
	tests := []struct {
		name      string
		printer   Printer // the test sets Out and Err
		print     func(p *Printer)
		out, errs string
	}{{
		name:    "table",
		printer: Printer{Format: FormatTable},
		print: func(p *Printer) {
			p.Result(&Result{Kind: CmdExec, Table: &Table{
				Columns: []string{"id", "name"},
				Rows:    [][]any{{"1", "ada"}, {"22", nil}, {"3", "two\nlines"}},
				Count:   true,
			}})
			p.Result(&Result{Kind: CmdExec, Text: "INSERT 0 1"})
			p.Error("@0 x", CmdExec, errors.New("syntax error\nat or near x"))
		},
		out: " id | name\n" +
			"----+------------\n" +
			"  1 | ada\n" +
			" 22 | NULL\n" +
			"  3 | two\\nlines\n" +
			"(3 rows)\n" +
			"INSERT 0 1\n",
		errs: "error: syntax error at or near x\n",
	}, {
		// Numbers are right-aligned: by the column's type where the
		// participant named it, else when every value reads as a number.
		name:    "alignment",
		printer: Printer{Format: FormatTable},
		print: func(p *Printer) {
			p.Result(&Result{Kind: CmdExec, Table: &Table{
				Columns: []string{"code", "n", "x", "guess", "word"},
				Types:   []string{"text", "int4", "numeric"},
				Rows:    [][]any{{"7", "7", "NaN", "-1.5e3", "a"}, {"1000", "1000", "12.25", "2", nil}, {"5", nil, "1", nil, "b"}},
			}})
		},
		out: " code | n    | x     | guess  | word\n" +
			"------+------+-------+--------+------\n" +
			" 7    |    7 |   NaN | -1.5e3 | a\n" +
			" 1000 | 1000 | 12.25 |      2 | NULL\n" +
			" 5    | NULL |     1 |   NULL | b\n",
	}, {
		// \x on: each row as a block.
		name:    "expanded",
		printer: Printer{Format: FormatTable, Expanded: ExpandedOn},
		print: func(p *Printer) {
			p.Result(&Result{Kind: CmdExec, Table: expandTable})
			p.Result(&Result{Kind: CmdExec, Table: &Table{Columns: []string{"id"}, Count: true}})
		},
		out: "-[ RECORD 1 ]---\n" +
			"id     | 1\n" +
			"sensor | kitchen\n" +
			"-[ RECORD 2 ]---\n" +
			"id     | 22\n" +
			"sensor | NULL\n" +
			"(0 rows)\n",
	}, {
		name:    "csv",
		printer: Printer{Format: FormatCSV},
		print: func(p *Printer) {
			p.Result(&Result{Kind: CmdExec, Table: &Table{Columns: []string{"a", "b"}, Rows: [][]any{{"x,y", nil}, {"", "q\"uote"}}}})
			p.Result(&Result{Kind: CmdExec, Text: "UPDATE 2"})
			p.Result(&Result{Kind: CmdExec, Table: &Table{Columns: []string{"n"}, Rows: [][]any{{"1"}}}})
		},
		out: "a,b\n\"x,y\",\n,\"q\"\"uote\"\nUPDATE 2\n\nn\n1\n",
	}, {
		name:    "json",
		printer: Printer{Format: FormatJSON},
		print: func(p *Printer) {
			p.Result(&Result{Kind: CmdBegin, Value: engine.BeginReply{TxID: 7}})
			p.Error("@0 bad", CmdExec, &cmdError{msg: "p0: ERROR: boom", cause: fmt.Errorf("call exec: %w", rpc.Errorf(rpc.CodeAborted, "p0: ERROR: boom"))})
			p.Error("commit", CmdCommit, &OutcomeError{TxID: 7, Reason: "p1 voted no"})
		},
		out: `{"command":"begin","ok":true,"result":{"tx":7}}` + "\n" +
			`{"command":"exec","ok":false,"input":"@0 bad","error":{"code":-32006,"message":"p0: ERROR: boom"}}` + "\n" +
			`{"command":"commit","ok":false,"input":"commit","error":{"message":"transaction 7 aborted: p1 voted no","outcome":"abort","tx":7}}` + "\n",
		// Errors go to the error stream as text in every format too.
		errs: "error: p0: ERROR: boom\nerror: transaction 7 aborted: p1 voted no\n",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errs bytes.Buffer
			p := tt.printer
			p.Out, p.Err = &out, &errs
			tt.print(&p)
			if out.String() != tt.out {
				t.Errorf("output: got\n%s\nwant\n%s", out.String(), tt.out)
			}
			if errs.String() != tt.errs {
				t.Errorf("error stream: got %q, want %q", errs.String(), tt.errs)
			}
		})
	}
}

// expandTable is 14 columns wide as an aligned table.
var expandTable = &Table{Columns: []string{"id", "sensor"}, Rows: [][]any{{"1", "kitchen"}, {"22", nil}}, Count: true}

// \x auto expands a table only when it is wider than the terminal.
func TestRenderExpandedAuto(t *testing.T) {
	var out bytes.Buffer
	for _, width := range []int{0, 14, 40} {
		out.Reset()
		p := &Printer{Format: FormatTable, Out: &out, Err: &out, Expanded: ExpandedAuto, Width: func() int { return width }}
		p.Result(&Result{Kind: CmdExec, Table: expandTable})
		if expanded := strings.HasPrefix(out.String(), "-[ RECORD 1 ]"); expanded {
			t.Errorf("auto, terminal %d wide: expanded:\n%s", width, &out)
		}
	}
	out.Reset()
	p := &Printer{Format: FormatTable, Out: &out, Err: &out, Expanded: ExpandedAuto, Width: func() int { return 13 }}
	p.Result(&Result{Kind: CmdExec, Table: expandTable})
	if !strings.HasPrefix(out.String(), "-[ RECORD 1 ]") {
		t.Errorf("auto, terminal 13 wide: not expanded:\n%s", &out)
	}
}

// \timing: psql's line after the outcome, time_ms in JSON; nothing for
// what was not timed.
func TestRenderTiming(t *testing.T) {
	var out, errs bytes.Buffer
	p := &Printer{Format: FormatTable, Out: &out, Err: &errs, Timing: true}
	p.Took(1234567 * time.Microsecond / 1000)
	p.Result(&Result{Kind: CmdExec, Text: "INSERT 0 1"})
	p.Took(61500 * time.Millisecond)
	p.Error("@0 x", CmdExec, errors.New("boom"))
	p.Result(&Result{Kind: CmdSet, Text: "Timing is on."})
	if want := "INSERT 0 1\nTime: 1.235 ms\nTime: 61500.000 ms (01:01.500)\nTiming is on.\n"; out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
	out.Reset()
	p = &Printer{Format: FormatJSON, Out: &out, Err: &errs, Timing: true}
	p.Took(2500 * time.Microsecond)
	p.Result(&Result{Kind: CmdBegin, Value: engine.BeginReply{TxID: 7}})
	if want := `{"command":"begin","ok":true,"result":{"tx":7},"time_ms":2.5}` + "\n"; out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}

func TestInferType(t *testing.T) {
	tests := []struct {
		vals []string
		want string
	}{
		{[]string{"1", "-2", ""}, "bigint"},
		{[]string{"1", "2.5", "1e3"}, "double precision"},
		{[]string{"true", "FALSE"}, "boolean"},
		{[]string{"2024-03-01"}, "date"},
		{[]string{"2024-03-01T00:00:30Z", "2024-03-01 10:00:00+02:00"}, "timestamptz"},
		{[]string{"1", "x"}, "text"},
		{[]string{"", ""}, "text"},
		{[]string{"99999999999999999999"}, "double precision"},
		{[]string{"NaN"}, "text"},
	}
	for _, tt := range tests {
		if got := InferType(tt.vals); got != tt.want {
			t.Errorf("%q: %s, want %s", tt.vals, got, tt.want)
		}
	}
}
