package node

import (
	"math"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tpcd/tpcd/engine"
)

// textResult reads a statement's rows, all columns in text format.
func textResult(rr *pgconn.ResultReader) (*engine.StmtResult, error) {
	res := &engine.StmtResult{Columns: columnNames(rr.FieldDescriptions()), Types: columnTypes(rr.FieldDescriptions())}
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

func columnNames(fields []pgconn.FieldDescription) []string {
	var names []string
	for _, f := range fields {
		names = append(names, f.Name)
	}
	return names
}

// builtinTypes names PostgreSQL's built-in types by OID. It is only read
// (TypeForOID), which is safe from any goroutine.
var builtinTypes = pgtype.NewMap()

// columnTypes names the columns' types, so that a client can show numbers
// as numbers though every value arrives as text.
func columnTypes(fields []pgconn.FieldDescription) []string {
	if len(fields) == 0 {
		return nil
	}
	names := make([]string, len(fields))
	for i, f := range fields {
		if t, ok := builtinTypes.TypeForOID(f.DataTypeOID); ok {
			names[i] = t.Name
		}
	}
	return names
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
		default:
			return nil, false
		}
	}
	return params, true
}

// normalizeArg turns JSON numbers that are whole into integers, so that
// they bind to integer columns.
func normalizeArg(a any) any {
	if f, ok := a.(float64); ok && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return int64(f)
	}
	return a
}
