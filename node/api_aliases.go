package node

import (
	"encoding/json"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
)

// These names remain in node only because participant.go, which is being
// changed on another branch, still uses them unqualified; once it names
// api.MethodPing, api.PingReply, api.Ack and api.DecodeMessage itself, this
// file goes (and ParticipantName, defined there, gives way to
// api.ParticipantName).

// MethodPing is api.MethodPing.
//
// Deprecated: use api.MethodPing.
const MethodPing = api.MethodPing

// PingReply is api.PingReply.
//
// Deprecated: use api.PingReply.
type PingReply = api.PingReply

// Ack is api.Ack.
//
// Deprecated: use api.Ack.
type Ack = api.Ack

// decodeMessage is api.DecodeMessage.
func decodeMessage(method string, raw json.RawMessage) (engine.Message, error) {
	return api.DecodeMessage(method, raw)
}
