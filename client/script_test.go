package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/engine"
)

// script is the same little session run in every format: a transaction
// over two nodes, its status, and two seed-style queries.
const script = `-- a comment line
begin
@0 insert into KV values (1, 'one');
exec @1 insert into KV
  values (2, 'two');
commit
status
` + readBack

// readBack reads the committed rows. A commit answers once the decision is
// durable, before the participants applied it (status says committing
// until they all did), so the test runs it only after the rows are there.
const readBack = `execute @0 select k, v from KV order by k;
execute @1 select v, null as nothing from KV;
`

// runFormat runs the script on a table of its own (so that the formats can
// share one cluster) in two parts: up to the commit's status, then, once
// the rows are visible on both participants, the reads.
func runFormat(t *testing.T, c *testCluster, table string, format Format, cont bool, extra string) (stdout, stderr string, err error) {
	t.Helper()
	c.createTable(t, "CREATE TABLE "+table+" (k int PRIMARY KEY, v text)")
	first, _ := strings.CutSuffix(script, readBack)
	out1, errs1, err := runScript(t, c, format, cont, strings.ReplaceAll(first, "KV", table))
	if err != nil {
		return out1, errs1, err
	}
	c.waitRows(t, 0, table, 1)
	c.waitRows(t, 1, table, 1)
	out2, errs2, err := runScript(t, c, format, cont, strings.ReplaceAll(readBack, "KV", table)+extra)
	return out1 + out2, errs1 + errs2, err
}

// TestCluster runs the end-to-end tests that can share one cluster (the
// coordinator and three participants), each on tables of its own.
func TestCluster(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, engine.CoordinatorConfig{})
	for _, tt := range []struct {
		name string
		f    func(*testing.T, *testCluster)
	}{
		{"script/table", testScriptTable},
		{"script/json", testScriptJSON},
		{"script/csv", testScriptCSV},
		{"script/stop-at-first-failure", testScriptStopsAtFirstFailure},
		{"script/exit-status", testScriptExitStatus},
		{"script/execute-sees-previous", testScriptExecuteSeesPrevious},
		{"script/keys", testScriptKeys},
		{"script/plain", testScriptPlain},
		{"wrong-address", testWrongAddress},
		{"load/sensors", testLoadSensors},
		{"load/errors", testLoadErrors},
		{"load/positions", testLoadPositions},
		{"load/atomic", testLoadAtomic},
		{"load/direct", testLoadDirect},
		{"load/refuses-non-empty", testLoadRefusesNonEmpty},
		{"load/terminal", testLoadOnTerminal},
		{"demo", testDemo},
		{"demo/errors", testDemoErrors},
		{"demo/terminal", testDemoOnTerminal},
		{"interactive", testInteractive},
		{"interactive/display", testShellDisplay},
		{"interactive/seed-dialogue", testSeedDialogue},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.f(t, c)
		})
	}
}

func runScript(t *testing.T, c *testCluster, format Format, cont bool, text string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errs bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = RunScript(ctx, Options{Coordinator: c.CoordAddr, Format: format, Continue: cont, Stdout: &out, Stderr: &errs}, strings.NewReader(text), "script")
	return out.String(), errs.String(), err
}

// testScriptExecuteSeesPrevious runs the seed's way of working, one
// execute after another: each is answered once its batch committed, so the
// next one sees the table the previous one created.
func testScriptExecuteSeesPrevious(t *testing.T, c *testCluster) {
	for i := range 5 {
		table := fmt.Sprintf("seen_%d", i)
		out, errs, err := runScript(t, c, FormatTable, false, fmt.Sprintf(
			"execute @0 create table %s (k int);\nexecute @0 insert into %[1]s values (1);\nexecute @0 select count(*) from %[1]s;\n", table))
		if err != nil {
			t.Fatalf("run %d: %v\nstdout:\n%s\nstderr:\n%s", i, err, out, errs)
		}
		if !regexp.MustCompile(`(?s)INSERT 0 1 \(batch transaction \d+ committed\).* 1\n`).MatchString(out) {
			t.Fatalf("run %d: the insert or its count is missing:\n%s", i, out)
		}
	}
}

