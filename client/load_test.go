package client

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/shard"
)

const sensorsCSV = "../testdata/sensors.csv"

// expectedSplit reads a CSV file and routes its rows as the loader must.
func expectedSplit(t *testing.T, file, key string, n int) (rows int64, perNode []int64) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	idx := -1
	for i, h := range recs[0] {
		if h == key {
			idx = i
		}
	}
	if idx < 0 {
		t.Fatalf("%s has no column %s", file, key)
	}
	perNode = make([]int64, n)
	for _, r := range recs[1:] {
		perNode[shard.NodeFor(r[idx], n)]++
	}
	return int64(len(recs) - 1), perNode
}

// loadSummary reads the JSON line of a load that succeeded.
func loadSummary(t *testing.T, out []byte) LoadSummary {
	t.Helper()
	var line struct {
		Command string      `json:"command"`
		OK      bool        `json:"ok"`
		Result  LoadSummary `json:"result"`
	}
	if err := json.Unmarshal(out, &line); err != nil || line.Command != "load" || !line.OK {
		t.Fatalf("output %q: %v", out, err)
	}
	return line.Result
}

func testLoadSensors(t *testing.T, c *testCluster) {
	nodes := len(c.Data)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var out, errs bytes.Buffer
	opts := Options{Coordinator: c.CoordAddr, Format: FormatJSON, Stdout: &out, Stderr: &errs}
	err := LoadCommand(ctx, opts, LoadOptions{File: sensorsCSV, Table: "sensors", Key: "sensor_id", Create: true, TxSize: 250})
	if err != nil {
		t.Fatalf("load: %v\n%s", err, errs.String())
	}
	sum := loadSummary(t, out.Bytes())
	if errs.Len() > 0 {
		t.Fatalf("stderr is not a terminal, yet got %q", errs.String())
	}
	t.Logf("%s", sum.String())
	rows, perNode := expectedSplit(t, sensorsCSV, "sensor_id", nodes)
	if rows != 3000 || sum.Rows != rows || sum.Transactions != 12 || sum.Aborts != 0 || !sum.Created {
		t.Fatalf("summary %+v, want %d rows in 12 transactions", sum, rows)
	}
	wantTypes := []Column{{"id", "bigint"}, {"sensor_id", "bigint"}, {"temperature", "double precision"}, {"observed_at", "timestamptz"}}
	for i, col := range wantTypes {
		if sum.Columns[i] != col {
			t.Fatalf("columns %+v, want %+v", sum.Columns, wantTypes)
		}
	}
	// Each participant holds exactly the rows the hash sends it, once the
	// second phase of the last transaction reached it.
	for i := range nodes {
		if sum.RowsPerNode[i] != perNode[i] {
			t.Fatalf("summary puts %d rows on @%d, the hash %d", sum.RowsPerNode[i], i, perNode[i])
		}
		c.waitRows(t, i, "sensors", perNode[i])
		if got := c.count(t, i, "SELECT count(*) FROM sensors"); got != perNode[i] {
			t.Fatalf("@%d holds %d rows, want %d", i, got, perNode[i])
		}
		// No row sits on the wrong node.
		rows, _ := c.Data[i].Query(ctx, "SELECT DISTINCT sensor_id::text FROM sensors")
		keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if shard.NodeFor(k, nodes) != engine.NodeID(i) {
				t.Fatalf("sensor %s found on @%d, hashes to @%d", k, i, shard.NodeFor(k, nodes))
			}
		}
	}
	if got := c.count(t, 0, "SELECT count(*) FROM sensors WHERE observed_at = '2024-03-01T00:00:00Z' AND id = 1") +
		c.count(t, 1, "SELECT count(*) FROM sensors WHERE observed_at = '2024-03-01T00:00:00Z' AND id = 1") +
		c.count(t, 2, "SELECT count(*) FROM sensors WHERE observed_at = '2024-03-01T00:00:00Z' AND id = 1"); got != 1 {
		t.Fatalf("the first observation was found %d times", got)
	}

	// The load command of the language, into the existing table, in table
	// format, with a bad row: the batch before it is committed, the batch
	// with it aborts as a whole, and the summary says what was done.
	bad := filepath.Join(t.TempDir(), "bad.csv")
	body := "id,sensor_id,temperature,observed_at\n"
	want := make([]int64, nodes)
	for i := 1; i <= 5; i++ {
		body += fmt.Sprintf("%d,%d,20.5,2024-04-01T00:00:00Z\n", 10000+i, i)
		if i <= 3 {
			want[shard.NodeFor(strconv.Itoa(i), nodes)]++
		}
	}
	body += "10006,6,hot,2024-04-01T00:00:00Z\n"
	if err := os.WriteFile(bad, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errs.Reset()
	err = RunScript(ctx, Options{Coordinator: c.CoordAddr, Stdout: &out, Stderr: &errs},
		strings.NewReader("load --table sensors --key sensor_id --append --tx-size 3 "+bad+"\n"), "")
	if err == nil {
		t.Fatalf("load of a bad file succeeded: %s", out.String())
	}
	if !strings.Contains(out.String(), "loaded 3 rows into sensors in 1 transactions (1 aborted)") {
		t.Fatalf("summary: %q", out.String())
	}
	if !strings.Contains(errs.String(), "error: load: line 7, column 3 (temperature): transaction ") ||
		!strings.Contains(errs.String(), `invalid input syntax for type double precision: "hot"`) {
		t.Fatalf("error: %q", errs.String())
	}
	for i := range nodes {
		c.waitCount(t, i, "SELECT count(*) FROM sensors WHERE id > 10000", want[i])
	}
}

