package pgwire_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/internal/testcerts"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/pgwire"
)

func pgCode(t *testing.T, err error) *pgconn.PgError {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("want a PostgreSQL error, got %v", err)
	}
	return pe
}

// TestPgxTransactionAcrossParticipants: pgx, in each of its query modes,
// runs a transaction across both participants through the front door; the
// rows land where their keys hash to, and read back typed.
func TestPgxTransactionAcrossParticipants(t *testing.T) {
	f := startFrontDoor(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	want := map[int]string{}
	modes := []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec,
		pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol}
	for i, mode := range modes {
		conn := f.connectMode(ctx, mode)
		k0, k1 := keysOn(0, 1, 100*i)[0], keysOn(1, 1, 100*i)[0]
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatalf("%v: begin: %v", mode, err)
		}
		for _, k := range []int{k0, k1} {
			tag, err := tx.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, $2)", k, mode.String())
			if err != nil || tag.String() != "INSERT 0 1" {
				t.Fatalf("%v: insert %d: %v %v", mode, k, tag, err)
			}
			want[k] = mode.String()
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatalf("%v: commit: %v", mode, err)
		}
		// Read back outside a transaction, routed by the bound key.
		var k int
		var v string
		if err := conn.QueryRow(ctx, "SELECT k, v FROM kv WHERE k = $1", k1).Scan(&k, &v); err != nil || k != k1 || v != mode.String() {
			t.Fatalf("%v: read back %d: %d %q %v", mode, k1, k, v, err)
		}
		conn.Close(ctx)
	}
	f.wantRows(want)
	f.nothingLeft()

	// Types come back as the participant's: binary for pgx, any column.
	conn := f.connect(ctx)
	var (
		n    int64
		ts   time.Time
		num  float64
		arr  []int32
		null *string
	)
	err := conn.QueryRow(ctx, "SELECT 42::int8, '2026-12-05 10:00:00+00'::timestamptz, 1.5::numeric, ARRAY[1,2]::int4[], NULL::text").Scan(&n, &ts, &num, &arr, &null)
	if err != nil || n != 42 || !ts.Equal(time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)) || num != 1.5 || len(arr) != 2 || null != nil {
		t.Fatalf("typed values: %v %v %v %v %v: %v", n, ts, num, arr, null, err)
	}
}

// TestPgxFailingStatement: a statement the participant refuses answers
// with its SQLSTATE, message and detail; inside a block the block fails
// (25P02) and COMMIT rolls back, leaving nothing on either participant.
func TestPgxFailingStatement(t *testing.T) {
	f := startFrontDoor(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn := f.connect(ctx)
	k0, k1 := keysOn(0, 1, 0)[0], keysOn(1, 2, 0)
	if _, err := conn.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, 'first')", k1[0]); err != nil {
		t.Fatal(err)
	}
	_, err := conn.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, 'again')", k1[0])
	if pe := pgCode(t, err); pe.Code != "23505" || pe.Detail == "" || !strings.Contains(pe.Message, "duplicate key") {
		t.Fatalf("duplicate outside a block: %+v", pe)
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, 'in block')", k0); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, 'in block')", k1[1]); err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, 'dup in block')", k1[0])
	if pe := pgCode(t, err); pe.Code != "23505" {
		t.Fatalf("duplicate in a block: %+v", pe)
	}
	_, err = tx.Exec(ctx, "SELECT v FROM kv WHERE k = $1", k0)
	if pe := pgCode(t, err); pe.Code != "25P02" {
		t.Fatalf("statement after the failure: %+v", pe)
	}
	if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
		t.Fatalf("COMMIT of a failed block: %v, want the ROLLBACK answer", err)
	}
	// A syntax error, with its position; the session goes on.
	_, err = conn.Exec(ctx, "SELEC 1")
	if pe := pgCode(t, err); pe.Code != "42601" || pe.Position != 1 {
		t.Fatalf("syntax error: %+v", pe)
	}
	f.wantRows(map[int]string{k1[0]: "first"})
	f.nothingLeft()
}

// TestPgxDisconnectMidTransaction: a client that vanishes inside a block
// leaves nothing behind: its rows are gone, nothing is prepared.
func TestPgxDisconnectMidTransaction(t *testing.T) {
	f := startFrontDoor(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, f.url(testUser, testPassword, ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []int{keysOn(0, 1, 0)[0], keysOn(1, 1, 0)[0]} {
		if _, err := conn.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, 'left behind?')", k); err != nil {
			t.Fatal(err)
		}
	}
	// Both participants hold the transaction open now.
	if f.openOn(0) != 1 || f.openOn(1) != 1 {
		t.Fatalf("open transactions before the disconnect: %d, %d", f.openOn(0), f.openOn(1))
	}
	// No Terminate: the socket just closes.
	conn.PgConn().Conn().Close()
	f.nothingLeft()
	f.wantRows(map[int]string{})
}

