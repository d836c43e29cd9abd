package api

import (
	"encoding"
	"encoding/json"
	"strings"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// messageDecoders decodes the params of each node-to-node method into its
// engine message type: its keys are the node-to-node methods.
var messageDecoders = map[string]func(json.RawMessage) (engine.Message, error){
	engine.ExecRequest{}.Method():         decodeAs[engine.ExecRequest],
	engine.PrepareRequest{}.Method():      decodeAs[engine.PrepareRequest],
	engine.DecisionRequest{}.Method():     decodeAs[engine.DecisionRequest],
	engine.ExecResult{}.Method():          decodeAs[engine.ExecResult],
	engine.VoteMessage{}.Method():         decodeAs[engine.VoteMessage],
	engine.AckMessage{}.Method():          decodeAs[engine.AckMessage],
	engine.InquireMessage{}.Method():      decodeAs[engine.InquireMessage],
	engine.CommitBranchRequest{}.Method(): decodeAs[engine.CommitBranchRequest],
	engine.SettleRequest{}.Method():       decodeAs[engine.SettleRequest],
	engine.SettleAnswer{}.Method():        decodeAs[engine.SettleAnswer],
	engine.ReconcileRequest{}.Method():    decodeAs[engine.ReconcileRequest],
	engine.ReconcileAnswer{}.Method():     decodeAs[engine.ReconcileAnswer],
}

// DecodeMessage decodes and checks the params of a node-to-node method as
// the nodes do before handing a message to their engine: strictly (see
// rpc.DecodeParams), with a transaction id, and with valid votes and
// outcomes. Errors are *rpc.Error with rpc.CodeInvalidParams, or
// rpc.CodeMethodNotFound for a method that is not a message.
func DecodeMessage(method string, raw json.RawMessage) (engine.Message, error) {
	decode, ok := messageDecoders[method]
	if !ok {
		return nil, rpc.Errorf(rpc.CodeMethodNotFound, "no method %q", method)
	}
	m, err := decode(raw)
	if err != nil {
		return nil, err
	}
	switch v := m.(type) {
	case engine.ReconcileRequest:
		// About no one transaction, but from one incarnation.
		if v.Epoch == 0 {
			return nil, rpc.Errorf(rpc.CodeInvalidParams, "%s: epoch must be positive", method)
		}
	case engine.ReconcileAnswer:
		if v.Epoch == 0 {
			return nil, rpc.Errorf(rpc.CodeInvalidParams, "%s: epoch must be positive", method)
		}
		for _, mk := range v.Markers {
			if mk.TxID == 0 {
				return nil, rpc.Errorf(rpc.CodeInvalidParams, "%s: markers: tx must be a positive transaction id", method)
			}
		}
	default:
		if m.Tx() == 0 {
			return nil, rpc.Errorf(rpc.CodeInvalidParams, "%s: tx must be a positive transaction id", method)
		}
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
	case engine.SettleAnswer:
		enum = v.Outcome
	}
	if enum != nil {
		if _, err := enum.MarshalText(); err != nil {
			return nil, rpc.Errorf(rpc.CodeInvalidParams, "%s: invalid params: %s", method, strings.TrimPrefix(err.Error(), "engine: "))
		}
	}
	return m, nil
}

func decodeAs[T engine.Message](raw json.RawMessage) (engine.Message, error) {
	var m T
	if err := rpc.DecodeParams(raw, &m); err != nil {
		return nil, err
	}
	return m, nil
}
