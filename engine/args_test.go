package engine

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestArgsKeepNumbersAsSent(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Args
		err  string
	}{
		{in: `null`, want: nil},
		{in: `[]`, want: Args{}},
		{in: `[9007199254740993, -0.10000000000000000555, 1e16, "a\"b\u00e9", true, false, null]`,
			want: Args{json.Number("9007199254740993"), json.Number("-0.10000000000000000555"), json.Number("1e16"), "a\"bé", true, false, nil}},
		{in: `[[1, 18446744073709551616], {"n": 2.50}]`,
			want: Args{[]any{json.Number("1"), json.Number("18446744073709551616")}, map[string]any{"n": json.Number("2.50")}}},
		{in: `[1e400]`, err: "cannot unmarshal number 1e400 into Go value of type float64"},
		{in: `[[{"n": -1e400}]]`, err: "number -1e400"},
		{in: `{"a": 1}`, err: "cannot unmarshal object into Go value of type engine.Args"},
		{in: `"1"`, err: "cannot unmarshal string"},
		{in: "[0." + strings.Repeat("7", 999) + "]", err: "a number argument of 1001 characters: at most 1000 are taken"},
		{in: "[0." + strings.Repeat("7", 998) + "]", want: Args{json.Number("0." + strings.Repeat("7", 998))}},
		{in: `[1,]`, err: "invalid"},
	} {
		var got Args
		err := json.Unmarshal([]byte(c.in), &got)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want one with %q", c.in, err, c.err)
			}
		case err != nil:
			t.Errorf("%s: %v", c.in, err)
		case !reflect.DeepEqual(got, c.want):
			t.Errorf("%s: got %#v, want %#v", c.in, got, c.want)
		}
	}
}
