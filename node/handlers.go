package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// rpcCodes gives each engine error the JSON-RPC code a client sees; any
// other is CodeInternal.
var rpcCodes = map[engine.ErrorCode]int{
	engine.ErrUnknownTx:   rpc.CodeUnknownTx,
	engine.ErrTxNotActive: rpc.CodeTxNotActive,
	engine.ErrBadNode:     rpc.CodeBadNode,
	engine.ErrAborted:     rpc.CodeAborted,
	engine.ErrStatement:   rpc.CodeAborted,
	engine.ErrKeyUsed:     rpc.CodeKeyUsed,
	engine.ErrUnavailable: rpc.CodeUnavailable,
	// The engine refuses a request it will never accept as is (a limit
	// such as MaxStatements); before Start it says "still starting",
	// which the node never shows a client because it serves only after
	// Start.
	engine.ErrBadRequest: rpc.CodeLimit,
}

// rpcError turns an engine error into a JSON-RPC error with a matching code.
func rpcError(e *engine.Error) *rpc.Error {
	code, ok := rpcCodes[e.Code]
	if !ok {
		code = rpc.CodeInternal
	}
	err := rpc.Errorf(code, "%s", e.Message)
	if e.SQL != nil {
		// What PostgreSQL said, for clients that act on the SQLSTATE.
		return err.WithData(api.StatementErrorData{SQL: e.SQL})
	}
	return err
}

// needNode checks that a statement names its participant: a missing node
// must not pass as participant 0.
func needNode(n *engine.NodeID) (engine.NodeID, error) {
	if n == nil {
		return 0, rpc.Errorf(rpc.CodeInvalidParams, "node is required (a participant id, 0..N-1)")
	}
	return *n, nil
}

// needKey checks a client's idempotency key: optional, but when given a
// short string of valid UTF-8, since it is kept with the outcome.
func needKey(key string) error {
	switch {
	case len(key) > api.MaxKeyBytes:
		return rpc.Errorf(rpc.CodeInvalidParams, "key is %d bytes, more than %d", len(key), api.MaxKeyBytes)
	case !utf8.ValidString(key):
		return rpc.Errorf(rpc.CodeInvalidParams, "key is not valid UTF-8")
	}
	return nil
}

// needSQL checks that a statement has SQL.
func needSQL(sql string) error {
	if sql == "" {
		return rpc.Errorf(rpc.CodeInvalidParams, "sql is required")
	}
	return nil
}

// errStopped is why a request that reaches a stopping node is refused.
var errStopped = errors.New("node is shutting down")

// unavailable tells the caller to retry later (rpc.CodeUnavailable).
func unavailable(err error) *rpc.Error {
	return rpc.Errorf(rpc.CodeUnavailable, "%s", fmt.Sprint(err))
}

// serveMessages adds to m a handler for each node-to-node message method
// that hands the message to l's engine. ready, if set, may refuse it: a
// refused message is a lost one, which the protocol survives, and the
// sender learns at once that it did not arrive.
func serveMessages(m map[string]rpc.Handler, methods []string, l *loop, ready func() error) {
	serveMessagesVia(m, methods, func(context.Context, string, engine.Message, json.RawMessage) (*loop, error) { return l, nil }, ready)
}

// serveMessagesVia is serveMessages with the loop picked per message (a
// slot's); a nil loop and no error means the message was passed on, and
// its receipt is acknowledged.
func serveMessagesVia(m map[string]rpc.Handler, methods []string, pick func(context.Context, string, engine.Message, json.RawMessage) (*loop, error), ready func() error) {
	for _, method := range methods {
		m[method] = func(ctx context.Context, raw json.RawMessage) (any, error) {
			msg, err := api.DecodeMessage(method, raw)
			if err != nil {
				return nil, err
			}
			if ready != nil {
				if err := ready(); err != nil {
					return nil, err
				}
			}
			l, err := pick(ctx, method, msg, raw)
			switch {
			case err != nil:
				return nil, err
			case l == nil:
				return api.Ack{}, nil
			}
			if !l.submit(engine.Receive{Now: l.now(), Msg: msg}) {
				return nil, unavailable(errStopped)
			}
			return api.Ack{}, nil
		}
	}
}
