package pgwire

import (
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

// TestArraysKeepTheirShape: an array converted between text and binary
// keeps its dimensions and lower bounds, and json elements their text.
func TestArraysKeepTheirShape(t *testing.T) {
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
