package logstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"testing"

	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// newStore returns a Store over a fresh, migrated log database.
func newStore(t *testing.T) *Store {
	t.Helper()
	return New(pgtest.MigratedPool(t, db.MigrateLog))
}

// entry is an event of tx told apart by i, shaped like an envelope.
func entry(tx uint64, kind string, i int) Entry {
	return Entry{Tx: tx, Event: fmt.Appendf(nil, `{"type":%q,"v":1,"data":{"tx":%d,"i":%d}}`, kind, tx, i)}
}

// appended is what one Append wrote, to compare a scan with.
type appended struct {
	node    string
	seq     int64
	entries []Entry
}

func appendRow(t *testing.T, s *Store, node string, entries ...Entry) appended {
	t.Helper()
	seq, err := s.Append(t.Context(), node, entries)
	if err != nil {
		t.Fatalf("Append %d events to %s: %v", len(entries), node, err)
	}
	return appended{node, seq, entries}
}

func scanAll(t *testing.T, s *Store, node string) []Record {
	t.Helper()
	var got []Record
	if err := s.Scan(t.Context(), node, func(r Record) error {
		got = append(got, r)
		return nil
	}); err != nil {
		t.Fatalf("Scan %s: %v", node, err)
	}
	return got
}

func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("payload %q is not JSON: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("payload %q is not JSON: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

// checkRecords asserts got are the events of rows, in order, each at its
// row's seq and its index in the row.
func checkRecords(t *testing.T, got []Record, rows ...appended) {
	t.Helper()
	i := 0
	for _, row := range rows {
		for j, e := range row.entries {
			if i >= len(got) {
				t.Fatalf("got %d records, want more", len(got))
			}
			g := got[i]
			want := Pos{Seq: row.seq, Index: j}
			if g.Pos != want || g.Node != row.node || g.Tx != e.Tx {
				t.Fatalf("record %d = {%s %s tx %d}, want {%s %s tx %d}", i, g.Pos, g.Node, g.Tx, want, row.node, e.Tx)
			}
			if !sameJSON(t, g.Payload, e.Event) {
				t.Fatalf("record %d payload = %s, want %s", i, g.Payload, e.Event)
			}
			if g.At.IsZero() {
				t.Fatalf("record %d has no timestamp", i)
			}
			i++
		}
	}
	if i != len(got) {
		t.Fatalf("got %d records, want %d", len(got), i)
	}
}

func TestAppendIsOneRowAndScanReadsItsEvents(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)

	one := appendRow(t, s, "n1", Entry{Tx: 0, Event: []byte(`{"type":"started","data":{"cluster":"c"}}`)})
	many := make([]Entry, 500)
	for i := range many {
		many[i] = entry(uint64(i%7+1), fmt.Sprintf("K%d", i%3), i)
	}
	big := appendRow(t, s, "n1", many...)
	if one.seq <= 0 || big.seq <= one.seq {
		t.Fatalf("seqs %d then %d, want increasing and positive", one.seq, big.seq)
	}
	if many[3].Tx != 4 {
		t.Fatal("Append modified its input")
	}
	checkRecords(t, scanAll(t, s, "n1"), one, big)

	size, err := s.Count(ctx, "n1")
	if err != nil || size != (Size{Rows: 2, Events: 501}) {
		t.Fatalf("Count = %+v, %v; want 2 rows of 501 events", size, err)
	}
	if seq, err := s.Append(ctx, "n1", nil); err != nil || seq != 0 {
		t.Fatalf("Append of nothing = %d, %v; want no row", seq, err)
	}
}

func TestScanCrossesPages(t *testing.T) {
	s := newStore(t)

	const n = 2*scanPage + 100
	rows := make([]appended, n)
	for i := range rows {
		rows[i] = appendRow(t, s, "big", entry(uint64(i/10+1), "E", 2*i), entry(uint64(i/10+2), "E", 2*i+1))
	}
	checkRecords(t, scanAll(t, s, "big"), rows...)
}

func TestScanStopsOnCallbackError(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	for i := range 4 {
		appendRow(t, s, "n", entry(1, "E", 2*i), entry(2, "E", 2*i+1))
	}
	stop := errors.New("stop here")
	calls := 0
	err := s.Scan(ctx, "n", func(Record) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Scan error = %v, want it to wrap the callback's error", err)
	}
	if calls != 3 {
		t.Fatalf("callback ran %d times after failing on the 3rd", calls)
	}
}