func testLoadErrors(t *testing.T, c *testCluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.csv")
	dup := filepath.Join(dir, "dup.csv")
	ragged := filepath.Join(dir, "ragged.csv")
	os.WriteFile(empty, nil, 0o600)
	os.WriteFile(dup, []byte("a,a\n1,2\n"), 0o600)
	os.WriteFile(ragged, []byte("a,b\n1,2\n3\n"), 0o600)
	tests := []struct {
		opts LoadOptions
		msg  string
	}{
		{LoadOptions{File: sensorsCSV, Table: "t", Key: "nope", TxSize: 10}, `--key "nope" is not a column; the header has id, sensor_id, temperature, observed_at`},
		{LoadOptions{File: filepath.Join(dir, "missing.csv"), Table: "t", Key: "a", TxSize: 10}, "no such file"},
		{LoadOptions{File: empty, Table: "t", Key: "a", TxSize: 10}, "the file is empty"},
		{LoadOptions{File: dup, Table: "t", Key: "a", TxSize: 10}, `column "a" appears twice`},
		{LoadOptions{File: ragged, Table: "ragged", Key: "a", TxSize: 10, Create: true}, "wrong number of fields"},
		{LoadOptions{File: sensorsCSV, Table: "not_created", Key: "id", TxSize: 10}, `relation "not_created" does not exist`},
	}
	for _, tt := range tests {
		var out, errs bytes.Buffer
		err := LoadCommand(ctx, Options{Coordinator: c.CoordAddr, Stdout: &out, Stderr: &errs}, tt.opts)
		if err == nil || !strings.Contains(errs.String(), tt.msg) {
			t.Errorf("%+v: err %v, stderr %q, want %q", tt.opts, err, errs.String(), tt.msg)
		}
	}
}

// loadFile writes body to a file and loads it with the command language's
// load command and args, returning stdout, stderr and the run's error.
func loadFile(t *testing.T, c *testCluster, body, args string) (string, string, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "data.csv")
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var out, errs bytes.Buffer
	err := RunScript(ctx, Options{Coordinator: c.CoordAddr, Stdout: &out, Stderr: &errs}, strings.NewReader("load "+args+" "+file+"\n"), "")
	return out.String(), errs.String(), err
}

