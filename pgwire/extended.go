package pgwire

import (
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
)

// describedStmt is what a participant said a statement takes and returns.
type describedStmt struct {
	params  []uint32
	columns *engine.StmtResult
}

// parse serves Parse: the statement is analysed now (a syntax error is
// reported at once), and run at Execute.
func (s *session) parse(m *pgproto3.Parse) error {
	if _, ok := s.stmts[m.Name]; ok && m.Name != "" {
		return &pgError{code: "42P05", message: fmt.Sprintf("prepared statement %q already exists", m.Name)}
	}
	stmts, ok := s.memo.parsed[m]
	if !ok {
		var err error
		if stmts, err = parseQuery(m.Query); err != nil {
			return err
		}
	}
	if len(stmts) > 1 {
		return &pgError{code: codeSyntaxError, message: "cannot insert multiple commands into a prepared statement"}
	}
	s.stmts[m.Name] = newPrepared(m, stmts)
	s.be.Send(&pgproto3.ParseComplete{})
	return nil
}

// bind serves Bind: parameters become text, as participants take them.
func (s *session) bind(m *pgproto3.Bind) error {
	p, ok := s.stmts[m.PreparedStatement]
	if !ok {
		return &pgError{code: codeUndefinedStatement, message: fmt.Sprintf("prepared statement %q does not exist", m.PreparedStatement)}
	}
	if _, ok := s.portals[m.DestinationPortal]; ok && m.DestinationPortal != "" {
		return &pgError{code: "42P03", message: fmt.Sprintf("cursor %q already exists", m.DestinationPortal)}
	}
	params, ok := s.memo.bound[m]
	if !ok {
		var err error
		if params, err = s.bindParams(p, m); err != nil {
			return err
		}
	}
	s.portals[m.DestinationPortal] = &portal{name: m.DestinationPortal, stmt: p, params: params, formats: slices.Clone(m.ResultFormatCodes)}
	s.be.Send(&pgproto3.BindComplete{})
	return nil
}

// bindParams converts a Bind's parameters to text (nil for NULL).
func (s *session) bindParams(p *prepared, m *pgproto3.Bind) ([]*string, error) {
	params := make([]*string, len(m.Parameters))
	for i, raw := range m.Parameters {
		if raw == nil {
			continue
		}
		var text string
		if formatOf(m.ParameterFormatCodes, i) == pgtype.BinaryFormatCode {
			var err error
			if text, err = s.vals.toText(p.paramOID(i), raw); err != nil {
				return nil, err
			}
		} else {
			text = string(raw)
		}
		// Participants take text as JSON, whose encoder would turn bytes
		// that are not UTF-8 into U+FFFD: refused, as PostgreSQL refuses
		// them in a UTF8 database.
		if !utf8.ValidString(text) {
			return nil, &pgError{code: codeCharacterNotInRepertoire, message: fmt.Sprintf("invalid byte sequence for encoding \"UTF8\" in parameter $%d", i+1)}
		}
		params[i] = &text
	}
	return params, nil
}

// declaredTypes are the parameter types Parse gave, for the participant
// to prepare the statement with, as PostgreSQL would have; nil when Parse
// gave none but 0 (unspecified), which leaves them to the participant's
// PostgreSQL to infer. Only built-in types keep their OID: a type created
// on the participants (an enum, a domain) has an OID of its own on each,
// and the client learned participant 0's (describeStmt); it is left to
// be inferred, as tpcd always did.
func declaredTypes(oids []uint32) []uint32 {
	var out []uint32
	for i, oid := range oids {
		if oid != 0 && oid < firstUserOID {
			if out == nil {
				out = make([]uint32, len(oids))
			}
			out[i] = oid
		}
	}
	return out
}

// firstUserOID is PostgreSQL's FirstNormalObjectId: below it, OIDs are
// built in, the same on every server of a major version.
const firstUserOID = 16384

// paramOID is parameter i's type: as Parse gave it, else as described.
func (p *prepared) paramOID(i int) uint32 {
	if i < len(p.paramOIDs) && p.paramOIDs[i] != 0 {
		return p.paramOIDs[i]
	}
	if p.described != nil && i < len(p.described.params) {
		return p.described.params[i]
	}
	return 0
}

