package node

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// Messages that each fit the peer's request limit but not all together
// reach it anyway: the outbox splits a batch the peer refuses as too large.
func TestOutboxSplitsBatchTooLargeForPeer(t *testing.T) {
	const n = 12
	var mu sync.Mutex
	got := map[engine.TxID]bool{}
	all := make(chan struct{})
	srv := rpc.NewServer(rpc.ServerOptions{
		MaxRequestBytes: 4096,
		Inline:          []string{engine.ExecRequest{}.Method()},
		Methods: map[string]rpc.Handler{
			engine.ExecRequest{}.Method(): func(_ context.Context, raw json.RawMessage) (any, error) {
				var m engine.ExecRequest
				if err := rpc.DecodeParams(raw, &m); err != nil {
					return nil, err
				}
				mu.Lock()
				defer mu.Unlock()
				got[m.TxID] = true
				if len(got) == n {
					close(all)
				}
				return api.Ack{}, nil
			},
		},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())

	client := rpc.NewClient(ln.Addr().String(), rpc.ClientOptions{Stream: true})
	defer client.Close()
	var failed []engine.Message
	var fmu sync.Mutex
	o := newOutbox(0, client, slog.New(slog.DiscardHandler), nil, func(m engine.Message) {
		fmu.Lock()
		failed = append(failed, m)
		fmu.Unlock()
	})
	// Queue everything before the sender starts, so it all goes as one batch
	// first: about 12 KB against a 4 KB limit.
	for i := range n {
		o.push(engine.ExecRequest{TxID: engine.TxID(i + 1), SQL: "SELECT '" + strings.Repeat("x", 900) + "'"})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go o.run(ctx)
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("peer got %d of %d messages", len(got), n)
	}
	fmu.Lock()
	defer fmu.Unlock()
	if len(failed) != 0 {
		t.Fatalf("%d messages reported failed", len(failed))
	}
}

// A decision queued twice for one transaction (a resend behind the first)
// starts a new batch, so a failpoint holding the second until the first is
// delivered cannot wait on itself.
func TestOutboxTakeSplitsRepeatedDecision(t *testing.T) {
	o := newOutbox(0, nil, slog.New(slog.DiscardHandler), nil, nil)
	o.push(engine.DecisionRequest{TxID: 7, Outcome: engine.OutcomeCommit})
	o.push(engine.ExecRequest{TxID: 8})
	o.push(engine.DecisionRequest{TxID: 9, Outcome: engine.OutcomeCommit})
	o.push(engine.DecisionRequest{TxID: 7, Outcome: engine.OutcomeCommit})
	o.push(engine.ExecRequest{TxID: 10})
	first := o.queue.take(nil, maxBatch, cutBeforeRepeatedDecision)
	if len(first) != 3 {
		t.Fatalf("first batch has %d messages, want 3 (up to the repeated decision): %v", len(first), first)
	}
	second := o.queue.take(nil, maxBatch, cutBeforeRepeatedDecision)
	if len(second) != 2 || second[0].Tx() != 7 || second[1].Tx() != 10 {
		t.Fatalf("second batch %v, want the repeated decision and what follows", second)
	}
	if rest := o.queue.take(nil, maxBatch, cutBeforeRepeatedDecision); len(rest) != 0 {
		t.Fatalf("left over: %v", rest)
	}
}
