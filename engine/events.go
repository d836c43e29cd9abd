package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// Event is one durable record of a protocol step. The set of kinds is closed:
// every kind is a struct in this file, and its Kind name never changes once
// written to a log (fields may be added, never renamed).
type Event interface {
	// Kind is the stable name stored in the log.
	Kind() string
	// Tx is the transaction the event belongs to, 0 for node-level events.
	Tx() TxID
	isEvent()
}

// EventVersion is written with every event. Decoders accept this version and
// older ones; a newer version is refused rather than misread.
const EventVersion = 1

// Coordinator events.

// CoordStarted records a coordinator incarnation. The first one also fixes
// the cluster's identity.
type CoordStarted struct {
	Cluster string `json:"cluster"`
	Epoch   Epoch  `json:"epoch"`
}

// CoordTxIDsReserved records that ids up to Through may be handed out, so a
// restarted coordinator never reuses an id even after compaction.
type CoordTxIDsReserved struct {
	Through TxID `json:"through"`
}

// CoordPreparing records that prepare requests went to Participants. In
// the classic protocol it is lazy: it only lets a restarted coordinator
// tell those participants to abort sooner than they would find out by
// asking. With a Decider it is lazy too: a restarted coordinator that
// finds it settles the transaction with the decider instead of presuming
// abort, and one that lost it learns of a commit from the decider's marker
// (ReconcileRequest), which carries the keys.
type CoordPreparing struct {
	TxID         TxID     `json:"tx"`
	Epoch        Epoch    `json:"epoch"`
	Participants []NodeID `json:"participants"`
	Decider      *NodeID  `json:"decider,omitempty"`
	// Keys are the client's idempotency keys of the transaction, kept
	// with it so that a restarted coordinator still knows them.
	Keys []string `json:"keys,omitempty"`
}

// CoordDecided records the decision. A commit decision must be durable before
// anyone learns of it; an abort decision may be lazy (presumed abort).
// Participants lists the nodes that must acknowledge it.
type CoordDecided struct {
	TxID         TxID     `json:"tx"`
	Epoch        Epoch    `json:"epoch"`
	Outcome      Outcome  `json:"outcome"`
	Participants []NodeID `json:"participants"`
	Reason       string   `json:"reason,omitempty"`
}

// CoordEnded records that every participant acknowledged the decision; the
// coordinator may forget the transaction and compaction may drop its events.
type CoordEnded struct {
	TxID TxID `json:"tx"`
	// Outcome, Reason (of an abort) and Keys are kept, after compaction
	// dropped the transaction's other events, for status and for calls
	// repeated with a key (the driver stores them apart, see LookupKey).
	Outcome Outcome  `json:"outcome,omitempty"`
	Reason  string   `json:"reason,omitempty"`
	Keys    []string `json:"keys,omitempty"`
}

// Participant events.

// PartEpochSeen records the newest coordinator incarnation a participant has
// heard from, which fences off older ones across restarts, and the
// participants' addresses as that coordinator knows them, so that a branch
// in doubt can reach its decider while the coordinator is down.
type PartEpochSeen struct {
	Cluster      string   `json:"cluster"`
	Epoch        Epoch    `json:"epoch"`
	Participants []string `json:"participants,omitempty"`
}

// PartPrepared records a successful PREPARE TRANSACTION; when forced it must
// be durable before the yes vote leaves. Xid is the branch's PostgreSQL
// transaction id (64 bits, as pg_current_xact_id gives it): once the GID is
// no longer prepared, PostgreSQL's commit log says through it whether the
// branch committed, so a prepared branch needs no marker row. Logs of
// earlier versions have none (0); their branches carry a marker instead.
type PartPrepared struct {
	TxID TxID   `json:"tx"`
	GID  string `json:"gid"`
	Xid  uint64 `json:"xid,omitempty"`
}

// PartVotedNo records a no vote and the reason for it.
type PartVotedNo struct {
	TxID   TxID   `json:"tx"`
	Reason string `json:"reason"`
}

// PartCommitted records that the transaction's changes were committed in the
// data database.
type PartCommitted struct {
	TxID TxID   `json:"tx"`
	GID  string `json:"gid"`
}