// TestPgxWrongPassword: a wrong password, or an unknown user, fails as
// PostgreSQL fails it (28P01), and a right one gets in.
func TestPgxWrongPassword(t *testing.T) {
	f := startFrontDoor(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, c := range []struct{ user, password string }{{testUser, "wrong"}, {"mallory", testPassword}} {
		_, err := pgx.Connect(ctx, f.url(c.user, c.password, ""))
		if pe := pgCode(t, err); pe.Code != "28P01" {
			t.Fatalf("%s with a wrong password: %+v", c.user, pe)
		}
	}
	f.connect(ctx)
}

// TestPgxRouting: SET tpcd.node, its RESET, a leading comment, SET
// tpcd.node = all for DDL, and the errors that name the choices.
func TestPgxRouting(t *testing.T) {
	f := startFrontDoor(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn := f.connect(ctx)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec("SET tpcd.node = all")
	exec("CREATE TABLE notes (id int PRIMARY KEY, body text)")
	exec("SET tpcd.node = 1")
	exec("INSERT INTO notes VALUES (1, 'on one')")
	exec("RESET tpcd.node")
	exec("/* tpcd:node=0 */ INSERT INTO notes VALUES (1, 'on zero')")
	for n, want := range []string{"on zero", "on one"} {
		var body string
		if err := f.c.Data[n].QueryRow(ctx, "SELECT body FROM notes WHERE id = 1").Scan(&body); err != nil || body != want {
			t.Fatalf("participant %d: %q %v, want %q", n, body, err, want)
		}
	}
	// Run on every participant, a statement answers every participant's
	// rows: one count from each.
	rows, err := conn.Query(ctx, "/* tpcd:node=all */ SELECT count(*) FROM notes")
	if err != nil {
		t.Fatal(err)
	}
	counts, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil || len(counts) != 2 || counts[0] != 1 || counts[1] != 1 {
		t.Fatalf("count on every participant: %v %v, want [1 1]", counts, err)
	}

	noRoute := func(sql, wantIn string, args ...any) {
		t.Helper()
		_, err := conn.Exec(ctx, sql, args...)
		pe := pgCode(t, err)
		if pe.Code != "22023" || !strings.Contains(pe.Message+pe.Hint, wantIn) || !strings.Contains(pe.Hint, "tpcd:node=N") || !strings.Contains(pe.Hint, "SET tpcd.node") {
			t.Fatalf("%s: %+v, want 22023 naming the choices and %q", sql, pe, wantIn)
		}
	}
	noRoute("SELECT * FROM notes", "--shard notes:COLUMN")
	noRoute("INSERT INTO kv (v) VALUES ('no key')", "kv.k")
	noRoute("UPDATE kv SET v = 'x' WHERE v = 'y'", "without a value for k")
	k0, k1 := keysOn(0, 1, 0)[0], keysOn(1, 1, 0)[0]
	noRoute("INSERT INTO kv (k, v) VALUES ($1, 'a'), ($2, 'b')", "spans shards", k0, k1)
	noRoute("/* tpcd:node=7 */ SELECT 1", "participant 7 does not exist")
	_, err = conn.Exec(ctx, "SAVEPOINT s1")
	if pe := pgCode(t, err); pe.Code != "0A000" {
		t.Fatalf("SAVEPOINT: %+v", pe)
	}
	// Settings drivers send on connecting are answered by the front door;
	// one that would change the text participants send is refused.
	exec("SET application_name = 'routing test'")
	exec("SET extra_float_digits = 3")
	_, err = conn.Exec(ctx, "SET extra_float_digits = 0")
	if pe := pgCode(t, err); pe.Code != "0A000" || !strings.Contains(pe.Message, "extra_float_digits") {
		t.Fatalf("SET extra_float_digits = 0: %+v", pe)
	}
	_, err = conn.Exec(ctx, "LISTEN ch")
	if pe := pgCode(t, err); pe.Code != "0A000" {
		t.Fatalf("LISTEN: %+v", pe)
	}
	f.nothingLeft()
}

// TestPgxShardKeyStaysWithItsRow: an UPDATE that would give a row a shard
// key of another participant is refused (the row would stay where it is,
// out of reach of its new key); one that keeps the key on the row's
// participant goes through.
func TestPgxShardKeyStaysWithItsRow(t *testing.T) {
	f := startFrontDoor(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn := f.connect(ctx)
	on0, on1 := keysOn(0, 3, 0), keysOn(1, 1, 0)[0]
	exec := func(sql string, args ...any) error {
		_, err := conn.Exec(ctx, sql, args...)
		return err
	}
	if err := exec("INSERT INTO kv (k, v) VALUES ($1, 'a')", on0[0]); err != nil {
		t.Fatal(err)
	}
	refused := func(sql, wantIn string, args ...any) {
		t.Helper()
		pe := pgCode(t, exec(sql, args...))
		if pe.Code != "0A000" || !strings.Contains(pe.Message, wantIn) || !strings.Contains(pe.Hint, "insert") {
			t.Fatalf("%s: %+v, want 0A000 saying %q", sql, pe, wantIn)
		}
	}
	refused("UPDATE kv SET k = $1 WHERE k = $2",
		fmt.Sprintf("sets the shard key kv.k to %q, which belongs on participant 1, but the row is on participant 0", strconv.Itoa(on1)), on1, on0[0])
	refused(fmt.Sprintf("UPDATE kv SET v = 'b', k = %d WHERE k = %d", on1, on0[0]), "belongs on participant 1")
	refused("UPDATE kv SET k = k + 1 WHERE k = $1", "to a value that is not a literal or a parameter", on0[0])
	refused("INSERT INTO kv (k, v) VALUES ($1, 'c') ON CONFLICT (k) DO UPDATE SET k = $2", "belongs on participant 1", on0[0], on1)
	refused("UPDATE kv SET (v, k) = ('x', $1) WHERE k = $2", "belongs on participant 1", on1, on0[0])
	f.wantRows(map[int]string{on0[0]: "a"})

	// The key written back unchanged, as ORMs do, or moved within its
	// participant.
	for _, st := range []struct {
		sql  string
		args []any
	}{
		{"UPDATE kv SET k = $1, v = 'b' WHERE k = $1", []any{on0[0]}},
		{"UPDATE kv SET k = k, v = 'c' WHERE k = $1", []any{on0[0]}},
		{"INSERT INTO kv (k, v) VALUES ($1, 'd') ON CONFLICT (k) DO UPDATE SET k = EXCLUDED.k, v = EXCLUDED.v", []any{on0[0]}},
		{"UPDATE kv SET (k, v) = ($1, 'd') WHERE k = $1", []any{on0[0]}},
		{"UPDATE kv SET k = $1 WHERE k = $2", []any{on0[1], on0[0]}},
	} {
		if err := exec(st.sql, st.args...); err != nil {
			t.Fatalf("%s: %v", st.sql, err)
		}
	}
	f.wantRows(map[int]string{on0[1]: "d"})
	f.nothingLeft()
}

// TestPgxTextIsUTF8: a parameter that is not UTF-8 is refused as
// PostgreSQL refuses it (22021), not written with U+FFFD in its place; a
// client that says its text is in another encoding is turned away at
// start-up, one that says UTF8 or SQL_ASCII gets in.
func TestPgxTextIsUTF8(t *testing.T) {
	f := startFrontDoor(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn := f.connect(ctx)
	keys := keysOn(0, 4, 0)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec} {
		_, err := conn.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, $2)", mode, keys[0], "caf\xe9")
		if pe := pgCode(t, err); pe.Code != "22021" || !strings.Contains(pe.Message, "parameter $2") {
			t.Fatalf("mode %v, a Latin-1 byte in a parameter: %+v, want 22021 naming $2", mode, pe)
		}
	}
	// In the query string itself, by either protocol.
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		_, err := conn.Exec(ctx, fmt.Sprintf("INSERT INTO kv (k, v) VALUES (%d, 'caf\xe9')", keys[0]), mode)
		if pe := pgCode(t, err); pe.Code != "22021" || !strings.Contains(pe.Message, "query string") {
			t.Fatalf("mode %v, a Latin-1 byte in the query: %+v, want 22021", mode, pe)
		}
	}
	f.wantRows(map[int]string{})
	if _, err := conn.Exec(ctx, "SET client_encoding = 'UTF-8'"); err != nil {
		t.Fatalf("SET client_encoding = 'UTF-8': %v", err)
	}

	_, err := pgx.Connect(ctx, f.url(testUser, testPassword, "sslmode=disable&client_encoding=LATIN1"))
	if pe := pgCode(t, err); pe.Code != "0A000" || pe.Severity != "FATAL" || !strings.Contains(pe.Message, `client_encoding "LATIN1"`) {
		t.Fatalf("client_encoding LATIN1: %+v, want FATAL 0A000 naming it", pe)
	}
	want := map[int]string{}
	for i, enc := range []string{"UTF8", "utf-8", "SQL_ASCII"} {
		c, err := pgx.Connect(ctx, f.url(testUser, testPassword, "sslmode=disable&client_encoding="+enc))
		if err != nil {
			t.Fatalf("client_encoding %s: %v", enc, err)
		}
		if _, err := c.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, $2)", keys[i+1], "café"); err != nil {
			t.Fatalf("client_encoding %s: %v", enc, err)
		}
		want[keys[i+1]] = "café"
		c.Close(ctx)
	}
	f.wantRows(want)
	f.nothingLeft()
}

