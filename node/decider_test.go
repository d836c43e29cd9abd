package node

import (
	"slices"
	"testing"

	"github.com/tpcd/tpcd/engine"
)

// A decider's marker keeps the transaction's idempotency keys, whichever
// way it commits (a statement carrying the commit, or a commit request of
// its own), so that a restart and a settle hand them back: a coordinator
// that lost the transaction recognises a repeated call by them. Keys that
// look like array syntax stay what they are.
func TestDeciderMarkerKeepsKeys(t *testing.T) {
	d := newTestDataDB(t)
	const piggyback, alone, none = "tpcd:test:1:7:0:0", "tpcd:test:1:8:0:0", "tpcd:test:1:9:0:0"
	odd := []string{`k,1`, `{"x"}`, `back\slash`, `it's`, `NULL`}

	w := &txWorker{}
	res := mustRun(t, d, w, engine.Data{Op: engine.DataExec, TxID: 7, GID: piggyback, SQL: "INSERT INTO t VALUES ($1)", Args: []any{float64(1)},
		Then: engine.DataCommitBranch, Keys: odd})
	if res.ThenErr != "" {
		t.Fatalf("statement with its commit: %+v", res)
	}
	w2 := &txWorker{}
	mustRun(t, d, w2, engine.Data{Op: engine.DataExec, TxID: 8, GID: alone, SQL: "INSERT INTO t VALUES ($1)", Args: []any{float64(2)}})
	mustRun(t, d, w2, engine.Data{Op: engine.DataCommitBranch, TxID: 8, GID: alone, Keys: odd[:2]})
	w3 := &txWorker{}
	mustRun(t, d, w3, engine.Data{Op: engine.DataExec, TxID: 9, GID: none, SQL: "INSERT INTO t VALUES ($1)", Args: []any{float64(3)}})
	mustRun(t, d, w3, engine.Data{Op: engine.DataCommitBranch, TxID: 9, GID: none})

	in, err := recoveryFacts(t.Context(), d.pool, engine.NewParticipant(engine.ParticipantConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(in.Markers, []string{piggyback, alone, none}) {
		t.Fatalf("markers %q, want all three", in.Markers)
	}
	if got := in.MarkerKeys[piggyback]; !slices.Equal(got, odd) {
		t.Errorf("keys of the piggybacked commit: %q, want %q", got, odd)
	}
	if got := in.MarkerKeys[alone]; !slices.Equal(got, odd[:2]) {
		t.Errorf("keys of the commit request: %q, want %q", got, odd[:2])
	}
	if got, ok := in.MarkerKeys[none]; ok {
		t.Errorf("a marker without keys reads back %q", got)
	}
	if s := d.settle(t.Context(), engine.Data{Op: engine.DataSettle, TxID: 7, GID: piggyback}); !s.Committed || !slices.Equal(s.Keys, odd) || s.Err != "" {
		t.Errorf("settle of a committed branch = %+v, want committed with keys %q", s, odd)
	}
}
