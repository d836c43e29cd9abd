package pgwire

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/tpcd/tpcd/shard"
)

// router finds the participants a statement runs on.
type router struct {
	participants int
	// shards maps a table to its shard key column (--shard TABLE:COLUMN).
	shards map[string]string
}

// errParamsUnknown: the route depends on a parameter not bound yet (a
// statement described before Bind).
var errParamsUnknown = errors.New("the shard key is a parameter not bound yet")

// route says where st runs: its leading comment, else the session's SET
// tpcd.node, else its shard key, else (a statement that names no table of
// its own, such as SELECT 1 or a catalog query) participant 0, as any
// participant would answer the same. params are the bound parameters'
// text, nil for NULL; a nil slice means not bound yet.
func (r *router) route(st *statement, sticky target, params []*string, bound bool) (target, error) {
	t := sticky
	if st.hasComment {
		t = st.target
	}
	if t.set {
		if !t.all && t.node >= r.participants {
			return target{}, &pgError{code: codeNoRoute, message: fmt.Sprintf("participant %d does not exist: participants are 0..%d", t.node, r.participants-1),
				hint: r.choices(st)}
		}
		return t, nil
	}
	node, found, err := r.byShardKey(st, params, bound)
	if err != nil {
		return target{}, err
	}
	if found {
		return target{set: true, node: node}, nil
	}
	if len(st.tables) == 0 || r.participants == 1 {
		return target{set: true, node: 0}, nil
	}
	return target{}, &pgError{code: codeNoRoute,
		message: fmt.Sprintf("cannot tell which participant %s belongs to: it names %s, which has no shard key", what(st), tableList(st.tables)),
		hint:    r.choices(st)}
}

// choices names every way to route st, for an error that says it has none.
func (r *router) choices(st *statement) string {
	c := fmt.Sprintf("route it with a leading /* tpcd:node=N */ comment, or SET tpcd.node = N (participants 0..%d; RESET tpcd.node to undo) or SET tpcd.node = all (every participant, for DDL)", r.participants-1)
	var keyed []string
	for _, t := range st.tables {
		if col, ok := r.shards[t.name]; ok {
			keyed = append(keyed, fmt.Sprintf("%s.%s", t.name, col))
		} else {
			keyed = append(keyed, fmt.Sprintf("--shard %s:COLUMN", t.name))
		}
	}
	if len(keyed) > 0 {
		c += "; or by shard key: " + strings.Join(slices.Compact(keyed), ", ") +
			" (INSERT with the key column named and one value for it, or UPDATE, DELETE, SELECT with WHERE key = a literal or a parameter)"
	}
	return c
}

func what(st *statement) string {
	switch st.tree.GetNode().(type) {
	case *pg_query.Node_InsertStmt:
		return "this INSERT"
	case *pg_query.Node_UpdateStmt:
		return "this UPDATE"
	case *pg_query.Node_DeleteStmt:
		return "this DELETE"
	case *pg_query.Node_SelectStmt:
		return "this SELECT"
	}
	return "this statement"
}

func tableList(ts []tableRef) string {
	var names []string
	for _, t := range ts {
		names = append(names, t.name)
	}
	names = slices.Compact(names)
	if len(names) == 1 {
		return "table " + names[0]
	}
	return "tables " + strings.Join(names, ", ")
}

// keyValue is where a shard key's value is in a statement.
type keyValue struct {
	table string
	node  *pg_query.Node
}

// byShardKey routes a statement that names sharded tables by the hash of
// its key's value (shard.NodeFor, as client load). found is false when it
// names none.
func (r *router) byShardKey(st *statement, params []*string, bound bool) (node int, found bool, err error) {
	var sharded []tableRef
	for _, t := range st.tables {
		if _, ok := r.shards[t.name]; ok {
			sharded = append(sharded, t)
		}
	}
	if len(sharded) == 0 {
		return 0, false, nil
	}
	values, err := r.keyValues(st, sharded)
	if err != nil {
		return 0, false, err
	}
	nodes := map[int]string{}
	for _, v := range values {
		text, err := keyText(v.node, params, bound)
		if err != nil {
			if errors.Is(err, errParamsUnknown) {
				return 0, false, err
			}
			return 0, false, &pgError{code: codeNoRoute, message: fmt.Sprintf("%s: the shard key %s.%s %v", what(st), v.table, r.shards[v.table], err), hint: r.choices(st)}
		}
		nodes[int(shard.NodeFor(text, r.participants))] = text
	}
	if len(nodes) > 1 {
		var parts []string
		for n, key := range nodes {
			parts = append(parts, fmt.Sprintf("%q to participant %d", key, n))
		}
		slices.Sort(parts)
		return 0, false, &pgError{code: codeNoRoute, message: fmt.Sprintf("%s spans shards: its keys route %s", what(st), strings.Join(parts, ", ")),
			hint: "split it into one statement per participant, in one transaction block; or " + r.choices(st)}
	}
	for n := range nodes {
		if err := r.keyStays(st, params, bound, n); err != nil {
			return 0, false, err
		}
		return n, true, nil
	}
	return 0, false, nil
}

