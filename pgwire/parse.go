package pgwire

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pganalyze/pg_query_go/v6/parser"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// kind says what the session does with a statement.
type kind int

const (
	// kindRun runs on participants.
	kindRun kind = iota
	kindBegin
	kindCommit
	kindRollback
	// kindSetNode is SET tpcd.node = N | all; kindResetNode is RESET
	// tpcd.node (or SET tpcd.node TO DEFAULT); kindShowNode is SHOW
	// tpcd.node.
	kindSetNode
	kindResetNode
	kindShowNode
	// kindIgnoredSet is a session setting the front door keeps itself
	// (application_name, client_encoding UTF8): answered, never sent on.
	kindIgnoredSet
	// kindRefused is a statement tpcd cannot give its PostgreSQL meaning
	// (refused says why; SQLSTATE 0A000).
	kindRefused
)

// statement is one SQL statement of a query string, analysed once when it
// arrives (a Query message, or a Parse).
type statement struct {
	sql string
	// offset is where sql starts in the query string it came in, for
	// error positions.
	offset int
	kind   kind
	// target is the node of SET tpcd.node, or of a leading
	// /* tpcd:node=N */ comment (hasComment).
	target     target
	hasComment bool
	refused    string
	// tree is the parsed statement, for routing by shard key.
	tree *pg_query.Node
	// tables are the tables the statement names (not CTEs, not the
	// system catalogs).
	tables []tableRef
	// tag is the command tag of a statement answered without running it.
	tag string
}

// target is where a statement runs: one participant, or all of them.
type target struct {
	set  bool
	all  bool
	node int
}

func (t target) String() string {
	switch {
	case !t.set:
		return ""
	case t.all:
		return "all"
	}
	return strconv.Itoa(t.node)
}

type tableRef struct {
	name  string // as the parser folded it
	alias string
}

// parseQuery splits a query string into its statements and analyses each
// with PostgreSQL's own parser (libpg_query). An empty string has no
// statements. A syntax error is reported as PostgreSQL reports it.
func parseQuery(query string) ([]*statement, error) {
	if !utf8.ValidString(query) {
		// Its text goes to participants as JSON, whose encoder would put
		// U+FFFD in place of the bytes (a client that said SQL_ASCII may
		// send Latin-1 in a literal).
		return nil, &pgError{code: codeCharacterNotInRepertoire, message: `invalid byte sequence for encoding "UTF8" in the query string`}
	}
	quoted, inserted := quoteSetNodeAll(query)
	tree, err := pg_query.Parse(quoted)
	if err != nil {
		return nil, syntaxError(err)
	}
	// An offset in quoted, as an offset in query.
	original := func(off int) int {
		for _, at := range inserted {
			if at < off {
				off -= 2
			}
		}
		return off
	}
	var out []*statement
	for _, raw := range tree.Stmts {
		start := int(raw.StmtLocation)
		end := len(quoted)
		if raw.StmtLen > 0 {
			end = start + int(raw.StmtLen)
		}
		start, end = original(start), original(end)
		st := &statement{sql: query[start:end], offset: start, tree: raw.Stmt}
		if err := st.readComment(); err != nil {
			return nil, err
		}
		st.classify()
		out = append(out, st)
	}
	return out, nil
}

// quoteSetNodeAll quotes the all of SET tpcd.node = all, which
// PostgreSQL's grammar refuses (ALL is a reserved word), so that the
// statement parses as SET tpcd.node = 'all'. It finds the statement with
// PostgreSQL's own scanner and returns where it inserted quotes (each
// insertion adds two bytes at that offset of the result).
func quoteSetNodeAll(query string) (string, []int) {
	scan, err := pg_query.Scan(query)
	if err != nil {
		return query, nil
	}
	toks := scan.Tokens
	// What SET tpcd.node = all is made of, token by token.
	is := func(i int, t pg_query.Token, text string) bool {
		return i < len(toks) && toks[i].Token == t && (text == "" || strings.EqualFold(query[toks[i].Start:toks[i].End], text))
	}
	var b strings.Builder
	var inserted []int
	last := 0
	for i := range toks {
		if !is(i, pg_query.Token_SET, "") || !is(i+1, pg_query.Token_IDENT, "tpcd") || !is(i+2, pg_query.Token_ASCII_46, "") ||
			!is(i+3, pg_query.Token_IDENT, "node") || !is(i+4, pg_query.Token_ASCII_61, "") && !is(i+4, pg_query.Token_TO, "") ||
			!is(i+5, pg_query.Token_ALL, "") {
			continue
		}
		all := toks[i+5]
		b.WriteString(query[last:all.Start])
		inserted = append(inserted, b.Len())
		b.WriteString("'" + query[all.Start:all.End] + "'")
		last = int(all.End)
	}
	if inserted == nil {
		return query, nil
	}
	b.WriteString(query[last:])
	return b.String(), inserted
}

