package node

import (
	"context"
	"errors"
	"math"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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
func describe(ctx context.Context, conn *pgx.Conn, sql string) (*engine.StmtResult, error) {
	sd, err := conn.PgConn().Prepare(ctx, "", sql, nil)
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
// they bind to integer columns.
func normalizeArg(a any) any {
	if f, ok := a.(float64); ok && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return int64(f)
	}
	return a
}