// TestPgxArraysKeepTheirShape: a two-dimensional array pgx sends in
// binary is written with its shape, and read back in binary with it.
func TestPgxArraysKeepTheirShape(t *testing.T) {
	f := startFrontDoor(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn := f.connect(ctx)
	if _, err := conn.Exec(ctx, "SET tpcd.node = 0"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE grid (id int PRIMARY KEY, cells int[])"); err != nil {
		t.Fatal(err)
	}
	want := [][]int32{{1, 2}, {3, 4}}
	if _, err := conn.Exec(ctx, "INSERT INTO grid VALUES (1, $1)", want); err != nil {
		t.Fatal(err)
	}
	var text string
	if err := f.c.Data[0].QueryRow(ctx, "SELECT cells::text FROM grid").Scan(&text); err != nil || text != "{{1,2},{3,4}}" {
		t.Fatalf("participant 0 holds %q (%v), want {{1,2},{3,4}}", text, err)
	}
	var got [][]int32
	if err := conn.QueryRow(ctx, "SELECT cells FROM grid WHERE id = 1").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("read back %v, want %v", got, want)
	}
	f.nothingLeft()
}

// TestPgxDeclaredParamTypes: parameter types a client gives in Parse are
// the statement's, as PostgreSQL has them: 3 declared a double and halved
// is 1.5 (left to inference it is an integer, 1), and a described
// statement reports the declared type.
func TestPgxDeclaredParamTypes(t *testing.T) {
	f := startFrontDoor(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pc := f.connect(ctx).PgConn()
	sd, err := pc.Prepare(ctx, "half", "SELECT $1 / 2", []uint32{pgtype.Float8OID})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sd.ParamOIDs) != fmt.Sprint([]uint32{pgtype.Float8OID}) {
		t.Fatalf("described parameters %v, want float8", sd.ParamOIDs)
	}
	for _, c := range []struct {
		what string
		run  func() *pgconn.ResultReader
		want string
	}{
		{"prepared, float8 declared", func() *pgconn.ResultReader {
			return pc.ExecPrepared(ctx, "half", [][]byte{[]byte("3")}, nil, nil)
		}, "1.5"},
		{"unnamed, float8 declared", func() *pgconn.ResultReader {
			return pc.ExecParams(ctx, "SELECT $1 / 2", [][]byte{[]byte("3")}, []uint32{pgtype.Float8OID}, nil, nil)
		}, "1.5"},
		{"unnamed, inferred", func() *pgconn.ResultReader {
			return pc.ExecParams(ctx, "SELECT $1 / 2", [][]byte{[]byte("3")}, nil, nil, nil)
		}, "1"},
	} {
		r := c.run().Read()
		if r.Err != nil {
			t.Fatalf("%s: %v", c.what, r.Err)
		}
		if len(r.Rows) != 1 || string(r.Rows[0][0]) != c.want {
			t.Fatalf("%s: rows %q, want %s", c.what, r.Rows, c.want)
		}
	}

	// A type created on the participants has an OID of its own on each;
	// the one declared, participant 0's (as a client learns it by
	// describing), is left to participant 1 to infer.
	exec := func(sql string) {
		t.Helper()
		if _, err := pc.Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec("/* tpcd:node=1 */ CREATE TYPE shift AS ENUM ('x')")
	exec("/* tpcd:node=all */ CREATE TYPE mood AS ENUM ('ok', 'sad')")
	exec("/* tpcd:node=all */ CREATE TABLE moods (k int PRIMARY KEY, m mood)")
	var oid0, oid1 uint32
	f.c.Data[0].QueryRow(ctx, "SELECT 'mood'::regtype::oid").Scan(&oid0)
	f.c.Data[1].QueryRow(ctx, "SELECT 'mood'::regtype::oid").Scan(&oid1)
	if oid0 == oid1 || oid0 == 0 {
		t.Fatalf("mood is %d on participant 0 and %d on 1; the test wants them apart", oid0, oid1)
	}
	if _, err := pc.Prepare(ctx, "mood", "/* tpcd:node=1 */ INSERT INTO moods (k, m) VALUES ($1, $2)", []uint32{pgtype.Int4OID, oid0}); err != nil {
		t.Fatal(err)
	}
	if r := pc.ExecPrepared(ctx, "mood", [][]byte{[]byte("1"), []byte("sad")}, nil, nil).Read(); r.Err != nil {
		t.Fatalf("insert with participant 0's OID of mood, on participant 1: %v", r.Err)
	}
	var m string
	if err := f.c.Data[1].QueryRow(ctx, "SELECT m::text FROM moods WHERE k = 1").Scan(&m); err != nil || m != "sad" {
		t.Fatalf("participant 1 holds %q (%v), want sad", m, err)
	}
	f.nothingLeft()
}

// TestPgxCancel: a CancelRequest stops the running statement with 57014,
// and the session goes on.
func TestPgxCancel(t *testing.T) {
	f := startFrontDoor(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn := f.connect(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "/* tpcd:node=1 */ SELECT pg_sleep(3)")
		done <- err
	}()
	testcluster.Eventually(t, "the sleep running on participant 1", func() bool {
		var n int
		f.c.Data[1].QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%SELECT pg_sleep(3)' AND state = 'active'").Scan(&n)
		return n == 1
	})
	if err := conn.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	if pe := pgCode(t, <-done); pe.Code != "57014" {
		t.Fatalf("cancelled statement: %+v", pe)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("after the cancel: %d %v", one, err)
	}
}

// TestPgxTLS: with a certificate the front door answers SSLRequest with
// TLS, and pgx verifies it.
func TestPgxTLS(t *testing.T) {
	ca := testcerts.NewCA(t, t.TempDir(), "test")
	pair := ca.Issue(t, "coordinator")
	cert, err := tls.LoadX509KeyPair(pair.Cert, pair.Key)
	if err != nil {
		t.Fatal(err)
	}
	f := startFrontDoor(t, func(o *pgwire.Options) { o.TLS = &tls.Config{Certificates: []tls.Certificate{cert}} })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, f.url(testUser, testPassword, "sslmode=verify-full&sslrootcert="+ca.File))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tc, ok := conn.PgConn().Conn().(*tls.Conn)
	if !ok || !tc.ConnectionState().HandshakeComplete {
		t.Fatalf("connection is %T, not TLS", conn.PgConn().Conn())
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("over TLS: %d %v", one, err)
	}
}

