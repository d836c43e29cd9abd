package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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
// was when numbers decoded to float64.
func (a *Args) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v []any
	if err := dec.Decode(&v); err != nil {
		return err
	}
	if err := checkNumbers(v); err != nil {
		return err
	}
	*a = v
	return nil
}

// checkNumbers refuses a number in v, at any depth, that no float64 holds.
func checkNumbers(v any) error {
	switch v := v.(type) {
	case json.Number:
		if _, err := strconv.ParseFloat(string(v), 64); errors.Is(err, strconv.ErrRange) {
			return fmt.Errorf("argument %s is out of range", v)
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
