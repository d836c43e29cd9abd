package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/creachadair/jrpc2"
)

// The hand-written request envelope is byte for byte what encoding/json
// makes of the same request.
func TestEncodeRequestMatchesEncodingJSON(t *testing.T) {
	type params struct {
		SQL  string `json:"sql"`
		Args []any  `json:"args,omitempty"`
	}
	for _, c := range []struct {
		method string
		params any
	}{
		{"exec", params{SQL: "select 1 where 2 < 3 && 'x' <> 'y'", Args: []any{1.5, "é", nil}}},
		{"tpcd.ack", map[string]int{"tx": 7}},
		{"nodes", nil},
		{"weird \"name\" <tag>", []int{1, 2}},
		{"raw", json.RawMessage(" { \"a\" : [1, 2,\n 3], \"b\": \"<&>\" } ")},
	} {
		got, err := encodeRequest(42, c.method, c.params)
		if err != nil {
			t.Fatalf("%s: %v", c.method, err)
		}
		want := reference(t, 42, c.method, c.params)
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %s\nwant %s", c.method, got, want)
		}
	}
	if _, err := encodeRequest(1, "raw", json.RawMessage(`{"a": `)); err == nil {
		t.Error("invalid raw params were sent")
	}
	if _, err := encodeRequest(1, "scalar", 3); err == nil {
		t.Error("scalar params were sent")
	}
}

func reference(t *testing.T, id uint64, method string, params any) []byte {
	t.Helper()
	req := struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      uint64          `json:"id"`
		Method  string          `json:"method"`
		Params  json.RawMessage `json:"params,omitempty"`
	}{JSONRPC: "2.0", ID: id, Method: method}
	if params != nil {
		raw, ok := params.(json.RawMessage)
		if !ok {
			var err error
			if raw, err = json.Marshal(params); err != nil {
				t.Fatal(err)
			}
		}
		req.Params = raw
	}
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A reply put together by hand equals the general encoding of it, and ids
// other than plain numbers take the general way.
func TestDispatchReplyMatchesEncodingJSON(t *testing.T) {
	s := NewServer(ServerOptions{Methods: map[string]Handler{
		"echo": func(_ context.Context, raw json.RawMessage) (any, error) {
			var v any
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, err
			}
			return v, nil
		},
	}})
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":17,"method":"echo","params":{"s":"<a&b>","n":[1,2.5,null]}}`,
		`{"jsonrpc":"2.0","id":"abc","method":"echo","params":[1]}`,
		`{"jsonrpc":"2.0","id":-3,"method":"echo","params":[1]}`,
	} {
		reqs, err := jrpc2.ParseRequests([]byte(body))
		if err != nil || len(reqs) != 1 {
			t.Fatalf("parse %s: %v", body, err)
		}
		got := s.dispatch(WithCaller(context.Background(), Caller{Roles: RoleClient}), reqs[0])
		var v any
		json.Unmarshal(reqs[0].Params, &v)
		result, _ := json.Marshal(v)
		want, _ := json.Marshal(struct {
			JSONRPC string          `json:"jsonrpc"`
			ID      json.RawMessage `json:"id"`
			Result  json.RawMessage `json:"result"`
		}{"2.0", json.RawMessage(reqs[0].ID), result})
		if !bytes.Equal(got, want) {
			t.Errorf("reply to %s:\n got %s\nwant %s", body, got, want)
		}
	}
}
