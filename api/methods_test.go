package api

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tpcd/tpcd/rpc"
)

// The peer token guards exactly the node-to-node methods (and either token
// may ping), so the client methods must not carry the peer prefix and every
// message method must.
func TestMethodNamesAndTokens(t *testing.T) {
	for _, m := range []string{MethodBegin, MethodExec, MethodCommit, MethodRollback,
		MethodStatus, MethodExecute, MethodNodes, MethodTransact, MethodDirectExec, MethodPlainTransact} {
		if strings.HasPrefix(m, rpc.PeerMethodPrefix) {
			t.Errorf("client method %q has the peer prefix %q", m, rpc.PeerMethodPrefix)
		}
		if _, ok := messageDecoders[m]; ok {
			t.Errorf("client method %q decodes as a node-to-node message", m)
		}
	}
	if len(messageDecoders) != 12 {
		t.Errorf("%d node-to-node methods, want 12", len(messageDecoders))
	}
	for m := range messageDecoders {
		if !strings.HasPrefix(m, rpc.PeerMethodPrefix) {
			t.Errorf("message method %q lacks the peer prefix %q", m, rpc.PeerMethodPrefix)
		}
		// Each decodes into the message its name is for, and an empty one
		// is refused for its missing transaction id (or, for the messages
		// about no one transaction, its epoch).
		params := `{"tx":1}`
		if strings.HasPrefix(m, "tpcd.reconcile") {
			params = `{"epoch":1}`
		}
		msg, err := DecodeMessage(m, json.RawMessage(params))
		if err == nil && msg.Method() != m {
			t.Errorf("DecodeMessage(%q) decoded a %s", m, msg.Method())
		}
		if _, err := DecodeMessage(m, json.RawMessage(`{}`)); !rpc.IsCode(err, rpc.CodeInvalidParams) {
			t.Errorf("DecodeMessage(%q, {}) = %v, want invalid params", m, err)
		}
	}
	if _, ok := messageDecoders[MethodPing]; ok {
		t.Errorf("%q decodes as a message; it is none", MethodPing)
	}
	if _, err := DecodeMessage(MethodCommit, json.RawMessage(`{"tx":1}`)); !rpc.IsCode(err, rpc.CodeMethodNotFound) {
		t.Errorf("DecodeMessage(commit) = %v, want method not found", err)
	}
}
