package engine_test

import (
	"encoding"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tpcd/tpcd/engine"
)

// sampleEvents has one event of every kind with every field set, so a field
// that does not survive encoding shows up as a difference.
var sampleEvents = []engine.Event{
	engine.CoordStarted{Cluster: "7a3f", Epoch: 3},
	engine.CoordTxIDsReserved{Through: 2048},
	engine.CoordPreparing{TxID: 7, Epoch: 3, Participants: []engine.NodeID{0, 2}, Decider: ptr(engine.NodeID(2))},
	engine.CoordDecided{TxID: 7, Epoch: 3, Outcome: engine.OutcomeAbort, Participants: []engine.NodeID{0}, Reason: "p2 voted no"},
	engine.CoordEnded{TxID: 7},
	engine.PartEpochSeen{Cluster: "7a3f", Epoch: 3, Participants: []string{"10.0.0.1:9991", "10.0.0.2:9991"}},
	engine.PartPrepared{TxID: 7, GID: "tpcd:7a3f:3:7:0"},
	engine.PartVotedNo{TxID: 7, Reason: "deadlock detected"},
	engine.PartCommitted{TxID: 7, GID: "tpcd:7a3f:3:7:0:2"},
	engine.PartAborted{TxID: 7, GID: "tpcd:7a3f:3:7:0", Reason: "coordinator decided abort"},
	engine.PartForgotten{TxID: 7},
	engine.PartViolation{TxID: 7, Detail: "commit of a rolled-back transaction"},
}

func TestEventRoundTrip(t *testing.T) {
	var kinds []string
	for _, e := range sampleEvents {
		kinds = append(kinds, e.Kind())
	}
	slices.Sort(kinds)
	if got := engine.EventKinds(); !slices.Equal(got, kinds) {
		t.Fatalf("EventKinds() = %v, samples cover %v: add a sample for every new kind", got, kinds)
	}
	for _, e := range sampleEvents {
		t.Run(e.Kind(), func(t *testing.T) {
			b, err := engine.EncodeEvent(e)
			if err != nil {
				t.Fatal(err)
			}
			var env struct {
				Type string          `json:"type"`
				V    int             `json:"v"`
				Data json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(b, &env); err != nil {
				t.Fatalf("stored form %s is not an envelope: %v", b, err)
			}
			if env.Type != e.Kind() || env.V != engine.EventVersion {
				t.Fatalf("envelope type=%q v=%d, want %q v=%d", env.Type, env.V, e.Kind(), engine.EventVersion)
			}
			got, err := engine.DecodeEvent(b)
			if err != nil {
				t.Fatalf("decode %s: %v", b, err)
			}
			if !reflect.DeepEqual(got, e) {
				t.Fatalf("round trip of %s: got %#v, want %#v", b, got, e)
			}
			if got.Tx() != e.Tx() || engine.DescribeEvent(got) != engine.DescribeEvent(e) {
				t.Fatalf("decoded event differs: %s vs %s", engine.DescribeEvent(got), engine.DescribeEvent(e))
			}
		})
	}
}

func TestDecodeEventRejects(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		unknown  bool
	}{
		{name: "unknown kind", in: `{"type":"coord.teleported","v":1,"data":{}}`, unknown: true},
		{name: "empty kind", in: `{"v":1,"data":{}}`, unknown: true},
		{name: "version zero", in: `{"type":"coord.ended","v":0,"data":{"tx":1}}`},
		{name: "newer version", in: `{"type":"coord.ended","v":2,"data":{"tx":1}}`},
		{name: "unknown field", in: `{"type":"coord.ended","v":1,"data":{"tx":1,"txid":2}}`},
		{name: "no data", in: `{"type":"coord.ended","v":1}`},
		{name: "data of wrong type", in: `{"type":"coord.ended","v":1,"data":{"tx":"one"}}`},
		{name: "bad outcome", in: `{"type":"coord.decided","v":1,"data":{"tx":1,"epoch":1,"outcome":"maybe"}}`},
		{name: "malformed json", in: `{"type":"coord.ended","v":1,"data":{"tx":1}`},
		{name: "not an object", in: `[1,2,3]`},
		{name: "empty", in: ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := engine.DecodeEvent([]byte(tc.in))
			if err == nil {
				t.Fatalf("DecodeEvent(%s) = %#v, want an error", tc.in, e)
			}
			if got := errors.Is(err, engine.ErrUnknownEventKind); got != tc.unknown {
				t.Fatalf("DecodeEvent(%s): errors.Is(err, ErrUnknownEventKind) = %t, want %t (err: %v)", tc.in, got, tc.unknown, err)
			}
			if !strings.HasPrefix(err.Error(), "engine: ") {
				t.Errorf("error %q does not name the package", err)
			}
		})
	}
}

