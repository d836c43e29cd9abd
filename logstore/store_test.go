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

func rec(node string, tx uint64, kind string, i int) Record {
	return Record{Node: node, Tx: tx, Kind: kind, Payload: fmt.Appendf(nil, `{"i":%d,"kind":%q}`, i, kind)}
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

// checkRecords asserts got are want, stored with seqs, in that order.
func checkRecords(t *testing.T, got, want []Record, seqs []int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Seq != seqs[i] || g.Node != w.Node || g.Tx != w.Tx || g.Kind != w.Kind {
			t.Fatalf("record %d = {seq %d %s tx %d %s}, want {seq %d %s tx %d %s}",
				i, g.Seq, g.Node, g.Tx, g.Kind, seqs[i], w.Node, w.Tx, w.Kind)
		}
		if !sameJSON(t, g.Payload, w.Payload) {
			t.Fatalf("record %d payload = %s, want %s", i, g.Payload, w.Payload)
		}
		if g.At.IsZero() {
			t.Fatalf("record %d has no timestamp", i)
		}
	}
}

func strictlyIncreasing(seqs []int64) bool {
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			return false
		}
	}
	return true
}

func TestAppendOneThenManyAndScan(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)

	one := []Record{{Node: "n1", Tx: 0, Kind: "Started", Payload: []byte(`{"cluster":"c"}`)}}
	seq1, err := s.Append(ctx, one)
	if err != nil {
		t.Fatalf("Append 1: %v", err)
	}
	if len(seq1) != 1 {
		t.Fatalf("Append 1 returned %d seqs", len(seq1))
	}

	many := make([]Record, 500)
	for i := range many {
		many[i] = rec("n1", uint64(i%7+1), fmt.Sprintf("K%d", i%3), i)
	}
	seqs, err := s.Append(ctx, many)
	if err != nil {
		t.Fatalf("Append 500: %v", err)
	}
	if len(seqs) != 500 {
		t.Fatalf("Append 500 returned %d seqs", len(seqs))
	}
	all := append(seq1, seqs...)
	if !strictlyIncreasing(all) {
		t.Fatalf("seqs not increasing in append order: %v", all)
	}
	if many[0].Seq != 0 {
		t.Fatal("Append modified its input")
	}

	checkRecords(t, scanAll(t, s, "n1"), append(one, many...), all)
}

func TestScanCrossesPages(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)

	const n = 2500
	if n <= 2*scanPage {
		t.Fatalf("test needs more than two pages of %d", scanPage)
	}
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = rec("big", uint64(i/10), "E", i)
	}
	// Two appends, so seqs of the page boundaries come from different statements.
	seqA, err := s.Append(ctx, recs[:1200])
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	seqB, err := s.Append(ctx, recs[1200:])
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	seqs := append(seqA, seqB...)
	if !strictlyIncreasing(seqs) {
		t.Fatal("seqs not increasing in append order")
	}
	checkRecords(t, scanAll(t, s, "big"), recs, seqs)

	count, err := s.Count(ctx, "big")
	if err != nil {
		t.Fatalf("Count: %v", err)
	}
	if count != n {
		t.Fatalf("Count = %d, want %d", count, n)
	}
}

