package api

import (
	"fmt"

	"github.com/tpcd/tpcd/engine"
)

// CoordinatorName is the coordinator's node name: the name its log is kept
// under and the one it answers MethodPing with.
const CoordinatorName = "coordinator"

// ParticipantName is participant id's node name, in its log and in its
// answer to MethodPing.
func ParticipantName(id engine.NodeID) string { return fmt.Sprintf("participant-%d", id) }
