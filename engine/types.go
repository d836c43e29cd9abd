package engine

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// TxID names a distributed transaction. The coordinator assigns ids in
// increasing order and never reuses one, across restarts too.
type TxID uint64

// NodeID is a participant's index, consecutive from 0 as in the seed project.
type NodeID int

// CoordinatorNode is the NodeID used as the destination of messages a
// participant sends to its coordinator.
const CoordinatorNode NodeID = -1

func (n NodeID) String() string {
	if n == CoordinatorNode {
		return "coordinator"
	}
	return "p" + strconv.Itoa(int(n))
}

// Epoch counts coordinator incarnations. It goes up at every coordinator
// start; participants refuse messages from an epoch older than one they saw.
type Epoch uint64

// Instant is a point on the caller's monotonic clock, in nanoseconds. Only
// differences between instants mean anything.
type Instant int64

// Add returns t moved forward by d.
func (t Instant) Add(d time.Duration) Instant { return t + Instant(d) }

// LSN is the position of an event in the log written by this incarnation of a
// node. It orders durability: the driver reports the highest LSN durable, and
// an effect waits for its WaitLSN. Events folded in at recovery are durable by
// definition and carry no LSN.
type LSN uint64

// ReqID identifies a pending client request at the driver; the engine only
// echoes it back in a Respond effect.
type ReqID uint64

// Outcome is the fate of a transaction.
type Outcome uint8

const (
	OutcomeCommit Outcome = 1 + iota
	OutcomeAbort
)

func (o Outcome) String() string {
	switch o {
	case OutcomeCommit:
		return "commit"
	case OutcomeAbort:
		return "abort"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// MarshalText encodes an outcome by name so logs stay readable.
func (o Outcome) MarshalText() ([]byte, error) {
	switch o {
	case OutcomeCommit, OutcomeAbort:
		return []byte(o.String()), nil
	}
	return nil, fmt.Errorf("engine: invalid outcome %d", o)
}

// UnmarshalText decodes an outcome name.
func (o *Outcome) UnmarshalText(b []byte) error {
	switch string(b) {
	case "commit":
		*o = OutcomeCommit
	case "abort":
		*o = OutcomeAbort
	default:
		return fmt.Errorf("engine: invalid outcome %q", b)
	}
	return nil
}

// Vote is a participant's answer to prepare.
type Vote uint8

const (
	VoteYes Vote = 1 + iota
	VoteNo
	// VoteReadOnly means the participant wrote nothing, has already finished
	// its part, and needs no second phase.
	VoteReadOnly
)

func (v Vote) String() string {
	switch v {
	case VoteYes:
		return "yes"
	case VoteNo:
		return "no"
	case VoteReadOnly:
		return "read-only"
	}
	return "vote(" + strconv.Itoa(int(v)) + ")"
}

// MarshalText encodes a vote by name.
func (v Vote) MarshalText() ([]byte, error) {
	switch v {
	case VoteYes, VoteNo, VoteReadOnly:
		return []byte(v.String()), nil
	}
	return nil, fmt.Errorf("engine: invalid vote %d", v)
}

// UnmarshalText decodes a vote name.
func (v *Vote) UnmarshalText(b []byte) error {
	switch string(b) {
	case "yes":
		*v = VoteYes
	case "no":
		*v = VoteNo
	case "read-only":
		*v = VoteReadOnly
	default:
		return fmt.Errorf("engine: invalid vote %q", b)
	}
	return nil
}

// GIDPrefix starts every PostgreSQL prepared-transaction name tpcd creates.
const GIDPrefix = "tpcd:"

// FormatGID names the prepared transaction of tx on every participant. The
// cluster part lets recovery touch only its own prepared transactions; the
// epoch part tells which coordinator incarnation started it.
func FormatGID(cluster string, epoch Epoch, tx TxID) string {
	return GIDPrefix + cluster + ":" + strconv.FormatUint(uint64(epoch), 10) + ":" + strconv.FormatUint(uint64(tx), 10)
}

// ParseGID splits a GID made by FormatGID. ok is false for any other name.
func ParseGID(gid string) (cluster string, epoch Epoch, tx TxID, ok bool) {
	rest, found := strings.CutPrefix(gid, GIDPrefix)
	if !found {
		return "", 0, 0, false
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return "", 0, 0, false
	}
	t, err := strconv.ParseUint(rest[i+1:], 10, 64)
	if err != nil || t == 0 {
		return "", 0, 0, false
	}
	rest = rest[:i]
	j := strings.LastIndexByte(rest, ':')
	if j <= 0 {
		return "", 0, 0, false
	}
	e, err := strconv.ParseUint(rest[j+1:], 10, 64)
	if err != nil || e == 0 {
		return "", 0, 0, false
	}
	return rest[:j], Epoch(e), TxID(t), true
}
