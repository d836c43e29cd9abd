package api

import (
	"reflect"
	"testing"

	"github.com/tpcd/tpcd/engine"
)

// A DirectTx numbers each participant's statements from 0, counts only
// those answered ok, and names every participant a statement went to in
// the commit, answered or not.
func TestDirectTx(t *testing.T) {
	d := NewDirectTx(7, "c", 3)
	steps := []struct {
		node      engine.NodeID
		ok, wrote bool
		wantStmt  int
	}{
		{0, true, true, 0},
		{1, true, false, 0},
		{0, true, false, 1},
		{2, false, false, 0},
	}
	for i, s := range steps {
		p := d.Exec(s.node, "INSERT", []any{i})
		if p.Stmt != s.wantStmt || p.TxID != 7 || p.Cluster != "c" || p.Epoch != 3 {
			t.Fatalf("step %d: %+v, want statement %d of tx 7 under c/3", i, p, s.wantStmt)
		}
		d.Answered(s.node, s.ok, s.wrote)
	}
	want := []engine.DirectBranch{{Node: 0, Stmts: 2, Wrote: true}, {Node: 1, Stmts: 1}, {Node: 2, Stmts: 0}}
	if got := d.End(); got.TxID != 7 || !reflect.DeepEqual(got.Direct, want) {
		t.Fatalf("End() = %+v, want tx 7 with %+v", got, want)
	}
	if d.CanCommit() {
		t.Fatal("CanCommit after a statement without an ok answer")
	}
	if !NewDirectTx(1, "c", 1).CanCommit() {
		t.Fatal("a transaction with no direct statement cannot commit")
	}
}
