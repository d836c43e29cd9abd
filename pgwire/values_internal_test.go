package pgwire

import (
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

// TestValuesGoBothWays: a value converted from text to binary and back is
// the value it was: an array keeps its dimensions and lower bounds, json
// elements their text; dates and timestamps at infinity, ranges and
// multiranges convert (a result that could not would fail after its
// transaction committed).
func TestValuesGoBothWays(t *testing.T) {
	v := newValues()
	for _, c := range []struct {
		oid  uint32
		text string
	}{
		{pgtype.Int4ArrayOID, "{{1,2},{3,4}}"},
		{pgtype.Int4ArrayOID, "[0:1]={5,NULL}"},
		{pgtype.Int8ArrayOID, "{9007199254740993}"},
		{pgtype.TextArrayOID, `{{a,"b c"},{NULL,"d\"e"}}`},
		{pgtype.NumericArrayOID, "{0.10000000000000000555,2.50}"},
		{pgtype.Float8ArrayOID, "{0.1,-2.5}"},
		{pgtype.JSONArrayOID, `{"{\"b\": 0.10000000000000000001, \"a\": 9007199254740993}",NULL}`},
		{pgtype.JSONBArrayOID, `{"{\"n\": 9007199254740993}"}`},
		{pgtype.Int4ArrayOID, "{}"},
		{pgtype.TimestamptzOID, "infinity"},
		{pgtype.TimestamptzOID, "-infinity"},
		{pgtype.TimestampOID, "infinity"},
		{pgtype.DateOID, "-infinity"},
		{pgtype.DateArrayOID, "{infinity,2024-01-02,NULL}"},
		{pgtype.TimestamptzArrayOID, "{-infinity}"},
		{pgtype.Int4rangeOID, "[1,5)"},
		{pgtype.Int8rangeOID, "empty"},
		{pgtype.NumrangeOID, "[1.5,2.25]"},
		{pgtype.DaterangeOID, "[2024-01-02,infinity)"},
		{pgtype.Int4multirangeOID, "{[1,3),[5,7)}"},
		{pgtype.Int4rangeArrayOID, `{"[1,5)",empty,NULL}`},
	} {
		bin, err := v.toBinary(c.oid, []byte(c.text))
		if err != nil {
			t.Errorf("%s to binary: %v", c.text, err)
			continue
		}
		back, err := v.toText(c.oid, bin)
		if err != nil {
			t.Errorf("%s back to text: %v", c.text, err)
			continue
		}
		if back != c.text {
			t.Errorf("%s went to binary and back as %s", c.text, back)
		}
	}
}