// syntaxError turns the parser's error into PostgreSQL's (42601).
func syntaxError(err error) *pgError {
	e := &pgError{code: codeSyntaxError, message: err.Error()}
	var pe *parser.Error
	if errors.As(err, &pe) && pe.Cursorpos > 0 {
		e.position = int32(pe.Cursorpos)
	}
	return e
}

// commentPrefix starts the comment that routes one statement.
const commentPrefix = "tpcd:node="

// readComment looks at the statement's first token: a comment
// /* tpcd:node=N */ (or -- tpcd:node=N) routes it.
func (st *statement) readComment() error {
	scan, err := pg_query.Scan(st.sql)
	if err != nil || len(scan.Tokens) == 0 {
		return nil // the parser accepted it; a scan failure only means no comment
	}
	tok := scan.Tokens[0]
	var text string
	switch tok.Token {
	case pg_query.Token_C_COMMENT:
		text = strings.TrimSuffix(strings.TrimPrefix(st.sql[tok.Start:tok.End], "/*"), "*/")
	case pg_query.Token_SQL_COMMENT:
		text = strings.TrimPrefix(st.sql[tok.Start:tok.End], "--")
	default:
		return nil
	}
	text = strings.TrimSpace(text)
	if !strings.HasPrefix(text, "tpcd:") {
		return nil
	}
	value, ok := strings.CutPrefix(text, commentPrefix)
	t, err := parseTarget(value)
	if !ok || err != nil {
		return &pgError{code: codeSyntaxError, message: fmt.Sprintf("routing comment %q not understood", "/* "+text+" */"),
			hint: "write /* tpcd:node=N */ with a participant's number, or /* tpcd:node=all */"}
	}
	st.target, st.hasComment = t, true
	return nil
}

// parseTarget reads N or all.
func parseTarget(s string) (target, error) {
	s = strings.TrimSpace(strings.Trim(strings.TrimSpace(s), "'\""))
	if strings.EqualFold(s, "all") {
		return target{set: true, all: true}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return target{}, fmt.Errorf("%q is neither a participant's number nor all", s)
	}
	return target{set: true, node: n}, nil
}

// classify sets the statement's kind, and collects its tables.
func (st *statement) classify() {
	switch n := st.tree.GetNode().(type) {
	case *pg_query.Node_TransactionStmt:
		st.classifyTransaction(n.TransactionStmt)
		return
	case *pg_query.Node_VariableSetStmt:
		st.classifySet(n.VariableSetStmt)
		return
	case *pg_query.Node_VariableShowStmt:
		if strings.EqualFold(n.VariableShowStmt.Name, "tpcd.node") {
			st.kind = kindShowNode
			return
		}
	case *pg_query.Node_ListenStmt, *pg_query.Node_UnlistenStmt, *pg_query.Node_NotifyStmt:
		st.refuse("LISTEN and NOTIFY are not supported: each transaction runs on pooled participant connections, which no session owns")
		return
	case *pg_query.Node_CopyStmt:
		st.refuse("COPY is not supported through tpcd; use INSERT (several rows per statement), or tpcd client load for CSV files")
		return
	case *pg_query.Node_PrepareStmt, *pg_query.Node_ExecuteStmt, *pg_query.Node_DeallocateStmt:
		st.refuse("SQL-level PREPARE, EXECUTE and DEALLOCATE are not supported; use the extended protocol's named statements, which tpcd keeps for the session")
		return
	case *pg_query.Node_DiscardStmt:
		st.refuse("DISCARD is not supported")
		return
	}
	st.kind = kindRun
	st.tables = tablesOf(st.tree)
}

func (st *statement) refuse(why string) {
	st.kind, st.refused = kindRefused, why
}

func (st *statement) classifyTransaction(t *pg_query.TransactionStmt) {
	switch t.Kind {
	case pg_query.TransactionStmtKind_TRANS_STMT_BEGIN, pg_query.TransactionStmtKind_TRANS_STMT_START:
		if len(t.Options) > 0 {
			st.refuse("transaction modes (isolation level, READ ONLY, DEFERRABLE) are not supported: each participant runs its part at its server's default")
			return
		}
		st.kind = kindBegin
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT:
		if t.Chain {
			st.refuse("COMMIT AND CHAIN is not supported")
			return
		}
		st.kind = kindCommit
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK:
		if t.Chain {
			st.refuse("ROLLBACK AND CHAIN is not supported")
			return
		}
		st.kind = kindRollback
	case pg_query.TransactionStmtKind_TRANS_STMT_SAVEPOINT, pg_query.TransactionStmtKind_TRANS_STMT_RELEASE, pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		st.refuse("savepoints are not supported: a tpcd transaction fails as a whole")
	default:
		st.refuse("PREPARE TRANSACTION, COMMIT PREPARED and ROLLBACK PREPARED are tpcd's own business: COMMIT runs the two-phase commit")
	}
}

