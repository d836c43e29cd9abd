package rpc

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"testing"
	"unicode/utf8"

	"github.com/creachadair/jrpc2"
)

// sameParse fails the test unless the fast path (parseCanonical), where it
// takes body, parses it as jrpc2 does. A body it declines goes to jrpc2
// itself (parseRequests), so there is nothing
// to compare: jrpc2 checks a request's members in map order, and of two
// faults in one request either may be the one reported, so two calls on
// the same body can disagree.
func sameParse(t *testing.T, body []byte) {
	t.Helper()
	got, ok := parseCanonical(body)
	if !ok {
		return
	}
	want, wantErr := jrpc2.ParseRequests(body)
	if wantErr != nil {
		t.Fatalf("%q: fast path accepted what jrpc2 refuses: %v", body, wantErr)
	}
	if len(got) != len(want) {
		t.Fatalf("%q: %d requests, jrpc2 %d", body, len(got), len(want))
	}
	for i := range got {
		g, w := *got[i], *want[i]
		// Params compare as bytes: jrpc2 copies them, the fast path
		// slices the body.
		if !bytes.Equal(g.Params, w.Params) {
			t.Fatalf("%q request %d: params %q, jrpc2 %q", body, i, g.Params, w.Params)
		}
		g.Params, w.Params = nil, nil
		// An error's data lists extra members in map order; its code and
		// message are what the server passes on.
		if (g.Error == nil) != (w.Error == nil) || g.Error != nil && (g.Error.Code != w.Error.Code || g.Error.Message != w.Error.Message) {
			t.Fatalf("%q request %d: error %v, jrpc2 %v", body, i, g.Error, w.Error)
		}
		g.Error, w.Error = nil, nil
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("%q request %d: %+v, jrpc2 %+v", body, i, g, w)
		}
	}
}

// canonicalCases take the fast path.
var canonicalCases = []string{
	`{"jsonrpc":"2.0","id":1,"method":"tpcd.exec","params":{"sql":"INSERT INTO t VALUES ('}', \"]\\\"\")","args":[1,[2,{"a":"}"}]]}}`,
	`[{"jsonrpc":"2.0","id":1,"method":"tpcd.ack","params":{"tx":1}},{"jsonrpc":"2.0","id":2,"method":"tpcd.vote","params":[1,2]}]`,
	`{"jsonrpc":"2.0","id":7,"method":"nothing"}`,
	`[{"jsonrpc":"2.0","id":7,"method":"nothing"}]`,
	`{"jsonrpc":"2.0","method":"tpcd.vote","params":{"tx":1}}`,
	`[{"jsonrpc":"2.0","method":"tpcd.ack","params":{"tx":1}},{"jsonrpc":"2.0","id":3,"method":"tpcd.vote","params":{}},{"jsonrpc":"2.0","method":"x"}]`,
}

// otherCases are not canonical: each goes to jrpc2, whose answer must
// stand.
var otherCases = []string{
	`{"jsonrpc":"2.0","id":1,"Method":"tpcd.exec","params":{}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tpcd.exec","params":{},"method":"x"}`,
	`{"jsonrpc":"2.0","id":1,"method":"tpcd.exec","params":{},"extra":1}`,
	`{"jsonrpc":"1.0","id":1,"method":"a","params":{}}`,
	`{"jsonrpc":"2.0","id":"x","method":"a","params":{}}`,
	`{"jsonrpc":"2.0","id":-1,"method":"a","params":{}}`,
	`{"jsonrpc":"2.0","id":1.5,"method":"a","params":{}}`,
	`{"jsonrpc":"2.0","id":1,"method":"a\u0062","params":{}}`,
	`{"jsonrpc":"2.0","id":1,"method":"","params":{}}`,
	`{"jsonrpc":"2.0","id":1,"method":"a","params":null}`,
	`{"jsonrpc":"2.0","id":1,"method":"a","params":3}`,
	`{"jsonrpc":"2.0","id":1,"method":"a","params":{"x":1}`,
	`{"jsonrpc":"2.0","id":1,"method":"a","params":{"x":tru}}`,
	`{"jsonrpc":"2.0","method":"a","id":1,"params":{}}`,
	`{"jsonrpc":"2.0","id":1"method":"a"}`,
	`{"jsonrpc":"2.0","id":,"method":"a"}`,
	`{"jsonrpc":"2.0","id":1, "method":"a"}`,
	`{"jsonrpc":"2.0","id":1,"method":"a"} `,
	`[{"jsonrpc":"2.0","id":1,"method":"a"},]`,
	`[{"jsonrpc":"2.0","id":1,"method":"a"} ,{"jsonrpc":"2.0","id":2,"method":"b"}]`,
	`[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":2,"method":"b","Params":{}}]`,
	`[]`,
	`[1]`,
	``,
	`{}`,
}

