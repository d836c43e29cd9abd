package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// tpcdDriver runs transactions in one of the forms (FormInteractive and
// the others): through a coordinator, or for the direct and plain forms
// partly or wholly straight to the participants.
type tpcdDriver struct {
	conns   []*rpc.Failover
	timeout time.Duration
	form    string
	// parts[conn][node] reach the participants for the direct and plain
	// forms, a connection per client connection and participant.
	parts [][]*rpc.Failover
	// keyPrefix, if set, starts the idempotency key of every transact
	// call; a sequence number ends it.
	keyPrefix string
	keySeq    atomic.Uint64
}

// keyRetries is how often transact sends a call again after its reply was
// lost on the way: with its key, the repeat is answered with the first
// call's outcome.
const keyRetries = 3

func newTPCDDriver(addrs []string, conns int, timeout time.Duration, form, transport string) *tpcdDriver {
	d := &tpcdDriver{timeout: timeout, form: form}
	// With TransportMux the client connections to one address share its
	// streams: one Failover for each order of addresses.
	shared := map[int]*rpc.Failover{}
	for i := range conns {
		// HTTP/1.1 with keep-alive through net/http's transport, as most
		// applications' HTTP clients speak it (a client has one call out
		// at a time), or the same calls as frames of batch streams.
		// A coordinator's standbys, if given, take calls when it goes.
		// Connections start at the addresses in turn, so that
		// coordinators serving at once (--slots) share the clients.
		k := i % len(addrs)
		if f, ok := shared[k]; ok {
			d.conns = append(d.conns, f)
			continue
		}
		order := append(append([]string{}, addrs[k:]...), addrs[:k]...)
		f := rpc.NewFailover(order, clientOptions(transport))
		if transport == TransportMux {
			shared[k] = f
		}
		d.conns = append(d.conns, f)
	}
	return d
}

// clientOptions are those of the clients' calls over transport.
func clientOptions(transport string) rpc.ClientOptions {
	switch transport {
	case TransportStream:
		return rpc.ClientOptions{Stream: true}
	case TransportMux:
		return rpc.ClientOptions{Stream: true, Multiplex: muxStreams}
	}
	return rpc.ClientOptions{HTTP1: true}
}

func (d *tpcdDriver) close() {
	for _, c := range d.conns {
		c.Close()
	}
	for _, ps := range d.parts {
		for _, p := range ps {
			p.Close()
		}
	}
}

// dialParticipants opens, for each client connection, one to each
// participant, for the direct and plain forms; with TransportMux the
// client connections share one to each.
func (d *tpcdDriver) dialParticipants(addrs []string, transport string) {
	d.parts = make([][]*rpc.Failover, len(d.conns))
	for i := range d.conns {
		if i > 0 && transport == TransportMux {
			d.parts[i] = d.parts[0]
			continue
		}
		for _, a := range addrs {
			d.parts[i] = append(d.parts[i], rpc.NewFailover([]string{a}, clientOptions(transport)))
		}
	}
}

// participants asks the coordinator for its participants' addresses, in
// node order.
func (d *tpcdDriver) participants(ctx context.Context) ([]string, error) {
	var nodes []api.NodeHealth
	if err := d.conns[0].Call(ctx, api.MethodNodes, struct{}{}, &nodes); err != nil {
		return nil, fmt.Errorf("ask the coordinator for its participants: %w", err)
	}
	if len(nodes) == 0 {
		return nil, errors.New("the coordinator reports no participants")
	}
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Address
	}
	return addrs, nil
}

// createTable creates bench_kv on every participant in one transaction.
func (d *tpcdDriver) createTable(ctx context.Context, participants int) error {
	c := d.conns[0]
	var b engine.BeginReply
	if err := c.Call(ctx, api.MethodBegin, struct{}{}, &b); err != nil {
		return fmt.Errorf("create bench_kv: begin: %w", err)
	}
	for i := range participants {
		n := engine.NodeID(i)
		if err := c.Call(ctx, api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &n, SQL: CreateTableSQL}, nil); err != nil {
			_ = c.Call(ctx, api.MethodRollback, api.TxParams{TxID: b.TxID}, nil)
			return fmt.Errorf("create bench_kv on participant %d: %w", i, err)
		}
	}
	var r engine.OutcomeReply
	if err := c.Call(ctx, api.MethodCommit, api.TxParams{TxID: b.TxID}, &r); err != nil {
		return fmt.Errorf("create bench_kv: commit: %w", err)
	}
	if r.Outcome != engine.OutcomeCommit {
		return fmt.Errorf("create bench_kv: the transaction aborted: %s", r.Reason)
	}
	// The load must not reach a participant before its CREATE TABLE is
	// applied there.
	if err := api.WaitApplied(ctx, c.Call, b.TxID); err != nil {
		return fmt.Errorf("create bench_kv: %w", err)
	}
	return nil
}