// settingsKept are the session settings the front door answers itself,
// each with the values it accepts (given in lower case).
var settingsKept = map[string]func(string) bool{
	"application_name": func(string) bool { return true },
	"client_encoding":  speaksUTF8,
	// The JDBC driver sets 3 when it connects. From PostgreSQL 12 on,
	// every positive value means the shortest text that reads back as the
	// same float, which is what the participants send at their default of
	// 1; zero and below would round, and are refused.
	"extra_float_digits": func(v string) bool { return v == "1" || v == "2" || v == "3" },
}

func (st *statement) classifySet(s *pg_query.VariableSetStmt) {
	name := strings.ToLower(s.Name)
	if name == "tpcd.node" {
		switch {
		case s.IsLocal:
			st.refuse("SET LOCAL tpcd.node is not supported; use SET tpcd.node (until RESET tpcd.node) or a leading /* tpcd:node=N */ comment")
		case s.Kind == pg_query.VariableSetKind_VAR_RESET || s.Kind == pg_query.VariableSetKind_VAR_SET_DEFAULT:
			st.kind, st.tag = kindResetNode, "RESET"
			if s.Kind == pg_query.VariableSetKind_VAR_SET_DEFAULT {
				st.tag = "SET"
			}
		case s.Kind == pg_query.VariableSetKind_VAR_SET_VALUE && len(s.Args) == 1:
			t, err := parseTarget(constText(s.Args[0]))
			if err != nil {
				st.refuse(fmt.Sprintf("SET tpcd.node: %v; write SET tpcd.node = N (a participant's number) or SET tpcd.node = all", err))
				return
			}
			st.kind, st.target, st.tag = kindSetNode, t, "SET"
		default:
			st.refuse("write SET tpcd.node = N (a participant's number) or SET tpcd.node = all")
		}
		return
	}
	if s.IsLocal {
		// SET LOCAL lasts as long as the transaction on the participant
		// it runs on: it is routed as any statement.
		st.kind = kindRun
		return
	}
	if accepts, ok := settingsKept[name]; ok && s.Kind == pg_query.VariableSetKind_VAR_SET_VALUE && len(s.Args) == 1 {
		if accepts(strings.ToLower(constText(s.Args[0]))) {
			st.kind, st.tag = kindIgnoredSet, "SET"
			return
		}
	}
	if s.Kind == pg_query.VariableSetKind_VAR_RESET_ALL {
		st.refuse("RESET ALL is not supported; RESET tpcd.node resets the routing")
		return
	}
	st.refuse(fmt.Sprintf("session settings do not last through tpcd (SET %s): each transaction runs on pooled participant connections; use SET LOCAL inside a transaction block", s.Name))
}

// constText is the text of a constant (a number, a string, or a name such
// as all written without quotes); empty for anything else.
func constText(n *pg_query.Node) string {
	switch v := n.GetNode().(type) {
	case *pg_query.Node_AConst:
		return aConstText(v.AConst)
	case *pg_query.Node_String_:
		return v.String_.Sval
	case *pg_query.Node_TypeCast:
		return constText(v.TypeCast.Arg)
	}
	return ""
}

// aConstText is a literal's text: what a shard key's value hashes as.
func aConstText(c *pg_query.A_Const) string {
	switch v := c.GetVal().(type) {
	case *pg_query.A_Const_Ival:
		return strconv.FormatInt(int64(v.Ival.Ival), 10)
	case *pg_query.A_Const_Fval:
		return v.Fval.Fval
	case *pg_query.A_Const_Sval:
		return v.Sval.Sval
	case *pg_query.A_Const_Boolval:
		return strconv.FormatBool(v.Boolval.Boolval)
	case *pg_query.A_Const_Bsval:
		return v.Bsval.Bsval
	}
	return ""
}

// tablesOf lists the tables a statement names, leaving out its common
// table expressions and the system catalogs (pg_catalog,
// information_schema and pg_* names), which every participant has.
func tablesOf(tree *pg_query.Node) []tableRef {
	ctes := map[string]bool{}
	var refs []tableRef
	walk(tree.ProtoReflect(), func(m protoreflect.ProtoMessage) {
		switch v := m.(type) {
		case *pg_query.CommonTableExpr:
			ctes[v.Ctename] = true
		case *pg_query.RangeVar:
			if v.Schemaname == "pg_catalog" || v.Schemaname == "information_schema" || v.Schemaname == "" && strings.HasPrefix(v.Relname, "pg_") {
				return
			}
			refs = append(refs, tableRef{name: v.Relname, alias: v.GetAlias().GetAliasname()})
		}
	})
	out := refs[:0]
	for _, r := range refs {
		if !ctes[r.name] {
			out = append(out, r)
		}
	}
	return out
}

// walk calls fn on every message of a parse tree, depth first.
func walk(m protoreflect.Message, fn func(protoreflect.ProtoMessage)) {
	if !m.IsValid() {
		return
	}
	fn(m.Interface())
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := range l.Len() {
				walk(l.Get(i).Message(), fn)
			}
			return true
		}
		walk(v.Message(), fn)
		return true
	})
}
