package client

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
)

// sqlKeywords are offered when a word of a statement is completed. Not all
// of PostgreSQL's, but those a statement typed at a prompt is made of.
var sqlKeywords = strings.Fields(`
	ABORT ALL ALTER AND ANY AS ASC BEGIN BETWEEN BIGINT BOOLEAN BY CASCADE CASE
	CAST CHECK COALESCE COLUMN COMMIT CONFLICT CONSTRAINT COPY COUNT CREATE
	CROSS CURRENT_DATE CURRENT_TIMESTAMP DATE DEFAULT DELETE DESC DISTINCT DO
	DOUBLE DROP ELSE END EXCEPT EXISTS EXPLAIN FALSE FETCH FIRST FOREIGN FROM
	FULL FUNCTION GROUP HAVING IF ILIKE IN INDEX INNER INSERT INTEGER INTERSECT
	INTERVAL INTO IS JOIN JSONB KEY LATERAL LEFT LIKE LIMIT LOCK NOT NOTHING
	NOW NULL NUMERIC OFFSET ON OR ORDER OUTER OVER PARTITION PRECISION PRIMARY
	REFERENCES RETURNING RIGHT ROLLBACK ROW SCHEMA SELECT SEQUENCE SERIAL SET
	SHOW TABLE TEXT THEN TIMESTAMP TIMESTAMPTZ TO TRUE TRUNCATE UNION UNIQUE
	UPDATE USING VALUES VARCHAR VIEW WHEN WHERE WINDOW WITH`)

// tableWords are the keywords a table name follows.
var tableWords = map[string]bool{"from": true, "join": true, "into": true, "update": true, "table": true, "truncate": true}

// keywordCase writes a keyword in the case the user started it in: lower
// if the typed part has a lower-case letter, else upper (psql's default).
func keywordCase(keyword, typed string) string {
	if strings.IndexFunc(typed, unicode.IsLower) >= 0 {
		return strings.ToLower(keyword)
	}
	return keyword
}

// tableNames caches what each participant said its tables are, for
// completion.
type tableNames struct {
	byNode  [][]string
	fetched bool
	// failed is when asking last failed: Tab does not ask again at once.
	failed time.Time
	// ddl is set once a statement created, dropped or altered something
	// until its transaction or batch ended: the names are asked in a
	// transaction of their own, which sees the change only then.
	ddl bool
}

func (c *tableNames) forget() { c.byNode, c.fetched = nil, false }

// saw takes note of a command's outcome: a statement that may have changed
// the tables makes the names stale, at once (it may have committed on its
// own) and again when its transaction or batch ends.
func (c *tableNames) saw(kind Kind, res *Result, err error) {
	switch {
	case res != nil && changesTables(res):
		c.forget()
		c.ddl = true
	case c.ddl && (kind == CmdCommit || kind == CmdRollback || err != nil || batchClosed(res)):
		c.forget()
		c.ddl = false
	}
}

// batchClosed reports whether an execute's answer says its batch ended.
func batchClosed(res *Result) bool {
	r, ok := resultReply(res)
	return ok && r.Outcome != nil
}

func resultReply(res *Result) (engine.ExecReply, bool) {
	if res == nil {
		return engine.ExecReply{}, false
	}
	r, ok := res.Value.(engine.ExecReply)
	return r, ok
}

// retryAfter is how long completion goes without table names after
// asking for them failed.
const retryAfter = 10 * time.Second

// names returns the tables of node n, or of every node when n < 0, asking
// the participants first if they were not asked yet.
func (c *tableNames) names(ctx context.Context, s *Session, n int) []string {
	if !c.fetched && time.Since(c.failed) > retryAfter {
		byNode, err := s.TableNames(ctx)
		if err != nil {
			c.failed = time.Now()
			return nil
		}
		c.byNode, c.fetched = byNode, true
	}
	if n >= 0 {
		if n < len(c.byNode) {
			return c.byNode[n]
		}
		return nil
	}
	var all []string
	for _, names := range c.byNode {
		all = append(all, names...)
	}
	slices.Sort(all)
	return slices.Compact(all)
}

// changesTables reports whether a statement's result says it created,
// dropped or altered something, which may change the tables completion
// knows.
func changesTables(res *Result) bool {
	r, ok := resultReply(res)
	if !ok || r.Result == nil {
		return false
	}
	for _, verb := range []string{"CREATE", "DROP", "ALTER"} {
		if strings.HasPrefix(r.Result.Tag, verb) {
			return true
		}
	}
	return false
}

// catalogQuery lists a data database's own tables and views, quoted where
// needed; schemas other than public name theirs. tpcd's own (tpcd_*) are
// left out.
const catalogQuery = `SELECT CASE WHEN table_schema = 'public' THEN quote_ident(table_name)
	ELSE quote_ident(table_schema) || '.' || quote_ident(table_name) END
FROM information_schema.tables
WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_name NOT LIKE 'tpcd\_%'
ORDER BY 1`

