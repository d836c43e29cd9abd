package replay

import (
	"testing"

	"github.com/tpcd/tpcd/engine"
)

func TestParseNodeNamesWithSlots(t *testing.T) {
	for _, c := range []struct {
		name string
		role string
		id   engine.NodeID
		ok   bool
	}{
		{"coordinator", RoleCoordinator, engine.CoordinatorNode, true},
		{"coordinator.1", RoleCoordinator, engine.CoordinatorNode, true},
		{"coordinator.63", RoleCoordinator, engine.CoordinatorNode, true},
		{"participant-0", RoleParticipant, 0, true},
		{"participant-2.5", RoleParticipant, 2, true},
		// Slot 0 has no suffix, and no slot is past the last.
		{"coordinator.0", "", 0, false},
		{"participant-1.0", "", 0, false},
		{"coordinator.64", "", 0, false},
		{"participant-1.x", "", 0, false},
		{"participant-01", "", 0, false},
		{"coordinator.", "", 0, false},
		{"other.1", "", 0, false},
	} {
		role, id, ok := ParseNode(c.name)
		if ok != c.ok || ok && (role != c.role || id != c.id) {
			t.Errorf("ParseNode(%q) = %q, %d, %v; want %q, %d, %v", c.name, role, id, ok, c.role, c.id, c.ok)
		}
	}
}
