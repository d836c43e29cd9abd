package client

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	ok := []struct {
		in   string
		want Command
	}{
		{"begin", Command{Kind: CmdBegin}},
		{"BEGIN", Command{Kind: CmdBegin}},
		{"commit -- done", Command{Kind: CmdCommit}},
		{"rollback", Command{Kind: CmdRollback}},
		{"status", Command{Kind: CmdStatus}},
		{"status 42", Command{Kind: CmdStatus, TxID: 42}},
		{"status key transfer-7", Command{Kind: CmdStatus, Key: "transfer-7"}},
		{"begin transfer-7", Command{Kind: CmdBegin, Key: "transfer-7"}},
		{"nodes", Command{Kind: CmdNodes}},
		{"quit", Command{Kind: CmdQuit}},
		{`\q`, Command{Kind: CmdQuit}},
		{"help exec", Command{Kind: CmdHelp, Topic: "exec"}},
		{"@1 select 1", Command{Kind: CmdExec, Node: 1, SQL: "select 1"}},
		{"@p2 select 1", Command{Kind: CmdExec, Node: 2, SQL: "select 1"}},
		{"exec @0 insert into t\nvalues (1)", Command{Kind: CmdExec, Node: 0, SQL: "insert into t\nvalues (1)"}},
		{"execute @3 delete from t", Command{Kind: CmdExecute, Node: 3, SQL: "delete from t"}},
		{`\timing`, Command{Kind: CmdSet, Setting: "timing"}},
		{`\timing OFF`, Command{Kind: CmdSet, Setting: "timing", Value: "off"}},
		{`\x auto`, Command{Kind: CmdSet, Setting: "expanded", Value: "auto"}},
		{`\pset pager always`, Command{Kind: CmdSet, Setting: "pager", Value: "always"}},
		{`\pset expanded`, Command{Kind: CmdSet, Setting: "expanded"}},
	}
	for _, tt := range ok {
		got, err := ParseCommand(tt.in)
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if got.Kind != tt.want.Kind || got.Node != tt.want.Node || got.SQL != tt.want.SQL || got.TxID != tt.want.TxID || got.Topic != tt.want.Topic ||
			got.Setting != tt.want.Setting || got.Value != tt.want.Value {
			t.Errorf("%q: got %+v, want %+v", tt.in, got, tt.want)
		}
	}
	bad := []struct{ in, msg string }{
		{"begin now please", "at most one argument"},
		{"status key", "want a transaction id"},
		{"exec select 1", "needs a node"},
		{"@x select 1", "is not a node"},
		{"@0", "SQL statement is missing"},
		{"status abc", "want a transaction id"},
		{"select 1", "statements need a node"},
		{"frobnicate", "unknown command \"frobnicate\"; type help for the list"},
		{"comit", `unknown command "comit"; did you mean commit?`},
		{"statsu 3", `unknown command "statsu"; did you mean status?`},
		{`\timming`, `unknown command "\\timming"; did you mean \timing?`},
		{`\pset pagr off`, `\pset pagr: no such option; did you mean pager?`},
		{`\x sometimes`, `\x sometimes: want on, off, auto`},
		{`\timing on off`, `takes one value`},
		{"load --table t x.csv", "--key is required"},
		{"load --table t --key k", "exactly one CSV file"},
		{"load --table t --key k --tx-size 0 f.csv", "at least 1"},
	}
	for _, tt := range bad {
		_, err := ParseCommand(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%q: error %v, want one saying %q", tt.in, err, tt.msg)
		}
	}
}

func TestParseLoadArgs(t *testing.T) {
	c, err := ParseCommand(`load testdata/x.csv --table "my table" --key sensor_id --create --direct --tx-size 50`)
	if err != nil {
		t.Fatal(err)
	}
	want := LoadOptions{File: "testdata/x.csv", Table: "my table", Key: "sensor_id", Create: true, Direct: true, TxSize: 50}
	if !reflect.DeepEqual(*c.Load, want) {
		t.Fatalf("got %+v, want %+v", *c.Load, want)
	}
	c, err = ParseCommand("load --table t --key k f.csv")
	if err != nil {
		t.Fatal(err)
	}
	if c.Load.TxSize != DefaultTxSize || c.Load.Create || c.Load.Direct {
		t.Fatalf("defaults: %+v", *c.Load)
	}
}

func TestHelpText(t *testing.T) {
	all, err := HelpText("")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"begin", "exec @N SQL", "execute @N SQL", "commit", "rollback", "status [TXID | key KEY]", "begin [KEY]", "nodes", "load --table", "quit",
		`\timing [on|off]`, `\x [on|off|auto]`, `\pset pager`, "On this node #:"} {
		if !strings.Contains(all, w) {
			t.Errorf("help lacks %q", w)
		}
	}
	for line := range strings.Lines(all) {
		if len(strings.TrimRight(line, "\n")) > 80 {
			t.Errorf("help line wider than 80 columns: %q", line)
		}
	}
	if one, err := HelpText("@"); err != nil || !strings.HasPrefix(one, "exec") {
		t.Errorf("help @: %q %v", one, err)
	}
	if _, err := HelpText("nope"); err == nil {
		t.Error("help nope: no error")
	}
	if one, err := HelpText("insert"); err != nil || !strings.Contains(one, "Send another query request? (y/n)") {
		t.Errorf("help insert: %q %v", one, err)
	}
	if _, err := HelpText("statsu"); err == nil || !strings.Contains(err.Error(), "did you mean status?") {
		t.Errorf("help statsu: %v", err)
	}
}

func TestClosest(t *testing.T) {
	for _, tt := range []struct {
		word string
		want string // "" for no guess
	}{
		{"comit", "commit"},
		{"ocmmit", "commit"}, // two letters swapped
		{"rollbak", "rollback"},
		{"nodse", "nodes"},
		{"exet", ""}, // exit and exec are as near: no guess
		{"bgn", ""},  // two edits in a short word is not a typo
		{"commit", ""},
		{"xyzzy", ""},
	} {
		got, ok := closest(tt.word, commandWords)
		if !ok {
			got = ""
		}
		if got != tt.want {
			t.Errorf("closest(%q) = %q, want %q", tt.word, got, tt.want)
		}
	}
	if d := editDistance("kitten", "sitting"); d != 3 {
		t.Errorf("editDistance(kitten, sitting) = %d, want 3", d)
	}
}