// keyStays refuses an UPDATE (or an INSERT's ON CONFLICT DO UPDATE) that
// sets a sharded table's key to a value belonging on another participant
// than node, where the row is: the row would stay there under its new key,
// and every statement routed by that key would miss it. Setting the key
// to a value of the same participant is let through (ORMs write every
// column back, the key unchanged), as is SET key = key or EXCLUDED.key.
func (r *router) keyStays(st *statement, params []*string, bound bool, node int) error {
	var table string
	var sets []*pg_query.Node
	switch n := st.tree.GetNode().(type) {
	case *pg_query.Node_UpdateStmt:
		table, sets = n.UpdateStmt.GetRelation().GetRelname(), n.UpdateStmt.TargetList
	case *pg_query.Node_InsertStmt:
		table, sets = n.InsertStmt.GetRelation().GetRelname(), n.InsertStmt.GetOnConflictClause().GetTargetList()
	}
	col, ok := r.shards[table]
	if !ok {
		return nil
	}
	self := tableRef{name: table}
	if i := slices.IndexFunc(st.tables, func(t tableRef) bool { return t.name == table }); i >= 0 {
		self = st.tables[i]
	}
	for _, set := range sets {
		target := set.GetResTarget()
		if target.GetName() != col || len(target.GetIndirection()) > 0 {
			continue
		}
		v := target.GetVal()
		if m := v.GetMultiAssignRef(); m != nil {
			// SET (a, key) = (x, y): the key's own value in the row, when
			// the source is one.
			if row := m.GetSource().GetRowExpr(); row != nil && int(m.Colno) >= 1 && int(m.Colno) <= len(row.Args) {
				v = row.Args[m.Colno-1]
			}
		}
		if refersTo(v, self, col) || refersTo(v, tableRef{name: "excluded"}, col) {
			continue
		}
		text, err := keyText(v, params, bound)
		switch {
		case errors.Is(err, errParamsUnknown):
			return err
		case err != nil:
			return &pgError{code: codeFeatureNotSupported,
				message: fmt.Sprintf("%s sets the shard key %s.%s to a value that %v: tpcd cannot tell which participant the row would belong on, and it would stay on participant %d", what(st), table, col, err, node),
				hint:    "set the key to a literal or a parameter; to move a row to another key, delete it and insert it anew, in one transaction block"}
		}
		if to := int(shard.NodeFor(text, r.participants)); to != node {
			return &pgError{code: codeFeatureNotSupported,
				message: fmt.Sprintf("%s sets the shard key %s.%s to %q, which belongs on participant %d, but the row is on participant %d, where it would stay", what(st), table, col, text, to, node),
				hint:    "delete the row and insert it with its new key, in one transaction block"}
		}
	}
	return nil
}

