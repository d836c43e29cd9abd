package memlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/logstore"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func rec(node string, tx uint64, kind, name string) logstore.Record {
	return logstore.Record{Node: node, Tx: tx, Kind: kind, Payload: fmt.Appendf(nil, `{"name":%q}`, name)}
}

// appendAsync runs Append on its own goroutine; the channel yields its
// result.
type appendResult struct {
	seqs []int64
	err  error
}

func appendAsync(ctx context.Context, l *Log, recs []logstore.Record) <-chan appendResult {
	ch := make(chan appendResult, 1)
	go func() {
		seqs, err := l.Append(ctx, recs)
		ch <- appendResult{seqs, err}
	}()
	return ch
}

func nextHeld(t *testing.T, l *Log) *HeldAppend {
	t.Helper()
	select {
	case h := <-l.Held():
		return h
	case <-time.After(10 * time.Second):
		t.Fatal("no append was held")
		return nil
	}
}

func count(t *testing.T, l *Log, node string) int64 {
	t.Helper()
	n, err := l.Count(t.Context(), node)
	if err != nil {
		t.Fatalf("Count: %v", err)
	}
	return n
}

func TestHeldAppendWaitsForRelease(t *testing.T) {
	l := New()
	l.Hold()
	recs := []logstore.Record{rec("n", 1, "K", "a"), rec("n", 2, "K", "b")}
	res := appendAsync(t.Context(), l, recs)
	h := nextHeld(t, l)
	if len(h.Records) != 2 || string(h.Records[1].Payload) != `{"name":"b"}` {
		t.Fatalf("held records = %v, want the two appended", h.Records)
	}
	select {
	case r := <-res:
		t.Fatalf("Append returned %v before the test released it", r)
	default:
	}
	if n := count(t, l, "n"); n != 0 {
		t.Fatalf("%d events written before release", n)
	}
	seqs := h.Release()
	r := <-res
	if r.err != nil || !slices.Equal(r.seqs, seqs) || !slices.Equal(seqs, []int64{1, 2}) {
		t.Fatalf("Append = %v, %v; Release = %v; want seqs 1 and 2 from both", r.seqs, r.err, seqs)
	}
	if n := count(t, l, "n"); n != 2 {
		t.Fatalf("%d events written after release, want 2", n)
	}
}

func TestFailedAppendWritesNothing(t *testing.T) {
	l := New()
	l.Hold()
	down := errors.New("log down")
	res := appendAsync(t.Context(), l, []logstore.Record{rec("n", 1, "K", "a")})
	nextHeld(t, l).Fail(down)
	if r := <-res; !errors.Is(r.err, down) || r.seqs != nil {
		t.Fatalf("failed Append = %v, %v; want the test's error", r.seqs, r.err)
	}
	if n := count(t, l, "n"); n != 0 {
		t.Fatalf("a failed append wrote %d events", n)
	}
	l.Pass()
	seqs, err := l.Append(t.Context(), []logstore.Record{rec("n", 1, "K", "a")})
	if err != nil || len(seqs) != 1 {
		t.Fatalf("Append after Pass = %v, %v", seqs, err)
	}
}

func TestAbandonedAppendWritesNothing(t *testing.T) {
	l := New()
	l.Hold()
	ctx, cancel := context.WithCancel(t.Context())
	res := appendAsync(ctx, l, []logstore.Record{rec("n", 1, "K", "a")})
	h := nextHeld(t, l)
	cancel()
	if r := <-res; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Append whose context ended = %v, %v", r.seqs, r.err)
	}
	if seqs := h.Release(); seqs != nil {
		t.Fatalf("Release of an abandoned append wrote seqs %v", seqs)
	}
	if n := count(t, l, "n"); n != 0 {
		t.Fatalf("an abandoned append wrote %d events", n)
	}
}

// eventLog is what the transcript exercises, in both logs.
type eventLog interface {
	Append(ctx context.Context, recs []logstore.Record) ([]int64, error)
	Scan(ctx context.Context, node string, fn func(logstore.Record) error) error
	DeleteTxs(ctx context.Context, node string, ended []logstore.Ended) (int64, error)
	Count(ctx context.Context, node string) (int64, error)
}

