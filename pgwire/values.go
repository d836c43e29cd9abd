package pgwire

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgtype"
)

// Participants answer every value in text (node/datatext.go); a client
// may want some in binary, and may send its parameters in binary. values
// converts between the two with pgx's codecs, one Map per session (a Map
// is not safe for concurrent use).
type values struct {
	m *pgtype.Map
}

func newValues() *values { return &values{m: pgtype.NewMap()} }

// textIsBinary lists the types whose binary form is their text (json's
// too: re-encoding it through Go could reorder its keys).
var textIsBinary = map[uint32]bool{
	pgtype.TextOID: true, pgtype.VarcharOID: true, pgtype.BPCharOID: true, pgtype.NameOID: true,
	pgtype.UnknownOID: true, pgtype.JSONOID: true, 0: true,
}

// toBinary encodes a column value the participant gave in text in the
// type's binary format.
func (v *values) toBinary(oid uint32, text []byte) ([]byte, error) {
	if textIsBinary[oid] {
		return text, nil
	}
	if oid == pgtype.JSONBOID {
		return append([]byte{1}, text...), nil
	}
	t, ok := v.m.TypeForOID(oid)
	if !ok {
		return nil, &pgError{code: codeFeatureNotSupported, message: fmt.Sprintf("binary format of type %d is not supported through tpcd; ask for text", oid)}
	}
	val, err := v.decode(t, oid, pgtype.TextFormatCode, text)
	if err != nil {
		return nil, fmt.Errorf("decode %s value %q: %w", t.Name, text, err)
	}
	out, err := v.m.Encode(oid, pgtype.BinaryFormatCode, val, nil)
	if err != nil {
		return nil, fmt.Errorf("encode %s value in binary: %w", t.Name, err)
	}
	return out, nil
}

// toText decodes a parameter a client sent in binary, of type oid, into
// the text the participant is given.
func (v *values) toText(oid uint32, raw []byte) (string, error) {
	if textIsBinary[oid] && oid != 0 {
		return string(raw), nil
	}
	if oid == pgtype.JSONBOID {
		if len(raw) == 0 || raw[0] != 1 {
			return "", &pgError{code: codeProtocolViolation, message: "unsupported jsonb version number"}
		}
		return string(raw[1:]), nil
	}
	t, ok := v.m.TypeForOID(oid)
	if !ok {
		return "", &pgError{code: codeFeatureNotSupported, message: fmt.Sprintf("a parameter of type %d in binary format is not supported through tpcd; send it in text", oid)}
	}
	val, err := v.decode(t, oid, pgtype.BinaryFormatCode, raw)
	if err != nil {
		return "", &pgError{code: codeProtocolViolation, message: fmt.Sprintf("incorrect binary data format in %s parameter: %v", t.Name, err)}
	}
	out, err := v.m.Encode(oid, pgtype.TextFormatCode, val, nil)
	if err != nil {
		return "", fmt.Errorf("encode %s parameter in text: %w", t.Name, err)
	}
	return string(out), nil
}

// decode reads a value of type t for re-encoding in the other format. An
// array is read into a pgtype.Array, which keeps its dimensions and lower
// bounds (a codec's DecodeValue gives a flat []any: {{1,2},{3,4}} would
// go on as {1,2,3,4}); an array of json or jsonb keeps each element's
// text, which a decode through Go would reorder and round.
func (v *values) decode(t *pgtype.Type, oid uint32, format int16, src []byte) (any, error) {
	if newTarget, ok := typedTargets[oid]; ok {
		dst := newTarget()
		err := v.m.Scan(oid, format, src, dst)
		return dst, err
	}
	ac, ok := t.Codec.(*pgtype.ArrayCodec)
	if !ok {
		return t.Codec.DecodeValue(v.m, oid, format, src)
	}
	if e := ac.ElementType.OID; e == pgtype.JSONOID || e == pgtype.JSONBOID {
		var a pgtype.Array[*string]
		err := v.m.Scan(oid, format, src, &a)
		return a, err
	}
	var a pgtype.Array[any]
	err := v.m.Scan(oid, format, src, &a)
	return a, err
}

// typedTargets make, by type, where a value is read when the Go value its
// codec's DecodeValue gives cannot be encoded again: a date or timestamp
// at infinity (an InfinityModifier, where a time.Time was expected), a
// range or multirange (of untyped bounds), an array of those. A type not
// here is read by DecodeValue.
var typedTargets = map[uint32]func() any{
	pgtype.DateOID:             readInto[pgtype.Date],
	pgtype.TimestampOID:        readInto[pgtype.Timestamp],
	pgtype.TimestamptzOID:      readInto[pgtype.Timestamptz],
	pgtype.DateArrayOID:        readInto[pgtype.Array[pgtype.Date]],
	pgtype.TimestampArrayOID:   readInto[pgtype.Array[pgtype.Timestamp]],
	pgtype.TimestamptzArrayOID: readInto[pgtype.Array[pgtype.Timestamptz]],
	pgtype.Int4rangeOID:        readInto[pgtype.Range[pgtype.Int4]],
	pgtype.Int8rangeOID:        readInto[pgtype.Range[pgtype.Int8]],
	pgtype.NumrangeOID:         readInto[pgtype.Range[pgtype.Numeric]],
	pgtype.DaterangeOID:        readInto[pgtype.Range[pgtype.Date]],
	pgtype.TsrangeOID:          readInto[pgtype.Range[pgtype.Timestamp]],
	pgtype.TstzrangeOID:        readInto[pgtype.Range[pgtype.Timestamptz]],
	pgtype.Int4multirangeOID:   readInto[pgtype.Multirange[pgtype.Range[pgtype.Int4]]],
	pgtype.Int8multirangeOID:   readInto[pgtype.Multirange[pgtype.Range[pgtype.Int8]]],
	pgtype.NummultirangeOID:    readInto[pgtype.Multirange[pgtype.Range[pgtype.Numeric]]],
	pgtype.DatemultirangeOID:   readInto[pgtype.Multirange[pgtype.Range[pgtype.Date]]],
	pgtype.TsmultirangeOID:     readInto[pgtype.Multirange[pgtype.Range[pgtype.Timestamp]]],
	pgtype.TstzmultirangeOID:   readInto[pgtype.Multirange[pgtype.Range[pgtype.Timestamptz]]],
	pgtype.Int4rangeArrayOID:   readInto[pgtype.Array[pgtype.Range[pgtype.Int4]]],
	pgtype.Int8rangeArrayOID:   readInto[pgtype.Array[pgtype.Range[pgtype.Int8]]],
	pgtype.NumrangeArrayOID:    readInto[pgtype.Array[pgtype.Range[pgtype.Numeric]]],
	pgtype.DaterangeArrayOID:   readInto[pgtype.Array[pgtype.Range[pgtype.Date]]],
	pgtype.TsrangeArrayOID:     readInto[pgtype.Array[pgtype.Range[pgtype.Timestamp]]],
	pgtype.TstzrangeArrayOID:   readInto[pgtype.Array[pgtype.Range[pgtype.Timestamptz]]],
}

// readInto makes a new T to read a value into.
func readInto[T any]() any { return new(T) }

// formatOf is the format code of column or parameter i, given a message's
// format codes: none means text, one applies to all.
func formatOf(codes []int16, i int) int16 {
	switch len(codes) {
	case 0:
		return pgtype.TextFormatCode
	case 1:
		return codes[0]
	}
	if i < len(codes) {
		return codes[i]
	}
	return pgtype.TextFormatCode
}