// TableNames asks every participant for its tables, in one read-only
// transaction of its own (the session's open transaction is not touched,
// so a failure here cannot doom it).
func (s *Session) TableNames(ctx context.Context) ([][]string, error) {
	if s.nodes == 0 {
		if err := s.check(ctx); err != nil {
			return nil, err
		}
	}
	params := api.TransactParams{Commit: true}
	for i := range s.nodes {
		n := engine.NodeID(i)
		params.Statements = append(params.Statements, api.StatementParams{Node: &n, SQL: catalogQuery})
	}
	var r api.TransactReply
	if err := s.call(ctx, api.MethodTransact, params, &r); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	byNode := make([][]string, s.nodes)
	for i, res := range r.Results {
		if i >= len(byNode) || res == nil {
			continue
		}
		for _, row := range res.Rows {
			if len(row) > 0 && row[0] != nil {
				byNode[i] = append(byNode[i], fmt.Sprint(row[0]))
			}
		}
	}
	return byNode, nil
}

// completionTimeout bounds asking for table names while the user waits
// on a Tab.
const completionTimeout = 3 * time.Second

// complete offers command names for the first word, @N after exec and
// execute or at the start, load's flags, help topics, and in a statement
// SQL keywords and, after FROM, JOIN, INTO, UPDATE, TABLE or TRUNCATE,
// the participant's table names.
func (sh *shell) complete(line string, pos int) (head string, completions []string, tail string) {
	head, tail = line[:pos], line[pos:]
	start := strings.LastIndexAny(head, " \t(,") + 1
	word := head[start:]
	before := strings.Fields(head[:start])
	head = head[:start]
	var cands []string
	sqlNode, inSQL := sh.statementNode(before)
	switch {
	case inSQL:
		prev := ""
		if len(before) > 0 {
			prev = strings.ToLower(strings.TrimRight(before[len(before)-1], "(,"))
		}
		if tableWords[prev] {
			cands = sh.tableWords(sqlNode)
			break
		}
		if word == "" {
			return head, nil, tail
		}
		for _, k := range sqlKeywords {
			cands = append(cands, keywordCase(k, word))
		}
	case len(before) == 0:
		cands = append(cands, commandWords...)
		cands = append(cands, sh.nodeWords()...)
		if word != "" {
			// A statement may start the line: the shell asks for its node.
			for _, k := range sqlKeywords {
				if isSQLWord(strings.ToLower(k)) {
					cands = append(cands, keywordCase(k, word))
				}
			}
		}
	case len(before) == 1 && (strings.EqualFold(before[0], "exec") || strings.EqualFold(before[0], "execute")):
		cands = sh.nodeWords()
	case strings.EqualFold(before[0], "load"):
		cands = []string{"--table", "--key", "--create", "--tx-size"}
	case len(before) == 1 && strings.EqualFold(before[0], "help"):
		cands = commandWords
	case len(before) == 1 && strings.EqualFold(before[0], `\pset`):
		cands = []string{"pager", "expanded"}
	case len(before) == 1 && strings.EqualFold(before[0], `\x`):
		cands = settingValues["expanded"]
	case len(before) == 1 && strings.EqualFold(before[0], `\timing`):
		cands = settingValues["timing"]
	case len(before) == 2 && strings.EqualFold(before[0], `\pset`):
		cands = settingValues[strings.ToLower(before[1])]
	}
	for _, c := range cands {
		if strings.HasPrefix(strings.ToLower(c), strings.ToLower(word)) {
			completions = append(completions, c+" ")
		}
	}
	return head, completions, tail
}

// statementNode reports whether the word being completed is part of a
// statement, and the node the statement goes to (-1 if not known): the
// line starts with @N or exec/execute @N and the word comes after that, or
// with an SQL keyword (a statement the shell will ask the node of), or the
// line goes on with a statement begun on an earlier line.
func (sh *shell) statementNode(before []string) (node int, ok bool) {
	words := before
	if sh.sp.Pending() {
		words = strings.Fields(sh.sp.Partial())
	}
	if len(words) > 0 && isSQLWord(strings.ToLower(words[0])) {
		return -1, true // typed without a node: the shell asks for one
	}
	lead := 1
	if len(words) > 0 && (strings.EqualFold(words[0], "exec") || strings.EqualFold(words[0], "execute")) {
		words, lead = words[1:], 2
	}
	if len(words) == 0 || !strings.HasPrefix(words[0], "@") {
		return -1, false
	}
	if !sh.sp.Pending() && len(before) < lead {
		return -1, false // still completing the node
	}
	n, err := parseNode(words[0])
	if err != nil {
		return -1, true
	}
	return int(n), true
}

// tableWords asks, the first time, the participants for their tables.
func (sh *shell) tableWords(node int) []string {
	sh.busy.Lock()
	defer sh.busy.Unlock()
	ctx, cancel := context.WithTimeout(sh.base, completionTimeout)
	defer cancel()
	return sh.r.tables.names(ctx, sh.r.sess, node)
}

func (sh *shell) nodeWords() []string {
	n := sh.r.sess.Participants()
	out := make([]string, n)
	for i := range n {
		out[i] = "@" + strconv.Itoa(i)
	}
	return out
}
