package rpc

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/creachadair/jrpc2"
)

// This file holds the checks encoding/json and jrpc2 leave out, each of
// which would let a request mean something its sender did not write:
//
//   - a lone surrogate escape ("\ud800") is valid JSON syntax but no
//     character; encoding/json decodes it to U+FFFD, as it does bad UTF-8
//     bytes, so a statement would run with text its client never sent;
//   - a key given twice: encoding/json and jrpc2 keep the last, another
//     decoder may keep the first, so two readers of one request could
//     disagree on what it asks;
//   - a field name in another case ("TX" for "tx"): encoding/json matches
//     names case-insensitively, which makes {"tx":1,"TX":2} a duplicate
//     the byte-wise comparison cannot see;
//   - "params": null, which jrpc2 reads as no params at all.

// loneSurrogate returns the offset in body of the first \u escape of a
// UTF-16 surrogate that is not part of a high-low pair, or -1 if there is
// none. Backslashes occur only inside strings in valid JSON, so no string
// tracking is needed; for invalid JSON the answer does not matter, since
// the body is refused either way.
func loneSurrogate(body []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(body[i:], '\\')
		if j < 0 {
			return -1
		}
		i += j
		if i+1 >= len(body) {
			return -1
		}
		if body[i+1] != 'u' {
			i += 2 // \" \\ \n and the like
			continue
		}
		r, ok := hex4(body[i+2:])
		switch {
		case !ok:
			i += 2
		case r >= 0xdc00 && r <= 0xdfff:
			return i
		case r >= 0xd800 && r <= 0xdbff:
			if i+12 <= len(body) && body[i+6] == '\\' && body[i+7] == 'u' {
				if low, ok := hex4(body[i+8:]); ok && low >= 0xdc00 && low <= 0xdfff {
					i += 12
					continue
				}
			}
			return i
		default:
			i += 6
		}
	}
}

// hex4 decodes the four hex digits at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// checkMembers refuses, request by request, what jrpc2 lets through in
// the members of a request object: a member given twice (CodeInvalidRequest)
// and "params": null (CodeInvalidParams, as DecodeParams refuses it). body parsed into reqs (one per element of a batch, in order), so
// it is valid JSON. A request that jrpc2 already refused keeps its error.
// A duplicate "id" leaves the id unknown, so the answer carries null.
func checkMembers(body []byte, reqs []*jrpc2.ParsedRequest) {
	sc := &jsonScanner{b: body}
	sc.space()
	elements := 1
	batch := sc.peek() == '['
	if batch {
		sc.i++
		sc.space()
		if sc.peek() == ']' {
			return
		}
		elements = len(reqs)
	}
	for n := 0; n < elements && n < len(reqs); n++ {
		sc.space()
		if err := sc.members(reqs[n]); err != nil {
			return // cannot happen for a body jrpc2 parsed; leave it be
		}
		sc.space()
		if batch {
			sc.i++ // ',' or ']'
		}
	}
}

// members walks the value at the scanner, a request object, and sets
// req.Error when it repeats a member or has null params.
func (sc *jsonScanner) members(req *jrpc2.ParsedRequest) error {
	if sc.peek() != '{' {
		return sc.skip()
	}
	var seen []string
	return sc.object(func(key string) error {
		start := sc.i
		if err := sc.skip(); err != nil {
			return err
		}
		if req.Error != nil {
			return nil
		}
		for _, k := range seen {
			if k == key {
				req.Error = &jrpc2.Error{Code: CodeInvalidRequest, Message: fmt.Sprintf("invalid request: member %q given twice", key)}
				if key == "id" {
					req.ID = ""
				}
				return nil
			}
		}
		seen = append(seen, key)
		if key == "params" && string(sc.b[start:sc.i]) == "null" {
			req.Error = &jrpc2.Error{Code: CodeInvalidParams, Message: "invalid params: params must be an object, not null"}
		}
		return nil
	})
}

// checkParams walks params (one JSON value, possibly invalid) along the Go
// type t it is about to be decoded into, and refuses a key given twice in
// any object, a key of a struct that is not exactly one of its field names
// (encoding/json would match it regardless of case), and a lone surrogate
// escape. Malformed JSON passes: the decoder reports it better.
func checkParams(params []byte, t reflect.Type) error {
	sc := &jsonScanner{b: params}
	sc.space()
	err := sc.typed(t, 0)
	if _, malformed := err.(errMalformed); malformed {
		return nil
	}
	return err
}

