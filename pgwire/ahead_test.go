package pgwire_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/pgwire"
)

// countingCoordinator counts the front door's calls that run statements
// or commit, so that a test can tell a block sent whole from one run
// statement by statement; and those not marked for prompt acks
// (api.WithPromptAcks), which a session, waiting for its commits to be
// applied, must ask for.
type countingCoordinator struct {
	pgwire.Coordinator
	transacts, commits, unmarked atomic.Int64
}

func (c *countingCoordinator) Transact(ctx context.Context, p api.TransactParams) (engine.TransactReply, error) {
	c.transacts.Add(1)
	if !api.PromptAcks(ctx) {
		c.unmarked.Add(1)
	}
	return c.Coordinator.Transact(ctx, p)
}

func (c *countingCoordinator) Commit(ctx context.Context, tx engine.TxID) (engine.OutcomeReply, error) {
	c.commits.Add(1)
	if !api.PromptAcks(ctx) {
		c.unmarked.Add(1)
	}
	return c.Coordinator.Commit(ctx, tx)
}

// calls returns the calls made since the last time it was asked.
func (c *countingCoordinator) calls() (transacts, commits int64) {
	return c.transacts.Swap(0), c.commits.Swap(0)
}

func startCountedFrontDoor(t *testing.T) (*frontDoor, *countingCoordinator) {
	var cc *countingCoordinator
	f := startFrontDoor(t, func(o *pgwire.Options) {
		cc = &countingCoordinator{Coordinator: o.Coordinator}
		o.Coordinator = cc
	})
	t.Cleanup(func() {
		if n := cc.unmarked.Load(); n > 0 {
			t.Errorf("%d of the front door's calls did not ask for prompt acks", n)
		}
	})
	return f, cc
}

// TestPgxBatchBlockInOneCall: a pgx batch of BEGIN, statements on both
// participants and COMMIT is run as one call that commits, in each query
// mode that sends the batch before one Sync (the simple protocol sends it
// as one Query string); every statement's answer is PostgreSQL's, a read
// inside the block sees the block's own write, and the rows are on the
// participants.
func TestPgxBatchBlockInOneCall(t *testing.T) {
	f, cc := startCountedFrontDoor(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	want := map[int]string{}
	modes := []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol}
	for i, mode := range modes {
		conn := f.connectMode(ctx, mode)
		k0, k1 := keysOn(0, 2, 100*i), keysOn(1, 1, 100*i)[0]
		b := &pgx.Batch{}
		b.Queue("BEGIN")
		b.Queue("INSERT INTO kv (k, v) VALUES ($1, $2)", k0[0], mode.String())
		b.Queue("INSERT INTO kv (k, v) VALUES ($1, $2)", k1, mode.String())
		b.Queue("INSERT INTO kv (k, v) VALUES ($1, $2)", k0[1], "to be updated")
		b.Queue("UPDATE kv SET v = $2 WHERE k = $1", k0[1], mode.String()+" updated")
		b.Queue("SELECT v FROM kv WHERE k = $1", k0[1])
		b.Queue("COMMIT")
		cc.calls()
		br := conn.SendBatch(ctx, b)
		for _, tag := range []string{"BEGIN", "INSERT 0 1", "INSERT 0 1", "INSERT 0 1", "UPDATE 1"} {
			got, err := br.Exec()
			if err != nil || got.String() != tag {
				t.Fatalf("%v: %q, %v; want %q", mode, got, err, tag)
			}
		}
		var v string
		if err := br.QueryRow().Scan(&v); err != nil || v != mode.String()+" updated" {
			t.Fatalf("%v: read inside the block: %q %v", mode, v, err)
		}
		if got, err := br.Exec(); err != nil || got.String() != "COMMIT" {
			t.Fatalf("%v: COMMIT: %q %v", mode, got, err)
		}
		if err := br.Close(); err != nil {
			t.Fatalf("%v: %v", mode, err)
		}
		if tr, co := cc.calls(); tr != 1 || co != 0 {
			t.Fatalf("%v: the block took %d transact and %d commit calls, want one transact", mode, tr, co)
		}
		if st := conn.PgConn().TxStatus(); st != 'I' {
			t.Fatalf("%v: transaction status %c after the block, want I", mode, st)
		}
		want[k0[0]], want[k1], want[k0[1]] = mode.String(), mode.String(), mode.String()+" updated"
		conn.Close(ctx)
	}
	f.wantRows(want)
	f.nothingLeft()
}