// rowsOf counts a table's rows on every participant.
func (c *testCluster) rowsOf(t *testing.T, table string) (total int64) {
	t.Helper()
	for i := range c.Data {
		total += c.count(t, i, "SELECT count(*) FROM "+table)
	}
	return total
}

// testLoadPositions checks that a value the servers refuse is named by its
// line in the file, counting the lines of a quoted field that spans
// several, and by its column when the server's message points at it.
func testLoadPositions(t *testing.T, c *testCluster) {
	c.createTable(t, "CREATE TABLE positions (id bigint, note text, amount bigint NOT NULL)")
	head := "id,note,amount\n1,\"two\nlines\",10\n2,plain,20\n"
	for _, tt := range []struct{ name, row, want string }{
		{"bad number", "3,x,12x\n", `error: load: line 5, column 3 (amount): transaction `},
		{"null in a not-null column", "3,x,\n", `error: load: line 5, column 3 (amount): transaction `},
		{"quoted field", "3,\"a \"\"b\"\"\",oops\n", `error: load: line 5, column 3 (amount): transaction `},
	} {
		_, errs, err := loadFile(t, c, head+tt.row+"4,y,40\n", "--table positions --key id --atomic")
		if err == nil || !strings.Contains(errs, tt.want) {
			t.Errorf("%s: err %v, stderr %q, want %q", tt.name, err, errs, tt.want)
		}
	}
	if n := c.rowsOf(t, "positions"); n != 0 {
		t.Errorf("failed atomic loads left %d rows", n)
	}
	// A value too long says nothing of its column: the line alone.
	c.createTable(t, "CREATE TABLE positions_short (id bigint, code varchar(3))")
	_, errs, err := loadFile(t, c, "id,code\n1,abc\n2,abcd\n", "--table positions_short --key id")
	if err == nil || !strings.Contains(errs, "error: load: line 3: transaction ") || !strings.Contains(errs, "value too long") {
		t.Errorf("value too long: err %v, stderr %q", err, errs)
	}
}

// testLoadAtomic loads a file in one transaction: all rows, or with a bad
// row none, and with --create then no table either.
func testLoadAtomic(t *testing.T, c *testCluster) {
	out, errs, err := loadFile(t, c, "id,v\n1,a\n2,b\n3,c\n4,d\n5,e\n", "--table atomic_ok --key id --create --atomic")
	if err != nil || !strings.Contains(out, "loaded 5 rows into atomic_ok in one transaction (0 aborted)") {
		t.Fatalf("atomic load: %v\nstdout %q\nstderr %q", err, out, errs)
	}
	c.waitSplit(t, "atomic_ok", []string{"1", "2", "3", "4", "5"}, 1)

	// The bad row is the last of many, sent well after the first ones
	// reached their participants: nothing stays, not even the table.
	var body strings.Builder
	body.WriteString("id,v\n")
	for i := 1; i <= 3*atomicChunkRows; i++ {
		fmt.Fprintf(&body, "%d,%d\n", i, i)
	}
	body.WriteString("x,y\n")
	out, errs, err = loadFile(t, c, body.String(), "--table atomic_bad --key v --create --atomic")
	line := 3*atomicChunkRows + 2
	if err == nil || !strings.Contains(errs, fmt.Sprintf("error: load: line %d, column 1 (id): ", line)) ||
		!strings.Contains(out, "loaded 0 rows into atomic_bad in no transaction") {
		t.Fatalf("atomic load with a bad last row: %v\nstdout %q\nstderr %q", err, out, errs)
	}
	for i := range c.Data {
		if n := c.count(t, i, "SELECT count(*) FROM pg_tables WHERE tablename = 'atomic_bad'"); n != 0 {
			t.Errorf("@%d has table atomic_bad after a failed atomic load", i)
		}
	}
}