// maxDepth bounds nesting, as encoding/json does (10000), so that a walk
// of a hostile body cannot recurse without end.
const maxDepth = 10000

// typed walks one value that decodes into t (nil when no names are to be
// checked below this point: maps' keys, interfaces, custom decoders). It
// runs on every params a node decodes, so it neither allocates per value
// nor calls through closures.
func (sc *jsonScanner) typed(t reflect.Type, depth int) error {
	if depth > maxDepth {
		return errMalformed{}
	}
	switch sc.peek() {
	case '{':
		return sc.typedObject(infoOf(t), depth)
	case '[':
		sc.i++
		sc.space()
		if sc.peek() == ']' {
			sc.i++
			return nil
		}
		elem := infoOf(t).elem
		for {
			sc.space()
			if err := sc.typed(elem, depth+1); err != nil {
				return err
			}
			if more, err := sc.more(']'); !more {
				return err
			}
		}
	case '"':
		_, _, err := sc.strRaw()
		return err
	}
	return sc.scalar()
}

// typedObject walks an object whose keys info names (when it describes a
// struct), refusing a key given twice or one that is no field's name.
func (sc *jsonScanner) typedObject(info *typeInfo, depth int) error {
	sc.i++ // '{'
	sc.space()
	if sc.peek() == '}' {
		sc.i++
		return nil
	}
	// Keys seen so far: inline while few, as in every request tpcd
	// knows; a map past that, so that a huge object costs no more than
	// linear time.
	var few [16][]byte
	seen := few[:0]
	var many map[string]struct{}
	for {
		sc.space()
		if sc.peek() != '"' {
			return errMalformed{}
		}
		key, escaped, err := sc.strRaw()
		if err != nil {
			return err
		}
		if escaped {
			var decoded string
			if json.Unmarshal(sc.b[sc.i-len(key)-2:sc.i], &decoded) != nil {
				return errMalformed{}
			}
			key = []byte(decoded)
		}
		dup := false
		if many != nil {
			_, dup = many[string(key)]
			many[string(key)] = struct{}{}
		} else {
			for _, k := range seen {
				if bytes.Equal(k, key) {
					dup = true
					break
				}
			}
			seen = append(seen, key)
			if len(seen) > len(few) {
				many = make(map[string]struct{}, 2*len(seen))
				for _, k := range seen {
					many[string(k)] = struct{}{}
				}
			}
		}
		if dup {
			return Errorf(CodeInvalidParams, "invalid params: key %q given twice", key)
		}
		next := info.elem
		if info.fields != nil {
			ft, ok := info.fields[string(key)]
			if !ok {
				return Errorf(CodeInvalidParams, "invalid params: unknown field %q", key)
			}
			next = ft
		}
		if err := sc.colon(); err != nil {
			return err
		}
		if err := sc.typed(next, depth+1); err != nil {
			return err
		}
		if more, err := sc.more('}'); !more {
			return err
		}
	}
}

// typeInfo is what a walk needs of a Go type: the JSON names of a
// struct's fields with their types, or the element type of a slice,
// array or map. The zero value checks nothing below it.
type typeInfo struct {
	fields map[string]reflect.Type
	elem   reflect.Type
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	// typeInfoCache maps a reflect.Type to its *typeInfo.
	typeInfoCache sync.Map
	noInfo        = &typeInfo{}
)

// infoOf describes t; for nil, an interface or a type that decodes itself
// (names below it are not encoding/json's to match) it is noInfo.
func infoOf(t reflect.Type) *typeInfo {
	if t == nil {
		return noInfo
	}
	if info, ok := typeInfoCache.Load(t); ok {
		return info.(*typeInfo)
	}
	info := noInfo
	u := t
	for u.Kind() == reflect.Pointer {
		u = u.Elem()
	}
	decodesItself := reflect.PointerTo(u).Implements(jsonUnmarshaler) || reflect.PointerTo(u).Implements(textUnmarshaler)
	switch {
	case decodesItself:
	case u.Kind() == reflect.Struct:
		info = &typeInfo{fields: structFields(u)}
	case u.Kind() == reflect.Map, u.Kind() == reflect.Slice, u.Kind() == reflect.Array:
		info = &typeInfo{elem: u.Elem()}
	}
	typeInfoCache.Store(t, info)
	return info
}

