package node

import (
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// Client-facing JSON-RPC methods of the coordinator. Replies are the engine's
// reply types (engine.BeginReply, engine.ExecReply, engine.OutcomeReply,
// engine.StatusReply) and NodeHealth.
const (
	MethodBegin    = "begin"
	MethodExec     = "exec"
	MethodCommit   = "commit"
	MethodRollback = "rollback"
	MethodStatus   = "status"
	MethodExecute  = "execute"
	MethodNodes    = "nodes"
	// MethodPing is served by every node; peers use it to check health.
	MethodPing = "tpcd.ping"
)

// TxParams names a transaction (commit, rollback, status).
type TxParams struct {
	TxID engine.TxID `json:"tx"`
}

// ExecParams runs a statement in an explicit transaction.
type ExecParams struct {
	TxID engine.TxID    `json:"tx"`
	Node *engine.NodeID `json:"node"`
	SQL  string         `json:"sql"`
	Args []any          `json:"args,omitempty"`
}

// ExecuteParams is the seed form: a statement that joins the current batch.
type ExecuteParams struct {
	Node *engine.NodeID `json:"node"`
	SQL  string         `json:"sql"`
	Args []any          `json:"args,omitempty"`
}

// NodeHealth is one participant as the coordinator sees it.
type NodeHealth struct {
	Node      engine.NodeID `json:"node"`
	Address   string        `json:"address"`
	Reachable bool          `json:"reachable"`
	Epoch     engine.Epoch  `json:"epoch,omitempty"`
	LastError string        `json:"last_error,omitempty"`
	// LastSeen is the age in milliseconds of the last successful contact,
	// -1 if never.
	LastSeenMillis int64 `json:"last_seen_ms"`
}

// PingReply answers MethodPing.
type PingReply struct {
	Role    string       `json:"role"`
	Node    string       `json:"node"`
	Cluster string       `json:"cluster,omitempty"`
	Epoch   engine.Epoch `json:"epoch,omitempty"`
}

// Ack is the empty reply to node-to-node messages: they are one-way, and the
// answer only says the message reached the node's queue.
type Ack struct{}

// rpcError turns an engine error into a JSON-RPC error with a matching code.
func rpcError(e *engine.Error) *rpc.Error {
	code := rpc.CodeInternal
	switch e.Code {
	case engine.ErrUnknownTx:
		code = rpc.CodeUnknownTx
	case engine.ErrTxNotActive:
		code = rpc.CodeTxNotActive
	case engine.ErrBadNode:
		code = rpc.CodeBadNode
	case engine.ErrAborted, engine.ErrStatement:
		code = rpc.CodeAborted
	case engine.ErrBadRequest:
		// The engine refuses a request it will never accept as is (a limit
		// such as MaxStatements); before Start it says "still starting",
		// which the node never shows a client because it serves only after
		// Start.
		code = rpc.CodeLimit
	}
	return rpc.Errorf(code, "%s", e.Message)
}

// decodeMessage decodes a node-to-node message of the given method.
func decodeMessage(method string, raw json.RawMessage) (engine.Message, error) {
	var m engine.Message
	var err error
	switch method {
	case engine.ExecRequest{}.Method():
		m, err = decodeAs[engine.ExecRequest](raw)
	case engine.PrepareRequest{}.Method():
		m, err = decodeAs[engine.PrepareRequest](raw)
	case engine.DecisionRequest{}.Method():
		m, err = decodeAs[engine.DecisionRequest](raw)
	case engine.ExecResult{}.Method():
		m, err = decodeAs[engine.ExecResult](raw)
	case engine.VoteMessage{}.Method():
		m, err = decodeAs[engine.VoteMessage](raw)
	case engine.AckMessage{}.Method():
		m, err = decodeAs[engine.AckMessage](raw)
	case engine.InquireMessage{}.Method():
		m, err = decodeAs[engine.InquireMessage](raw)
	default:
		return nil, rpc.Errorf(rpc.CodeMethodNotFound, "no method %q", method)
	}
	if err != nil {
		return nil, err
	}
	if m.Tx() == 0 {
		return nil, rpc.Errorf(rpc.CodeInvalidParams, "%s: tx must be a positive transaction id", method)
	}
	// A missing vote or outcome decodes to the invalid zero value, which the
	// encoder refuses: refuse it here too rather than hand the engine a
	// decision that is neither commit nor abort (found by FuzzRequest).
	// These are the only fields of a decoded message that cannot encode.
	var enum encoding.TextMarshaler
	switch v := m.(type) {
	case engine.VoteMessage:
		enum = v.Vote
	case engine.DecisionRequest:
		enum = v.Outcome
	case engine.AckMessage:
		enum = v.Outcome
	}
	if enum != nil {
		if _, err := enum.MarshalText(); err != nil {
			return nil, rpc.Errorf(rpc.CodeInvalidParams, "%s: invalid params: %s", method, strings.TrimPrefix(err.Error(), "engine: "))
		}
	}
	return m, nil
}

// DecodeMessage decodes and checks the params of a node-to-node method as
// the nodes do before handing a message to their engine: strictly (see
// rpc.DecodeParams), with a transaction id, and with valid votes and
// outcomes. Errors are *rpc.Error with CodeInvalidParams, or
// CodeMethodNotFound for a method that is not a message.
func DecodeMessage(method string, raw json.RawMessage) (engine.Message, error) {
	return decodeMessage(method, raw)
}

func decodeAs[T engine.Message](raw json.RawMessage) (engine.Message, error) {
	var m T
	if err := rpc.DecodeParams(raw, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func needNode(n *engine.NodeID) (engine.NodeID, error) {
	if n == nil {
		return 0, rpc.Errorf(rpc.CodeInvalidParams, "node is required (a participant id, 0..N-1)")
	}
	return *n, nil
}

func needSQL(sql string) error {
	if sql == "" {
		return rpc.Errorf(rpc.CodeInvalidParams, "sql is required")
	}
	return nil
}

var errStopped = errors.New("node is shutting down")

func unavailable(err error) *rpc.Error {
	return rpc.Errorf(rpc.CodeUnavailable, "%s", fmt.Sprint(err))
}

// WaitApplied polls the coordinator's status of committed transaction tx
// until it is applied on every participant: commit answers once the
// decision is durable, and COMMIT PREPARED follows, so a caller whose next
// transaction depends on this one (a table it created) waits here. call is
// the caller's way to make an RPC (rpc.Client.Call or a wrapper of it).
func WaitApplied(ctx context.Context, call func(ctx context.Context, method string, params, result any) error, tx engine.TxID) error {
	for {
		var st engine.StatusReply
		if err := call(ctx, MethodStatus, TxParams{TxID: tx}, &st); err != nil {
			return fmt.Errorf("status of transaction %d: %w", tx, err)
		}
		if st.State != engine.PhaseCommitting.String() {
			// committed, or forgotten once every participant acknowledged
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for transaction %d to be applied: %w", tx, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