func TestParseRequestsMatchesJrpc2(t *testing.T) {
	for _, body := range canonicalCases {
		if _, ok := parseCanonical([]byte(body)); !ok {
			t.Fatalf("%q: fast path declined", body)
		}
		sameParse(t, []byte(body))
	}
	// A body the fast path declines must reach jrpc2 untouched.
	for _, body := range otherCases {
		if reqs, ok := parseCanonical([]byte(body)); ok {
			t.Fatalf("%q: fast path took it: %+v", body, reqs)
		}
	}
}

// What this package's client writes takes the fast path; were it ever to
// miss it, nothing would break but the saving would be gone unnoticed.
func TestClientRequestsAreCanonical(t *testing.T) {
	one, err := encodeRequest(42, "tpcd.exec", map[string]any{"sql": "SELECT '}'", "args": []any{1, "\"", nil}})
	if err != nil {
		t.Fatal(err)
	}
	bare, err := encodeRequest(43, "tpcd.ping", nil)
	if err != nil {
		t.Fatal(err)
	}
	// A notification: the one-way messages nodes send each other.
	oneWay, err := encodeRequest(0, "tpcd.vote", map[string]any{"tx": 9})
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range [][]byte{one, bare, oneWay, []byte("[" + string(one) + "," + string(bare) + "," + string(oneWay) + "]")} {
		if _, ok := parseCanonical(body); !ok {
			t.Fatalf("client request %s is not canonical", body)
		}
		sameParse(t, body)
	}
}

// strictCases are what jrpc2 accepts and parseRequests refuses.
var strictCases = []string{
	`{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}`,
	`{"jsonrpc":"2.0","id":1,"id":2,"method":"a"}`,
	`{"jsonrpc":"2.0","id":1,"method":"a","params":{},"params":{}}`,
	`{"jsonrpc":"2.0","id":1,"method":"a","params": null }`,
	`[{"jsonrpc":"2.0","id":1,"method":"a","params":null},{"jsonrpc":"2.0","id":2,"method":"a"}]`,
	`{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"a"}`,
}

// referenceMembers says, with encoding/json's tokenizer, whether the
// request object raw repeats a member or has null params.
func referenceMembers(t *testing.T, raw json.RawMessage) (refuse bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		key := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if seen[key] || key == "params" && string(v) == "null" {
			refuse = true
		}
		seen[key] = true
	}
	return refuse
}

// strictParse fails the test unless parseRequests refuses exactly the
// requests that repeat a member or have null params, besides those jrpc2
// refuses.
func strictParse(t *testing.T, body []byte) {
	t.Helper()
	got, err := parseRequests(body)
	want, wantErr := jrpc2.ParseRequests(body)
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("%q: parseRequests %v, jrpc2 %v", body, err, wantErr)
	}
	if err != nil {
		return
	}
	var elems []json.RawMessage
	if bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("[")) {
		if err := json.Unmarshal(body, &elems); err != nil {
			t.Fatalf("%q: jrpc2 parsed a batch encoding/json cannot: %v", body, err)
		}
	} else {
		elems = []json.RawMessage{body}
	}
	if len(elems) != len(got) || len(got) != len(want) {
		t.Fatalf("%q: %d elements, %d requests, jrpc2 %d", body, len(elems), len(got), len(want))
	}
	for i := range got {
		refuse := want[i].Error != nil || referenceMembers(t, elems[i])
		if refuse != (got[i].Error != nil) {
			t.Fatalf("%q request %d: error %v, want refused %v (jrpc2: %v)", body, i, got[i].Error, refuse, want[i].Error)
		}
	}
}