// transcript runs one script on lg and describes what it saw. Seqs appear
// as their rank among the seqs appended, since a database may skip values
// (a rejected batch still draws from the identity).
func transcript(t *testing.T, lg eventLog) []string {
	ctx := t.Context()
	var out []string
	var all []int64
	add := func(recs ...logstore.Record) []int64 {
		seqs, err := lg.Append(ctx, recs)
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		out = append(out, fmt.Sprintf("append %d: %d seqs, increasing %t", len(recs), len(seqs), slices.IsSorted(seqs) && len(slices.Compact(slices.Clone(seqs))) == len(seqs)))
		all = append(all, seqs...)
		return seqs
	}
	rank := func(seq int64) int { return slices.Index(all, seq) }

	first := add(rec("a", 1, "K", "a1"), rec("b", 1, "K", "b1"), rec("a", 2, "K", "a2"),
		rec("a", 1, "part.violation", "v1"), rec("a", 1, "K", "a1b"))
	for _, bad := range [][]logstore.Record{
		{rec("a", 9, "K", "fine"), {Node: "a", Tx: 9, Kind: "K"}},
		{{Node: "a", Tx: 9, Kind: "K", Payload: []byte("not json")}},
		{{Node: "a", Tx: 1 << 63, Kind: "K", Payload: []byte("{}")}},
	} {
		_, err := lg.Append(ctx, bad)
		out = append(out, fmt.Sprintf("bad append of %d: rejected %t", len(bad), err != nil))
	}
	second := add(rec("a", 3, "K", "a3"), rec("a", 1, "K", "a1-later"))
	for _, ended := range [][]logstore.Ended{
		{{Tx: 1, UpToSeq: first[4]}, {Tx: 3, UpToSeq: second[0]}, {Tx: 1 << 63, UpToSeq: second[1]}},
		{{Tx: 2, UpToSeq: first[2] - 1}},
		nil,
	} {
		n, err := lg.DeleteTxs(ctx, "a", ended)
		out = append(out, fmt.Sprintf("delete %d txs: %d events, error %t", len(ended), n, err != nil))
	}
	for _, node := range []string{"a", "b", "nobody"} {
		n, err := lg.Count(ctx, node)
		out = append(out, fmt.Sprintf("count %s: %d, error %t", node, n, err != nil))
		err = lg.Scan(ctx, node, func(r logstore.Record) error {
			out = append(out, fmt.Sprintf("  #%d %s tx %d %s %s", rank(r.Seq), r.Node, r.Tx, r.Kind, canonical(t, r.Payload)))
			return nil
		})
		if err != nil {
			t.Fatalf("Scan %s: %v", node, err)
		}
	}
	stop := errors.New("stop")
	err := lg.Scan(ctx, "a", func(logstore.Record) error { return stop })
	out = append(out, fmt.Sprintf("scan stopped by its callback: %t", errors.Is(err, stop)))
	return out
}

// TestBehavesLikeStore runs one script on a memlog and on the PostgreSQL
// store: a loop test on memlog means something only while the two agree.
func TestBehavesLikeStore(t *testing.T) {
	want := transcript(t, logstore.New(pgtest.MigratedPool(t, db.MigrateLog)))
	got := transcript(t, New())
	if !slices.Equal(got, want) {
		t.Fatalf("memlog:\n%s\nlogstore.Store:\n%s", join(got), join(want))
	}
	// The script must have deleted something and spared something.
	if !slices.Contains(want, "delete 3 txs: 3 events, error false") {
		t.Fatalf("the script deleted other than expected:\n%s", join(want))
	}
	t.Logf("both logs:\n%s", join(want))
}

// canonical re-encodes a JSON payload: the database keeps it as jsonb,
// which reads back equal but not byte for byte.
func canonical(t *testing.T, payload []byte) string {
	var v any
	if err := json.Unmarshal(payload, &v); err != nil {
		t.Fatalf("payload %q is not JSON: %v", payload, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("re-encode payload: %v", err)
	}
	return string(b)
}

func join(lines []string) string { return strings.Join(lines, "\n") }
