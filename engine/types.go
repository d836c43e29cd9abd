package engine

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// enumName is v's name in names, an enum's names by value with entry 0 for
// its invalid zero value; the zero value, or one past the table, is unknown.
func enumName[E ~uint8](names []string, v E, unknown string) string {
	if v != 0 && int(v) < len(names) {
		return names[v]
	}
	return unknown
}

// TxID names a distributed transaction. The coordinator assigns ids in
// increasing order and never reuses one, across restarts too.
type TxID uint64

// NodeID is a participant's index, consecutive from 0 as in the seed project.
type NodeID int

// CoordinatorNode is the NodeID used as the destination of messages a
// participant sends to its coordinator.
const CoordinatorNode NodeID = -1

// ClientNode is the destination of a participant's answer to a statement
// its client sent it directly (ExecRequest.Direct): the driver hands it to
// the call waiting for it.
const ClientNode NodeID = -2

func (n NodeID) String() string {
	switch n {
	case CoordinatorNode:
		return "coordinator"
	case ClientNode:
		return "client"
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

// backOff returns when to try again from now, and doubles *backoff (from
// least, up to most) for the time after.
func backOff(now Instant, backoff *time.Duration, least, most time.Duration) Instant {
	if *backoff == 0 {
		*backoff = least
	}
	at := now.Add(*backoff)
	*backoff = min(2**backoff, most)
	return at
}

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

// pastTense says what happened: "committed", "aborted".
func (o Outcome) pastTense() string {
	switch o {
	case OutcomeCommit:
		return "committed"
	case OutcomeAbort:
		return "aborted"
	}
	return o.String()
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
	// VoteCommitted is the decider's answer: its branch committed, and with
	// it the transaction.
	VoteCommitted
)

func (v Vote) String() string {
	switch v {
	case VoteYes:
		return "yes"
	case VoteNo:
		return "no"
	case VoteReadOnly:
		return "read-only"
	case VoteCommitted:
		return "committed"
	}
	return "vote(" + strconv.Itoa(int(v)) + ")"
}

// MarshalText encodes a vote by name.
func (v Vote) MarshalText() ([]byte, error) {
	switch v {
	case VoteYes, VoteNo, VoteReadOnly, VoteCommitted:
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
	case "committed":
		*v = VoteCommitted
	default:
		return fmt.Errorf("engine: invalid vote %q", b)
	}
	return nil
}

// GIDPrefix starts every PostgreSQL prepared-transaction name tpcd creates.
const GIDPrefix = "tpcd:"

// GID names one participant's branch of a transaction:
// "tpcd:<cluster>:<epoch>:<tx>:<node>", or with a decider
// "tpcd:<cluster>:<epoch>:<tx>:<node>:<decider>". PostgreSQL's GIDs are
// unique per server, not per database, so the node is part of the name for
// participants that share a server. The cluster part lets recovery touch
// only its own prepared transactions; the epoch part tells which
// coordinator incarnation started it. The decider part names the
// participant whose own COMMIT decides the transaction: a branch in doubt
// asks it, not the coordinator. The decider's own branch is never prepared;
// its name (node equal to decider) is that of its outcome marker.
type GID struct {
	Cluster string
	Epoch   Epoch
	Tx      TxID
	Node    NodeID
	// HasDecider marks a branch of a transaction decided by Decider.
	HasDecider bool
	Decider    NodeID
}

// IsDecider reports whether g is the decider's own branch.
func (g GID) IsDecider() bool { return g.HasDecider && g.Decider == g.Node }

func (g GID) String() string {
	s := GIDPrefix + g.Cluster + ":" + strconv.FormatUint(uint64(g.Epoch), 10) + ":" +
		strconv.FormatUint(uint64(g.Tx), 10) + ":" + strconv.Itoa(int(g.Node))
	if g.HasDecider {
		s += ":" + strconv.Itoa(int(g.Decider))
	}
	return s
}

// ParseGID parses a GID made by GID.String. ok is false for any other name.
func ParseGID(s string) (g GID, ok bool) {
	rest, found := strings.CutPrefix(s, GIDPrefix)
	if !found {
		return GID{}, false
	}
	parts := strings.Split(rest, ":")
	if len(parts) != 4 && len(parts) != 5 || parts[0] == "" {
		return GID{}, false
	}
	epoch, err1 := strconv.ParseUint(parts[1], 10, 64)
	tx, err2 := strconv.ParseUint(parts[2], 10, 64)
	node, err3 := strconv.ParseUint(parts[3], 10, 31)
	if err1 != nil || err2 != nil || err3 != nil || epoch == 0 || tx == 0 {
		return GID{}, false
	}
	g = GID{Cluster: parts[0], Epoch: Epoch(epoch), Tx: TxID(tx), Node: NodeID(node)}
	if len(parts) == 5 {
		d, err := strconv.ParseUint(parts[4], 10, 31)
		if err != nil {
			return GID{}, false
		}
		g.HasDecider, g.Decider = true, NodeID(d)
	}
	return g, true
}