func TestNodesStayApart(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)

	var a, b []appended
	for i := range 12 {
		if i%3 == 0 {
			b = append(b, appendRow(t, s, "b", entry(uint64(i%4), "E", i)))
		} else {
			a = append(a, appendRow(t, s, "a", entry(uint64(i%4), "E", i), entry(9, "E", i)))
		}
	}
	checkRecords(t, scanAll(t, s, "a"), a...)
	checkRecords(t, scanAll(t, s, "b"), b...)
	if got := scanAll(t, s, "nobody"); len(got) != 0 {
		t.Fatalf("unknown node scanned %d records", len(got))
	}
	nodes, err := s.Nodes(ctx)
	if err != nil {
		t.Fatalf("Nodes: %v", err)
	}
	if !slices.Equal(nodes, []string{"a", "b"}) {
		t.Fatalf("Nodes = %v, want [a b]", nodes)
	}
	// Another node's rows are not this node's to compact.
	if d, c, err := s.Compact(ctx, "b", []int64{a[0].seq}, []Cut{{a[1].seq, 9}}); err != nil || d != 0 || c != 0 {
		t.Fatalf("Compact of a's rows as b = %d, %d, %v; want nothing deleted or cut", d, c, err)
	}
}

func TestTxRowsAndCompact(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)

	r1 := appendRow(t, s, "a", entry(1, "K", 1), entry(2, "K", 2), entry(1, "K", 3))
	r2 := appendRow(t, s, "a", entry(3, "K", 4))
	node := appendRow(t, s, "a", entry(0, "coord.txids_reserved", 5), entry(2, "K", 6))
	violation := appendRow(t, s, "a", entry(4, "part.violation", 7), entry(4, "K", 8))
	r5 := appendRow(t, s, "a", entry(2, "K", 9))
	other := appendRow(t, s, "b", entry(2, "K", 10))

	got, err := s.TxRows(ctx, "a", 2)
	if err != nil {
		t.Fatalf("TxRows: %v", err)
	}
	checkRecords(t, got, r1, node, r5)
	if none, err := s.TxRows(ctx, "a", 99); err != nil || len(none) != 0 {
		t.Fatalf("TxRows of an unknown tx = %v, %v; want none", none, err)
	}
	if _, err := s.TxRows(ctx, "a", math.MaxUint64); err == nil {
		t.Fatal("TxRows of an impossible tx succeeded")
	}

	// Rows with a node-level event or a violation are never deleted, nor
	// another node's.
	deleted, trimmed, err := s.Compact(ctx, "a", []int64{r2.seq, node.seq, violation.seq, other.seq, 1 << 40}, nil)
	if err != nil || deleted != 1 || trimmed != 0 {
		t.Fatalf("Compact dropping rows = %d deleted, %d trimmed, %v; want r2 deleted", deleted, trimmed, err)
	}
	// Cuts remove a transaction's events from rows that stay, but never a
	// violation, and never the last event of a row (that row is dropped).
	deleted, trimmed, err = s.Compact(ctx, "a", nil, []Cut{
		{r1.seq, 1}, {node.seq, 2}, {violation.seq, 4}, {r5.seq, 2}, {r5.seq, 9}, {other.seq, 2}, {r1.seq, math.MaxUint64},
	})
	if err != nil || deleted != 0 || trimmed != 3 {
		t.Fatalf("Compact cutting = %d deleted, %d trimmed, %v; want r1, node and violation trimmed", deleted, trimmed, err)
	}
	r1.entries = r1.entries[1:2]
	node.entries = node.entries[:1]
	violation.entries = violation.entries[:1]
	checkRecords(t, scanAll(t, s, "a"), r1, node, violation, r5)
	checkRecords(t, scanAll(t, s, "b"), other)

	// A cut and a drop of one row: the drop wins.
	deleted, trimmed, err = s.Compact(ctx, "a", []int64{r1.seq}, []Cut{{r1.seq, 2}})
	if err != nil || deleted != 1 || trimmed != 0 {
		t.Fatalf("Compact dropping and cutting r1 = %d deleted, %d trimmed, %v; want it deleted", deleted, trimmed, err)
	}
	if d, c, err := s.Compact(ctx, "a", nil, nil); err != nil || d != 0 || c != 0 {
		t.Fatalf("Compact of nothing = %d, %d, %v", d, c, err)
	}
}

func TestAppendRejectsBadEntries(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)

	bad := [][]Entry{
		{entry(1, "E", 0), {Tx: 1}},
		{{Tx: math.MaxUint64, Event: []byte(`{}`)}},
		{{Tx: 1, Event: []byte(`not json`)}},
		// Two values would take two positions in the row.
		{{Tx: 1, Event: []byte(`{}, {}`)}},
	}
	for i, entries := range bad {
		if _, err := s.Append(ctx, "n", entries); err == nil {
			t.Errorf("bad batch %d accepted", i)
		}
	}
	if size, err := s.Count(ctx, "n"); err != nil || size != (Size{}) {
		t.Fatalf("Count after rejected batches = %+v, %v; want nothing", size, err)
	}
}
