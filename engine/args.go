package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// Args are a statement's $1-style parameters as a JSON client sent them.
//
// A JSON number decodes to a json.Number, the digits as sent, not to the
// float64 encoding/json would make of it in an []any: a bigint past 2^53
// (a snowflake id, say) would otherwise be written as its float64
// neighbour, a different row than the client named. Numbers inside arrays
// and objects stay json.Number too. The participant binds them exactly
// (node's textParams); Go values put in by a caller in the process (int64,
// float64, strings) pass as they are.
type Args []any

// UnmarshalJSON decodes a JSON array, numbers kept as sent. The same
// method serves encoding/json and json/v2, so both decoders of rpc's
// params agree on Args. A number beyond float64's range is refused, as it
// was when numbers decoded to float64, and so is one of more than
// maxNumberLen characters.
func (a *Args) UnmarshalJSON(data []byte) error {
	// Arguments are mostly scalars, which json/v2 splits out at a small
	// part of what encoding/json's Decoder costs on every statement;
	// arrays and objects among them go to the Decoder.
	if k := jsontext.Value(data).Kind(); k != '[' && k != 'n' {
		// As encoding/json reports a value of the wrong kind, so that the
		// caller is told which field and what was expected.
		return &json.UnmarshalTypeError{Value: kindName(k), Type: reflect.TypeFor[Args]()}
	}
	var elems []jsontext.Value
	if err := jsonv2.Unmarshal(data, &elems); err != nil {
		return err
	}
	if elems == nil {
		*a = nil
		return nil
	}
	v := make([]any, len(elems))
	for i, e := range elems {
		var err error
		switch e.Kind() {
		case '0':
			v[i] = json.Number(e)
		case '"':
			var s string
			err = jsonv2.Unmarshal(e, &s)
			v[i] = s
		case 't', 'f':
			v[i] = e.Kind() == 't'
		case 'n':
		default:
			dec := json.NewDecoder(bytes.NewReader(e))
			dec.UseNumber()
			err = dec.Decode(&v[i])
		}
		if err != nil {
			return err
		}
		if err := checkNumbers(v[i]); err != nil {
			return err
		}
	}
	*a = v
	return nil
}

// maxNumberLen bounds a number argument's length: binding works out
// whether it is whole (big.Rat, pgtype.Numeric) in time that grows with
// the square of its digits, seconds for a megabyte of them. No integer
// column takes more than 20 digits, nor a double more than 17 that count.
const maxNumberLen = 1000

// checkNumbers refuses a number in v, at any depth, that no float64 holds,
// or longer than maxNumberLen.
func checkNumbers(v any) error {
	switch v := v.(type) {
	case json.Number:
		if len(v) > maxNumberLen {
			return fmt.Errorf("a number argument of %d characters: at most %d are taken; send a longer one as a string", len(v), maxNumberLen)
		}
		if _, err := strconv.ParseFloat(string(v), 64); errors.Is(err, strconv.ErrRange) {
			return &json.UnmarshalTypeError{Value: "number " + string(v), Type: reflect.TypeFor[float64]()}
		}
	case []any:
		for _, e := range v {
			if err := checkNumbers(e); err != nil {
				return err
			}
		}
	case map[string]any:
		for _, e := range v {
			if err := checkNumbers(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// kindName names a JSON value's kind as encoding/json's errors do.
func kindName(k jsontext.Kind) string {
	switch k {
	case '{':
		return "object"
	case '"':
		return "string"
	case '0':
		return "number"
	case 't', 'f':
		return "bool"
	}
	return "value"
}
