package pgwire

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// A client that sends a whole transaction before it waits (a pipeline or
// batch up to one Sync, or one Query string of BEGIN; ...; COMMIT) gets
// it run as one transact call with its commit, the call that lets every
// participant prepare with its last statement (docs/API.md). Statement by
// statement the same block costs a call per statement and a commit round
// of its own.
//
// The block is planned before any of its messages is answered: which
// statements run where, and that nothing in it needs an answer from the
// coordinator before the commit (a describe of a statement not described
// yet, SET tpcd.node, ROLLBACK, a statement after COMMIT). Then the call
// runs, and the messages are answered by their usual handlers, which take
// each statement's result, and the outcome, from the call's answer
// (txState.ahead) instead of calling the coordinator: the client hears
// exactly what running the messages one by one would have told it.
//
// When the call fails, the coordinator rolled the whole transaction back
// (it began it and was asked to commit it), and the messages run one by
// one as if the call had not been made: each statement then gets its own
// answer, the failing one its error, as PostgreSQL would give them. The
// block's statements before the failing one thus run twice, the first time
// in a transaction that left nothing behind. A lone statement outside a
// block is the call running it alone would make: its error is its answer.

// Bounds on a batch read ahead: beyond them its messages are answered one
// by one, as they come.
const (
	aheadMessages = 4096
)

// batchMemo holds what planning a batch found, for the handlers of its
// messages: the statements of its Parse messages and the parameters of
// its Bind messages, which need not be worked out twice.
type batchMemo struct {
	parsed map[*pgproto3.Parse][]*statement
	bound  map[*pgproto3.Bind][]*string
}

// opensBatch: msg may be the first of a batch of extended-protocol
// messages up to a Sync.
func opensBatch(msg pgproto3.FrontendMessage) bool {
	switch msg.(type) {
	case *pgproto3.Parse, *pgproto3.Bind, *pgproto3.Describe, *pgproto3.Execute, *pgproto3.Close:
		return true
	}
	return false
}

// readBatch reads the messages that follow first up to a Sync, or up to
// any message that is not part of a batch (Flush, whose sender waits for
// answers; Query; Terminate), or to the bounds. Receive reuses its
// messages, so each is copied.
func (s *session) readBatch(first pgproto3.FrontendMessage) ([]pgproto3.FrontendMessage, error) {
	var msgs []pgproto3.FrontendMessage
	size := 0
	msg := first
	for {
		c, n, err := copyMessage(msg)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, c)
		size += n
		if !opensBatch(c) || len(msgs) >= aheadMessages || size >= s.srv.opts.MaxMessageBytes {
			return msgs, nil
		}
		if msg, err = s.be.Receive(); err != nil {
			return nil, err
		}
	}
}

// copyMessage copies a message Receive returned, and tells its size.
func copyMessage(msg pgproto3.FrontendMessage) (pgproto3.FrontendMessage, int, error) {
	var c pgproto3.FrontendMessage
	switch msg.(type) {
	case *pgproto3.Parse:
		c = &pgproto3.Parse{}
	case *pgproto3.Bind:
		c = &pgproto3.Bind{}
	case *pgproto3.Describe:
		c = &pgproto3.Describe{}
	case *pgproto3.Execute:
		c = &pgproto3.Execute{}
	case *pgproto3.Close:
		c = &pgproto3.Close{}
	default:
		// The last message of a batch: answered before the next Receive.
		return msg, 0, nil
	}
	b, err := msg.Encode(nil)
	if err != nil {
		return nil, 0, err
	}
	// The type byte and the length come first.
	if err := c.Decode(b[5:]); err != nil {
		return nil, 0, err
	}
	return c, len(b), nil
}

// planBatch runs msgs as one call when they are a whole transaction (see
// the top of this file); otherwise it leaves them to run one by one.
func (s *session) planBatch(msgs []pgproto3.FrontendMessage) {
	if _, ok := msgs[len(msgs)-1].(*pgproto3.Sync); !ok || !s.tx.canPlan() || s.describeWanted != nil {
		return
	}
	p := s.newPlan()
	sim := batchSim{s: s, stmts: map[string]*prepared{}, portals: map[string]*simPortal{}}
	s.memo = batchMemo{parsed: map[*pgproto3.Parse][]*statement{}, bound: map[*pgproto3.Bind][]*string{}}
	for i, msg := range msgs {
		var next pgproto3.FrontendMessage
		if i+1 < len(msgs) {
			next = msgs[i+1]
		}
		if !sim.step(p, msg, next) {
			return
		}
	}
	s.tx.runAhead(p)
}

// planStatements runs a Query message's statements as one call when they
// are a whole transaction.
func (s *session) planStatements(stmts []*statement) {
	if !s.tx.canPlan() {
		return
	}
	p := s.newPlan()
	for _, st := range stmts {
		if !p.add(st, nil, nil, false) {
			return
		}
	}
	s.tx.runAhead(p)
}

