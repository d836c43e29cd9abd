package pgwire

import (
	"fmt"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
)

// txState maps the session's transaction, as PostgreSQL defines it, onto
// a tpcd transaction. Inside a block (BEGIN ... COMMIT) every statement
// joins one tpcd transaction, begun by its first statement. Outside one,
// the statements of one Query message, or of the extended-protocol
// messages up to a Sync, form an implicit transaction; the last of them is
// held back (pending) until that end, so that a statement alone commits in
// the call that runs it (transact with commit: one phase on one
// participant).
type txState struct {
	s *session
	// block: BEGIN was run; failed: a statement of the block, or of the
	// implicit transaction, failed (the block then answers 25P02 until
	// COMMIT or ROLLBACK).
	block  bool
	failed bool
	// id is the tpcd transaction, 0 until a statement began one.
	id      engine.TxID
	pending *job
	// unapplied is the session's last committed transaction while it may
	// not be applied on every participant yet: the session's next
	// statement waits for it (waitApplied).
	unapplied engine.TxID
	// ahead, when set, holds the answer of the call that ran the batch
	// being answered (ahead.go): its statements and commit take their
	// results from it instead of calling the coordinator.
	ahead *ahead
}

// job is a statement on its way to the coordinator: one statement per
// participant it runs on, and where its result goes.
type job struct {
	st    *statement
	stmts []api.StatementParams
	out   *output
}

func (t *txState) status() byte {
	switch {
	case !t.block:
		return 'I'
	case t.failed:
		return 'E'
	}
	return 'T'
}

// run runs a routed statement, or holds it back outside a block.
func (t *txState) run(j *job) error {
	if t.block {
		return t.execute(j, false)
	}
	if err := t.flushPending(); err != nil {
		return err
	}
	t.pending = j
	return nil
}

// flushPending runs the held-back statement in the implicit transaction,
// which it begins if it is the first.
func (t *txState) flushPending() error {
	j := t.pending
	if j == nil {
		return nil
	}
	t.pending = nil
	return t.execute(j, false)
}

// execute runs j's statements in the transaction (beginning it if there is
// none yet), committing with them if commit, and writes their result.
func (t *txState) execute(j *job, commit bool) error {
	var reply engine.TransactReply
	var err error
	if t.ahead != nil {
		reply, err = t.ahead.take(j.stmts, commit)
	} else {
		if err := t.waitApplied(); err != nil {
			return err
		}
		ctx, done := t.s.running()
		reply, err = t.s.srv.opts.Coordinator.Transact(ctx, api.TransactParams{TxID: t.id, Statements: j.stmts, Commit: commit})
		done()
	}
	if err != nil {
		// The coordinator rolled back a transaction the call began or
		// was to commit; one given by id stays, abort-only, for the
		// block's ROLLBACK.
		t.failed = true
		if commit {
			t.id = 0
		}
		return asPGError(err, j.st.offset)
	}
	if commit {
		t.id = 0
		if reply.Outcome != nil && *reply.Outcome != engine.OutcomeCommit {
			return &pgError{code: codeTransactionRollback, message: fmt.Sprintf("transaction %d rolled back: %s", reply.TxID, reply.Reason)}
		}
		t.unapplied = reply.TxID
	} else {
		t.id = reply.TxID
	}
	return t.s.writeResult(merge(reply.Results), j.out)
}

// endImplicit ends the implicit transaction, if any, at a Sync or at the
// end of a Query message: it commits, or after an error rolls back.
func (t *txState) endImplicit() error {
	if t.block {
		return nil
	}
	if t.failed {
		t.pending, t.failed = nil, false
		t.rollback()
		return nil
	}
	if j := t.pending; j != nil {
		t.pending = nil
		return t.execute(j, true)
	}
	if t.id != 0 {
		return t.commit()
	}
	return nil
}

// begin opens a block. Statements of the implicit transaction before it
// in the same message join the block, as in PostgreSQL.
func (t *txState) begin() error {
	if t.block {
		t.s.notice(codeActiveTransaction, "there is already a transaction in progress")
		return nil
	}
	if err := t.flushPending(); err != nil {
		return err
	}
	t.block = true
	return nil
}

// end runs COMMIT (or ROLLBACK, when rollback or the block failed) and
// returns the tag PostgreSQL answers.
func (t *txState) end(rollback bool) (tag string, err error) {
	if !t.block {
		t.s.notice(codeNoActiveTransaction, "there is no transaction in progress")
		if rollback {
			return "ROLLBACK", nil
		}
		return "COMMIT", nil
	}
	t.block = false
	if rollback || t.failed {
		t.failed = false
		t.rollback()
		return "ROLLBACK", nil
	}
	if t.id == 0 {
		return "COMMIT", nil
	}
	return "COMMIT", t.commit()
}

// commit commits the tpcd transaction.
func (t *txState) commit() error {
	id := t.id
	t.id = 0
	var reply engine.OutcomeReply
	var err error
	if t.ahead != nil {
		reply, err = t.ahead.commit()
	} else {
		ctx, done := t.s.running()
		reply, err = t.s.srv.opts.Coordinator.Commit(ctx, id)
		done()
	}
	if err != nil {
		return asPGError(err, 0)
	}
	if reply.Outcome != engine.OutcomeCommit {
		return &pgError{code: codeTransactionRollback, message: fmt.Sprintf("transaction %d rolled back: %s", id, reply.Reason)}
	}
	t.unapplied = id
	return nil
}

// waitApplied waits until the session's last commit is applied on every
// participant. A commit answers once it is decided, and a participant
// that prepared commits a moment later; until then a read there would not
// see the transaction's rows. Waiting here, before the session's next
// statement rather than in COMMIT, lets a session read its own writes at
// no cost to a client that commits and leaves. Applied is enough: what is
// left then is the decider's marker, which no read sees.
func (t *txState) waitApplied() error {
	id := t.unapplied
	if id == 0 {
		return nil
	}
	ctx, done := t.s.running()
	defer done()
	if err := t.s.srv.opts.Coordinator.WaitApplied(ctx, id); err != nil {
		return asPGError(err, 0)
	}
	t.unapplied = 0
	return nil
}

// rollback rolls the tpcd transaction back, if there is one. A failure is
// only logged: the coordinator aborts a transaction its client left idle.
func (t *txState) rollback() {
	if t.id == 0 {
		return
	}
	id := t.id
	t.id = 0
	ctx, cancel := background()
	defer cancel()
	if _, err := t.s.srv.opts.Coordinator.Rollback(ctx, id); err != nil {
		t.s.log.Warn("rollback failed; the coordinator's idle timeout will abort the transaction", "tx", id, "err", err)
	}
}

// abandon rolls back what a client that left had open.
func (t *txState) abandon() {
	t.pending = nil
	if t.id != 0 {
		t.s.log.Info("client left with a transaction open; rolling it back", "tx", t.id)
	}
	t.rollback()
}
