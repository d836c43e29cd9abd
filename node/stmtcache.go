package node

import (
	"container/list"
	"context"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// stmtCacheSize bounds the named statements one data connection keeps on
// its server. A participant's own statements take a handful; the rest serve
// the users' most recent ones.
const stmtCacheSize = 64

// stmtSeenSize bounds the user's statements remembered as run once, unnamed.
const stmtSeenSize = 256

// stmtCacheKey is where a connection keeps its stmtCache (pgconn's
// CustomData lives and dies with the connection, as the names do).
const stmtCacheKey = "tpcd.stmts"

// stmtCache names the statements a data connection runs again and again,
// so that its server parses and plans each once per connection instead of
// on every run (what that saves: docs/PERFORMANCE.md, "Defaults").
//
// A user's statement is run by name only when it returns no rows: a
// statement that does could fail with "cached plan must not change result
// type" once its table changes, where an unnamed one would not. Such
// statements keep going unnamed, and so do statements without arguments
// (the simple protocol, which allows several in one string).
type stmtCache struct {
	entries map[string]*list.Element // of *stmtEntry, by SQL
	recent  list.List                // most recently used first
	next    int
	// seen are user's statements run once, unnamed: a statement is named
	// when it comes again, so that one that never does costs no round trip
	// to name it and none to deallocate it.
	seen map[string]struct{}
	// stale are names evicted and not yet deallocated: DEALLOCATE waits
	// until the connection is outside a transaction (trim), where nothing
	// it runs can disturb a user's work.
	stale []string
	// unfit: a user's statement may have deallocated prepared statements,
	// pgx's as well as these; the connection is closed when released.
	unfit bool
}

type stmtEntry struct {
	// key is the SQL, after its declared parameter types if any
	// (stmtKey).
	key, name string
	// rows: the statement returns rows, and is to run unnamed.
	rows bool
}

// stmtsOf returns pc's cache, making it on first use.
func stmtsOf(pc *pgconn.PgConn) *stmtCache {
	data := pc.CustomData()
	if c, ok := data[stmtCacheKey].(*stmtCache); ok {
		return c
	}
	c := &stmtCache{entries: map[string]*list.Element{}, seen: map[string]struct{}{}}
	data[stmtCacheKey] = c
	return c
}

// name returns the name under which sql is prepared on pc, preparing it
// (one round trip) when it is first needed. ok is false when sql is to run
// unnamed: a user's statement (own false) the first time the connection
// sees it, or one that returns rows. An error is PostgreSQL's answer to
// the statement's parse: inside a transaction it has aborted that
// transaction, as running the statement would have.
func (c *stmtCache) name(ctx context.Context, pc *pgconn.PgConn, sql string, types []uint32, own bool) (name string, ok bool, err error) {
	key := stmtKey(sql, types)
	if el, hit := c.entries[key]; hit {
		c.recent.MoveToFront(el)
		e := el.Value.(*stmtEntry)
		return e.name, !e.rows, nil
	}
	if !own {
		if _, again := c.seen[key]; !again {
			if len(c.seen) >= stmtSeenSize {
				clear(c.seen)
			}
			c.seen[key] = struct{}{}
			return "", false, nil
		}
		delete(c.seen, key)
	}
	c.next++
	name = "tpcd_" + strconv.Itoa(c.next)
	sd, err := pc.Prepare(ctx, name, sql, types)
	if err != nil {
		return "", false, err
	}
	e := &stmtEntry{key: key, name: name, rows: !own && len(sd.Fields) > 0}
	c.entries[key] = c.recent.PushFront(e)
	for c.recent.Len() > stmtCacheSize {
		old := c.recent.Remove(c.recent.Back()).(*stmtEntry)
		delete(c.entries, old.key)
		c.stale = append(c.stale, old.name)
	}
	return name, !e.rows, nil
}

// trim deallocates the evicted statements, in one round trip; pc must be
// outside a transaction, with the names its next statements use taken
// already (they are the most recent, never evicted by this). An error
// leaves the connection unfit for use.
func (c *stmtCache) trim(ctx context.Context, pc *pgconn.PgConn) error {
	if len(c.stale) == 0 {
		return nil
	}
	var sql strings.Builder
	for _, n := range c.stale {
		sql.WriteString("DEALLOCATE " + n + ";")
	}
	if _, err := pc.Exec(ctx, sql.String()).ReadAll(); err != nil {
		return err
	}
	c.stale = c.stale[:0]
	return nil
}

// noteUserSQL is told of each user's statement run on the connection. One
// that may deallocate prepared statements (DEALLOCATE ALL, or one of ours
// by name) makes every name doubtful: the rest of its transaction prepares
// afresh under new names, and the connection is not reused.
func (c *stmtCache) noteUserSQL(sql string) {
	if !containsFold(sql, "deallocate") {
		return
	}
	clear(c.entries)
	c.recent.Init()
	c.stale = nil
	c.unfit = true
}

// containsFold reports whether s contains the lower-case ASCII word w in
// any case, without copying s.
func containsFold(s, w string) bool {
	for i := 0; i+len(w) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(w)], w) {
			return true
		}
	}
	return false
}

// stmtKey tells statements apart by their SQL and their declared
// parameter types: the same SQL prepared with other types is another
// statement. SQL holds no NUL byte (PostgreSQL refuses one), so the types
// before one cannot be taken for SQL.
func stmtKey(sql string, types []uint32) string {
	if len(types) == 0 {
		return sql
	}
	b := make([]byte, 0, len(sql)+8*len(types))
	for _, t := range types {
		b = strconv.AppendUint(b, uint64(t), 10)
		b = append(b, ',')
	}
	b = append(b, 0)
	return string(append(b, sql...))
}
