package api

import (
	"context"
	"fmt"
	"time"

	"github.com/tpcd/tpcd/engine"
)

// WaitApplied polls the coordinator's status of committed transaction tx
// until it is applied on every participant: commit answers once the
// decision is durable, and COMMIT PREPARED follows, so a caller whose next
// transaction depends on this one (a table it created) waits here. call is
// the caller's way to make an RPC (rpc.Client.Call or a wrapper of it).
func WaitApplied(ctx context.Context, call func(ctx context.Context, method string, params, result any) error, tx engine.TxID) error {
	for {
		var st engine.StatusReply
		if err := call(ctx, MethodStatus, TxParams{TxID: tx}, &st); err != nil {
			return fmt.Errorf("status of transaction %d: %w", tx, err)
		}
		if st.State != engine.PhaseCommitting.String() || st.Applied {
			// Committed, or forgotten once every participant acknowledged;
			// or applied, with only the decider's marker left to drop.
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for transaction %d to be applied: %w", tx, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

type promptAcksKey struct{}

// WithPromptAcks marks the calls made with ctx to a coordinator in the
// same process (node.Coordinator's Commit and Transact) as those of a
// client that waits for each commit to be applied before its next
// statement, as a session of the PostgreSQL front door does: the
// participants then send their acks of its decisions at once, where they
// would otherwise wait a little for other messages to travel with
// (engine.ClientCommit.PromptAcks).
func WithPromptAcks(ctx context.Context) context.Context {
	return context.WithValue(ctx, promptAcksKey{}, true)
}

// PromptAcks reports whether ctx was marked by WithPromptAcks.
func PromptAcks(ctx context.Context) bool {
	v, _ := ctx.Value(promptAcksKey{}).(bool)
	return v
}
