package node_test

import (
	"testing"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/node"
)

// participant.go keeps its own ParticipantName until it can use api's (see
// api_aliases.go); the name a participant logs and pings under must stay
// the one replay and the clients look for.
func TestParticipantNameIsAPIs(t *testing.T) {
	for _, id := range []engine.NodeID{0, 1, 17} {
		if got, want := node.ParticipantName(id), api.ParticipantName(id); got != want {
			t.Errorf("node.ParticipantName(%d) = %q, api.ParticipantName = %q", id, got, want)
		}
	}
}
