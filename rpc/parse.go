package rpc

import (
	"encoding/json"

	"github.com/creachadair/jrpc2"
)

// parseRequests parses a request body. Bodies in the exact form this
// package's Client writes (encodeRequest: no whitespace, the members
// jsonrpc, id, method and params in that order, a decimal id or none, a
// plain method name) are taken apart in one validating pass and a light scan;
// everything else goes through jrpc2, whose general parse decodes each
// request into a map to check its members and costs several passes over
// the body. At one client, the node messages of a transaction spent about
// 7 % of the process's CPU in jrpc2. The results are the same either way
// (TestParseRequestsMatchesJrpc2, FuzzParseRequests). What jrpc2 lets
// through, a member given twice and "params": null, is refused here
// (checkMembers); a canonical body has neither.
func parseRequests(body []byte) ([]*jrpc2.ParsedRequest, error) {
	if reqs, ok := parseCanonical(body); ok {
		return reqs, nil
	}
	reqs, err := jrpc2.ParseRequests(body)
	if err != nil {
		return nil, err
	}
	checkMembers(body, reqs)
	return reqs, nil
}

// parseCanonical parses body if it is in canonical form; ok is false
// otherwise, and nothing is decided.
func parseCanonical(body []byte) (reqs []*jrpc2.ParsedRequest, ok bool) {
	if len(body) == 0 {
		return nil, false
	}
	batch := body[0] == '['
	rest := body
	if batch {
		rest = body[1:]
	}
	for {
		req, after, ok := parseCanonicalOne(rest)
		if !ok {
			return nil, false
		}
		req.Batch = batch
		reqs = append(reqs, req)
		switch {
		case !batch && len(after) == 0, batch && len(after) == 1 && after[0] == ']':
			// Validity is checked last, so that a body bound for jrpc2
			// costs no extra pass; until then the scan may have been
			// fooled by invalid JSON, and its result counts only now.
			if !json.Valid(body) {
				return nil, false
			}
			return reqs, true
		case batch && len(after) > 1 && after[0] == ',':
			rest = after[1:]
		default:
			return nil, false
		}
	}
}

const (
	canonicalHead   = `{"jsonrpc":"2.0",`
	canonicalID     = `"id":`
	canonicalMethod = `"method":"`
	canonicalParams = `,"params":`
)

// parseCanonicalOne parses one canonical request at the start of b and
// returns what follows it. b may be invalid JSON; the caller checks.
func parseCanonicalOne(b []byte) (req *jrpc2.ParsedRequest, rest []byte, ok bool) {
	b, ok = cutPrefix(b, canonicalHead)
	if !ok {
		return nil, nil, false
	}
	// A notification (a node's one-way messages) has no id; jrpc2 gives it
	// the empty ID too.
	id := ""
	if rest, isCall := cutPrefix(b, canonicalID); isCall {
		n := 0
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		if n == 0 || n == len(rest) || rest[n] != ',' {
			return nil, nil, false
		}
		id, b = string(rest[:n]), rest[n+1:]
	}
	b, ok = cutPrefix(b, canonicalMethod)
	if !ok {
		return nil, nil, false
	}
	n := 0
	for n < len(b) && isPlainMethodByte(b[n]) {
		n++
	}
	if n == 0 || n == len(b) || b[n] != '"' {
		return nil, nil, false
	}
	req = &jrpc2.ParsedRequest{ID: id, Method: string(b[:n])}
	b = b[n+1:]
	if len(b) > 0 && b[0] == '}' {
		return req, b[1:], true
	}
	b, ok = cutPrefix(b, canonicalParams)
	if !ok || len(b) == 0 || (b[0] != '{' && b[0] != '[') {
		return nil, nil, false
	}
	end := endOfComposite(b)
	if end < 0 || end >= len(b) || b[end] != '}' {
		return nil, nil, false
	}
	// A slice of the body, where jrpc2 copies: a handler that keeps its
	// params keeps the whole body alive.
	req.Params = json.RawMessage(b[:end])
	return req, b[end+1:], true
}

func cutPrefix(b []byte, prefix string) ([]byte, bool) {
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return nil, false
	}
	return b[len(prefix):], true
}

// isPlainMethodByte admits the bytes of tpcd's method names, none of which
// needs escaping in JSON.
func isPlainMethodByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// endOfComposite returns the length of the object or array at the start of
// b, or -1 if b ends first. Only for valid JSON is the answer right, which
// parseCanonical checks before trusting it.
func endOfComposite(b []byte) int {
	depth := 0
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}