// TestPgxBatchBlockFailing: a statement that fails in the middle of a
// block sent whole answers with its error; the statements after it are
// not run, nothing of the block is committed, the block is failed until
// its end, where COMMIT answers ROLLBACK, and the session goes on.
func TestPgxBatchBlockFailing(t *testing.T) {
	f, cc := startCountedFrontDoor(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn := f.connect(ctx)
	k0, k1 := keysOn(0, 2, 0), keysOn(1, 2, 0)
	if _, err := conn.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, 'first')", k1[0]); err != nil {
		t.Fatal(err)
	}
	// A statement alone fails in its one call, and is not run again.
	cc.calls()
	_, err := conn.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, 'again')", k1[0])
	if pe := pgCode(t, err); pe.Code != "23505" || pe.Detail == "" {
		t.Fatalf("duplicate alone: %+v", pe)
	}
	if tr, co := cc.calls(); tr != 1 || co != 0 {
		t.Fatalf("a failing statement alone took %d transact and %d commit calls, want one transact", tr, co)
	}

	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue("INSERT INTO kv (k, v) VALUES ($1, 'not kept')", k0[0])
	b.Queue("INSERT INTO kv (k, v) VALUES ($1, 'duplicate')", k1[0])
	b.Queue("INSERT INTO kv (k, v) VALUES ($1, 'never run')", k0[1])
	b.Queue("COMMIT")
	br := conn.SendBatch(ctx, b)
	for _, tag := range []string{"BEGIN", "INSERT 0 1"} {
		if got, err := br.Exec(); err != nil || got.String() != tag {
			t.Fatalf("%q, %v; want %q", got, err, tag)
		}
	}
	_, err = br.Exec()
	if pe := pgCode(t, err); pe.Code != "23505" || pe.Detail == "" {
		t.Fatalf("duplicate in a block sent whole: %+v", pe)
	}
	for _, what := range []string{"the statement after the failure", "COMMIT"} {
		if _, err := br.Exec(); err == nil {
			t.Fatalf("%s ran", what)
		}
	}
	br.Close()
	if st := conn.PgConn().TxStatus(); st != 'E' {
		t.Fatalf("transaction status %c after the failed block, want E", st)
	}
	_, err = conn.Exec(ctx, "SELECT v FROM kv WHERE k = $1", k1[0])
	if pe := pgCode(t, err); pe.Code != "25P02" {
		t.Fatalf("a statement in the failed block: %+v", pe)
	}
	if tag, err := conn.Exec(ctx, "COMMIT"); err != nil || tag.String() != "ROLLBACK" {
		t.Fatalf("COMMIT of the failed block: %q %v, want ROLLBACK", tag, err)
	}
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM kv WHERE k = $1", k1[0]).Scan(&v); err != nil || v != "first" {
		t.Fatalf("after the failed block: %q %v", v, err)
	}
	f.wantRows(map[int]string{k1[0]: "first"})
	f.nothingLeft()
}

