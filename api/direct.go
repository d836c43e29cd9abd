package api

import (
	"github.com/tpcd/tpcd/engine"
)

// DirectTx keeps a client's account of the statements of one transaction
// that it sends participants directly (MethodDirectExec), and makes the
// params the rules in docs/API.md ask for: statements numbered from 0 per
// participant, and a commit or rollback that names every participant a
// statement went to, with those answered ok. It is not safe for
// concurrent use; a client sends a participant's next statement only once
// the last one answered anyway.
type DirectTx struct {
	header   engine.Header
	tx       engine.TxID
	branches []engine.DirectBranch
	// unsure is set once a statement got no answer or an error: the
	// transaction can then only abort.
	unsure bool
}

// NewDirectTx starts the account of transaction tx, whose header (cluster
// and epoch) came with the answer to the begin, or to the exec that began
// it.
func NewDirectTx(tx engine.TxID, cluster string, epoch engine.Epoch) *DirectTx {
	return &DirectTx{tx: tx, header: engine.Header{Cluster: cluster, Epoch: epoch}}
}

func (d *DirectTx) branch(n engine.NodeID) *engine.DirectBranch {
	for i := range d.branches {
		if d.branches[i].Node == n {
			return &d.branches[i]
		}
	}
	d.branches = append(d.branches, engine.DirectBranch{Node: n})
	return &d.branches[len(d.branches)-1]
}

// Exec is the params of the next statement to participant n; the
// participant is named in the commit from now on.
func (d *DirectTx) Exec(n engine.NodeID, sql string, args []any) DirectExecParams {
	b := d.branch(n)
	return DirectExecParams{Cluster: d.header.Cluster, Epoch: d.header.Epoch, TxID: d.tx, Stmt: b.Stmts, SQL: sql, Args: args}
}

// Answered records the answer to the statement Exec last made for n: ok
// counts it (wrote says it changed rows, which makes n a candidate to
// decide), anything else leaves the transaction able only to abort.
func (d *DirectTx) Answered(n engine.NodeID, ok, wrote bool) {
	if !ok {
		d.unsure = true
		return
	}
	b := d.branch(n)
	b.Stmts++
	b.Wrote = b.Wrote || wrote
}

// CanCommit reports whether every statement answered ok.
func (d *DirectTx) CanCommit() bool { return !d.unsure }

// End is the params of the commit or rollback: the transaction with its
// direct branches.
func (d *DirectTx) End() TxParams {
	return TxParams{TxID: d.tx, Direct: append([]engine.DirectBranch(nil), d.branches...)}
}
