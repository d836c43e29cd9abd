package node

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tpcd/tpcd/engine"
)

// textResult reads a statement's rows, all columns in text format.
func textResult(rr *pgconn.ResultReader) (*engine.StmtResult, error) {
	res := &engine.StmtResult{}
	res.Columns, res.Types = columns(rr.FieldDescriptions())
	for rr.NextRow() {
		res.Rows = append(res.Rows, textRow(rr.Values()))
	}
	tag, err := rr.Close()
	if err != nil {
		return nil, err
	}
	res.RowsAffected, res.Tag = tag.RowsAffected(), tag.String()
	return res, nil
}

// columns returns the result columns' names and type OIDs.
func columns(fields []pgconn.FieldDescription) (names []string, types []uint32) {
	for _, f := range fields {
		names = append(names, f.Name)
		types = append(types, f.DataTypeOID)
	}
	return names, types
}

// describe parses sql as the unnamed prepared statement and returns its
// parameter and result types, without running it.
func describe(ctx context.Context, conn *pgx.Conn, sql string, types []uint32) (*engine.StmtResult, error) {
	sd, err := conn.PgConn().Prepare(ctx, "", sql, types)
	if err != nil {
		return nil, err
	}
	res := &engine.StmtResult{Params: sd.ParamOIDs}
	res.Columns, res.Types = columns(sd.Fields)
	return res, nil
}

// statementFailed reports a failed statement, with what PostgreSQL said
// about it when it was PostgreSQL that refused it.
func statementFailed(err error) engine.DataDone {
	done := engine.DataDone{Err: err.Error()}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		done.SQLErr = &engine.SQLError{Code: pe.Code, Severity: pe.Severity, Message: pe.Message, Detail: pe.Detail, Hint: pe.Hint, Position: pe.Position}
	}
	return done
}

// textRow copies a row of text-format values (the buffer is reused for the
// next row); a NULL stays nil.
func textRow(raw [][]byte) []any {
	row := make([]any, len(raw))
	for i, v := range raw {
		if v != nil {
			row[i] = string(v)
		}
	}
	return row
}

// textParams renders statement arguments as text parameters of unspecified
// type, which PostgreSQL then types from the statement, as it types quoted
// literals (psql's \bind and libpq clients pass parameters the same way).
// It declines (ok false) for anything but strings, numbers, booleans and
// nulls: arrays and objects go through pgx's typed encoding, which knows
// how to write a JSON array as a PostgreSQL array of the parameter's type.
func textParams(args []any) (params [][]byte, ok bool) {
	if len(args) == 0 {
		return nil, false
	}
	params = make([][]byte, len(args))
	for i, a := range args {
		switch v := normalizeArg(a).(type) {
		case nil:
		case string:
			params[i] = []byte(v)
		case int64:
			params[i] = strconv.AppendInt(nil, v, 10)
		case json.Number:
			params[i] = []byte(numberText(v))
		case float64:
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, false
			}
			// Never exponent notation: integer types reject "1e+16".
			params[i] = strconv.AppendFloat(nil, v, 'f', -1, 64)
		case bool:
			params[i] = strconv.AppendBool(nil, v)
		case []string:
			if v != nil {
				params[i] = textArrayParam(v)
			}
		default:
			return nil, false
		}
	}
	return params, true
}

// textArrayParam renders a text[] parameter in PostgreSQL's array syntax,
// every element quoted (so that NULL, commas and braces stay text).
func textArrayParam(v []string) []byte {
	b := []byte{'{'}
	for i, s := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		for j := 0; j < len(s); j++ {
			if s[j] == '"' || s[j] == '\\' {
				b = append(b, '\\')
			}
			b = append(b, s[j])
		}
		b = append(b, '"')
	}
	return append(b, '}')
}

// normalizeArg turns JSON numbers that are whole into integers, so that
// they bind to integer columns. A json.Number (engine.Args) that int64
// does not hold stays as sent, for textParams to render exactly.
func normalizeArg(a any) any {
	switch v := a.(type) {
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			return int64(v)
		}
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return i
		}
	}
	return a
}

// numberText is a JSON number as a text parameter: the digits as sent,
// which PostgreSQL reads exactly into numeric and refuses for bigint when
// they are too large, where a float64 would have been a neighbour. A whole
// number written with a fraction or an exponent ("1.0", "1e16") is written
// out as an integer, so that integer columns take it as they took the
// float64.
func numberText(n json.Number) string {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") || !smallExponent(s) {
		return s
	}
	if r, ok := new(big.Rat).SetString(s); ok && r.IsInt() {
		return r.Num().String()
	}
	return s
}

// typedArg is an argument for pgx's typed encoding (arrays and objects
// among the arguments): a json.Number becomes an int64, or else a
// pgtype.Numeric holding its digits exactly, which pgx writes into
// numeric, float and integer parameters alike (out of an integer's range
// is an error, not another number). Arrays are converted element by
// element; objects (json, jsonb) keep their numbers, which json.Marshal
// writes as sent.
func typedArg(a any) any {
	switch v := normalizeArg(a).(type) {
	case json.Number:
		if smallExponent(string(v)) {
			var n pgtype.Numeric
			if n.ScanScientific(string(v)) == nil {
				return n
			}
		}
		f, _ := strconv.ParseFloat(string(v), 64)
		return f
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = typedArg(e)
		}
		return out
	default:
		return v
	}
}

// smallExponent reports whether a JSON number's exponent, if any, is
// within ±400: big.Rat and pgtype.Numeric work out 10^exponent, which
// for "1e-999999999" (a float64 zero) would take a node's memory.
func smallExponent(s string) bool {
	i := strings.IndexAny(s, "eE")
	if i < 0 {
		return true
	}
	e, err := strconv.Atoi(strings.TrimPrefix(s[i+1:], "+"))
	return err == nil && e >= -400 && e <= 400
}
