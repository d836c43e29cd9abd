package rpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
)

// Standard JSON-RPC 2.0 error codes.
const (
	CodeParseError     = -32700 // the request body is not valid JSON
	CodeInvalidRequest = -32600 // valid JSON but not a valid request (also: body too large, wrong HTTP method or content type)
	CodeMethodNotFound = -32601 // no such method
	CodeInvalidParams  = -32602 // params missing, of the wrong shape or type, or with unknown fields
	CodeInternal       = -32603 // the handler failed or panicked; the message says why
)

// Application error codes of tpcd, in the range the specification leaves to
// implementations (-32000..-32099). Codes -32096..-32099 are avoided because
// the jrpc2 library may emit them itself (for example when a request is
// cancelled during server shutdown). -32004 is not used: a message from an
// older coordinator incarnation is accepted and then dropped by the
// participant's engine (fencing), because its handler only queues it and
// cannot know its fate when it answers. Leave the number unassigned: older
// documents gave it that meaning.
const (
	CodeUnknownTx    = -32001 // the transaction id was never issued here, or has been forgotten after it ended
	CodeTxNotActive  = -32002 // the transaction exists but no longer accepts this request (already deciding, decided or ended)
	CodeUnavailable  = -32003 // the node cannot serve the request right now (starting, recovering, shutting down, database down); retry later
	CodeBadNode      = -32005 // the node id is out of range, or the message reached the wrong node or cluster
	CodeAborted      = -32006 // the transaction has been aborted; the message says why
	CodeLimit        = -32007 // a limit was reached (statements per transaction, open transactions in total or per client, connections); the message names it
	CodeUnauthorized = -32008 // no valid token for this method (HTTP 401 without any valid token, 403 with a token for other methods)
	CodeKeyUsed      = -32009 // the idempotency key names a transaction that cannot take the request (a begin with the key of one that ended)
)