// TestPgxCommitVotedNo: a participant that cannot prepare (a deferred
// unique constraint fails at PREPARE TRANSACTION, or at the commit of the
// participant that decides) makes COMMIT fail with 40000 and the
// coordinator's reason; nothing stays on either participant.
func TestPgxCommitVotedNo(t *testing.T) {
	f := startFrontDoor(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn := f.connect(ctx)
	if _, err := conn.Exec(ctx, "/* tpcd:node=all */ CREATE TABLE d (x int UNIQUE DEFERRABLE INITIALLY DEFERRED)"); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		"/* tpcd:node=0 */ INSERT INTO d VALUES (1)",
		"/* tpcd:node=0 */ INSERT INTO d VALUES (1)", // checked only at the end
		"/* tpcd:node=1 */ INSERT INTO d VALUES (1)",
	} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	err = tx.Commit(ctx)
	// The reason is the coordinator's: which participant failed, and how
	// the decision was reached (a deciding participant's COMMIT does not
	// carry its error further).
	if pe := pgCode(t, err); pe.Code != "40000" || !strings.Contains(pe.Message, "rolled back") || !strings.Contains(pe.Message, "p0") {
		t.Fatalf("COMMIT with a participant that cannot prepare: %+v", pe)
	}
	for n := range 2 {
		var count int
		if err := f.c.Data[n].QueryRow(ctx, "SELECT count(*) FROM d").Scan(&count); err != nil || count != 0 {
			t.Fatalf("participant %d holds %d rows of d (%v), want none", n, count, err)
		}
	}
	// The session goes on, outside a block.
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("after the failed commit: %d %v", one, err)
	}
	f.nothingLeft()
}