// keyValues finds the shard key's value of every sharded table st names:
// the key column's values in an INSERT's VALUES, or the WHERE clause's
// key = value (at its top level, AND-ed with anything else).
func (r *router) keyValues(st *statement, sharded []tableRef) ([]keyValue, error) {
	missing := func(table string) error {
		return &pgError{code: codeNoRoute, message: fmt.Sprintf("%s names table %s, sharded by %s, without a value for %s", what(st), table, r.shards[table], r.shards[table]),
			hint: r.choices(st)}
	}
	switch n := st.tree.GetNode().(type) {
	case *pg_query.Node_InsertStmt:
		ins := n.InsertStmt
		table := ins.GetRelation().GetRelname()
		col, ok := r.shards[table]
		if !ok {
			// Inserting into a table without a key, from sharded ones.
			return r.whereValues(st, selectWhere(ins.GetSelectStmt()), sharded, missing)
		}
		idx := slices.IndexFunc(ins.Cols, func(c *pg_query.Node) bool { return c.GetResTarget().GetName() == col })
		rows := ins.GetSelectStmt().GetSelectStmt().GetValuesLists()
		if idx < 0 || len(rows) == 0 {
			return nil, missing(table)
		}
		var out []keyValue
		for _, row := range rows {
			items := row.GetList().GetItems()
			if idx >= len(items) {
				return nil, missing(table)
			}
			out = append(out, keyValue{table: table, node: items[idx]})
		}
		return out, nil
	case *pg_query.Node_UpdateStmt:
		return r.whereValues(st, n.UpdateStmt.WhereClause, sharded, missing)
	case *pg_query.Node_DeleteStmt:
		return r.whereValues(st, n.DeleteStmt.WhereClause, sharded, missing)
	case *pg_query.Node_SelectStmt:
		return r.whereValues(st, n.SelectStmt.WhereClause, sharded, missing)
	}
	return nil, &pgError{code: codeNoRoute, message: fmt.Sprintf("this statement names %s, which is sharded; only INSERT, UPDATE, DELETE and SELECT are routed by shard key", tableList(sharded)),
		hint: r.choices(st)}
}

func selectWhere(n *pg_query.Node) *pg_query.Node { return n.GetSelectStmt().GetWhereClause() }

// whereValues finds, for every sharded table, a top-level conjunct
// key = value in where.
func (r *router) whereValues(st *statement, where *pg_query.Node, sharded []tableRef, missing func(string) error) ([]keyValue, error) {
	conjuncts := []*pg_query.Node{where}
	if b := where.GetBoolExpr(); b != nil && b.Boolop == pg_query.BoolExprType_AND_EXPR {
		conjuncts = b.Args
	}
	var out []keyValue
	for _, t := range sharded {
		col := r.shards[t.name]
		var value *pg_query.Node
		for _, c := range conjuncts {
			e := c.GetAExpr()
			if e == nil || e.Kind != pg_query.A_Expr_Kind_AEXPR_OP || len(e.Name) != 1 || e.Name[0].GetString_().GetSval() != "=" {
				continue
			}
			if refersTo(e.Lexpr, t, col) {
				value = e.Rexpr
			} else if refersTo(e.Rexpr, t, col) {
				value = e.Lexpr
			}
			if value != nil {
				break
			}
		}
		if value == nil {
			return nil, missing(t.name)
		}
		out = append(out, keyValue{table: t.name, node: value})
	}
	return out, nil
}

// refersTo reports whether n is the column col of table t (unqualified,
// or qualified with the table's name or alias).
func refersTo(n *pg_query.Node, t tableRef, col string) bool {
	ref := n.GetColumnRef()
	if ref == nil {
		return false
	}
	var names []string
	for _, f := range ref.Fields {
		names = append(names, f.GetString_().GetSval())
	}
	switch len(names) {
	case 1:
		return names[0] == col
	case 2:
		return names[1] == col && (names[0] == t.name || names[0] == t.alias && t.alias != "")
	}
	return false
}

// keyText is the text a key's value hashes as: a literal as written, a
// parameter as bound (in text).
func keyText(n *pg_query.Node, params []*string, bound bool) (string, error) {
	switch v := n.GetNode().(type) {
	case *pg_query.Node_TypeCast:
		return keyText(v.TypeCast.Arg, params, bound)
	case *pg_query.Node_AConst:
		if v.AConst.Isnull {
			return "", errors.New("is NULL")
		}
		return aConstText(v.AConst), nil
	case *pg_query.Node_ParamRef:
		if !bound {
			return "", errParamsUnknown
		}
		i := int(v.ParamRef.Number) - 1
		if i < 0 || i >= len(params) {
			return "", fmt.Errorf("is parameter $%d, which was not bound", i+1)
		}
		if params[i] == nil {
			return "", fmt.Errorf("is parameter $%d, bound to NULL", i+1)
		}
		return *params[i], nil
	}
	return "", errors.New("is not a literal or a parameter")
}
