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

// entry is an event of tx named name, shaped like an envelope.
func entry(tx uint64, kind, name string) logstore.Entry {
	return logstore.Entry{Tx: tx, Event: fmt.Appendf(nil, `{"type":%q,"data":{"tx":%d,"name":%q}}`, kind, tx, name)}
}

// appendAsync runs Append on its own goroutine; the channel yields its
// result.
type appendResult struct {
	seq int64
	err error
}

func appendAsync(ctx context.Context, l *Log, entries []logstore.Entry) <-chan appendResult {
	ch := make(chan appendResult, 1)
	go func() {
		seq, err := l.Append(ctx, "n", entries)
		ch <- appendResult{seq, err}
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
	return n.Events
}

func TestHeldAppendWaitsForRelease(t *testing.T) {
	l := New()
	l.Hold()
	entries := []logstore.Entry{entry(1, "K", "a"), entry(2, "K", "b")}
	res := appendAsync(t.Context(), l, entries)
	h := nextHeld(t, l)
	if h.Node != "n" || len(h.Entries) != 2 || string(h.Entries[1].Event) != string(entries[1].Event) {
		t.Fatalf("held append = %s %v, want the two events appended to n", h.Node, h.Entries)
	}
	select {
	case r := <-res:
		t.Fatalf("Append returned %v before the test released it", r)
	default:
	}
	if n := count(t, l, "n"); n != 0 {
		t.Fatalf("%d events written before release", n)
	}
	seq := h.Release()
	r := <-res
	if r.err != nil || r.seq != seq || seq != 1 {
		t.Fatalf("Append = %v, %v; Release = %v; want seq 1 from both", r.seq, r.err, seq)
	}
	if n := count(t, l, "n"); n != 2 {
		t.Fatalf("%d events written after release, want 2", n)
	}
}

func TestFailedAppendWritesNothing(t *testing.T) {
	l := New()
	l.Hold()
	down := errors.New("log down")
	res := appendAsync(t.Context(), l, []logstore.Entry{entry(1, "K", "a")})
	nextHeld(t, l).Fail(down)
	if r := <-res; !errors.Is(r.err, down) || r.seq != 0 {
		t.Fatalf("failed Append = %v, %v; want the test's error", r.seq, r.err)
	}
	if n := count(t, l, "n"); n != 0 {
		t.Fatalf("a failed append wrote %d events", n)
	}
	l.Pass()
	seq, err := l.Append(t.Context(), "n", []logstore.Entry{entry(1, "K", "a")})
	if err != nil || seq == 0 {
		t.Fatalf("Append after Pass = %v, %v", seq, err)
	}
}

func TestAbandonedAppendWritesNothing(t *testing.T) {
	l := New()
	l.Hold()
	ctx, cancel := context.WithCancel(t.Context())
	res := appendAsync(ctx, l, []logstore.Entry{entry(1, "K", "a")})
	h := nextHeld(t, l)
	cancel()
	if r := <-res; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Append whose context ended = %v, %v", r.seq, r.err)
	}
	if seq := h.Release(); seq != 0 {
		t.Fatalf("Release of an abandoned append wrote seq %v", seq)
	}
	if n := count(t, l, "n"); n != 0 {
		t.Fatalf("an abandoned append wrote %d events", n)
	}
}

// eventLog is what the transcript exercises, in both logs.
type eventLog interface {
	Append(ctx context.Context, node string, entries []logstore.Entry) (int64, error)
	Last(ctx context.Context, node string) (int64, int, error)
	Scan(ctx context.Context, node string, fn func(logstore.Record) error) error
	TxRows(ctx context.Context, node string, tx uint64) ([]logstore.Record, error)
	Compact(ctx context.Context, node string, drop []int64, cuts []logstore.Cut) (int64, int64, error)
	Count(ctx context.Context, node string) (logstore.Size, error)
}

func cut(seq int64, tx uint64) logstore.Cut { return logstore.Cut{Seq: seq, Tx: tx} }

