package rpc

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// strictMethods are echo (takes params) and "none" (takes none, as begin,
// nodes and ping do).
func strictMethods() map[string]Handler {
	m := newTestMethods().methods()
	m["none"] = func(_ context.Context, raw json.RawMessage) (any, error) {
		if err := DecodeNoParams(raw); err != nil {
			return nil, err
		}
		return "ok", nil
	}
	return m
}

// TestStrictInput posts, over a real socket as any outsider can, each kind
// of request that encoding/json or jrpc2 would quietly reinterpret, and
// checks that each is refused with the code docs/WIRE.md gives it, while
// its well-formed neighbours still pass.
func TestStrictInput(t *testing.T) {
	_, ln := startServer(t, "", ServerOptions{Methods: strictMethods()})
	url := "http://" + ln.Addr().String() + "/rpc"
	const head = `{"jsonrpc":"2.0","id":1,`
	cases := []struct {
		name, body string
		code       int    // 0: a result
		id         string // the id the answer must carry ("" when not checked)
		message    string
	}{
		// null is not "no params".
		{"null params, method with params", head + `"method":"echo","params":null}`, CodeInvalidParams, "1", "not null"},
		{"null params, method without params", head + `"method":"none","params":null}`, CodeInvalidParams, "1", "not null"},
		{"null params, spaced", `{ "jsonrpc":"2.0", "id":1, "method":"none", "params": null }`, CodeInvalidParams, "1", "not null"},
		{"no params at all", head + `"method":"none"}`, 0, "1", ""},
		{"empty object", head + `"method":"none","params":{}}`, 0, "1", ""},
		{"empty object, canonical", head + `"method":"none","params":{ }}`, 0, "1", ""},

		// A method without params takes none, positional or named.
		{"positional params, method without params", head + `"method":"none","params":[1,2]}`, CodeInvalidParams, "1", "not an array"},
		{"empty positional params", head + `"method":"none","params":[]}`, CodeInvalidParams, "1", "not an array"},
		{"unknown field, method without params", head + `"method":"none","params":{"tx":1}}`, CodeInvalidParams, "1", `unknown field "tx"`},

		// A key once.
		{"duplicate key in params", head + `"method":"echo","params":{"text":"a","text":"b"}}`, CodeInvalidParams, "1", `key "text" given twice`},
		{"duplicate key, escaped spelling", head + `"method":"echo","params":{"text":"a","t\u0065xt":"b"}}`, CodeInvalidParams, "1", `key "text" given twice`},
		{"duplicate key in a nested object", head + `"method":"echo","params":{"text":"a","count":1,"x":{"k":1,"k":2}}}`, CodeInvalidParams, "1", ""},
		{"field name in another case", head + `"method":"echo","params":{"text":"a","TEXT":"b"}}`, CodeInvalidParams, "1", `unknown field "TEXT"`},
		{"field name only in another case", head + `"method":"echo","params":{"Text":"a"}}`, CodeInvalidParams, "1", `unknown field "Text"`},
		{"duplicate method member", head + `"method":"echo","method":"none"}`, CodeInvalidRequest, "1", `member "method" given twice`},
		{"duplicate params member", head + `"method":"echo","params":{"text":"a"},"params":{"text":"b"}}`, CodeInvalidRequest, "1", `member "params" given twice`},
		{"duplicate id member", `{"jsonrpc":"2.0","id":1,"id":2,"method":"none"}`, CodeInvalidRequest, "null", `member "id" given twice`},

		// Lone surrogates are not characters.
		{"lone high surrogate", head + `"method":"echo","params":{"text":"\ud800"}}`, CodeParseError, "null", "lone UTF-16 surrogate"},
		{"lone low surrogate", head + `"method":"echo","params":{"text":"\udc00"}}`, CodeParseError, "null", "lone UTF-16 surrogate"},
		{"high surrogate then a letter", head + `"method":"echo","params":{"text":"\uD800\u0041"}}`, CodeParseError, "null", "lone UTF-16 surrogate"},
		{"high surrogate at the end", head + `"method":"echo","params":{"text":"x\ud800"}}`, CodeParseError, "null", "lone UTF-16 surrogate"},
		{"two high surrogates", head + `"method":"echo","params":{"text":"\ud800\ud800\udc00"}}`, CodeParseError, "null", "lone UTF-16 surrogate"},
		{"surrogate in a key", head + `"method":"echo","params":{"\udfff":1}}`, CodeParseError, "null", "lone UTF-16 surrogate"},
		{"surrogate pair", head + `"method":"echo","params":{"text":"\ud83d\ude00"}}`, 0, "1", ""},
		{"escaped backslash before u", head + `"method":"echo","params":{"text":"\\ud800"}}`, 0, "1", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, data := http1Post(t, url, "application/json", tc.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("HTTP %s: %s", resp.Status, data)
			}
			r := decodeWire(t, data)
			switch {
			case tc.code == 0 && r.Error != nil:
				t.Fatalf("refused: %s", data)
			case tc.code != 0 && (r.Error == nil || r.Error.Code != tc.code):
				t.Fatalf("answer %s, want code %d", data, tc.code)
			case tc.code != 0 && !strings.Contains(r.Error.Message, tc.message):
				t.Fatalf("message %q lacks %q", r.Error.Message, tc.message)
			case tc.id != "" && string(r.ID) != tc.id:
				t.Fatalf("id %s, want %s", r.ID, tc.id)
			}
		})
	}

	// In a batch each request is judged alone.
	_, data := http1Post(t, url, "application/json",
		`[{"jsonrpc":"2.0","id":1,"method":"none","params":null},{"jsonrpc":"2.0","id":2,"method":"echo","params":{"text":"a"}},`+
			`{"jsonrpc":"2.0","id":3,"method":"echo","params":{"text":"a","text":"b"}}]`)
	var answers []wireResponse
	if err := json.Unmarshal(data, &answers); err != nil || len(answers) != 3 {
		t.Fatalf("batch answer %s", data)
	}
	for _, a := range answers {
		want := map[string]int{"1": CodeInvalidParams, "2": 0, "3": CodeInvalidParams}[string(a.ID)]
		if got := 0; a.Error != nil {
			got = a.Error.Code
			if got != want {
				t.Fatalf("batch answer %s: id %s code %d, want %d", data, a.ID, got, want)
			}
		} else if want != 0 {
			t.Fatalf("batch answer %s: id %s passed, want code %d", data, a.ID, want)
		}
	}
}