// PartAborted records that the transaction's changes were rolled back.
type PartAborted struct {
	TxID   TxID   `json:"tx"`
	GID    string `json:"gid,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// PartForgotten recorded, in logs of earlier tpcd builds, that the
// outcome marker was deleted. It is no longer written (a committed
// transaction is final at PartCommitted; the Forget effect starts its
// compaction) but is still read, as a no-op after PartCommitted.
type PartForgotten struct {
	TxID TxID `json:"tx"`
}

// PartViolation records evidence that atomicity was broken, so that replay
// shows it long after the log lines scrolled away.
type PartViolation struct {
	TxID   TxID   `json:"tx"`
	Detail string `json:"detail"`
}

func (CoordStarted) Kind() string       { return "coord.started" }
func (CoordTxIDsReserved) Kind() string { return "coord.txids_reserved" }
func (CoordPreparing) Kind() string     { return "coord.preparing" }
func (CoordDecided) Kind() string       { return "coord.decided" }
func (CoordEnded) Kind() string         { return "coord.ended" }
func (PartEpochSeen) Kind() string      { return "part.epoch_seen" }
func (PartPrepared) Kind() string       { return "part.prepared" }
func (PartVotedNo) Kind() string        { return "part.voted_no" }
func (PartCommitted) Kind() string      { return "part.committed" }
func (PartAborted) Kind() string        { return "part.aborted" }
func (PartForgotten) Kind() string      { return "part.forgotten" }
func (PartViolation) Kind() string      { return "part.violation" }

func (CoordStarted) Tx() TxID       { return 0 }
func (CoordTxIDsReserved) Tx() TxID { return 0 }
func (e CoordPreparing) Tx() TxID   { return e.TxID }
func (e CoordDecided) Tx() TxID     { return e.TxID }
func (e CoordEnded) Tx() TxID       { return e.TxID }
func (PartEpochSeen) Tx() TxID      { return 0 }
func (e PartPrepared) Tx() TxID     { return e.TxID }
func (e PartVotedNo) Tx() TxID      { return e.TxID }
func (e PartCommitted) Tx() TxID    { return e.TxID }
func (e PartAborted) Tx() TxID      { return e.TxID }
func (e PartForgotten) Tx() TxID    { return e.TxID }
func (e PartViolation) Tx() TxID    { return e.TxID }
func (CoordStarted) isEvent()       {}
func (CoordTxIDsReserved) isEvent() {}
func (CoordPreparing) isEvent()     {}
func (CoordDecided) isEvent()       {}
func (CoordEnded) isEvent()         {}
func (PartEpochSeen) isEvent()      {}
func (PartPrepared) isEvent()       {}
func (PartVotedNo) isEvent()        {}
func (PartCommitted) isEvent()      {}
func (PartAborted) isEvent()        {}
func (PartForgotten) isEvent()      {}
func (PartViolation) isEvent()      {}

// eventDecoders maps every kind to a decoder of its data.
var eventDecoders = map[string]func([]byte) (Event, error){
	CoordStarted{}.Kind():       decodeAs[CoordStarted],
	CoordTxIDsReserved{}.Kind(): decodeAs[CoordTxIDsReserved],
	CoordPreparing{}.Kind():     decodeAs[CoordPreparing],
	CoordDecided{}.Kind():       decodeAs[CoordDecided],
	CoordEnded{}.Kind():         decodeAs[CoordEnded],
	PartEpochSeen{}.Kind():      decodeAs[PartEpochSeen],
	PartPrepared{}.Kind():       decodeAs[PartPrepared],
	PartVotedNo{}.Kind():        decodeAs[PartVotedNo],
	PartCommitted{}.Kind():      decodeAs[PartCommitted],
	PartAborted{}.Kind():        decodeAs[PartAborted],
	PartForgotten{}.Kind():      decodeAs[PartForgotten],
	PartViolation{}.Kind():      decodeAs[PartViolation],
}

// EventKinds lists every event kind, sorted.
func EventKinds() []string {
	kinds := make([]string, 0, len(eventDecoders))
	for k := range eventDecoders {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	return kinds
}

func decodeAs[T Event](data []byte) (Event, error) {
	var e T
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, err
	}
	return e, nil
}

// envelope is the stored form of an event: {"type": ..., "v": ..., "data": {...}}.
type envelope struct {
	Type string          `json:"type"`
	V    int             `json:"v"`
	Data json.RawMessage `json:"data"`
}

// ErrUnknownEventKind is returned when a log holds a kind this build does not
// know, for example one written by a newer tpcd.
var ErrUnknownEventKind = errors.New("engine: unknown event kind")

// EncodeEvent returns the stored JSON form of e.
func EncodeEvent(e Event) ([]byte, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", e.Kind(), err)
	}
	return json.Marshal(envelope{Type: e.Kind(), V: EventVersion, Data: data})
}

// DecodeEvent parses the stored JSON form of an event.
func DecodeEvent(b []byte) (Event, error) {
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("engine: decode event: %w", err)
	}
	dec, ok := eventDecoders[env.Type]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownEventKind, env.Type)
	}
	if env.V < 1 || env.V > EventVersion {
		return nil, fmt.Errorf("engine: decode %s: unsupported version %d", env.Type, env.V)
	}
	if len(env.Data) == 0 {
		return nil, fmt.Errorf("engine: decode %s: no data", env.Type)
	}
	e, err := dec(env.Data)
	if err != nil {
		return nil, fmt.Errorf("engine: decode %s: %w", env.Type, err)
	}
	if err := checkDecoded(e); err != nil {
		return nil, fmt.Errorf("engine: decode %s: %w", env.Type, err)
	}
	return e, nil
}

// checkDecoded refuses an event the engine could never have written, so
// that a damaged log row fails recovery instead of being folded in: every
// transaction event names a transaction (ids start at 1), and every enum
// holds a valid value (the encoder refuses invalid ones; the decoder leaves
// a missing field at the invalid zero). Found by FuzzDecodeEvent.
func checkDecoded(e Event) error {
	switch e.(type) {
	case CoordStarted, CoordTxIDsReserved, PartEpochSeen:
	default:
		if e.Tx() == 0 {
			return errors.New("no transaction id")
		}
	}
	if _, err := json.Marshal(e); err != nil {
		return fmt.Errorf("invalid field: %w", err)
	}
	return nil
}