// describe serves Describe. A statement is described by a participant
// (exec with describe); a portal's description waits for its Execute,
// whose result describes it, unless another message comes first.
func (s *session) describe(m *pgproto3.Describe) error {
	switch m.ObjectType {
	case 'S':
		p, ok := s.stmts[m.Name]
		if !ok {
			return &pgError{code: codeUndefinedStatement, message: fmt.Sprintf("prepared statement %q does not exist", m.Name)}
		}
		d, err := s.describeStmt(p)
		if err != nil {
			return err
		}
		oids := make([]uint32, max(len(d.params), len(p.paramOIDs)))
		for i := range oids {
			oids[i] = p.paramOID(i)
		}
		s.be.Send(&pgproto3.ParameterDescription{ParameterOIDs: oids})
		s.sendDescription(d.columns, nil, true)
		return nil
	case 'P':
		pt, ok := s.portals[m.Name]
		if !ok {
			return &pgError{code: codeUndefinedCursor, message: fmt.Sprintf("portal %q does not exist", m.Name)}
		}
		if pt.stmt.st == nil || pt.stmt.st.kind != kindRun || pt.rest != nil {
			return s.describePortal(pt)
		}
		s.describeWanted = pt
		return nil
	}
	return &pgError{code: codeProtocolViolation, message: fmt.Sprintf("invalid DESCRIBE message subtype %d", m.ObjectType)}
}

// describePortal answers a portal's Describe on its own.
func (s *session) describePortal(pt *portal) error {
	if pt.rest != nil {
		s.sendDescription(pt.rest, pt.formats, true)
		return nil
	}
	d, err := s.describeStmt(pt.stmt)
	if err != nil {
		return err
	}
	s.sendDescription(d.columns, pt.formats, true)
	return nil
}

// describeStmt asks a participant for a statement's parameter and result
// types, once per prepared statement (PostgreSQL too keeps a prepared
// statement's description). It asks the participant the statement would
// run on as far as that is known before its parameters are bound, else
// participant 0: every participant is expected to have the same tables.
// Inside a transaction it asks in the transaction, so that a table created
// there is seen; outside, in a transaction of its own, rolled back.
func (s *session) describeStmt(p *prepared) (*describedStmt, error) {
	if p.described != nil {
		return p.described, nil
	}
	st := p.st
	if st == nil || st.kind != kindRun {
		d := &describedStmt{columns: &engine.StmtResult{}}
		if st != nil && st.kind == kindShowNode {
			d.columns = &engine.StmtResult{Columns: []string{"tpcd.node"}, Types: []uint32{pgtype.TextOID}}
		}
		return d, nil
	}
	t := &s.tx
	if t.block && t.failed {
		return nil, &pgError{code: codeInFailedTransaction, message: "current transaction is aborted, commands ignored until end of transaction block"}
	}
	if err := t.waitApplied(); err != nil {
		return nil, err
	}
	node := engine.NodeID(0)
	if to, err := s.srv.router.route(st, s.sticky, nil, false); err == nil && !to.all {
		node = engine.NodeID(to.node)
	}
	ctx, done := s.running()
	reply, err := s.srv.opts.Coordinator.Exec(ctx, api.ExecParams{TxID: t.id, Node: &node, SQL: st.sql, ParamTypes: p.declared, Describe: true})
	done()
	if err != nil {
		t.failed = true
		return nil, asPGError(err, 0)
	}
	if t.id == 0 {
		if t.block {
			t.id = reply.TxID
		} else {
			ctx, cancel := background()
			if _, err := s.srv.opts.Coordinator.Rollback(ctx, reply.TxID); err != nil {
				s.log.Warn("rollback of a describe's transaction failed", "tx", reply.TxID, "err", err)
			}
			cancel()
		}
	}
	res := reply.Result
	if res == nil {
		res = &engine.StmtResult{}
	}
	p.described = &describedStmt{params: res.Params, columns: &engine.StmtResult{Columns: res.Columns, Types: res.Types}}
	return p.described, nil
}

// execute serves Execute.
func (s *session) execute(m *pgproto3.Execute) error {
	pt, ok := s.portals[m.Portal]
	if !ok {
		return &pgError{code: codeUndefinedCursor, message: fmt.Sprintf("portal %q does not exist", m.Portal)}
	}
	out := &output{extended: true, formats: pt.formats, portal: pt, maxRows: int(m.MaxRows)}
	if s.describeWanted == pt {
		s.describeWanted, out.describe = nil, true
	}
	if pt.rest != nil {
		return s.writeResult(pt.rest, out)
	}
	if pt.stmt.st == nil {
		s.be.Send(&pgproto3.EmptyQueryResponse{})
		return nil
	}
	return s.runStatement(pt.stmt.st, pt.params, pt.stmt.declared, true, out)
}

// closeObject serves Close; closing a statement closes its portals.
func (s *session) closeObject(m *pgproto3.Close) error {
	switch m.ObjectType {
	case 'S':
		if p, ok := s.stmts[m.Name]; ok {
			delete(s.stmts, m.Name)
			for name, pt := range s.portals {
				if pt.stmt == p {
					delete(s.portals, name)
				}
			}
		}
	case 'P':
		delete(s.portals, m.Name)
	default:
		return &pgError{code: codeProtocolViolation, message: fmt.Sprintf("invalid CLOSE message subtype %d", m.ObjectType)}
	}
	s.be.Send(&pgproto3.CloseComplete{})
	return nil
}