// testLoadDirect loads with --direct, the rows sent straight to the
// participants: split as any load, committed and counted; an atomic load
// with a bad row leaves nothing, its error naming the row's line.
func testLoadDirect(t *testing.T, c *testCluster) {
	var body strings.Builder
	body.WriteString("id,v\n")
	keys := make([]string, 250)
	for i := range keys {
		keys[i] = fmt.Sprint(i + 1)
		fmt.Fprintf(&body, "%d,v%d\n", i+1, i+1)
	}
	out, errs, err := loadFile(t, c, body.String(), "--table direct_ok --key id --create --direct --tx-size 40")
	if err != nil || !strings.Contains(out, "loaded 250 rows into direct_ok in 7 transactions (0 aborted)") {
		t.Fatalf("direct load: %v\nstdout %q\nstderr %q", err, out, errs)
	}
	c.waitSplit(t, "direct_ok", keys, 1)

	// The bad row comes after the rows the column types are guessed from.
	body.Reset()
	body.WriteString("id,v\n")
	for i := 1; i <= sampleRows+100; i++ {
		fmt.Fprintf(&body, "%d,%d\n", i, i)
	}
	body.WriteString("x,y\n")
	out, errs, err = loadFile(t, c, body.String(), "--table direct_bad --key v --create --atomic --direct")
	if err == nil || !strings.Contains(errs, fmt.Sprintf("error: load: line %d, column 1 (id): ", sampleRows+102)) ||
		!strings.Contains(out, "loaded 0 rows into direct_bad in no transaction") {
		t.Fatalf("atomic direct load with a bad row: %v\nstdout %q\nstderr %q", err, out, errs)
	}
	for i := range c.Data {
		if n := c.count(t, i, "SELECT count(*) FROM pg_tables WHERE tablename = 'direct_bad'"); n != 0 {
			t.Errorf("@%d has table direct_bad after a failed atomic load", i)
		}
	}
}

// testLoadRefusesNonEmpty loads a file twice: the second time is refused
// unless --append, which adds the rows again.
func testLoadRefusesNonEmpty(t *testing.T, c *testCluster) {
	body := "id,v\n1,a\n2,b\n3,c\n4,d\n"
	if _, errs, err := loadFile(t, c, body, "--table twice --key id --create"); err != nil {
		t.Fatalf("first load: %v %s", err, errs)
	}
	for _, mode := range []string{"", " --atomic"} {
		out, errs, err := loadFile(t, c, body, "--table twice --key id --create"+mode)
		if err == nil || !strings.Contains(errs, "error: load: table twice already holds rows (on @") ||
			!strings.Contains(errs, "give --append") || !strings.Contains(out, "loaded 0 rows") {
			t.Errorf("second load%s: err %v, stdout %q, stderr %q", mode, err, out, errs)
		}
	}
	if _, errs, err := loadFile(t, c, body, "--table twice --key id --append"); err != nil {
		t.Fatalf("load --append: %v %s", err, errs)
	}
	c.waitSplit(t, "twice", []string{"1", "2", "3", "4"}, 2)
}

// waitSplit waits until every participant holds the rows the hash sends
// it, each key times times (the second phase of the last commit may still
// be on its way), and checks that no participant holds more.
func (c *testCluster) waitSplit(t *testing.T, table string, keys []string, times int64) {
	t.Helper()
	want := make([]int64, len(c.Data))
	for _, k := range keys {
		want[shard.NodeFor(k, len(c.Data))] += times
	}
	for i := range c.Data {
		// A table made in the load's transaction is not there before then.
		c.waitCount(t, i, "SELECT count(*) FROM pg_tables WHERE tablename = '"+table+"'", 1)
		c.waitRows(t, i, table, want[i])
		if got := c.count(t, i, "SELECT count(*) FROM "+table); got != want[i] {
			t.Errorf("@%d holds %d rows of %s, want %d", i, got, table, want[i])
		}
	}
}