// testScriptPlain runs plain transactions at a participant: each commits
// at once and the next sees it; a failing one leaves nothing; one inside
// an open transaction, or for a node that does not exist, is refused
// before anything runs.
func testScriptPlain(t *testing.T, c *testCluster) {
	c.createTable(t, "CREATE TABLE plained (k int PRIMARY KEY)")
	out, errs, err := runScript(t, c, FormatTable, true, `plain @2 insert into plained values (1);
plain @2 select count(*) from plained;
plain @2 insert into plained values (1);
plain @7 select 1;
begin
plain @2 select 1;
rollback
plain @2 select count(*) from plained;
`)
	if err == nil {
		t.Fatalf("the failing plain transactions passed:\n%s", out)
	}
	if !regexp.MustCompile(`^INSERT 0 1\n count\n-+\n +1\n\(1 row\)\nBEGIN \d+\nROLLBACK \d+\n count\n-+\n +1\n\(1 row\)\n$`).MatchString(out) {
		t.Fatalf("stdout does not match:\n%s\nstderr:\n%s", out, errs)
	}
	for _, want := range []string{"duplicate key value violates unique constraint", "rolled back", "node 7 does not exist", "a plain transaction runs alone"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
}

// testScriptKeys begins a transaction with a key, commits it, and finds it
// by the key; a begin with the key of the ended transaction is refused.
func testScriptKeys(t *testing.T, c *testCluster) {
	c.createTable(t, "CREATE TABLE keyed (k int PRIMARY KEY)")
	out, errs, err := runScript(t, c, FormatTable, true,
		"begin order-17;\nexec @0 insert into keyed values (1);\ncommit;\nstatus key order-17;\nbegin order-17;\nstatus key order-18;\n")
	if err == nil {
		t.Fatalf("a begin with a used key passed:\n%s", out)
	}
	m := regexp.MustCompile(`(?s)^BEGIN (\d+)\nINSERT 0 1\nCOMMIT (\d+)\nkey "order-17": transaction (\d+): (committed|committing)[^\n]*\nkey "order-18": unknown`).FindStringSubmatch(out)
	if m == nil || m[1] != m[2] || m[1] != m[3] {
		t.Fatalf("stdout does not match:\n%s\nstderr:\n%s", out, errs)
	}
	// Refused with the outcome once the transaction ended, without it
	// while its commit is still on its way.
	if !strings.Contains(errs, "order-17") || !strings.Contains(errs, "committed") && !strings.Contains(errs, "takes no more statements") {
		t.Fatalf("the refused begin says:\n%s", errs)
	}
}

func testScriptTable(t *testing.T, c *testCluster) {
	out, errs, err := runFormat(t, c, "kv_table", FormatTable, false, "")
	if err != nil {
		t.Fatalf("script failed: %v\nstdout:\n%s\nstderr:\n%s", err, out, errs)
	}
	if errs != "" {
		t.Errorf("stderr: %q", errs)
	}
	want := regexp.MustCompile(`^BEGIN (\d+)
INSERT 0 1
INSERT 0 1
COMMIT (\d+)
transaction (\d+): (committed|committing; participants @0, @1[^\n]*)
 k \| v
---\+-----
 1 \| one
\(1 row\)
\(batch transaction \d+ committed\)
 v   \| nothing
-----\+---------
 two \| NULL
\(1 row\)
\(batch transaction \d+ committed\)
$`)
	m := want.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("stdout does not match:\n%s", out)
	}
	if m[1] != m[2] || m[1] != m[3] {
		t.Fatalf("begin, commit and status name different transactions: %q", m[1:4])
	}
	if got := c.count(t, 0, "SELECT count(*) FROM kv_table WHERE k = 1") + c.count(t, 1, "SELECT count(*) FROM kv_table WHERE k = 2"); got != 2 {
		t.Fatalf("committed rows found: %d, want 2", got)
	}
}

