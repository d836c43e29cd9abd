package node

import (
	"context"
	"log/slog"
	"runtime"
	"slices"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/failpoint"
	"github.com/tpcd/tpcd/rpc"
)

// Limits of an outbox.
const (
	// maxBatch bounds the messages of one request, keeping a request well
	// under the default 1 MiB body limit of the peer (an exec carries SQL
	// and arguments; everything else is a few hundred bytes).
	maxBatch = 64
	// maxQueued bounds what waits for a peer that does not answer; beyond
	// it the oldest messages are dropped as lost. The protocol survives lost
	// messages (decisions are resent, votes time out, in-doubt participants
	// ask), and a peer that far behind is gone for all practical purposes.
	maxQueued = 100_000
	// sendTimeout bounds one request to a peer unless the node sets its
	// own (ParticipantOptions.SendTimeout).
	sendTimeout = 10 * time.Second
	// ackPatience is how long an acknowledgement waits for another message
	// to the same peer to travel with: when transactions follow each other
	// the acks of several share a request. An ack a client waits for
	// (engine.AckMessage.Prompt, asked for by a session of the PostgreSQL
	// front door, which waits for its commit to be applied before its
	// next statement) leaves at once; a client polling status for
	// "applied" over JSON-RPC polls every 10 ms anyway (api.WaitApplied),
	// and the coordinator's resend of a decision comes far later
	// (engine.DefaultRetryMin).
	ackPatience = 10 * time.Millisecond
)

// batchCaller sends a JSON-RPC batch: an *rpc.Client, or an *rpc.Failover
// for a coordinator with standbys.
type batchCaller interface {
	CallBatch(ctx context.Context, calls []rpc.BatchCall) error
	NotifyBatch(ctx context.Context, calls []rpc.BatchCall) error
}

// outbox carries one node's one-way messages to one peer. A single goroutine
// sends whatever has queued up as one JSON-RPC batch in one request, so
// under load the many small messages of concurrent transactions share a
// request's framing and system calls; when idle a message leaves at once,
// alone. One request in flight per peer is enough: while it is out, the
// next batch collects.
type outbox struct {
	to     engine.NodeID
	client batchCaller
	logger *slog.Logger
	// sent sees the outcome of every request: peer health.
	sent func(err error)
	// failed sees each message a request failed to deliver, for the engine
	// (SendFailed); nil when the sender does not care.
	failed func(m engine.Message)

	queue *batchQueue[engine.Message]
	// timeout bounds one request (sendTimeout unless set).
	timeout time.Duration
	// oneWay sends batches as notifications (rpc.Client.NotifyBatch),
	// without waiting for replies: for a sender that neither tracks the
	// peer's health nor learns of failed messages, to whom a reply says
	// nothing it would use.
	oneWay bool
}

// newOutbox returns the outbox of messages to peer to. A sender that passes
// neither sent nor failed sends one-way.
func newOutbox(to engine.NodeID, client batchCaller, logger *slog.Logger, sent func(error), failed func(engine.Message)) *outbox {
	q := newBatchQueue[engine.Message]()
	q.patient, q.patience = isPatientAck, ackPatience
	return &outbox{to: to, client: client, logger: logger, sent: sent, failed: failed, queue: q, timeout: sendTimeout,
		oneWay: sent == nil && failed == nil}
}

// isPatientAck reports whether m is an ack that may wait for company.
func isPatientAck(m engine.Message) bool {
	a, ok := m.(engine.AckMessage)
	return ok && !a.Prompt
}

// push queues m. It never blocks: the loop goroutine calls it.
func (o *outbox) push(m engine.Message) {
	if dropped, ok := o.queue.push(m, maxQueued); ok {
		o.logger.Warn("outbox full: oldest message dropped", "to", o.to, "method", dropped.Method(), "tx", dropped.Tx())
	}
}

// cutBeforeRepeatedDecision ends a batch before a second decision for one
// transaction (a resend queued behind the first): the failpoints that hold
// decisions back (failpoint.BeforeSend) wait for the first one's delivery,
// which a shared batch could never finish.
func cutBeforeRepeatedDecision(msgs []engine.Message) int {
	var decided []engine.TxID
	for i, m := range msgs {
		d, ok := m.(engine.DecisionRequest)
		if !ok {
			continue
		}
		if slices.Contains(decided, d.TxID) {
			return i
		}
		decided = append(decided, d.TxID)
	}
	return len(msgs)
}

// run sends until ctx ends; what is still queued then is dropped, as a
// stopping node's network would.
func (o *outbox) run(ctx context.Context) {
	var calls []rpc.BatchCall
	o.queue.drain(ctx.Done(), maxBatch, cutBeforeRepeatedDecision, func(batch []engine.Message) {
		calls = o.send(ctx, batch, calls)
		if o.oneWay {
			// A two-way batch collected the next one while it waited for
			// its reply. A one-way batch is gone once written: yielding
			// lets whatever else is runnable queue its messages first, so
			// that under load they leave together, and costs nothing when
			// idle.
			runtime.Gosched()
		}
	})
}

func (o *outbox) send(ctx context.Context, batch []engine.Message, calls []rpc.BatchCall) []rpc.BatchCall {
	for _, m := range batch {
		failpoint.BeforeSend(m)
	}
	calls = o.deliver(ctx, batch, calls[:0])
	for i, m := range batch {
		err := calls[i].Err
		failpoint.AfterSend(m, err)
		if err != nil {
			o.logger.Debug("send failed", "to", o.to, "method", m.Method(), "tx", m.Tx(), "err", err)
			if o.failed != nil && ctx.Err() == nil {
				o.failed(m)
			}
		}
	}
	clear(calls)
	return calls
}

// deliver sends batch and appends one call (with its outcome) per message
// to calls. A batch the peer refuses as a whole as too large (each message
// fits its limit, but not all of them together) is split in halves and
// sent again; nothing of a refused request has run.
func (o *outbox) deliver(ctx context.Context, batch []engine.Message, calls []rpc.BatchCall) []rpc.BatchCall {
	start := len(calls)
	for _, m := range batch {
		calls = append(calls, rpc.BatchCall{Method: m.Method(), Params: m})
	}
	sctx, cancel := context.WithTimeout(ctx, o.timeout)
	if o.oneWay {
		// Written is as far as a one-way send knows: each message counts
		// as delivered unless the write failed.
		err := o.client.NotifyBatch(sctx, calls[start:])
		cancel()
		for i := range calls[start:] {
			calls[start+i].Err = err
		}
		return calls
	}
	err := o.client.CallBatch(sctx, calls[start:])
	cancel()
	if err != nil && len(batch) > 1 && rpc.IsCode(err, rpc.CodeInvalidRequest) {
		half := len(batch) / 2
		calls = o.deliver(ctx, batch[:half], calls[:start])
		return o.deliver(ctx, batch[half:], calls)
	}
	if err == nil {
		// A peer that refused every message (stopping, wrong token) is
		// not healthy either.
		err = calls[start].Err
		for _, c := range calls[start+1:] {
			if c.Err == nil {
				err = nil
				break
			}
		}
	}
	if o.sent != nil {
		o.sent(err)
	}
	return calls
}

// messageMethods names the RPC methods of node-to-node messages.
func messageMethods(msgs ...engine.Message) []string {
	names := make([]string, len(msgs))
	for i, m := range msgs {
		names[i] = m.Method()
	}
	return names
}