// Error is a JSON-RPC error object. Handlers return it (possibly wrapped) to
// choose the code sent to the caller; Client.Call returns it (wrapped with
// the method name) when the server answered with an error.
type Error struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// Error implements the error interface.
func (e *Error) Error() string {
	if len(e.Data) > 0 {
		return fmt.Sprintf("rpc error %d: %s (data: %s)", e.Code, e.Message, e.Data)
	}
	return fmt.Sprintf("rpc error %d: %s", e.Code, e.Message)
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WithData returns a copy of e whose Data is v encoded as JSON, so that a
// caller can act on structured details. If v cannot be encoded the copy keeps e's Data and
// the encoding failure is appended to its message instead of being lost.
func (e *Error) WithData(v any) *Error {
	out := *e
	data, err := json.Marshal(v)
	if err != nil {
		out.Message = fmt.Sprintf("%s (error data not encodable: %v)", e.Message, err)
		return &out
	}
	out.Data = data
	return &out
}

// IsCode reports whether err is, or wraps, an *Error with the given code.
func IsCode(err error, code int) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// TransportError reports that a call got no JSON-RPC response: the
// connection could not be made or broke, the context ended, or the peer
// answered with something that is not a JSON-RPC response. The request may
// or may not have reached the handler, so only idempotent requests may be
// retried blindly.
type TransportError struct {
	Method string // the method called
	Addr   string // the peer, "host:port"
	Err    error  // the cause; errors.Is(err, context.DeadlineExceeded) etc. see through it
}

// Error implements the error interface.
func (e *TransportError) Error() string {
	return fmt.Sprintf("call %s at %s: transport: %v", e.Method, e.Addr, e.Err)
}

// Unwrap returns the cause.
func (e *TransportError) Unwrap() error { return e.Err }

// IsTransport reports whether err is, or wraps, a *TransportError, that is
// whether the outcome of the call is unknown (the request may or may not
// have been delivered and executed). It is false for an *Error, which proves
// the server received and answered the request.
func IsTransport(err error) bool {
	var e *TransportError
	return errors.As(err, &e)
}

// DecodeParams decodes a handler's params into v strictly: params must be
// present, not null and UTF-8, unknown object fields are refused (and so is a
// field name that matches only when case is ignored, which encoding/json
// would accept), no object may give a key twice, strings may not hold a
// lone UTF-16 surrogate escape, values must match the Go types, and
// nothing may follow the value. Any failure is an *Error with
// CodeInvalidParams whose message names the offending field, so that a
// caller typing requests by hand learns what to fix.
func DecodeParams(raw json.RawMessage, v any) error {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 {
		return Errorf(CodeInvalidParams, "missing params")
	}
	if bytes.Equal(trimmed, []byte("null")) {
		return Errorf(CodeInvalidParams, "invalid params: params must be an object, not null")
	}
	// The server refuses such a body as a whole; a caller of its own
	// (or a test) gets the same guarantee here.
	if !utf8.Valid(trimmed) {
		return Errorf(CodeInvalidParams, "invalid params: not valid UTF-8")
	}
	if err := checkParams(trimmed, reflect.TypeOf(v)); err != nil {
		return err
	}
	if decodeFast(trimmed, v) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Errorf(CodeInvalidParams, "invalid params: %s", describeDecodeError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return Errorf(CodeInvalidParams, "invalid params: unexpected data after the params value")
	}
	return nil
}

// decodeFast decodes params into v, a pointer to a zero value (every
// caller's), with the json/v2 implementation
// (github.com/go-json-experiment/json), which decodes tpcd's messages in
// well under half the time encoding/json takes; encoding/json's reflection
// was about a tenth of a node's CPU. Where v2 refuses, v is zeroed again
// and false returned: encoding/json then decodes, so that a refusal reads
// as it always has. Where v2 accepts, encoding/json would have decoded the
// same value (FuzzDecodeParamsAsEncodingJSON in package api holds every
// params and message type to that): checkParams has already refused what
// the two read differently, a name in another case or given twice, and v2
// refuses unknown members, trailing data and invalid UTF-8 as DecodeParams
// does.
func decodeFast(params []byte, v any) bool {
	target := reflect.ValueOf(v)
	if target.Kind() != reflect.Pointer || target.IsNil() || !target.Elem().IsZero() {
		return false
	}
	if jsonv2.Unmarshal(params, v, jsonv2.RejectUnknownMembers(true)) == nil {
		return true
	}
	target.Elem().SetZero()
	return false
}

// DecodeOptionalParams decodes params that a method may go without: absent
// params leave v as it is; anything else is decoded as DecodeParams does
// (null and arrays are refused).
func DecodeOptionalParams(raw json.RawMessage, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	return DecodeParams(raw, v)
}

// DecodeNoParams checks the params of a method that takes none: they must
// be absent or an empty object. Positional params (an array, even an empty
// one), null and members are refused with CodeInvalidParams, as
// DecodeParams refuses them for methods that take params.
func DecodeNoParams(raw json.RawMessage) error {
	trimmed := bytes.TrimSpace(raw)
	switch {
	case len(trimmed) == 0:
		return nil
	case trimmed[0] == '[':
		return Errorf(CodeInvalidParams, "invalid params: this method takes no params; send none or {}, not an array")
	}
	return DecodeParams(trimmed, &struct{}{})
}

// describeDecodeError rewrites encoding/json errors, which speak of Go types
// and struct names, in terms of the JSON the caller sent.
func describeDecodeError(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return fmt.Sprintf("expected %s, got JSON %s", jsonKind(typeErr.Type.Kind()), typeErr.Value)
		}
		return fmt.Sprintf("field %q: expected %s, got JSON %s", typeErr.Field, jsonKind(typeErr.Type.Kind()), typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("malformed JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)
	}
	// Unknown fields and custom unmarshalers produce plain errors; drop the
	// package prefix that means nothing to a caller.
	return strings.TrimPrefix(err.Error(), "json: ")
}

// jsonKind names the JSON shape a Go kind decodes from.
func jsonKind(k reflect.Kind) string {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "a value of kind " + k.String()
}
