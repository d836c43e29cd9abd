package pgwire

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
)

// output says how a statement's result reaches the client.
type output struct {
	// describe: send the RowDescription before the rows (the simple
	// protocol always; the extended one when a Describe of the portal
	// waits), or NoData (extended only) when there are no columns.
	describe bool
	extended bool
	formats  []int16
	// portal and maxRows: an Execute with a row limit.
	portal  *portal
	maxRows int
}

// runStatement runs one statement with its bound parameters (text, nil for
// NULL; bound is false for the simple protocol's statements, which have
// none).
func (s *session) runStatement(st *statement, params []*string, types []uint32, bound bool, out *output) error {
	t := &s.tx
	if t.block && t.failed && st.kind != kindCommit && st.kind != kindRollback {
		return &pgError{code: codeInFailedTransaction, message: "current transaction is aborted, commands ignored until end of transaction block",
			hint: "run ROLLBACK (or COMMIT, which rolls back)"}
	}
	switch st.kind {
	case kindBegin:
		if err := t.begin(); err != nil {
			return err
		}
		return s.complete(out, "BEGIN")
	case kindCommit, kindRollback:
		tag, err := t.end(st.kind == kindRollback)
		clear(s.portals)
		if err != nil {
			return err
		}
		return s.complete(out, tag)
	case kindSetNode:
		if !st.target.all && st.target.node >= s.srv.router.participants {
			return &pgError{code: codeNoRoute, message: fmt.Sprintf("participant %d does not exist: participants are 0..%d", st.target.node, s.srv.router.participants-1)}
		}
		s.sticky = st.target
		return s.complete(out, st.tag)
	case kindResetNode:
		s.sticky = target{}
		return s.complete(out, st.tag)
	case kindIgnoredSet:
		return s.complete(out, st.tag)
	case kindShowNode:
		res := &engine.StmtResult{Columns: []string{"tpcd.node"}, Types: []uint32{pgtype.TextOID}, Rows: [][]any{{s.sticky.String()}}, Tag: "SHOW"}
		return s.writeResult(res, out)
	case kindRefused:
		return &pgError{code: codeFeatureNotSupported, message: st.refused}
	}
	to, err := s.srv.router.route(st, s.sticky, params, bound)
	if err != nil {
		return err
	}
	return t.run(&job{st: st, out: out, stmts: s.srv.router.statements(st, to, params, types)})
}

// statements are st with its parameters, once for each participant to
// names.
func (r *router) statements(st *statement, to target, params []*string, types []uint32) []api.StatementParams {
	var args []any
	if len(params) > 0 {
		args = make([]any, len(params))
		for i, p := range params {
			if p != nil {
				args[i] = *p
			}
		}
	}
	var out []api.StatementParams
	for n := range r.participants {
		if to.all || n == to.node {
			node := engine.NodeID(n)
			out = append(out, api.StatementParams{Node: &node, SQL: st.sql, Args: args, ParamTypes: types})
		}
	}
	return out
}

// complete answers a statement the session ran itself.
func (s *session) complete(out *output, tag string) error {
	return s.writeResult(&engine.StmtResult{Tag: tag}, out)
}

// writeResult sends a statement's result: its description if wanted, its
// rows in the formats asked for, and its command tag (or, at a row limit,
// PortalSuspended).
func (s *session) writeResult(res *engine.StmtResult, out *output) error {
	if res == nil {
		// The answer was lost while the transaction still committed
		// (api: transact).
		res = &engine.StmtResult{}
	}
	if out.describe {
		s.sendDescription(res, out.formats, out.extended)
	}
	rows := res.Rows
	suspended := false
	if out.maxRows > 0 && len(rows) > out.maxRows {
		rest := *res
		rest.Rows = rows[out.maxRows:]
		out.portal.rest = &rest
		rows, suspended = rows[:out.maxRows], true
	} else if out.portal != nil {
		out.portal.rest = nil
	}
	for _, row := range rows {
		dr := &pgproto3.DataRow{Values: make([][]byte, len(row))}
		for i, v := range row {
			if v == nil {
				continue
			}
			text := []byte(fmt.Sprint(v))
			if formatOf(out.formats, i) == pgtype.BinaryFormatCode {
				b, err := s.vals.toBinary(typeOf(res, i), text)
				if err != nil {
					return err
				}
				text = b
			}
			dr.Values[i] = text
		}
		s.be.Send(dr)
	}
	if suspended {
		s.be.Send(&pgproto3.PortalSuspended{})
		return nil
	}
	s.be.Send(&pgproto3.CommandComplete{CommandTag: []byte(res.Tag)})
	return nil
}

// sendDescription sends RowDescription for res's columns; with none, the
// extended protocol says NoData and the simple one nothing.
func (s *session) sendDescription(res *engine.StmtResult, formats []int16, extended bool) {
	if len(res.Columns) == 0 {
		if extended {
			s.be.Send(&pgproto3.NoData{})
		}
		return
	}
	rd := &pgproto3.RowDescription{}
	for i, name := range res.Columns {
		rd.Fields = append(rd.Fields, pgproto3.FieldDescription{Name: []byte(name), DataTypeOID: typeOf(res, i),
			DataTypeSize: -1, TypeModifier: -1, Format: formatOf(formats, i)})
	}
	s.be.Send(rd)
}

// typeOf is column i's type; text when the participant did not say.
func typeOf(res *engine.StmtResult, i int) uint32 {
	if i < len(res.Types) {
		return res.Types[i]
	}
	return pgtype.TextOID
}

// merge makes one result of a statement run on several participants (SET
// tpcd.node = all): the first's columns, every participant's rows, and the
// tag with the counts added up.
func merge(results []*engine.StmtResult) *engine.StmtResult {
	if len(results) == 1 || len(results) == 0 {
		if len(results) == 0 {
			return nil
		}
		return results[0]
	}
	out := &engine.StmtResult{}
	for i, r := range results {
		if r == nil {
			continue
		}
		if out.Columns == nil {
			out.Columns, out.Types = r.Columns, r.Types
		}
		out.Rows = append(out.Rows, r.Rows...)
		out.RowsAffected += r.RowsAffected
		if i == 0 || out.Tag == "" {
			out.Tag = r.Tag
		}
	}
	// "INSERT 0 n", "UPDATE n", "SELECT n": the last field counts rows.
	if f := strings.Fields(out.Tag); len(f) > 1 {
		if _, err := strconv.ParseInt(f[len(f)-1], 10, 64); err == nil {
			f[len(f)-1] = strconv.FormatInt(out.RowsAffected, 10)
			out.Tag = strings.Join(f, " ")
		}
	}
	return out
}