func TestScanStopsOnCallbackError(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	recs := make([]Record, 10)
	for i := range recs {
		recs[i] = rec("n", 1, "E", i)
	}
	if _, err := s.Append(ctx, recs); err != nil {
		t.Fatalf("Append: %v", err)
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

	// Interleaved in one Append, as a shared log of a cluster could receive them.
	var all, a, b []Record
	for i := range 40 {
		r := rec("a", uint64(i%4), "E", i)
		if i%3 == 0 {
			r.Node = "b"
		}
		all = append(all, r)
	}
	seqs, err := s.Append(ctx, all)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	var seqA, seqB []int64
	for i, r := range all {
		if r.Node == "a" {
			a, seqA = append(a, r), append(seqA, seqs[i])
		} else {
			b, seqB = append(b, r), append(seqB, seqs[i])
		}
	}
	checkRecords(t, scanAll(t, s, "a"), a, seqA)
	checkRecords(t, scanAll(t, s, "b"), b, seqB)
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
}

func TestTxEventsAndDeleteTxs(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)

	var recs []Record
	for i := range 30 {
		node := "a"
		if i%2 == 1 {
			node = "b"
		}
		recs = append(recs, rec(node, uint64(i%5), fmt.Sprintf("K%d", i), i))
	}
	seqs, err := s.Append(ctx, recs)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	// want returns node's records of txs, in append order, with their seqs.
	want := func(node string, txs ...uint64) ([]Record, []int64) {
		var rs []Record
		var ss []int64
		for i, r := range recs {
			if r.Node == node && slices.Contains(txs, r.Tx) {
				rs, ss = append(rs, r), append(ss, seqs[i])
			}
		}
		return rs, ss
	}

	got, err := s.TxEvents(ctx, "a", 2)
	if err != nil {
		t.Fatalf("TxEvents: %v", err)
	}
	w, ws := want("a", 2)
	if len(w) == 0 {
		t.Fatal("test data has no events of a tx 2")
	}
	checkRecords(t, got, w, ws)

	none, err := s.TxEvents(ctx, "a", 99)
	if err != nil {
		t.Fatalf("TxEvents of unknown tx: %v", err)
	}
	if len(none) != 0 {
		t.Fatalf("unknown tx has %d events", len(none))
	}

	last := seqs[len(seqs)-1]
	deleted, err := s.DeleteTxs(ctx, "a", []Ended{{1, last}, {3, last}, {99, last}})
	if err != nil {
		t.Fatalf("DeleteTxs: %v", err)
	}
	gone, _ := want("a", 1, 3)
	if deleted != int64(len(gone)) {
		t.Fatalf("DeleteTxs removed %d events, want %d", deleted, len(gone))
	}
	keptA, seqKeptA := want("a", 0, 2, 4)
	checkRecords(t, scanAll(t, s, "a"), keptA, seqKeptA)
	allB, seqAllB := want("b", 0, 1, 2, 3, 4)
	checkRecords(t, scanAll(t, s, "b"), allB, seqAllB)

	// Events of an id appended after the bound belong to a later
	// transaction of that id and stay.
	_, seqA2 := want("a", 2)
	deleted, err = s.DeleteTxs(ctx, "a", []Ended{{2, seqA2[0]}})
	if err != nil || deleted != 1 {
		t.Fatalf("DeleteTxs of tx 2 up to its first event = %d, %v; want 1", deleted, err)
	}
	i := slices.Index(seqKeptA, seqA2[0])
	checkRecords(t, scanAll(t, s, "a"), slices.Delete(keptA, i, i+1), slices.Delete(seqKeptA, i, i+1))
	left, err := s.TxEvents(ctx, "a", 2)
	if err != nil || len(left) != len(seqA2)-1 || left[0].Seq != seqA2[1] {
		t.Fatalf("tx 2 after the bounded delete: %v, %v; want its events from seq %d", left, err, seqA2[1])
	}

	if n, err := s.DeleteTxs(ctx, "a", nil); err != nil || n != 0 {
		t.Fatalf("DeleteTxs of no txs = %d, %v", n, err)
	}
	if n, err := s.DeleteTxs(ctx, "a", []Ended{{math.MaxUint64, last}}); err != nil || n != 0 {
		t.Fatalf("DeleteTxs of an impossible tx = %d, %v", n, err)
	}
}

func TestAppendRejectsBadRecords(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)

	if seqs, err := s.Append(ctx, nil); err != nil || seqs != nil {
		t.Fatalf("Append of nothing = %v, %v", seqs, err)
	}
	bad := [][]Record{
		{rec("n", 1, "E", 0), {Node: "n", Tx: 1, Kind: "E"}},
		{{Node: "n", Tx: math.MaxUint64, Kind: "E", Payload: []byte(`{}`)}},
		{{Node: "n", Tx: 1, Kind: "E", Payload: []byte(`not json`)}},
	}
	for i, recs := range bad {
		if _, err := s.Append(ctx, recs); err == nil {
			t.Errorf("bad batch %d accepted", i)
		}
	}
	// A failed batch writes nothing, not even its good records.
	if n, err := s.Count(ctx, "n"); err != nil || n != 0 {
		t.Fatalf("Count after rejected batches = %d, %v; want 0", n, err)
	}
	if _, err := s.TxEvents(ctx, "n", math.MaxUint64); err == nil {
		t.Fatal("TxEvents of an impossible tx succeeded")
	}
}