func testScriptJSON(t *testing.T, c *testCluster) {
	// A failing statement with --continue: the script goes on, the run
	// still fails, and the failure has its own line.
	out, errs, err := runFormat(t, c, "kv_json", FormatJSON, true, "execute @1 insert into nosuch values (1);\nnodes\n")
	var se *ScriptError
	if !errors.As(err, &se) || se.Failed != 1 || !errors.Is(err, ErrFailed) {
		t.Fatalf("want one failed command, got %v", err)
	}
	if !strings.Contains(errs, `error: script:3: `) || !strings.Contains(errs, `relation "nosuch" does not exist`) {
		t.Fatalf("stderr: %q", errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	type line struct {
		Command string          `json:"command"`
		OK      bool            `json:"ok"`
		Input   string          `json:"input"`
		Result  json.RawMessage `json:"result"`
		Error   *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	var got []line
	for _, l := range lines {
		var v line
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("not JSON: %q: %v", l, err)
		}
		got = append(got, v)
	}
	wantCmds := []string{"begin", "exec", "exec", "commit", "status", "execute", "execute", "execute", "nodes"}
	if len(got) != len(wantCmds) {
		t.Fatalf("%d lines, want %d:\n%s", len(got), len(wantCmds), out)
	}
	for i, w := range wantCmds {
		if got[i].Command != w || got[i].OK != (i != 7) {
			t.Fatalf("line %d: %s ok=%v, want %s ok=%v", i, got[i].Command, got[i].OK, w, i != 7)
		}
	}
	var begin engine.BeginReply
	var commit engine.OutcomeReply
	var query engine.ExecReply
	var nodes []struct {
		Node      int  `json:"node"`
		Reachable bool `json:"reachable"`
	}
	mustJSON(t, got[0].Result, &begin)
	mustJSON(t, got[3].Result, &commit)
	mustJSON(t, got[6].Result, &query)
	mustJSON(t, got[8].Result, &nodes)
	if begin.TxID == 0 || commit.TxID != begin.TxID || commit.Outcome != engine.OutcomeCommit {
		t.Fatalf("begin %+v, commit %+v", begin, commit)
	}
	if r := query.Result; r == nil || len(r.Columns) != 2 || len(r.Rows) != 1 || r.Rows[0][0] != "two" || r.Rows[0][1] != nil {
		t.Fatalf("query result: %+v", query.Result)
	}
	if e := got[7].Error; e == nil || e.Code != -32006 || !strings.Contains(e.Message, `relation "nosuch" does not exist`) || got[7].Input != "execute @1 insert into nosuch values (1)" {
		t.Fatalf("error line: %+v", got[7])
	}
	if len(nodes) != len(c.Data) || nodes[1].Node != 1 {
		t.Fatalf("nodes: %+v", nodes)
	}
}

func testScriptCSV(t *testing.T, c *testCluster) {
	out, errs, err := runFormat(t, c, "kv_csv", FormatCSV, false, "")
	if err != nil {
		t.Fatalf("script failed: %v\n%s", err, errs)
	}
	want := regexp.MustCompile(`^BEGIN \d+
INSERT 0 1
INSERT 0 1
COMMIT \d+
transaction \d+: [^\n]+
k,v
1,one

v,nothing
two,
$`)
	if !want.MatchString(out) {
		t.Fatalf("stdout does not match:\n%s", out)
	}
}

// A script stops at its first failed command; a transaction it left open
// is rolled back, and says so.
func testScriptStopsAtFirstFailure(t *testing.T, c *testCluster) {
	c.createTable(t, "CREATE TABLE kv_fail (k int PRIMARY KEY, v text)")
	text := `begin
@0 insert into kv_fail values (1, 'kept?');
@1 insert into kv_fail values ('not a number', 'x');
@1 insert into kv_fail values (3, 'never sent');
commit
`
	out, errs, err := runScript(t, c, FormatTable, false, text)
	if !errors.Is(err, ErrFailed) {
		t.Fatalf("want a failure, got %v", err)
	}
	if strings.Count(out, "INSERT") != 1 {
		t.Fatalf("stdout: %q", out)
	}
	if !regexp.MustCompile(`error: script:3: p1: ERROR: invalid input syntax for type integer: "not a number" \(SQLSTATE 22P02\); transaction \d+ can only roll back now\n`).MatchString(errs) {
		t.Fatalf("stderr: %q", errs)
	}
	if !regexp.MustCompile(`rolled back transaction \d+, left open`).MatchString(errs) {
		t.Fatalf("no rollback notice: %q", errs)
	}
	if n := c.count(t, 0, "SELECT count(*) FROM kv_fail") + c.count(t, 1, "SELECT count(*) FROM kv_fail"); n != 0 {
		t.Fatalf("%d rows committed, want none", n)
	}

	// The same script with --continue runs the later commands: the commit
	// reports the abort.
	_, errs, err = runScript(t, c, FormatTable, true, text)
	var se *ScriptError
	if !errors.As(err, &se) || se.Failed != 3 {
		t.Fatalf("want 3 failures (bad row, statement after it, commit), got %v\n%s", err, errs)
	}
	if !regexp.MustCompile(`error: script:5: transaction \d+ aborted: p1: ERROR: invalid input syntax`).MatchString(errs) {
		t.Fatalf("stderr: %q", errs)
	}
}

func mustJSON(t *testing.T, raw json.RawMessage, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
}