// TestPgxBatch: pgx's batches send several statements before one Sync.
// Outside a block they are one implicit transaction: all commit, or, when
// one fails, none does and the statements after it are not run.
func TestPgxBatch(t *testing.T) {
	f := startFrontDoor(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn := f.connect(ctx)
	keys0, keys1 := keysOn(0, 3, 0), keysOn(1, 3, 0)

	b := &pgx.Batch{}
	b.Queue("INSERT INTO kv (k, v) VALUES ($1, 'batch')", keys0[0])
	b.Queue("INSERT INTO kv (k, v) VALUES ($1, 'batch')", keys1[0])
	b.Queue("SELECT v FROM kv WHERE k = $1", keys1[0])
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		t.Fatalf("batch across participants: %v", err)
	}

	b = &pgx.Batch{}
	b.Queue("INSERT INTO kv (k, v) VALUES ($1, 'not kept')", keys0[1])
	b.Queue("INSERT INTO kv (k, v) VALUES ($1, 'duplicate')", keys1[0])
	b.Queue("INSERT INTO kv (k, v) VALUES ($1, 'never run')", keys1[2])
	br := conn.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		t.Fatalf("first statement of the failing batch: %v", err)
	}
	_, err := br.Exec()
	if pe := pgCode(t, err); pe.Code != "23505" {
		t.Fatalf("duplicate in a batch: %+v", pe)
	}
	if _, err := br.Exec(); err == nil {
		t.Fatal("the statement after the failure ran")
	}
	br.Close()

	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("after the failed batch: %d %v", one, err)
	}
	f.nothingLeft()
	f.wantRows(map[int]string{keys0[0]: "batch", keys1[0]: "batch"})
}