// TestSimpleQueryBlockInOneCall: BEGIN; statements; COMMIT in one Query
// string is one call that commits; one that fails half way answers as
// PostgreSQL does, leaves the block failed, and commits nothing.
func TestSimpleQueryBlockInOneCall(t *testing.T) {
	f, cc := startCountedFrontDoor(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn := f.connect(ctx)
	k0, k1 := keysOn(0, 2, 0), keysOn(1, 2, 0)
	cc.calls()
	query := fmt.Sprintf("BEGIN; INSERT INTO kv (k, v) VALUES (%d, 'simple'); INSERT INTO kv (k, v) VALUES (%d, 'simple'); COMMIT",
		k0[0], k1[0])
	results, err := conn.PgConn().Exec(ctx, query).ReadAll()
	if err != nil || len(results) != 4 {
		t.Fatalf("%d results, %v", len(results), err)
	}
	for i, tag := range []string{"BEGIN", "INSERT 0 1", "INSERT 0 1", "COMMIT"} {
		if got := results[i].CommandTag.String(); got != tag {
			t.Fatalf("statement %d: %q, want %q", i, got, tag)
		}
	}
	if tr, co := cc.calls(); tr != 1 || co != 0 {
		t.Fatalf("the block took %d transact and %d commit calls, want one transact", tr, co)
	}

	query = fmt.Sprintf("BEGIN; INSERT INTO kv (k, v) VALUES (%d, 'not kept'); INSERT INTO kv (k, v) VALUES (%d, 'duplicate'); INSERT INTO kv (k, v) VALUES (%d, 'never run'); COMMIT",
		k1[1], k0[0], k0[1])
	results, err = conn.PgConn().Exec(ctx, query).ReadAll()
	if pe := pgCode(t, err); pe.Code != "23505" {
		t.Fatalf("duplicate in a Query string: %+v", pe)
	}
	var tags []string
	for _, r := range results {
		if r.Err == nil {
			tags = append(tags, r.CommandTag.String())
		}
	}
	if strings.Join(tags, ", ") != "BEGIN, INSERT 0 1" {
		t.Fatalf("statements answered before the failure: %q", tags)
	}
	if st := conn.PgConn().TxStatus(); st != 'E' {
		t.Fatalf("transaction status %c after the failed block, want E", st)
	}
	if tag, err := conn.Exec(ctx, "ROLLBACK"); err != nil || tag.String() != "ROLLBACK" {
		t.Fatalf("ROLLBACK: %q %v", tag, err)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("after the failed block: %d %v", one, err)
	}
	f.wantRows(map[int]string{k0[0]: "simple", k1[0]: "simple"})
	f.nothingLeft()
}

// TestPgbenchPipeline: pgbench's \startpipeline ... \endpipeline sends a
// block across both participants whole; each transaction pgbench commits
// is one call, and each participant's counter equals their number.
func TestPgbenchPipeline(t *testing.T) {
	f, cc := startCountedFrontDoor(t)
	pgbench, psql := pgtest.ClientBin(t, "pgbench"), pgtest.ClientBin(t, "psql")
	env := f.psqlEnv(testPassword)
	k0, k1 := keysOn(0, 1, 0)[0], keysOn(1, 1, 0)[0]
	if out, code := run(t, env, psql, f.psqlURL(), "-X", "-v", "ON_ERROR_STOP=1",
		"-c", fmt.Sprintf("INSERT INTO kv (k, v) VALUES (%d, '0')", k0),
		"-c", fmt.Sprintf("INSERT INTO kv (k, v) VALUES (%d, '0')", k1)); code != 0 {
		t.Fatalf("set-up: exit %d\n%s", code, out)
	}
	script := filepath.Join(t.TempDir(), "pipeline.sql")
	os.WriteFile(script, []byte(`\startpipeline
BEGIN;
UPDATE kv SET v = (v::int + 1)::text WHERE k = :k0;
UPDATE kv SET v = (v::int + 1)::text WHERE k = :k1;
COMMIT;
\endpipeline
`), 0o644)
	// One client: two clients' blocks would take the two rows' locks on
	// the two participants at once, in either order, and wait for each
	// other until a lock timeout (no server sees both waits).
	const clients, perClient = 1, 50
	total := 0
	cc.calls()
	for _, mode := range []string{"extended", "prepared"} {
		out, code := run(t, env, pgbench, "-n", "-M", mode, "-f", script, "-D", fmt.Sprintf("k0=%d", k0), "-D", fmt.Sprintf("k1=%d", k1),
			"-c", strconv.Itoa(clients), "-t", strconv.Itoa(perClient), f.psqlURL())
		total += pgbenchProcessed(t, mode, out, code)
	}
	if tr, co := cc.calls(); tr != int64(total) || co != 0 {
		t.Fatalf("%d pipelined transactions took %d transact and %d commit calls, want one transact each", total, tr, co)
	}
	f.wantRows(map[int]string{k0: strconv.Itoa(total), k1: strconv.Itoa(total)})
	f.nothingLeft()
}