// endBatch forgets what was planned for the batch just answered.
func (s *session) endBatch() {
	s.memo = batchMemo{}
	if a := s.tx.ahead; a != nil {
		s.tx.ahead = nil
		if a.err == nil && a.next != len(a.stmts) {
			s.log.Error("a block run as one call was answered with fewer statements than it ran", "ran", len(a.stmts), "answered", a.next)
		}
	}
}

// plan is a block's statements, gathered in the order their handlers will
// run them, as txState tracks the block.
type plan struct {
	s     *session
	stmts []api.StatementParams
	// block: inside BEGIN ... COMMIT; committed: the block's COMMIT came,
	// and nothing may run after it.
	block, committed bool
	// jobs counts the statements run; explicit: BEGIN or COMMIT was seen.
	jobs     int
	explicit bool
}

// lone: the plan is one statement outside a block, which one by one would
// be the same call.
func (p *plan) lone() bool { return p.jobs == 1 && !p.explicit && !p.s.tx.block }

func (s *session) newPlan() *plan { return &plan{s: s, block: s.tx.block} }

// add takes the next statement run, with its bound parameters; false
// when the batch cannot run as one call.
func (p *plan) add(st *statement, params []*string, types []uint32, bound bool) bool {
	if st == nil {
		return true // an empty query runs nothing
	}
	switch st.kind {
	case kindBegin:
		p.block, p.explicit = true, true
		return !p.committed
	case kindCommit:
		p.explicit = true
		if !p.block || p.committed {
			return false
		}
		p.block, p.committed = false, true
		return true
	case kindIgnoredSet, kindShowNode:
		return true
	case kindRun:
	default:
		// ROLLBACK, SET tpcd.node, what is refused: run one by one.
		return false
	}
	if p.committed {
		return false
	}
	to, err := p.s.srv.router.route(st, p.s.sticky, params, bound)
	if err != nil {
		return false
	}
	p.stmts = append(p.stmts, p.s.srv.router.statements(st, to, params, types)...)
	p.jobs++
	return true
}

// whole: the plan is a transaction that ends when the batch does, with
// something to run.
func (p *plan) whole() bool {
	if len(p.stmts) == 0 {
		return false
	}
	// A block left open goes on after the batch; one begun before it
	// must end in it.
	return !p.block && (p.committed || !p.s.tx.block)
}

// batchSim follows a batch's statements and portals, as its handlers
// will create them, without running anything.
type batchSim struct {
	s       *session
	stmts   map[string]*prepared // nil: closed in the batch
	portals map[string]*simPortal
}

type simPortal struct {
	stmt    *prepared
	params  []*string
	formats []int16
}

func (b *batchSim) stmt(name string) *prepared {
	if p, ok := b.stmts[name]; ok {
		return p
	}
	return b.s.stmts[name]
}

func (b *batchSim) portal(name string) *simPortal {
	if pt, ok := b.portals[name]; ok {
		return pt
	}
	if pt := b.s.portals[name]; pt != nil && pt.rest == nil {
		return &simPortal{stmt: pt.stmt, params: pt.params, formats: pt.formats}
	}
	return nil
}

// step follows msg (next is the message after it, nil at the end); false
// when the batch cannot run as one call. What would fail (an unknown
// statement, a parameter that does not convert) is left to the handlers
// to report, one by one.
func (b *batchSim) step(p *plan, msg, next pgproto3.FrontendMessage) bool {
	switch m := msg.(type) {
	case *pgproto3.Parse:
		if m.Name != "" && b.stmt(m.Name) != nil {
			return false
		}
		stmts, err := parseQuery(m.Query)
		if err != nil || len(stmts) > 1 {
			return false
		}
		b.s.memo.parsed[m] = stmts
		b.stmts[m.Name] = newPrepared(m, stmts)
	case *pgproto3.Bind:
		pr := b.stmt(m.PreparedStatement)
		if pr == nil || m.DestinationPortal != "" && b.portal(m.DestinationPortal) != nil {
			return false
		}
		params, err := b.s.bindParams(pr, m)
		if err != nil || !b.s.vals.binaryKnown(pr, m.ResultFormatCodes) {
			return false
		}
		b.s.memo.bound[m] = params
		b.portals[m.DestinationPortal] = &simPortal{stmt: pr, params: params, formats: m.ResultFormatCodes}
	case *pgproto3.Describe:
		switch m.ObjectType {
		case 'S':
			pr := b.stmt(m.Name)
			// Describing a statement the first time asks a participant.
			return pr != nil && (pr.st == nil || pr.st.kind != kindRun || pr.described != nil)
		case 'P':
			pt := b.portal(m.Name)
			if pt == nil {
				return false
			}
			// A portal is described by its Execute's result, when that
			// comes next.
			ex, ok := next.(*pgproto3.Execute)
			return pt.stmt.st == nil || pt.stmt.st.kind != kindRun || pt.stmt.described != nil || ok && ex.Portal == m.Name
		}
		return false
	case *pgproto3.Execute:
		pt := b.portal(m.Portal)
		if pt == nil || m.MaxRows != 0 {
			return false
		}
		return p.add(pt.stmt.st, pt.params, pt.stmt.declared, true)
	case *pgproto3.Close:
		switch m.ObjectType {
		case 'S':
			pr := b.stmt(m.Name)
			if pr == nil {
				return true
			}
			b.stmts[m.Name] = nil
			for name, pt := range b.s.portals {
				if pt.stmt == pr {
					b.portals[name] = nil
				}
			}
			for name, pt := range b.portals {
				if pt != nil && pt.stmt == pr {
					b.portals[name] = nil
				}
			}
		case 'P':
			b.portals[m.Name] = nil
		default:
			return false
		}
	case *pgproto3.Sync:
		return p.whole()
	default:
		return false
	}
	return true
}