// structFields returns the JSON names of t's fields, as encoding/json
// names them (tag name, else Go name; fields of untagged embedded structs
// promoted, the shallower winning), with the type each decodes into.
func structFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	addFields(m, t, map[reflect.Type]bool{})
	return m
}

func addFields(m map[string]reflect.Type, t reflect.Type, visiting map[reflect.Type]bool) {
	if visiting[t] {
		return
	}
	visiting[t] = true
	defer delete(visiting, t)
	var embedded []reflect.Type
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				embedded = append(embedded, ft)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type
	}
	// Promoted fields come second: a field of t itself hides them.
	for _, et := range embedded {
		inner := map[string]reflect.Type{}
		addFields(inner, et, visiting)
		for name, ft := range inner {
			if _, ok := m[name]; !ok {
				m[name] = ft
			}
		}
	}
}

// errMalformed stops a walk at input that is not JSON; the decoder that
// runs next says what is wrong with it.
type errMalformed struct{}

func (errMalformed) Error() string { return "malformed JSON" }

// jsonScanner walks JSON text just enough to see object keys and string
// escapes; values are validated by the decoder that runs after it.
type jsonScanner struct {
	b []byte
	i int
}

func (sc *jsonScanner) peek() byte {
	if sc.i < len(sc.b) {
		return sc.b[sc.i]
	}
	return 0
}

func (sc *jsonScanner) space() {
	for sc.i < len(sc.b) {
		switch sc.b[sc.i] {
		case ' ', '\t', '\n', '\r':
			sc.i++
		default:
			return
		}
	}
}

// object walks an object, calling member with each key while the
// scanner stands at the key's value; member must walk the value.
func (sc *jsonScanner) object(member func(key string) error) error {
	sc.i++ // '{'
	sc.space()
	if sc.peek() == '}' {
		sc.i++
		return nil
	}
	for {
		sc.space()
		if sc.peek() != '"' {
			return errMalformed{}
		}
		key, err := sc.str()
		if err != nil {
			return err
		}
		if err := sc.colon(); err != nil {
			return err
		}
		if err := member(key); err != nil {
			return err
		}
		if more, err := sc.more('}'); !more {
			return err
		}
	}
}

// colon passes the ':' after an object's key.
func (sc *jsonScanner) colon() error {
	sc.space()
	if sc.peek() != ':' {
		return errMalformed{}
	}
	sc.i++
	sc.space()
	return nil
}

// more passes what follows a member or element: true after a ',', false
// after the closing byte (with a nil error) or anything else (with
// errMalformed).
func (sc *jsonScanner) more(closing byte) (bool, error) {
	sc.space()
	switch sc.peek() {
	case ',':
		sc.i++
		return true, nil
	case closing:
		sc.i++
		return false, nil
	}
	return false, errMalformed{}
}

// skip walks any value.
func (sc *jsonScanner) skip() error { return sc.typed(nil, 0) }

// strRaw walks a string and returns its contents between the quotes,
// and whether they hold an escape; a lone surrogate escape is an error.
func (sc *jsonScanner) strRaw() (raw []byte, escaped bool, err error) {
	sc.i++ // '"'
	start := sc.i
	for sc.i < len(sc.b) {
		switch sc.b[sc.i] {
		case '"':
			raw = sc.b[start:sc.i]
			sc.i++
			if escaped {
				if at := loneSurrogate(raw); at >= 0 {
					return nil, false, Errorf(CodeInvalidParams, "invalid params: %s is a lone UTF-16 surrogate, not a character", raw[at:at+6])
				}
			}
			return raw, escaped, nil
		case '\\':
			escaped = true
			sc.i += 2
		default:
			sc.i++
		}
	}
	return nil, false, errMalformed{}
}

// str walks a string and returns its decoded value.
func (sc *jsonScanner) str() (string, error) {
	start := sc.i
	raw, escaped, err := sc.strRaw()
	if err != nil || !escaped {
		return string(raw), err
	}
	var s string
	if json.Unmarshal(sc.b[start:sc.i], &s) != nil {
		return "", errMalformed{}
	}
	return s, nil
}

// scalar walks a number, true, false or null.
func (sc *jsonScanner) scalar() error {
	start := sc.i
	for sc.i < len(sc.b) {
		switch sc.b[sc.i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if sc.i == start {
				return errMalformed{}
			}
			return nil
		case '{', '[', '"', ':':
			return errMalformed{}
		}
		sc.i++
	}
	if sc.i == start {
		return errMalformed{}
	}
	return nil
}
