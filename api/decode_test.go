package api

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tpcd/tpcd/rpc"
)

// A message whose vote or outcome is missing or unknown is refused before
// it reaches the engine; well-formed ones pass.
func TestDecodeMessageRefusesInvalidVoteOrOutcome(t *testing.T) {
	for _, c := range []struct {
		method, params, refusal string
	}{
		{"tpcd.vote", `{"from":0,"tx":1}`, "vote"},
		{"tpcd.vote", `{"from":0,"tx":1,"vote":7}`, "vote"},
		{"tpcd.ack", `{"from":0,"tx":1,"outcome":""}`, "outcome"},
		// Missing outcomes decode to the invalid zero value, which only the
		// check after decoding refuses.
		{"tpcd.ack", `{"from":0,"tx":1}`, "outcome"},
		{"tpcd.decide", `{"cluster":"c","epoch":1,"tx":1,"tx_epoch":1}`, "outcome"},
		{"tpcd.decide", `{"cluster":"c","epoch":1,"tx":1,"tx_epoch":1,"outcome":"perhaps"}`, "outcome"},
		{"tpcd.vote", `{"from":0,"tx":1,"vote":"yes"}`, ""},
		{"tpcd.ack", `{"from":0,"tx":1,"outcome":"commit"}`, ""},
		{"tpcd.decide", `{"cluster":"c","epoch":1,"tx":1,"tx_epoch":1,"outcome":"abort"}`, ""},
	} {
		m, err := DecodeMessage(c.method, json.RawMessage(c.params))
		switch {
		case c.refusal == "" && err != nil:
			t.Errorf("%s %s: %v", c.method, c.params, err)
		case c.refusal == "" && m.Method() != c.method:
			t.Errorf("%s %s: decoded as %s", c.method, c.params, m.Method())
		case c.refusal != "" && (!rpc.IsCode(err, rpc.CodeInvalidParams) || !strings.Contains(err.Error(), c.refusal)):
			t.Errorf("%s %s: %v, want invalid params naming the %s", c.method, c.params, err, c.refusal)
		}
	}
}