// transcript runs one script on lg and describes what it saw. Seqs appear
// as their rank among the seqs appended, since a database may skip values
// (a rejected append still draws from the identity).
func transcript(t *testing.T, lg eventLog) []string {
	ctx := t.Context()
	var out []string
	var all []int64
	add := func(node string, entries ...logstore.Entry) int64 {
		seq, err := lg.Append(ctx, node, entries)
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		out = append(out, fmt.Sprintf("append %d to %s: increasing %t", len(entries), node, len(all) == 0 || seq > all[len(all)-1]))
		all = append(all, seq)
		return seq
	}
	rank := func(seq int64) int { return slices.Index(all, seq) }
	describe := func(r logstore.Record) string {
		return fmt.Sprintf("  #%d.%d %s tx %d %s", rank(r.Seq), r.Index, r.Node, r.Tx, canonical(t, r.Payload))
	}

	first := add("a", entry(1, "K", "a1"), entry(2, "K", "a2"), entry(1, "K", "a1b"))
	add("b", entry(1, "K", "b1"))
	violation := add("a", entry(1, "part.violation", "v1"), entry(3, "K", "a3"))
	node := add("a", entry(0, "coord.txids_reserved", "r"), entry(3, "K", "a3b"))
	for _, bad := range [][]logstore.Entry{
		{entry(9, "K", "fine"), {Tx: 9}},
		{{Tx: 9, Event: []byte("not json")}},
		{{Tx: 9, Event: []byte("{}, {}")}},
		{{Tx: 1 << 63, Event: []byte("{}")}},
	} {
		_, err := lg.Append(ctx, "a", bad)
		out = append(out, fmt.Sprintf("bad append of %d: rejected %t", len(bad), err != nil))
	}
	if seq, err := lg.Append(ctx, "a", nil); seq != 0 || err != nil {
		t.Fatalf("Append of nothing = %d, %v", seq, err)
	}
	later := add("a", entry(2, "K", "a2-later"))
	for _, node := range []string{"a", "b", "nobody"} {
		seq, n, err := lg.Last(ctx, node)
		out = append(out, fmt.Sprintf("last of %s: #%d, %d events, error %t", node, rank(seq), n, err != nil))
	}
	for _, tx := range []uint64{1, 3, 7} {
		recs, err := lg.TxRows(ctx, "a", tx)
		out = append(out, fmt.Sprintf("rows of tx %d: %d events, error %t", tx, len(recs), err != nil))
		for _, r := range recs {
			out = append(out, describe(r))
		}
	}
	for _, c := range []struct {
		drop []int64
		cuts []logstore.Cut
	}{
		{drop: []int64{violation, node, all[1]}},
		{cuts: []logstore.Cut{cut(first, 1), cut(violation, 1), cut(violation, 3), cut(node, 3), cut(later, 2), cut(all[1], 1), cut(first, 1<<63)}},
		{drop: []int64{first, later}, cuts: []logstore.Cut{cut(first, 2)}},
		{},
	} {
		d, tr, err := lg.Compact(ctx, "a", c.drop, c.cuts)
		out = append(out, fmt.Sprintf("compact %d rows, %d cuts: %d deleted, %d trimmed, error %t", len(c.drop), len(c.cuts), d, tr, err != nil))
	}
	for _, node := range []string{"a", "b", "nobody"} {
		size, err := lg.Count(ctx, node)
		out = append(out, fmt.Sprintf("count %s: %d rows, %d events, error %t", node, size.Rows, size.Events, err != nil))
		err = lg.Scan(ctx, node, func(r logstore.Record) error {
			out = append(out, describe(r))
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
	for _, line := range []string{
		"compact 3 rows, 0 cuts: 0 deleted, 0 trimmed, error false",
		"compact 0 rows, 7 cuts: 0 deleted, 3 trimmed, error false",
		"compact 2 rows, 1 cuts: 2 deleted, 0 trimmed, error false",
		"count a: 2 rows, 2 events, error false",
	} {
		if !slices.Contains(want, line) {
			t.Fatalf("the script went other than expected (no %q):\n%s", line, join(want))
		}
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