// TestSessionWaitsUntilItsCommitIsApplied: after COMMIT, a session's next
// statement waits until the commit is applied on every participant, even
// one it does not touch. Participant 0 runs two statements and so decides
// (its COMMIT is the decision); participant 1 prepares, and its COMMIT
// PREPARED waits for a connection while the test holds every free one of
// its pool. A read on participant 0 meanwhile gets no answer; once the
// connections go back, it answers, and participant 1 holds the row.
func TestSessionWaitsUntilItsCommitIsApplied(t *testing.T) {
	f := startFrontDoor(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := f.connect(ctx)
	on0, k1 := keysOn(0, 2, 5000), keysOn(1, 1, 5000)[0]
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range append(on0, k1) {
		if _, err := tx.Exec(ctx, "INSERT INTO kv (k, v) VALUES ($1, 'mine')", k); err != nil {
			t.Fatalf("insert %d: %v", k, err)
		}
	}
	// Every connection of participant 1's pool that is or comes free,
	// its branch's too once PREPARE gives it back, until release.
	gctx, stopGrabbing := context.WithCancel(ctx)
	grabbed := make(chan []*pgxpool.Conn, 1)
	go func() {
		var held []*pgxpool.Conn
		for {
			c, err := f.c.Data[1].Acquire(gctx)
			if err != nil {
				grabbed <- held
				return
			}
			held = append(held, c)
		}
	}()
	release := sync.OnceFunc(func() {
		stopGrabbing()
		for _, c := range <-grabbed {
			c.Release()
		}
	})
	defer release()
	testcluster.Eventually(t, "participant 1's free connections taken", func() bool {
		return f.c.Data[1].Stat().IdleConns() == 0 && f.c.Data[1].Stat().AcquiredConns() == f.c.Data[1].Stat().MaxConns()
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	type answer struct {
		n   int
		err error
	}
	read := make(chan answer, 1)
	go func() {
		var a answer
		a.err = conn.QueryRow(ctx, "SELECT count(*) FROM kv WHERE k = $1", on0[0]).Scan(&a.n)
		read <- a
	}()
	select {
	case a := <-read:
		t.Fatalf("the session's next statement answered (%d, %v) before its commit was applied on participant 1", a.n, a.err)
	case <-time.After(time.Second):
	}
	release()
	if a := <-read; a.err != nil || a.n != 1 {
		t.Fatalf("the session's next statement, once its commit was applied: %d, %v", a.n, a.err)
	}
	if got := testcluster.KV(t, f.c.Data[1]); got[k1] != "mine" || len(f.c.Prepared(1)) != 0 {
		t.Fatalf("participant 1 holds %v, prepared %v; want key %d committed", got, f.c.Prepared(1), k1)
	}
}
