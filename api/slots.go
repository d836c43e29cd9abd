package api

import (
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/tpcd/tpcd/engine"
)

// Slots let several coordinators serve one cluster at once (tpcd
// coordinator --slots). A slot is a coordinator's share of the cluster: its
// own log in the shared log database, its own lease, epochs and cluster id,
// and its own range of transaction ids. Each participant runs one engine
// per slot. Which slot a call belongs to follows from what it names, so
// that any coordinator can pass it on to the one holding the slot:
//   - a transaction id: the slot whose range holds it (SlotOfTx);
//   - an idempotency key: a hash of the key (SlotOfKey), so that a call
//     repeated at another coordinator still finds its first answer;
//   - a cluster id: slot s > 0 names its cluster "<uuid>.<s>" (SlotOfCluster).
//
// A new transaction without a key goes to the slot of the coordinator
// asked.

// MaxSlots bounds --slots. Ids stay below 2^53, which every JSON reader
// holds exactly: MaxSlots << slotShift is 2^46.
const MaxSlots = 64

// slotShift is where a slot's ids start: slot s uses ids from s<<40, each
// slot about a trillion.
const slotShift = 40

// SlotOfTx is the slot whose ids include tx.
func SlotOfTx(tx engine.TxID) int { return int(uint64(tx) >> slotShift) }

// FirstTxOfSlot is the smallest id slot s assigns.
func FirstTxOfSlot(s int) engine.TxID {
	if s == 0 {
		return 1
	}
	return engine.TxID(uint64(s) << slotShift)
}

// EndTxOfSlot is the first id past slot s's range.
func EndTxOfSlot(s int) engine.TxID { return engine.TxID(uint64(s+1) << slotShift) }

// SlotOfKey is the slot that serves the transactions an idempotency key
// names, of slots in all.
func SlotOfKey(key string, slots int) int {
	if slots <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(slots))
}

// SlotCluster is the cluster id slot s names a new log with, from a fresh
// unique id.
func SlotCluster(unique string, s int) string {
	if s == 0 {
		return unique
	}
	return unique + "." + strconv.Itoa(s)
}

// SlotOfCluster is the slot a cluster id belongs to (0 for one without a
// slot suffix, as every cluster made before slots).
func SlotOfCluster(cluster string) int {
	i := strings.LastIndexByte(cluster, '.')
	if i < 0 {
		return 0
	}
	s, err := strconv.Atoi(cluster[i+1:])
	if err != nil || s < 0 || s >= MaxSlots {
		return 0
	}
	return s
}

// CoordinatorSlotName is the node name of slot s's coordinator: the name
// its log, lease and fences are kept under.
func CoordinatorSlotName(s int) string {
	if s == 0 {
		return CoordinatorName
	}
	return CoordinatorName + "." + strconv.Itoa(s)
}

// ParticipantSlotName is the node name of participant id's engine for
// slot s, in the participant's log.
func ParticipantSlotName(id engine.NodeID, s int) string {
	if s == 0 {
		return ParticipantName(id)
	}
	return ParticipantName(id) + "." + strconv.Itoa(s)
}

// PingParams are the optional params of MethodPing. Slot, asked of a
// coordinator, is the slot whose coordinator should answer: another
// coordinator passes the question on to it. Without it, the node asked
// answers for itself.
type PingParams struct {
	Slot *int `json:"slot,omitempty"`
}