func TestDecodeParamsNames(t *testing.T) {
	type Header struct {
		Cluster string `json:"cluster"`
	}
	type item struct {
		N int `json:"n"`
	}
	type params struct {
		Header                // promoted, as in engine's messages
		Tx     int            `json:"tx"`
		Items  []item         `json:"items"`
		ByName map[string]any `json:"by_name"`
		Any    any            `json:"any"`
		Raw    json.RawMessage
		hidden int
	}
	runDecodeCases(t, func(raw json.RawMessage) error { var p params; return DecodeParams(raw, &p) }, []decodeCase{
		{`{"cluster":"c","tx":1,"items":[{"n":1}],"by_name":{"A":1,"a":2},"any":{"X":1,"x":2},"Raw":{"k":1}}`, ""},
		{`{"Header":{"cluster":"c"}}`, `unknown field "Header"`},
		{`{"Cluster":"c"}`, `unknown field "Cluster"`},
		{`{"item\u017f":[]}`, `unknown field "itemſ"`}, // encoding/json folds ſ to s
		{`{"items":[{"n":1},{"N":2}]}`, `unknown field "N"`},
		{`{"items":[{"n":1,"n":2}]}`, `key "n" given twice`},
		{`{"by_name":{"a":1,"a":2}}`, `key "a" given twice`},
		{`{"any":[{"x":1,"x":2}]}`, `key "x" given twice`},
		{`{"Raw":{"x":1,"x":2}}`, `key "x" given twice`},
		{`{"raw":{}}`, `unknown field "raw"`},
		{`{"hidden":1}`, `unknown field "hidden"`},
		{`{"tx":1,"tx":1}`, `key "tx" given twice`},
		{`{"cluster":"\udc00"}`, "lone UTF-16 surrogate"},
		{`null`, "not null"},
		{`{"tx":`, "invalid params"},
		{`{"tx":1}}`, "invalid params"},
	})
	// Many keys take the map path of the duplicate check.
	var b strings.Builder
	b.WriteString("{")
	for i := range 40 {
		b.WriteString(`"k` + strings.Repeat("x", i) + `":1,`)
	}
	b.WriteString(`"kxxx":2}`)
	var m map[string]int
	if err := DecodeParams(json.RawMessage(b.String()), &m); !IsCode(err, CodeInvalidParams) || !strings.Contains(err.Error(), `"kxxx" given twice`) {
		t.Fatalf("duplicate among many keys: %v", err)
	}
}
