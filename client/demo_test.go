package client

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/shard"
)

// sourceDB makes a database for the demo loader to read, with sql run in it.
func sourceDB(t *testing.T, sql string) (uri string, conn *pgx.Conn) {
	t.Helper()
	uri = pgtest.NewDB(t)
	conn, err := pgx.Connect(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if sql != "" {
		if _, err := conn.Exec(context.Background(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	return uri, conn
}

// rowTexts reads every row of a table in its text form, by id.
func rowTexts(t *testing.T, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, table string) map[int64]string {
	t.Helper()
	rows, err := q.Query(context.Background(), fmt.Sprintf("SELECT id, t::text FROM %s t", table))
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]string{}
	for rows.Next() {
		var id int64
		var text string
		if err := rows.Scan(&id, &text); err != nil {
			t.Fatal(err)
		}
		out[id] = text
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// testDemo runs the seed client's demo loader on a table of mixed types
// whose key (the primary key) is not its first column, over two of the
// three participants: every row lands, whole and with its types, on the
// participant the hash of its key picks, and a progress bar and the
// summary are printed.
func testDemo(t *testing.T, c *testCluster) {
	uri, src := sourceDB(t, `
		CREATE TABLE demo_orders (note text, id bigint PRIMARY KEY, price numeric(10,2), paid boolean, at timestamptz, day date);
		INSERT INTO demo_orders
		SELECT CASE WHEN i % 7 = 0 THEN NULL ELSE 'order "' || i || '", with a comma' END, i * 13, i / 4.0,
		       i % 2 = 0, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 hour', date '2026-01-01' + i
		FROM generate_series(1, 250) i`)
	want := rowTexts(t, src, "demo_orders")

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var out, errs bytes.Buffer
	opts := Options{Coordinator: c.CoordAddr, Format: FormatJSON, Stdout: &out, Stderr: &errs, Progress: true}
	if err := DemoCommand(ctx, opts, DemoOptions{DataDB: uri, Nodes: 2, TxSize: 40}); err != nil {
		t.Fatalf("demo: %v\n%s", err, errs.String())
	}
	if !strings.Contains(errs.String(), "loading demo_orders [##############################] 100%  250 rows") {
		t.Fatalf("no progress bar on stderr: %q", errs.String())
	}
	sum := loadSummary(t, out.Bytes())
	t.Logf("%s", sum.String())
	wantPer := make([]int64, 2)
	for id := range want {
		wantPer[shard.NodeFor(strconv.FormatInt(id, 10), 2)]++
	}
	if sum.Rows != 250 || sum.Key != "id" || !sum.Created || sum.Transactions != 7 || !slices.Equal(sum.RowsPerNode, wantPer) ||
		sum.File != "table demo_orders of --data-db" {
		t.Fatalf("summary %+v, want 250 rows in 7 transactions keyed by id, per node %v", sum, wantPer)
	}
	if sum.Columns[2] != (Column{"price", "numeric(10,2)"}) || sum.Columns[5] != (Column{"day", "date"}) {
		t.Fatalf("columns %+v, want the source's types", sum.Columns)
	}

	for i := range 2 {
		c.waitRows(t, i, "demo_orders", wantPer[i])
		got := rowTexts(t, c.Data[i], "demo_orders")
		if int64(len(got)) != wantPer[i] {
			t.Fatalf("@%d holds %d rows, want %d", i, len(got), wantPer[i])
		}
		for id, text := range got {
			if node := shard.NodeFor(strconv.FormatInt(id, 10), 2); int(node) != i {
				t.Errorf("row %d is on @%d, the hash says @%d", id, i, node)
			}
			if text != want[id] {
				t.Errorf("@%d row %d is %s, the source's is %s", i, id, text, want[id])
			}
		}
	}
	// --n-nodes 2: the third participant was left alone.
	if n := c.count(t, 2, "SELECT count(*) FROM pg_tables WHERE tablename = 'demo_orders'"); n != 0 {
		t.Fatalf("@2 has the table, --n-nodes 2 should have left it out")
	}

	// A second run would double the rows: refused, as load refuses it.
	out.Reset()
	errs.Reset()
	opts.Progress = false
	err := DemoCommand(ctx, opts, DemoOptions{DataDB: uri, Nodes: 2, TxSize: 40})
	if err == nil || !strings.Contains(errs.String(), "already holds rows") {
		t.Fatalf("second demo: %v, stderr %q; want a refusal", err, errs.String())
	}
}

// testDemoErrors: each way the demo cannot know what to load is refused,
// saying what to do.
func testDemoErrors(t *testing.T, c *testCluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	empty, _ := sourceDB(t, "")
	two, _ := sourceDB(t, "CREATE TABLE demo_b (k int); CREATE TABLE demo_a (k int); CREATE SCHEMA s; CREATE TABLE s.demo_c (k int)")
	one, _ := sourceDB(t, "CREATE TABLE demo_big (k int, v text); INSERT INTO demo_big VALUES (1, 'x')")
	for _, tt := range []struct {
		name   string
		do     DemoOptions
		want   string
		stderr bool // the error is printed by the load, not returned
	}{
		{"no data-db", DemoOptions{}, "--demo reads its rows from a PostgreSQL database: give --data-db URI", false},
		{"no table", DemoOptions{DataDB: empty}, "--demo: --data-db has no table to load", false},
		{"several tables", DemoOptions{DataDB: two}, "--demo: --data-db has 3 tables (demo_a, demo_b, s.demo_c); name one with --demo-table", false},
		{"missing table", DemoOptions{DataDB: two, Table: "demo_z"}, "--demo-table demo_z: no such table in --data-db", false},
		{"missing key", DemoOptions{DataDB: one, Key: "nope"}, `--demo: --key "nope" is not a column of demo_big; it has k, v`, false},
		{"too many nodes", DemoOptions{DataDB: one, Nodes: 4}, "load: --n-nodes 4: the coordinator has only 3 participants (@0..@2)", true},
	} {
		var out, errs bytes.Buffer
		opts := Options{Coordinator: c.CoordAddr, Stdout: &out, Stderr: &errs}
		tt.do.TxSize = 10
		err := DemoCommand(ctx, opts, tt.do)
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if tt.stderr {
			msg = errs.String()
		}
		if err == nil || !strings.Contains(msg, tt.want) {
			t.Errorf("%s: got %v (stderr %q), want %q", tt.name, err, errs.String(), tt.want)
		}
	}
	// The refused --n-nodes sent nothing anywhere.
	for i := range c.Data {
		if n := c.count(t, i, "SELECT count(*) FROM pg_tables WHERE tablename = 'demo_big'"); n != 0 {
			t.Errorf("@%d has demo_big after a refused demo", i)
		}
	}
}

// testDemoOnTerminal runs the seed client's demo command line on a
// terminal: load's progress bar is drawn, then the summary.
func testDemoOnTerminal(t *testing.T, c *testCluster) {
	uri, _ := sourceDB(t, "CREATE TABLE demo_tty (id int PRIMARY KEY, v text); INSERT INTO demo_tty SELECT i, 'v' || i FROM generate_series(1, 500) i")
	tm := startTerminal(t, []string{"TERM=xterm", "HOME=" + t.TempDir()},
		"client", "--coordinator", c.CoordAddr, "--demo", "--n-nodes", "3", "--data-db", uri)
	if code := tm.exit(); code != 0 {
		t.Fatalf("exit status %d; screen:\n%s", code, tm.scr.String())
	}
	<-tm.Done()
	raw := tm.raw.String()
	if !strings.Contains(raw, "\r\x1b[Kloading demo_tty [##############################] 100%  500 rows") {
		t.Fatalf("no progress bar in the output: %q", raw)
	}
	screen := strings.ReplaceAll(strings.ReplaceAll(tm.scr.String(), "\n", ""), " ", "")
	if !strings.HasPrefix(screen, "loaded500rowsintodemo_ttyin5transactions(0aborted)") {
		t.Fatalf("screen after the demo:\n%s", tm.scr.String())
	}
}