// ahead is the answer of the call that ran a block.
type ahead struct {
	stmts []api.StatementParams
	reply engine.TransactReply
	// err: the call's outcome is not known (it was cancelled, or the
	// coordinator stopped during it); the block's first statement
	// reports it.
	err  error
	next int
}

// canPlan: no transaction is under way, the state a block run as one
// call must start from.
func (t *txState) canPlan() bool {
	return t.id == 0 && !t.failed && t.pending == nil && t.ahead == nil
}

// runAhead makes the call that runs a planned block, if the plan is a
// whole one; its answer then answers the block's statements.
func (t *txState) runAhead(p *plan) {
	if !p.whole() {
		return
	}
	if err := t.waitApplied(); err != nil {
		return // the first statement, run alone, reports it
	}
	// A CancelRequest stops the wait, not the call: the block may still
	// commit, as a statement outside a block may (docs/PGWIRE.md).
	ctx, done := t.s.running()
	reply, err := t.s.srv.opts.Coordinator.Transact(ctx, api.TransactParams{Statements: p.stmts, Commit: true})
	done()
	if err != nil {
		if p.lone() {
			// Its error is the statement's, as running it alone would
			// have had it.
			t.ahead = &ahead{stmts: p.stmts, err: err}
			return
		}
		if !outcomeUnknown(err) {
			t.s.log.Debug("a block run as one call failed, and was rolled back; running it statement by statement", "err", err)
			return
		}
		pe := asPGError(err, 0)
		pe.message += " (the statements were sent with their commit, which may still happen)"
		t.ahead = &ahead{stmts: p.stmts, err: pe}
		return
	}
	t.ahead = &ahead{stmts: p.stmts, reply: reply}
}

// outcomeUnknown: a call that failed with err may still have committed.
// Every other failure of a call that begins a transaction and commits it
// rolls it back (docs/API.md, transact).
func outcomeUnknown(err error) bool {
	var re *rpc.Error
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		!errors.As(err, &re) || re.Code == rpc.CodeUnavailable
}

// take answers the next statement of the block: the results of stmts (the
// statement on each participant it runs on), and the outcome when commit.
func (a *ahead) take(stmts []api.StatementParams, commit bool) (engine.TransactReply, error) {
	if a.err != nil {
		return engine.TransactReply{}, a.err
	}
	end := a.next + len(stmts)
	if end > len(a.stmts) || !slices.EqualFunc(stmts, a.stmts[a.next:end], sameStatement) {
		return engine.TransactReply{}, &pgError{code: codeInternal,
			message: fmt.Sprintf("tpcd ran transaction %d as one call, and its statement %d is not the one the call ran", a.reply.TxID, a.next)}
	}
	r := engine.TransactReply{TxID: a.reply.TxID}
	if len(a.reply.Results) >= end {
		r.Results = a.reply.Results[a.next:end]
	}
	a.next = end
	if commit {
		r.Outcome, r.Reason = a.reply.Outcome, a.reply.Reason
	}
	return r, nil
}

// commit answers the block's COMMIT.
func (a *ahead) commit() (engine.OutcomeReply, error) {
	if a.err != nil {
		return engine.OutcomeReply{}, a.err
	}
	r := engine.OutcomeReply{TxID: a.reply.TxID, Reason: a.reply.Reason}
	if a.reply.Outcome != nil {
		r.Outcome = *a.reply.Outcome
	}
	return r, nil
}

func sameStatement(a, b api.StatementParams) bool {
	return *a.Node == *b.Node && a.SQL == b.SQL && len(a.Args) == len(b.Args) && slices.Equal(a.ParamTypes, b.ParamTypes)
}

// binaryKnown: every column a Bind asks for in binary has a type whose
// binary form the session can make, so that answering the block's rows
// cannot fail after the block committed.
func (v *values) binaryKnown(pr *prepared, formats []int16) bool {
	if !slices.Contains(formats, pgtype.BinaryFormatCode) {
		return true
	}
	if pr.st == nil || pr.st.kind != kindRun {
		return true
	}
	if pr.described == nil {
		return false
	}
	cols := pr.described.columns
	for i := range cols.Columns {
		if formatOf(formats, i) != pgtype.BinaryFormatCode {
			continue
		}
		oid := typeOf(cols, i)
		if _, ok := v.m.TypeForOID(oid); !ok && !textIsBinary[oid] && oid != pgtype.JSONBOID {
			return false
		}
	}
	return true
}