func TestEncodeEventRejectsInvalidEnum(t *testing.T) {
	if b, err := engine.EncodeEvent(engine.CoordDecided{TxID: 1, Epoch: 1}); err == nil {
		t.Fatalf("a decision without outcome encoded as %s", b)
	}
}

// textRoundTrip checks that each of vals reads back as itself from the
// text it marshals to.
func textRoundTrip[T interface {
	comparable
	encoding.TextMarshaler
}, PT interface {
	*T
	encoding.TextUnmarshaler
}](t *testing.T, what string, vals ...T) {
	t.Helper()
	for _, v := range vals {
		b, err := v.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back T
		if err := PT(&back).UnmarshalText(b); err != nil || back != v {
			t.Fatalf("%s %v: round trip gave %v, %v", what, v, back, err)
		}
	}
}

func TestEnumText(t *testing.T) {
	textRoundTrip(t, "outcome", engine.OutcomeCommit, engine.OutcomeAbort)
	textRoundTrip(t, "vote", engine.VoteYes, engine.VoteNo, engine.VoteReadOnly)
	if _, err := engine.Outcome(0).MarshalText(); err == nil {
		t.Error("the zero outcome marshalled")
	}
	if _, err := engine.Vote(9).MarshalText(); err == nil {
		t.Error("an unknown vote marshalled")
	}
	var o engine.Outcome
	if err := o.UnmarshalText([]byte("Commit")); err == nil {
		t.Error(`outcome "Commit" was accepted`)
	}
	var v engine.Vote
	if err := v.UnmarshalText([]byte("abstain")); err == nil {
		t.Error(`vote "abstain" was accepted`)
	}
	for _, s := range []string{engine.Outcome(7).String(), engine.Vote(7).String(), engine.DataOp(0).String(), engine.ErrorCode(0).String(), engine.Phase(0).String(), engine.PartPhase(0).String()} {
		if !strings.Contains(s, "(") {
			t.Errorf("an invalid enum renders as %q, which looks valid", s)
		}
	}
	if engine.CoordinatorNode.String() != "coordinator" || engine.NodeID(2).String() != "p2" {
		t.Error("node names changed; golden traces depend on them")
	}
}

func TestGIDRoundTrip(t *testing.T) {
	for _, g := range []engine.GID{
		{Cluster: "7a3f", Epoch: 1, Tx: 1, Node: 0},
		{Cluster: "0b6a4a52-8a0e-4f59-9a69-3f5a2e1e9b11", Epoch: 18446744073709551615, Tx: 18446744073709551615, Node: 2147483647},
		{Cluster: "c", Epoch: 12, Tx: 345, Node: 6},
		{Cluster: "c", Epoch: 12, Tx: 345, Node: 6, HasDecider: true, Decider: 0},
		{Cluster: "0b6a4a52-8a0e-4f59-9a69-3f5a2e1e9b11", Epoch: 18446744073709551615, Tx: 18446744073709551615, Node: 2147483647, HasDecider: true, Decider: 2147483647},
	} {
		s := g.String()
		if !strings.HasPrefix(s, engine.GIDPrefix) {
			t.Errorf("%s lacks the prefix %q", s, engine.GIDPrefix)
		}
		// PostgreSQL limits a GID to 199 bytes.
		if len(s) > 199 {
			t.Errorf("%s is %d bytes, more than PostgreSQL accepts", s, len(s))
		}
		back, ok := engine.ParseGID(s)
		if !ok || back != g {
			t.Errorf("ParseGID(%q) = %+v, %t; want %+v", s, back, ok, g)
		}
	}
}

func TestParseGIDRejects(t *testing.T) {
	for _, s := range []string{
		"",
		"tpcd:",
		"tpcd:c:1:1",                      // no node
		"tpcd:c:1:1:0:9:1",                // one part too many
		"tpcd:c:1:1:0:",                   // an empty decider
		"tpcd:c:1:1:0:-1",                 // a negative decider
		"tpcd::1:1:0",                     // no cluster
		"tpcd:c:0:1:0",                    // epoch 0 is never used
		"tpcd:c:1:0:0",                    // nor is tx 0
		"tpcd:c:x:1:0",                    // not a number
		"tpcd:c:1:-1:0",                   // negative
		"tpcd:c:1:1:-1",                   // negative node
		"tpcd:c:1:1:p0",                   // node by name
		"xa:c:1:1:0",                      // someone else's prepared transaction
		"TPCD:c:1:1:0",                    // prefix is case-sensitive
		"tpcd:c:1:1:0 ",                   // trailing space
		"tpcd:c:1:99999999999999999999:0", // overflow
	} {
		if g, ok := engine.ParseGID(s); ok {
			t.Errorf("ParseGID(%q) accepted it as %+v", s, g)
		}
	}
}

func ptr[T any](v T) *T { return &v }