func TestParamsWalkFindsDuplicates(t *testing.T) {
	for _, body := range []string{
		`{"a":{"b":1,"c":[{"b":2},{"b":3,"b":4}]}}`, `[{"x":{}},{"x":1}]`, `{"k\u0061":1,"ka":2}`, `{"a":{"a":{"a":1}},"b":[]}`,
		`{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"a":18}`,
		` [ 1 , "x" , true , null , { } , [ ] ] `, `"\\u"`, `-1.5e+3`,
	} {
		strictParams(t, []byte(body))
	}
}

func TestParseRequestsStrict(t *testing.T) {
	for _, body := range strictCases {
		got, err := parseRequests([]byte(body))
		if err != nil || got[0].Error == nil || got[0].Error.Code != CodeInvalidRequest && got[0].Error.Code != CodeInvalidParams {
			t.Fatalf("%q: %+v %v, want the first request refused", body, got, err)
		}
		strictParse(t, []byte(body))
	}
	for _, body := range append(canonicalCases, otherCases...) {
		strictParse(t, []byte(body))
	}
}

// referenceDuplicate says, with encoding/json's tokenizer, whether any
// object in the valid JSON text body gives a key twice.
func referenceDuplicate(t *testing.T, body []byte) bool {
	type frame struct {
		keys      map[string]bool // nil for an array
		expectKey bool
	}
	var stack []*frame
	dup := false
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // a number too large for float64 is still JSON
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return dup
		}
		if err != nil {
			t.Fatalf("%q: valid JSON the tokenizer refuses: %v", body, err)
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if top != nil && top.keys != nil {
				top.expectKey = true // after this value, a key
			}
			f := &frame{}
			if tok == json.Delim('{') {
				f.keys, f.expectKey = map[string]bool{}, true
			}
			stack = append(stack, f)
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		default:
			switch {
			case top != nil && top.keys != nil && top.expectKey:
				key := tok.(string)
				dup = dup || top.keys[key]
				top.keys[key], top.expectKey = true, false
			case top != nil && top.keys != nil:
				top.expectKey = true
			}
		}
	}
}

// strictParams fails the test unless checkParams, on valid UTF-8 JSON
// without a lone surrogate, refuses exactly what repeats a key somewhere.
func strictParams(t *testing.T, body []byte) {
	t.Helper()
	err := checkParams(body, nil)
	if err != nil && !IsCode(err, CodeInvalidParams) {
		t.Fatalf("%q: %v, want nil or code %d", body, err, CodeInvalidParams)
	}
	// Bytes that are not UTF-8 are refused before (the server's check,
	// DecodeParams'): encoding/json reads each as U+FFFD, so "\xdc" and
	// "\xff" are one key to it (found by this target).
	if !json.Valid(body) || !utf8.Valid(body) || loneSurrogate(body) >= 0 {
		return
	}
	if want := referenceDuplicate(t, body); (err != nil) != want {
		t.Fatalf("%q: checkParams %v, encoding/json's tokenizer finds a key twice: %v", body, err, want)
	}
}

// FuzzParseRequests: whatever the body, the fast path and jrpc2 agree,
// parseRequests refuses what jrpc2 refuses plus exactly the requests that
// repeat a member or have null params, and the params walk finds exactly
// the keys given twice (the body standing in for params).
func FuzzParseRequests(f *testing.F) {
	for _, body := range append(append(canonicalCases, otherCases...), strictCases...) {
		f.Add([]byte(body))
	}
	for _, body := range []string{`{"a":{"b":1,"c":[{"b":2},{"b":3,"b":4}]}}`, `[{"x":{}},{"x":1}]`, `{"k\u0061":1,"ka":2}`, `{"a":{"a":{"a":1}},"b":[]}`} {
		f.Add([]byte(body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		sameParse(t, body)
		strictParse(t, body)
		strictParams(t, body)
	})
}
