package node

import (
	"github.com/tpcd/tpcd/engine"

	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tpcd/tpcd/internal/pgtest"
)

// The one-round-trip start of a transaction (beginWith) must answer as a
// later statement of the transaction does (query): same rows, same text,
// same command tag; with the timeouts in force and the transaction left
// open, also when the statement fails.
func TestBeginWithMatchesLaterStatements(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := pgtest.Connect(t, pgtest.NewDB(t))
	if _, err := conn.Exec(ctx, `CREATE TABLE kv (k bigint PRIMARY KEY, v text, f double precision, n numeric, b boolean, j jsonb, ts timestamptz)`); err != nil {
		t.Fatal(err)
	}
	d := &dataDB{lockTimeout: 1234 * time.Millisecond, statementTimeout: 5678 * time.Millisecond}

	for _, tc := range []struct {
		name string
		sql  string
		args []any
	}{
		{"insert", `INSERT INTO kv (k, v, f, n, b, j, ts) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			[]any{float64(1), "héllo 'quoted'", 1.5, 12345678901234.5, true, `{"a": [1, 2]}`, "2026-11-25T10:00:00Z"}},
		{"nulls", `INSERT INTO kv (k, v, f) VALUES ($1, $2, $3) RETURNING k, v, f`, []any{float64(2), nil, nil}},
		{"select", `SELECT k, v, f, n, b, j, ts, $1::int + 1 AS x FROM kv WHERE k <= $2 ORDER BY k`, []any{float64(41), float64(9)}},
		{"untyped", `SELECT $1 AS s, $2 AS t`, []any{"text", float64(7)}},
		{"timeouts", `SELECT current_setting('lock_timeout') AS lt, current_setting('statement_timeout') AS st, $1::text AS x`, []any{"y"}},
		{"update none", `UPDATE kv SET v = $1 WHERE k = $2`, []any{"z", float64(99)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			params, ok := textParams(tc.args)
			if !ok {
				t.Fatalf("textParams declined %v", tc.args)
			}
			got, begun, err, _, _ := d.beginWith(ctx, conn, engine.Data{Op: engine.DataExec, SQL: tc.sql}, params)
			if !begun || err != nil {
				t.Fatalf("beginWith: begun %t, err %v", begun, err)
			}
			if conn.PgConn().TxStatus() != 'T' {
				t.Fatalf("transaction status %q after beginWith, want an open transaction", conn.PgConn().TxStatus())
			}
			if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, "BEGIN; SET LOCAL lock_timeout = 1234; SET LOCAL statement_timeout = 5678", pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatal(err)
			}
			want, err := query(ctx, conn, tc.sql, tc.args, nil)
			if err != nil {
				t.Fatalf("later statement: %v", err)
			}
			if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
				t.Fatal(err)
			}
			if got.Tag != want.Tag || got.RowsAffected != want.RowsAffected || len(got.Rows) != len(want.Rows) || len(got.Columns) != len(want.Columns) ||
				!slices.Equal(got.Types, want.Types) {
				t.Fatalf("beginWith %+v, later statement %+v", got, want)
			}
			// Column types let a client right-align numbers that arrive as
			// text.
			if wantTypes := map[string][]uint32{
				"select":  {pgtype.Int8OID, pgtype.TextOID, pgtype.Float8OID, pgtype.NumericOID, pgtype.BoolOID, pgtype.JSONBOID, pgtype.TimestamptzOID, pgtype.Int4OID},
				"untyped": {pgtype.TextOID, pgtype.TextOID},
			}[tc.name]; wantTypes != nil && !slices.Equal(want.Types, wantTypes) {
				t.Errorf("types %v, want %v", want.Types, wantTypes)
			}
			for i := range want.Rows {
				for j := range want.Rows[i] {
					if got.Rows[i][j] != want.Rows[i][j] {
						t.Errorf("row %d column %s: beginWith %v, later statement %v", i, want.Columns[j], got.Rows[i][j], want.Rows[i][j])
					}
				}
			}
		})
		// Keep the inserted rows for the select cases.
		if params, _ := textParams(tc.args); tc.name == "insert" || tc.name == "nulls" {
			if _, _, err, _, _ := d.beginWith(ctx, conn, engine.Data{Op: engine.DataExec, SQL: tc.sql}, params); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Spot checks of the text itself.
	params, _ := textParams([]any{"text", float64(7)})
	got, _, err, _, _ := d.beginWith(ctx, conn, engine.Data{Op: engine.DataExec, SQL: `SELECT $1 AS s, $2 AS t, current_setting('lock_timeout') AS lt, current_setting('statement_timeout') AS st`}, params)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if want := []any{"text", "7", "1234ms", "5678ms"}; len(got.Rows) != 1 || fmt.Sprint(got.Rows[0]) != fmt.Sprint(want) {
		t.Fatalf("rows %v, want [%v]", got.Rows, want)
	}

	// Whole numbers past 2^53 stay JSON floats; they must still read as
	// integers, not in exponent notation.
	params, _ = textParams([]any{float64(1e16), 2.5e-7})
	got, _, err, _, _ = d.beginWith(ctx, conn, engine.Data{Op: engine.DataExec, SQL: `SELECT $1::bigint AS b, $2::float8 AS f`}, params)
	if err != nil {
		t.Fatalf("large whole number: %v", err)
	}
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if want := []any{"10000000000000000", "2.5e-07"}; len(got.Rows) != 1 || fmt.Sprint(got.Rows[0]) != fmt.Sprint(want) {
		t.Fatalf("rows %v, want [%v]", got.Rows, want)
	}

	// A failing statement leaves the transaction open and aborted, for the
	// rollback that follows; the error is the statement's.
	params, _ = textParams([]any{float64(1), "dup"})
	_, begun, err, _, _ := d.beginWith(ctx, conn, engine.Data{Op: engine.DataExec, SQL: `INSERT INTO kv (k, v) VALUES ($1, $2)`}, params)
	if !begun || err == nil {
		t.Fatalf("duplicate key: begun %t, err %v; want an open transaction and the error", begun, err)
	}
	if conn.PgConn().TxStatus() != 'E' {
		t.Fatalf("transaction status %q after a failed statement, want E", conn.PgConn().TxStatus())
	}
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}

	// Arrays and objects are left to pgx's typed encoding.
	if _, ok := textParams([]any{[]any{1.0, 2.0}}); ok {
		t.Error("textParams took an array")
	}
	if _, ok := textParams([]any{map[string]any{"a": 1.0}}); ok {
		t.Error("textParams took an object")
	}
}
