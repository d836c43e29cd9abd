package rpc_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// decodeInto is a handler that decodes its params strictly into a fresh T,
// as the node's handlers do, and echoes the value.
func decodeInto[T any]() rpc.Handler {
	return func(_ context.Context, raw json.RawMessage) (any, error) {
		var v T
		if err := rpc.DecodeParams(raw, &v); err != nil {
			return nil, err
		}
		return v, nil
	}
}

// noParams is a handler of a method without params, as begin and nodes.
func noParams(_ context.Context, raw json.RawMessage) (any, error) {
	if err := rpc.DecodeNoParams(raw); err != nil {
		return nil, err
	}
	return "ok", nil
}

// fuzzServer serves the node's param types under their method names.
func fuzzServer() http.Handler {
	return rpc.NewServer(rpc.ServerOptions{Methods: map[string]rpc.Handler{
		api.MethodBegin:                   noParams,
		api.MethodNodes:                   noParams,
		api.MethodExec:                    decodeInto[api.ExecParams](),
		api.MethodExecute:                 decodeInto[api.ExecuteParams](),
		api.MethodCommit:                  decodeInto[api.TxParams](),
		api.MethodStatus:                  decodeInto[api.TxParams](),
		engine.ExecRequest{}.Method():     decodeMessage(engine.ExecRequest{}.Method()),
		engine.PrepareRequest{}.Method():  decodeMessage(engine.PrepareRequest{}.Method()),
		engine.DecisionRequest{}.Method(): decodeMessage(engine.DecisionRequest{}.Method()),
		engine.ExecResult{}.Method():      decodeMessage(engine.ExecResult{}.Method()),
		engine.VoteMessage{}.Method():     decodeMessage(engine.VoteMessage{}.Method()),
		engine.AckMessage{}.Method():      decodeMessage(engine.AckMessage{}.Method()),
		engine.InquireMessage{}.Method():  decodeMessage(engine.InquireMessage{}.Method()),
	}, MaxRequestBytes: 64 << 10}).Handler()
}

// decodeMessage is a handler that decodes a node-to-node message exactly
// as the nodes do, and echoes it.
func decodeMessage(method string) rpc.Handler {
	return func(_ context.Context, raw json.RawMessage) (any, error) {
		return api.DecodeMessage(method, raw)
	}
}

// FuzzRequest sends arbitrary bodies through the whole request path: HTTP
// checks, UTF-8 and JSON-RPC parsing, batches, dispatch, and strict
// decoding into every params type the nodes accept. Whatever the body, the
// answer is a JSON-RPC response (or 204 for notifications only), every
// error has a code the package defines, and nothing panics. The seed corpus
// is in testdata/fuzz/FuzzRequest.
func FuzzRequest(f *testing.F) {
	for _, seed := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"begin","params":{}}`,
		`{"jsonrpc":"2.0","id":2,"method":"exec","params":{"tx":7,"node":1,"sql":"INSERT INTO kv VALUES ($1)","args":[42,"x",null,1.5,{"a":[1]}]}}`,
		`{"jsonrpc":"2.0","id":"s","method":"execute","params":{"node":0,"sql":"select 1"}}`,
		`{"jsonrpc":"2.0","id":3,"method":"commit","params":{"tx":18446744073709551615}}`,
		`{"jsonrpc":"2.0","id":4,"method":"status","params":{"tx":-1}}`,
		`{"jsonrpc":"2.0","id":5,"method":"tpcd.exec","params":{"cluster":"c","epoch":1,"tx":1,"stmt":0,"sql":"x","batch":true}}`,
		`{"jsonrpc":"2.0","id":6,"method":"tpcd.decide","params":{"cluster":"c","epoch":1,"tx":1,"tx_epoch":1,"outcome":"commit","presumed":true}}`,
		`{"jsonrpc":"2.0","id":7,"method":"tpcd.vote","params":{"from":0,"tx":1,"vote":"read-only"}}`,
		`{"jsonrpc":"2.0","id":8,"method":"tpcd.exec_result","params":{"from":1,"tx":1,"stmt":0,"result":{"columns":["a"],"rows":[["1"]],"rows_affected":1,"tag":"SELECT 1"}}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"begin"},{"jsonrpc":"2.0","method":"status","params":{"tx":1}}]`,
		`{"jsonrpc":"2.0","method":"commit","params":{"tx":1}}`,
		`[]`,
		`{"jsonrpc":"2.0","id":1,"method":`,
		"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"exec\",\"params\":{\"sql\":\"\xff\"}}",
		`{"jsonrpc":"2.0","id":1,"method":"status","params":{"tx":1e400}}`,
	} {
		f.Add([]byte(seed))
	}
	h := fuzzServer()
	known := map[int]bool{rpc.CodeParseError: true, rpc.CodeInvalidRequest: true, rpc.CodeMethodNotFound: true,
		rpc.CodeInvalidParams: true, rpc.CodeInternal: true}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/rpc", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		resp := rec.Result()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusNoContent {
			if len(raw) != 0 {
				t.Fatalf("204 with a body %q", raw)
			}
			return
		}
		var one map[string]json.RawMessage
		var many []map[string]json.RawMessage
		switch {
		case json.Unmarshal(raw, &one) == nil:
			many = []map[string]json.RawMessage{one}
		case json.Unmarshal(raw, &many) == nil && len(many) > 0:
		default:
			t.Fatalf("HTTP %d answer is not JSON-RPC: %q", resp.StatusCode, raw)
		}
		for _, m := range many {
			if string(m["jsonrpc"]) != `"2.0"` {
				t.Fatalf("answer without jsonrpc 2.0: %q", raw)
			}
			if e, ok := m["error"]; ok {
				var rerr rpc.Error
				if err := json.Unmarshal(e, &rerr); err != nil || !known[rerr.Code] || rerr.Message == "" {
					t.Fatalf("error object %s", e)
				}
				if rerr.Code == rpc.CodeInternal {
					t.Fatalf("decoding failed as an internal error: %s", e)
				}
			} else if _, ok := m["result"]; !ok {
				t.Fatalf("neither result nor error: %q", raw)
			}
		}
	})
}