// client returns client i's transaction function; clients share the
// connections round robin.
func (d *tpcdDriver) client(i int) txFunc {
	c := d.conns[i%len(d.conns)]
	switch d.form {
	case FormDirect:
		parts := d.parts[i%len(d.conns)]
		return func(ctx context.Context, plan []stmt, sp *spans) (outcome, string) {
			return d.directTx(ctx, c, parts, plan, sp)
		}
	case FormPlain:
		// The plain form plans every transaction on one participant.
		parts := d.parts[i%len(d.conns)]
		return func(ctx context.Context, plan []stmt, sp *spans) (outcome, string) {
			return d.plainTx(ctx, parts[plan[0].node], plan, sp)
		}
	case FormSingle:
		return func(ctx context.Context, plan []stmt, sp *spans) (outcome, string) {
			return d.transact(ctx, c, plan, sp)
		}
	}
	return func(ctx context.Context, plan []stmt, sp *spans) (outcome, string) {
		return d.tx(ctx, c, plan, sp)
	}
}

// needsParticipants reports whether the form calls the participants.
func (d *tpcdDriver) needsParticipants() bool { return d.form == FormDirect || d.form == FormPlain }

// transact runs plan and its commit in one call.
func (d *tpcdDriver) transact(ctx context.Context, c *rpc.Failover, plan []stmt, sp *spans) (outcome, string) {
	p := api.TransactParams{Commit: true, Statements: make([]api.StatementParams, len(plan))}
	nodes := make([]engine.NodeID, len(plan))
	for i, s := range plan {
		nodes[i] = engine.NodeID(s.node)
		p.Statements[i] = api.StatementParams{Node: &nodes[i], SQL: UpsertSQL, Args: []any{s.key, s.val}}
	}
	if d.keyPrefix != "" {
		p.Key = d.keyPrefix + strconv.FormatUint(d.keySeq.Add(1), 10)
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	var r struct {
		Outcome engine.Outcome `json:"outcome"`
		Reason  string         `json:"reason"`
	}
	err := c.Call(ctx, api.MethodTransact, p, &r)
	for try := 0; p.Key != "" && rpc.IsTransport(err) && ctx.Err() == nil && try < keyRetries; try++ {
		err = c.Call(ctx, api.MethodTransact, p, &r)
	}
	switch {
	case rpc.IsCode(err, rpc.CodeAborted):
		// A statement failed and the transaction that the call began was
		// rolled back.
		return outAborted, fmt.Sprintf("transact: %v", err)
	case err != nil:
		// Whether the transaction committed is unknown.
		return outFailed, fmt.Sprintf("transact: %v", err)
	case r.Outcome != engine.OutcomeCommit:
		return outAborted, "transact: " + r.Reason
	}
	sp.mark("transact")
	return outCommitted, ""
}

// plainTx runs plan on its one participant as a plain transaction. Its
// outcome is unknown when the reply is lost: there is no key to ask
// about.
func (d *tpcdDriver) plainTx(ctx context.Context, part *rpc.Failover, plan []stmt, sp *spans) (outcome, string) {
	p := api.TransactParams{Commit: true, Statements: make([]api.StatementParams, len(plan))}
	n := engine.NodeID(plan[0].node)
	for i, s := range plan {
		p.Statements[i] = api.StatementParams{Node: &n, SQL: UpsertSQL, Args: []any{s.key, s.val}}
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	var r struct {
		Outcome engine.Outcome `json:"outcome"`
	}
	err := part.Call(ctx, api.MethodPlainTransact, p, &r)
	switch {
	case rpc.IsCode(err, rpc.CodeAborted):
		return outAborted, fmt.Sprintf("plain_transact: %v", err)
	case err != nil:
		return outFailed, fmt.Sprintf("plain_transact: %v", err)
	case r.Outcome != engine.OutcomeCommit:
		return outFailed, fmt.Sprintf("plain_transact: answered outcome %q", r.Outcome)
	}
	sp.mark("plain")
	return outCommitted, ""
}

func (d *tpcdDriver) tx(ctx context.Context, c *rpc.Failover, plan []stmt, sp *spans) (outcome, string) {
	call := func(method string, params, result any) error {
		cctx, cancel := context.WithTimeout(ctx, d.timeout)
		defer cancel()
		return c.Call(cctx, method, params, result)
	}
	// The first exec begins the transaction (no begin call) and its reply
	// names it.
	var tx engine.TxID
	for _, s := range plan {
		n := engine.NodeID(s.node)
		var reply struct {
			TxID engine.TxID `json:"tx"`
		}
		err := call(api.MethodExec, api.ExecParams{TxID: tx, Node: &n, SQL: UpsertSQL, Args: []any{s.key, s.val}}, &reply)
		if err == nil {
			tx = reply.TxID
			sp.mark("exec")
			continue
		}
		switch {
		case tx == 0 && rpc.IsCode(err, rpc.CodeAborted):
			// The statement that began the transaction failed: the
			// coordinator rolled it back already.
			return outAborted, fmt.Sprintf("exec: %v", err)
		case tx == 0:
			// Whether a transaction was begun is unknown; if one was, the
			// coordinator's idle timeout ends it.
			return outFailed, fmt.Sprintf("exec: %v", err)
		case rpc.IsCode(err, rpc.CodeAborted):
			// The transaction is abort-only; rolling back now frees its
			// connections on the participants without waiting for a
			// timeout. The outcome is abort whatever rollback answers.
			_ = call(api.MethodRollback, api.TxParams{TxID: tx}, nil)
			return outAborted, fmt.Sprintf("exec: %v", err)
		}
		// Anything else (a lost connection, a timeout): the outcome is
		// known only if the rollback gets through.
		if call(api.MethodRollback, api.TxParams{TxID: tx}, nil) == nil {
			return outAborted, fmt.Sprintf("exec: %v", err)
		}
		return outFailed, fmt.Sprintf("exec: %v", err)
	}
	var r engine.OutcomeReply
	if err := call(api.MethodCommit, api.TxParams{TxID: tx}, &r); err != nil {
		return outFailed, fmt.Sprintf("commit: %v", err)
	}
	if r.Outcome != engine.OutcomeCommit {
		return outAborted, "commit: " + r.Reason
	}
	sp.mark("commit")
	return outCommitted, ""
}

// directTx runs plan as the interactive form does, but sends statements
// straight to their participants: the first goes through the coordinator
// and begins the transaction (its answer names it and carries the header
// the others need), as do the later ones on the same participant; each
// other statement goes to its participant itself. The commit names the
// participants reached directly and how many statements answered ok on
// each.
func (d *tpcdDriver) directTx(ctx context.Context, c *rpc.Failover, parts []*rpc.Failover, plan []stmt, sp *spans) (outcome, string) {
	call := func(to *rpc.Failover, method string, params, result any) error {
		cctx, cancel := context.WithTimeout(ctx, d.timeout)
		defer cancel()
		return to.Call(cctx, method, params, result)
	}
	first := engine.NodeID(plan[0].node)
	var b engine.ExecReply
	err := call(c, api.MethodExec, api.ExecParams{Node: &first, SQL: UpsertSQL, Args: []any{plan[0].key, plan[0].val}}, &b)
	switch {
	case rpc.IsCode(err, rpc.CodeAborted):
		return outAborted, fmt.Sprintf("exec: %v", err)
	case err != nil:
		return outFailed, fmt.Sprintf("exec: %v", err)
	}
	sp.mark("exec")
	direct := api.NewDirectTx(b.TxID, b.Cluster, b.Epoch)
	for _, s := range plan[1:] {
		n := engine.NodeID(s.node)
		var err error
		if n == first {
			err = call(c, api.MethodExec, api.ExecParams{TxID: b.TxID, Node: &n, SQL: UpsertSQL, Args: []any{s.key, s.val}}, nil)
		} else {
			err = call(parts[s.node], api.MethodDirectExec, direct.Exec(n, UpsertSQL, []any{s.key, s.val}), nil)
			direct.Answered(n, err == nil, true)
		}
		if err != nil {
			// Whatever became of the statement, the transaction cannot
			// commit; the rollback names its direct branches so that they
			// end now rather than at a timeout.
			if call(c, api.MethodRollback, direct.End(), nil) == nil {
				return outAborted, fmt.Sprintf("exec on p%d: %v", s.node, err)
			}
			return outFailed, fmt.Sprintf("exec on p%d: %v", s.node, err)
		}
		sp.mark("exec")
	}
	var r engine.OutcomeReply
	if err := call(c, api.MethodCommit, direct.End(), &r); err != nil {
		return outFailed, fmt.Sprintf("commit: %v", err)
	}
	if r.Outcome != engine.OutcomeCommit {
		return outAborted, "commit: " + r.Reason
	}
	sp.mark("commit")
	return outCommitted, ""
}
