package api

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/tpcd/tpcd/engine"
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

// decodeTargets make a new value of each type rpc.DecodeParams decodes in
// tpcd: every client method's params and every node-to-node message.
var decodeTargets = []func() any{
	newOf[BeginParams],
	newOf[ExecParams],
	newOf[ExecuteParams],
	newOf[TxParams],
	newOf[StatusParams],
	newOf[TransactParams],
	newOf[DirectExecParams],
	newOf[struct{}],
	newOf[engine.ExecRequest],
	newOf[engine.PrepareRequest],
	newOf[engine.DecisionRequest],
	newOf[engine.ExecResult],
	newOf[engine.VoteMessage],
	newOf[engine.AckMessage],
	newOf[engine.InquireMessage],
	newOf[engine.CommitBranchRequest],
	newOf[engine.SettleRequest],
	newOf[engine.SettleAnswer],
	newOf[engine.ReconcileRequest],
	newOf[engine.ReconcileAnswer],
}

func newOf[T any]() any { return new(T) }

// decodeSeeds are bodies of every shape the targets take, with the values
// where two decoders are likeliest to part: numbers in []any, empty and
// null arrays, nested rows, escapes.
var decodeSeeds = []string{
	`{}`,
	`{"key":"k\u00e9\n"}`,
	`{"tx":3,"node":1,"sql":"SELECT $1, $2","args":[1,-2.5e3,"x",null,true,[1,{"a":[]}],{"b":null}],"describe":true}`,
	`{"node":0,"sql":"INSERT","args":[],"key":"k"}`,
	`{"node":1,"sql":"SELECT $1 / 2","args":["3"],"param_types":[701,0,4294967295]}`,
	`{"tx":7,"direct":[{"node":1,"stmts":2,"wrote":true},{"node":0,"stmts":0}]}`,
	`{"tx":0,"key":""}`,
	`{"tx":1,"statements":[{"node":2,"sql":"UPDATE t SET v = $1","args":[18446744073709551615]}],"commit":true,"key":"x"}`,
	`{"cluster":"c","epoch":4,"tx":9,"stmt":1,"sql":"s","args":null}`,
	`{"cluster":"c","epoch":1,"tx":5,"stmt":2,"sql":"s","args":["a"],"batch":true,"then":"prepare","decider":2,"keys":["k1","k2"],"vote_to_decider":true,"direct":false}`,
	`{"cluster":"c","epoch":1,"tx":5,"stmts":3,"decider":1,"vote_to_decider":true}`,
	`{"cluster":"c","epoch":1,"tx":5,"tx_epoch":1,"outcome":"commit","presumed":true}`,
	`{"cluster":"c","from":1,"tx":5,"stmt":0,"result":{"columns":["a","b"],"types":[23,25],"rows":[[1,"x"],[null,2.5]],"rows_affected":2,"tag":"SELECT 2"},"error":"","sql_error":{"sqlstate":"23505","message":"m","position":7}}`,
	`{"cluster":"c","from":2,"tx":5,"vote":"yes","reason":"r","tx_epoch":1,"stmt":1,"result":{"rows_affected":1},"results":[{"node":0,"vote":"read-only","stmt":0,"result":{"params":[23]}}]}`,
	`{"cluster":"c","from":0,"tx":5,"outcome":"abort"}`,
	`{"cluster":"c","from":0,"tx":5,"tx_epoch":2}`,
	`{"cluster":"c","epoch":1,"tx":5,"stmts":1,"keys":["a"],"voters":[0,1]}`,
	`{"cluster":"c","epoch":3}`,
	`{"cluster":"c","epoch":3,"markers":[{"tx":4}]}`,
	`{"tx":1,"tx":2}`,
	`{"TX":1}`,
	`{"tx":1.5}`,
	`{"tx":-1}`,
	`{"tx":"1"}`,
	`{"args":[1e400]}`,
	`{"node":null,"sql":null}`,
	`{"tx":1e2,"stmt":1.0,"epoch":-0}`,
	`{"then":null,"outcome":null,"vote":null,"result":null,"statements":null,"markers":null}`,
	`{"args":[9007199254740993,-0,-0.0,-1e-400,0.1e-400,"\u0000\ud83d\ude00"]}`,
	`{"rows_affected":9223372036854775808}`,
	"\f{}\v",
	`{"cluster":"c","from":1,"tx":5,"result":{"rows":[[{"x":[1,2]}]]}}`,
}

