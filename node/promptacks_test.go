package node_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/node"
)

// ackRecorder is a participant's observer that notes, of each ack the
// participant sends, whether it is prompt.
type ackRecorder struct {
	mu     sync.Mutex
	prompt map[engine.TxID]bool
}

func (r *ackRecorder) Performed(e engine.Effect) {
	if s, ok := e.(engine.Send); ok {
		if a, ok := s.Msg.(engine.AckMessage); ok {
			r.mu.Lock()
			r.prompt[a.TxID] = a.Prompt
			r.mu.Unlock()
		}
	}
}

func (r *ackRecorder) acked(tx engine.TxID) (prompt, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	prompt, ok = r.prompt[tx]
	return prompt, ok
}

func (*ackRecorder) Recovered(int, time.Duration)       {}
func (*ackRecorder) Stepped(engine.Input, engine.Ready) {}
func (*ackRecorder) Durable(engine.Event)               {}
func (*ackRecorder) Ended([]engine.StatusReply)         {}
func (*ackRecorder) Appended(int, time.Duration, error) {}

// TestPromptAcksForClientsThatWait commits through the coordinator's
// in-process methods, as the PostgreSQL front door does: a call marked
// api.WithPromptAcks, whose client waits for the commit to be applied,
// has the prepared participant's ack sent prompt (not held for company);
// an unmarked one has it patient. Both the one-call form and begin, exec
// and commit are checked, with both protocols.
func TestPromptAcksForClientsThatWait(t *testing.T) {
	for _, protocol := range []engine.Protocol{engine.ProtocolDecider, engine.ProtocolClassic} {
		t.Run(protocol.String(), func(t *testing.T) {
			recs := []*ackRecorder{{prompt: map[engine.TxID]bool{}}, {prompt: map[engine.TxID]bool{}}}
			c := testcluster.Start(t, testcluster.Config{
				Participants: 2,
				Coordinator:  func(o *node.CoordinatorOptions) { o.Engine.Protocol = protocol },
				Participant:  func(i int, o *node.ParticipantOptions) { o.Observer = recs[i] },
			})
			ctx := t.Context()
			key := 0
			oneCall := func(ctx context.Context) engine.TxID {
				key += 2
				r, err := c.Coord.Transact(ctx, api.TransactParams{Commit: true, Statements: []api.StatementParams{
					stmt(0, "INSERT INTO kv VALUES ($1, 'a')", key), stmt(1, "INSERT INTO kv VALUES ($1, 'b')", key+1)}})
				if err != nil || r.Outcome == nil || *r.Outcome != engine.OutcomeCommit {
					t.Fatalf("transact: %v %+v", err, r)
				}
				return r.TxID
			}
			stepwise := func(ctx context.Context) engine.TxID {
				key += 2
				r, err := c.Coord.Transact(ctx, api.TransactParams{Statements: []api.StatementParams{
					stmt(0, "INSERT INTO kv VALUES ($1, 'a')", key), stmt(1, "INSERT INTO kv VALUES ($1, 'b')", key+1)}})
				if err != nil {
					t.Fatalf("transact without commit: %v", err)
				}
				if o, err := c.Coord.Commit(ctx, r.TxID); err != nil || o.Outcome != engine.OutcomeCommit {
					t.Fatalf("commit %d: %v %+v", r.TxID, err, o)
				}
				return r.TxID
			}
			for _, tc := range []struct {
				name string
				run  func(context.Context) engine.TxID
				ctx  context.Context
				want bool
			}{
				{"one call, marked", oneCall, api.WithPromptAcks(ctx), true},
				{"one call", oneCall, ctx, false},
				{"begin, exec, commit, marked", stepwise, api.WithPromptAcks(ctx), true},
				{"begin, exec, commit", stepwise, ctx, false},
			} {
				tx := tc.run(tc.ctx)
				if err := c.Coord.WaitApplied(ctx, tx); err != nil {
					t.Fatalf("%s: wait applied: %v", tc.name, err)
				}
				// The decider's ack (after its marker is gone) is never
				// waited for; a classic commit has none.
				prompts := 0
				for i, r := range recs {
					var prompt, ok bool
					testcluster.Eventually(t, "participant's ack of "+tc.name, func() bool { prompt, ok = r.acked(tx); return ok })
					if prompt {
						prompts++
					}
					if prompt && !tc.want {
						t.Errorf("%s: p%d's ack of %d is prompt; nobody asked", tc.name, i, tx)
					}
				}
				want := 0
				if tc.want {
					want = map[engine.Protocol]int{engine.ProtocolDecider: 1, engine.ProtocolClassic: 2}[protocol]
				}
				if prompts != want {
					t.Errorf("%s: %d prompt acks of transaction %d; want %d", tc.name, prompts, tx, want)
				}
			}
		})
	}
}