// FuzzDecodeParamsAsEncodingJSON holds rpc.DecodeParams, which decodes with
// json/v2 where that accepts, to encoding/json's reading: whatever it
// accepts, encoding/json (unknown fields refused) accepts too, with the
// same value. A refusal needs no check: encoding/json makes every one.
func FuzzDecodeParamsAsEncodingJSON(f *testing.F) {
	for i := range decodeTargets {
		for _, body := range decodeSeeds {
			f.Add(uint8(i), []byte(body))
		}
		if zero, err := json.Marshal(decodeTargets[i]()); err == nil {
			f.Add(uint8(i), zero)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		newTarget := decodeTargets[int(which)%len(decodeTargets)]
		got := newTarget()
		if rpc.DecodeParams(body, got) != nil {
			return
		}
		want := newTarget()
		// DecodeParams trims the params as bytes.TrimSpace does, which
		// takes more than JSON's whitespace ("\f{}"); the decoders after it
		// see what is left.
		dec := json.NewDecoder(bytes.NewReader(bytes.TrimSpace(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(want); err != nil {
			t.Fatalf("DecodeParams took %q as a %T; encoding/json refuses it: %v", body, got, err)
		}
		// DeepEqual takes -0 for 0; the encodings tell them apart. (A
		// message with no vote or outcome has none.)
		gotJSON, err1 := json.Marshal(got)
		wantJSON, err2 := json.Marshal(want)
		if !reflect.DeepEqual(got, want) || (err1 == nil) != (err2 == nil) || !bytes.Equal(gotJSON, wantJSON) {
			t.Fatalf("%q as a %T: DecodeParams %#v (%s), encoding/json %#v (%s)", body, got, got, gotJSON, want, wantJSON)
		}
	})
}

// Every node-to-node message is among decodeTargets, so that a new one
// cannot escape FuzzDecodeParamsAsEncodingJSON.
func TestDecodeTargetsHoldEveryMessage(t *testing.T) {
	listed := map[string]bool{}
	for _, newTarget := range decodeTargets {
		if m, ok := reflect.ValueOf(newTarget()).Elem().Interface().(engine.Message); ok {
			listed[m.Method()] = true
		}
	}
	for method := range messageDecoders {
		if !listed[method] {
			t.Errorf("%s is not among decodeTargets", method)
		}
	}
}

// BenchmarkDecodeParams decodes a tpcd.exec message as a participant does
// (rpc.DecodeParams, its strict checks included), and with json/v2 and
// encoding/json alone, which rpc.decodeFast's comment compares:
// go test ./api -run '^$' -bench DecodeParams.
func BenchmarkDecodeParams(b *testing.B) {
	body := []byte(`{"cluster":"8fa0d86e-d336-4be8-816e-1e81dc26017a","epoch":1,"tx":12345,"stmt":0,` +
		`"sql":"INSERT INTO bench_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",` +
		`"args":["k-123456789","v-987654321"],"then":"prepare","decider":2,"vote_to_decider":true}`)
	b.Run("DecodeParams", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m engine.ExecRequest
			if err := rpc.DecodeParams(body, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json-v2", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m engine.ExecRequest
			if err := jsonv2.Unmarshal(body, &m, jsonv2.RejectUnknownMembers(true)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m engine.ExecRequest
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&m); err != nil {
				b.Fatal(err)
			}
		}
	})
}
