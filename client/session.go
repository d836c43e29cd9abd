package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// DefaultReconnectWait is how long a session that was connected keeps
// trying to reach a coordinator that went away before a command fails.
const DefaultReconnectWait = 3 * time.Second

// SessionOptions configure a Session.
type SessionOptions struct {
	// Notice receives one-line messages about the connection and the open
	// transaction ("reconnected", "transaction 7 is gone"). Default: dropped.
	Notice func(string)
	// ReconnectWait bounds the retries when the coordinator cannot be
	// reached after it was; 0 means DefaultReconnectWait, negative none.
	ReconnectWait time.Duration
	Logger        *slog.Logger
	// Token is presented to the coordinator (its client token, or the
	// shared auth token); empty for a coordinator that requires none.
	Token string
	// TLS, if set, makes the session speak TLS (see rpc.TLSFiles).
	TLS *tls.Config
	// Standbys are the addresses of coordinators that take the
	// coordinator's place when it goes (tpcd coordinator --lease): calls
	// go to whichever serves, and a session waits up to
	// DefaultTakeOverWait for one when none does (unless ReconnectWait
	// says otherwise).
	Standbys []string
}

// DefaultTakeOverWait is how long a session whose coordinator has
// standbys keeps trying to reach one: a standby takes over a few seconds
// (its lease) after the coordinator went.
const DefaultTakeOverWait = 20 * time.Second

// Session is a conversation with one coordinator: the open transaction, the
// coordinator's incarnation (epoch) last seen, and the number of
// participants. It is not safe for concurrent use.
type Session struct {
	rpc    *rpc.Failover
	opts   SessionOptions
	logger *slog.Logger

	tx       engine.TxID // the open transaction, 0 if none
	txFailed bool        // a statement of tx failed: it can only abort
	// txUnsure is set when a call about tx got no answer: whether it still
	// exists is learnt from status once the coordinator answers again.
	txUnsure bool
	lastTx   engine.TxID // the transaction status reports without an id
	// aborted remembers why transactions of this session ended without a
	// commit request, for status to explain a coordinator that forgot them.
	aborted map[engine.TxID]string
	// lost is the open transaction the coordinator dropped, until the user
	// has been told on the next statement (a notice alone scrolls by).
	lost    engine.TxID
	lostWhy string

	contacted bool
	broken    bool // the last call got no answer
	epoch     engine.Epoch
	cluster   string
	nodes     int

	// parts call the participants, for statements sent straight to them
	// (a load's --direct); opened on first use.
	parts []*rpc.Failover
}

// NewSession makes a session with the coordinator at addr (HOST:PORT), and
// its standbys if any (SessionOptions.Standbys). It connects on first use.
func NewSession(addr string, opts SessionOptions) *Session {
	if opts.Notice == nil {
		opts.Notice = func(string) {}
	}
	if opts.ReconnectWait == 0 {
		opts.ReconnectWait = DefaultReconnectWait
		if len(opts.Standbys) > 0 {
			opts.ReconnectWait = DefaultTakeOverWait
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Session{
		rpc:    rpc.NewFailover(append([]string{addr}, opts.Standbys...), opts.clientOptions()),
		opts:   opts,
		logger: opts.Logger,
	}
}

// clientOptions are how the session calls any node: the coordinator, and
// the participants it reaches straight.
func (o SessionOptions) clientOptions() rpc.ClientOptions {
	return rpc.ClientOptions{Logger: o.Logger, DialTimeout: 2 * time.Second, Token: o.Token, TLS: o.TLS}
}

// Addr is the address of the coordinator calls go to now.
func (s *Session) Addr() string { return s.rpc.Addr() }

// Tx is the open transaction, 0 if none.
func (s *Session) Tx() engine.TxID { return s.tx }

// TxFailed reports whether a statement of the open transaction failed, so
// that it can only roll back.
func (s *Session) TxFailed() bool { return s.tx != 0 && s.txFailed }

// Participants is the number of participants last reported, 0 if unknown.
func (s *Session) Participants() int { return s.nodes }

// Epoch and Cluster describe the coordinator last reached.
func (s *Session) Epoch() engine.Epoch { return s.epoch }

// Cluster is the id of the coordinator's cluster.
func (s *Session) Cluster() string { return s.cluster }

// Close releases the connection. It leaves an open transaction alone; see
// Finish.
func (s *Session) Close() error {
	for _, p := range s.parts {
		p.Close()
	}
	return s.rpc.Close()
}

// participants opens the session's connections to the participants, at
// the addresses the coordinator reaches them at, with the session's token
// and TLS.
func (s *Session) participants(ctx context.Context) ([]*rpc.Failover, error) {
	if s.parts != nil {
		return s.parts, nil
	}
	nodes, err := s.listNodes(ctx)
	if err != nil {
		return nil, s.explain(err)
	}
	for _, n := range nodes {
		s.parts = append(s.parts, rpc.NewFailover([]string{n.Address}, s.opts.clientOptions()))
	}
	return s.parts, nil
}

// Connect reaches the coordinator and learns its incarnation and
// participants. Commands call it themselves; an interactive shell calls it
// first to greet the user.
func (s *Session) Connect(ctx context.Context) error {
	return s.check(ctx)
}

// Finish rolls back a transaction left open and says so. It is what ending
// a session means: no transaction outlives its client on purpose.
func (s *Session) Finish(ctx context.Context) {
	if s.tx == 0 || s.broken {
		return
	}
	id := s.tx
	var r engine.OutcomeReply
	err := s.call(ctx, api.MethodRollback, api.TxParams{TxID: id}, &r)
	s.endTx()
	if err != nil {
		s.opts.Notice(fmt.Sprintf("could not roll back transaction %d: %s", id, oneLine(describe(err, s.Addr()))))
		return
	}
	s.opts.Notice(fmt.Sprintf("rolled back transaction %d, left open", id))
}

// call is one RPC; it tracks whether the coordinator answered.
func (s *Session) call(ctx context.Context, method string, params, result any) error {
	err := s.rpc.Call(ctx, method, params, result)
	if rpc.IsTransport(err) && ctx.Err() == nil {
		s.broken = true
	}
	return err
}

// check makes sure the coordinator answers before a command runs, and
// tells the user when it restarted or came back, and what became of the
// open transaction. A ping costs a round trip on a local network and
// catches a restart that happened while the user was idle, which a broken
// connection alone may not reveal (the transport re-dials silently).
func (s *Session) check(ctx context.Context) error {
	var ping api.PingReply
	err := s.call(ctx, api.MethodPing, struct{}{}, &ping)
	if err != nil && rpc.IsTransport(err) && s.contacted && s.opts.ReconnectWait > 0 && ctx.Err() == nil {
		s.opts.Notice(fmt.Sprintf("lost the connection to coordinator %s; reconnecting...", s.Addr()))
		err = s.retryPing(ctx, &ping)
	}
	if err != nil {
		if ctx.Err() == nil && rpc.IsTransport(err) {
			s.broken = true
		}
		return s.identify(ctx, err)
	}
	if err := s.notCoordinator(ping); err != nil {
		return err
	}
	wasBroken := s.broken
	s.broken = false
	restarted := s.contacted && ping.Epoch != s.epoch
	switch {
	case restarted:
		s.opts.Notice(fmt.Sprintf("coordinator %s restarted or took over (epoch %d -> %d); reconnected", s.Addr(), s.epoch, ping.Epoch))
	case wasBroken && s.contacted:
		s.opts.Notice(fmt.Sprintf("reconnected to coordinator %s", s.Addr()))
	}
	first := !s.contacted
	s.contacted, s.epoch, s.cluster = true, ping.Epoch, ping.Cluster
	if first || restarted || s.nodes == 0 {
		if _, err := s.listNodes(ctx); err != nil {
			return err
		}
	}
	if s.tx != 0 && (restarted || s.txUnsure) {
		s.recheckTx(ctx, restarted)
	}
	return nil
}

func (s *Session) retryPing(ctx context.Context, ping *api.PingReply) error {
	deadline := time.Now().Add(s.opts.ReconnectWait)
	wait := 100 * time.Millisecond
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		err := s.rpc.Call(ctx, api.MethodPing, struct{}{}, ping)
		if err == nil || !rpc.IsTransport(err) || time.Now().After(deadline) {
			return err
		}
		wait = min(2*wait, time.Second)
	}
}

// recheckTx asks where the open transaction stands after the coordinator
// restarted or a call about it went unanswered, and forgets it if it is no
// longer open.
func (s *Session) recheckTx(ctx context.Context, restarted bool) {
	id := s.tx
	var st engine.StatusReply
	if err := s.call(ctx, api.MethodStatus, api.TxParams{TxID: id}, &st); err != nil {
		return // the command that follows reports the trouble
	}
	s.txUnsure = false
	if st.State == engine.PhaseActive.String() {
		return
	}
	s.endTx()
	why := describeState(st)
	if restarted && (st.State == "forgotten" || st.State == engine.PhaseAborted.String()) {
		why = "the coordinator restarted and aborted it"
		s.noteAborted(id, "the coordinator restarted while it was open")
	}
	s.lost, s.lostWhy = id, why
	s.opts.Notice(fmt.Sprintf("transaction %d is gone: %s", id, why))
}

// noteAborted records that tx ended without a commit request. Under
// presumed abort such a transaction cannot have committed, even when the
// coordinator kept no record of it and calls it "forgotten".
func (s *Session) noteAborted(tx engine.TxID, why string) {
	if s.aborted == nil {
		s.aborted = map[engine.TxID]string{}
	}
	s.aborted[tx] = why
}

func (s *Session) endTx() {
	if s.tx != 0 {
		s.lastTx = s.tx
	}
	s.tx, s.txFailed, s.txUnsure = 0, false, false
}

// listNodes asks for the participants and remembers how many there are.
func (s *Session) listNodes(ctx context.Context) ([]api.NodeHealth, error) {
	var nodes []api.NodeHealth
	if err := s.call(ctx, api.MethodNodes, struct{}{}, &nodes); err != nil {
		return nil, err
	}
	s.nodes = len(nodes)
	return nodes, nil
}

// Do runs one command. Help, quit and load are not handled here (see
// Runner); an error leaves the session usable.
func (s *Session) Do(ctx context.Context, c Command) (*Result, error) {
	if err := s.check(ctx); err != nil {
		return nil, s.explain(err)
	}
	switch c.Kind {
	case CmdBegin:
		return s.begin(ctx, c)
	case CmdExec:
		return s.exec(ctx, c)
	case CmdExecute:
		return s.execute(ctx, c)
	case CmdPlain:
		return s.plain(ctx, c)
	case CmdCommit:
		return s.commit(ctx)
	case CmdRollback:
		return s.rollback(ctx)
	case CmdStatus:
		if c.Key != "" {
			return s.statusByKey(ctx, c.Key)
		}
		return s.status(ctx, c.TxID)
	case CmdNodes:
		return s.nodesResult(ctx)
	case CmdInDoubt:
		return s.inDoubt(ctx)
	case CmdResolve:
		var r engine.StatusReply
		if err := s.call(ctx, api.MethodResolve, api.TxParams{TxID: c.TxID}, &r); err != nil {
			return nil, s.explain(err)
		}
		return &Result{Kind: CmdResolve, Value: r, Text: fmt.Sprintf("transaction %d: retrying now; %s", c.TxID, describeState(r))}, nil
	}
	return nil, fmt.Errorf("%s is not a session command", c.Kind)
}

func (s *Session) begin(ctx context.Context, c Command) (*Result, error) {
	if s.tx != 0 {
		return nil, fmt.Errorf("transaction %d is open; commit or rollback it first", s.tx)
	}
	s.lost = 0
	var r engine.BeginReply
	if err := s.call(ctx, api.MethodBegin, api.BeginParams{Key: c.Key}, &r); err != nil {
		return nil, s.explain(err)
	}
	s.tx, s.txFailed, s.txUnsure = r.TxID, false, false
	text := fmt.Sprintf("BEGIN %d", r.TxID)
	if r.Repeated {
		text += " (already begun with this key; its statements so far stand)"
	}
	return &Result{Kind: CmdBegin, Value: r, Text: text}, nil
}

func (s *Session) exec(ctx context.Context, c Command) (*Result, error) {
	if s.tx == 0 && s.lost != 0 {
		id := s.lost
		s.lost = 0
		return nil, fmt.Errorf("transaction %d is gone (%s), so the statement did not run; type begin for a new one", id, s.lostWhy)
	}
	if s.tx == 0 {
		return nil, errors.New("no open transaction: type begin first, or use execute @N SQL for a one-shot statement")
	}
	if err := s.checkNode(c.Node); err != nil {
		return nil, err
	}
	n := c.Node
	var r engine.ExecReply
	err := s.call(ctx, api.MethodExec, api.ExecParams{TxID: s.tx, Node: &n, SQL: c.SQL}, &r)
	if err != nil && interrupted(ctx, err) {
		return nil, s.cancelExec(ctx, err, c)
	}
	if err != nil {
		return nil, s.txError(ctx, err, c)
	}
	return execResult(CmdExec, r), nil
}

// interrupted reports whether a call failed because the user cancelled it
// (Ctrl-C), rather than for lack of an answer.
func interrupted(ctx context.Context, err error) bool {
	return errors.Is(ctx.Err(), context.Canceled) && errors.Is(err, context.Canceled)
}

// cancelExec ends the open transaction after its statement was
// interrupted. A running statement cannot be stopped on its own: the
// coordinator answers the exec once the participant ran it, and the
// participant runs it to its end (or its statement_timeout), keeping what
// it did in the transaction. What Ctrl-C asks for is that the statement
// have no effect, which only a rollback of its transaction guarantees; a
// cancelled statement aborts psql's transaction too. The rollback is
// decided at once, and the participant undoes the statement when it ends.
func (s *Session) cancelExec(ctx context.Context, err error, c Command) error {
	id := s.tx
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultReconnectWait+5*time.Second)
	defer cancel()
	var r engine.OutcomeReply
	if rerr := s.call(rctx, api.MethodRollback, api.TxParams{TxID: id}, &r); rerr != nil {
		s.txUnsure = true
		return wrapf(err, "cancelled, but the statement runs on at @%d and stays part of transaction %d if it succeeds: rolling the transaction back failed (%s); type rollback",
			c.Node, id, describe(rerr, s.Addr()))
	}
	s.endTx()
	s.noteAborted(id, "rolled back when its statement was cancelled")
	return wrapf(err, "cancelled: transaction %d rolled back (a statement cannot be stopped alone; @%d undoes it when it ends)", id, c.Node)
}

func (s *Session) execute(ctx context.Context, c Command) (*Result, error) {
	if err := s.checkNode(c.Node); err != nil {
		return nil, err
	}
	n := c.Node
	var r engine.ExecReply
	if err := s.call(ctx, api.MethodExecute, api.ExecuteParams{Node: &n, SQL: c.SQL}, &r); interrupted(ctx, err) {
		// Nothing can withdraw a statement from a batch it joined.
		return nil, wrapf(err, "cancelled waiting: the statement runs on at @%d and commits with its batch unless the batch fails", n)
	} else if err != nil {
		return nil, s.explain(err)
	}
	s.lastTx = r.TxID
	return execResult(CmdExecute, r), nil
}

// plain runs c's statement as a plain transaction at its participant,
// reached at the address the coordinator knows it by.
func (s *Session) plain(ctx context.Context, c Command) (*Result, error) {
	if s.tx != 0 {
		return nil, fmt.Errorf("transaction %d is open, and a plain transaction runs alone: commit or rollback first, or run @%d SQL in the open transaction", s.tx, c.Node)
	}
	if err := s.checkNode(c.Node); err != nil {
		return nil, err
	}
	parts, err := s.participants(ctx)
	if err != nil {
		return nil, err
	}
	if int(c.Node) >= len(parts) {
		return nil, fmt.Errorf("node %d does not exist: the participants are @0..@%d", c.Node, len(parts)-1)
	}
	n := c.Node
	var r engine.TransactReply
	err = parts[n].Call(ctx, api.MethodPlainTransact, api.TransactParams{Commit: true, Statements: []api.StatementParams{{Node: &n, SQL: c.SQL}}}, &r)
	switch {
	case err == nil && len(r.Results) == 1:
	case err == nil:
		return nil, fmt.Errorf("@%d answered %d results for one statement", n, len(r.Results))
	case rpc.IsCode(err, rpc.CodeUnavailable):
		return nil, wrapf(err, "%s (nothing committed: try again)", rpcMessage(err))
	case rpc.IsTransport(err):
		return nil, wrapf(err, "no answer from @%d, so whether the plain transaction committed is unknown: %s", n, rpcMessage(err))
	case errors.As(err, new(*rpc.Error)):
		// PostgreSQL refused it, the connection to its server broke once
		// the COMMIT may have been sent, or the call was refused as it
		// stands: the participant's message says which.
		return nil, wrapf(err, "%s", rpcMessage(err))
	default:
		return nil, wrapf(err, "@%d: %s", n, rpcMessage(err))
	}
	res := execResult(CmdPlain, engine.ExecReply{Result: r.Results[0]})
	res.Value = r
	return res, nil
}

func (s *Session) checkNode(n engine.NodeID) error {
	if s.nodes > 0 && int(n) >= s.nodes {
		return fmt.Errorf("node %d does not exist: the participants are @0..@%d", n, s.nodes-1)
	}
	return nil
}

// endTxCall ends the open transaction by calling method (commit or
// rollback) for it. A call that got no answer leaves the transaction's
// outcome unsure, and noAnswer explains it.
func (s *Session) endTxCall(ctx context.Context, method string, kind Kind, noAnswer func(engine.TxID, error) error) (engine.TxID, engine.OutcomeReply, error) {
	id := s.tx
	var r engine.OutcomeReply
	if err := s.call(ctx, method, api.TxParams{TxID: id}, &r); err != nil {
		if rpc.IsTransport(err) {
			s.txUnsure = true
			return id, r, noAnswer(id, err)
		}
		return id, r, s.txError(ctx, err, Command{Kind: kind})
	}
	s.endTx()
	return id, r, nil
}

func (s *Session) commit(ctx context.Context) (*Result, error) {
	if s.tx == 0 {
		return nil, errors.New("no open transaction to commit")
	}
	id, r, err := s.endTxCall(ctx, api.MethodCommit, CmdCommit, func(id engine.TxID, err error) error {
		return wrapf(err, "no answer to commit of transaction %d, so its outcome is unknown; once the coordinator is back, status %d tells: %s",
			id, id, describe(err, s.Addr()))
	})
	if err != nil {
		return nil, err
	}
	res := &Result{Kind: CmdCommit, Value: r}
	if r.Outcome != engine.OutcomeCommit {
		return res, &OutcomeError{TxID: id, Reason: r.Reason}
	}
	res.Text = fmt.Sprintf("COMMIT %d", id)
	return res, nil
}

// OutcomeError reports a commit that ended in an abort: the command
// answered, but it failed.
type OutcomeError struct {
	TxID   engine.TxID
	Reason string
}

func (e *OutcomeError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("transaction %d aborted", e.TxID)
	}
	return fmt.Sprintf("transaction %d aborted: %s", e.TxID, e.Reason)
}

func (s *Session) rollback(ctx context.Context) (*Result, error) {
	if s.tx == 0 {
		return nil, errors.New("no open transaction to roll back")
	}
	id, r, err := s.endTxCall(ctx, api.MethodRollback, CmdRollback, func(_ engine.TxID, err error) error {
		return s.explain(err)
	})
	if err != nil {
		return nil, err
	}
	text := fmt.Sprintf("ROLLBACK %d", id)
	if r.Outcome == engine.OutcomeCommit {
		text = fmt.Sprintf("transaction %d had already committed", id)
	}
	return &Result{Kind: CmdRollback, Value: r, Text: text}, nil
}

// statusByKey asks about the transaction a client gave key.
func (s *Session) statusByKey(ctx context.Context, key string) (*Result, error) {
	var r engine.StatusReply
	if err := s.call(ctx, api.MethodStatus, api.StatusParams{Key: key}, &r); err != nil {
		return nil, s.explain(err)
	}
	if r.TxID == 0 {
		return &Result{Kind: CmdStatus, Value: r, Text: fmt.Sprintf("key %q: %s", key, describeState(r))}, nil
	}
	return &Result{Kind: CmdStatus, Value: r, Text: fmt.Sprintf("key %q: transaction %d: %s", key, r.TxID, describeState(r))}, nil
}

func (s *Session) status(ctx context.Context, id engine.TxID) (*Result, error) {
	if id == 0 {
		id = s.tx
	}
	if id == 0 {
		id = s.lastTx
	}
	if id == 0 {
		return nil, errors.New("no transaction yet: status TXID asks about any transaction")
	}
	var r engine.StatusReply
	if err := s.call(ctx, api.MethodStatus, api.TxParams{TxID: id}, &r); err != nil {
		return nil, s.explain(err)
	}
	if id == s.tx && r.State != engine.PhaseActive.String() {
		s.endTx()
	}
	text := describeState(r)
	// The coordinator has nothing to say of a transaction it aborted by
	// restarting; the session saw why.
	if why, ok := s.aborted[id]; ok && (r.State == "forgotten" || r.State == engine.PhaseAborted.String() && strings.HasPrefix(r.Reason, "no record")) {
		text = fmt.Sprintf("aborted (%s, and keeps no record of it)", why)
	}
	return &Result{Kind: CmdStatus, Value: r, Text: fmt.Sprintf("transaction %d: %s", id, text)}, nil
}

// describeState says where a transaction stands in words.
func describeState(r engine.StatusReply) string {
	var b strings.Builder
	b.WriteString(r.State)
	if r.Reason != "" {
		b.WriteString(" (" + r.Reason + ")")
	}
	if len(r.Participants) > 0 {
		b.WriteString("; participants " + nodeList(r.Participants))
	}
	if len(r.Pending) > 0 {
		b.WriteString("; waiting for acknowledgements from " + nodeList(r.Pending))
	}
	return b.String()
}

func nodeList(ns []engine.NodeID) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = fmt.Sprintf("@%d", n)
	}
	return strings.Join(parts, ", ")
}

// inDoubt lists the transactions past their statements that have not
// ended, oldest first, with what each waits for.
func (s *Session) inDoubt(ctx context.Context) (*Result, error) {
	var list []api.InDoubtTx
	if err := s.call(ctx, api.MethodInDoubt, struct{}{}, &list); err != nil {
		return nil, s.explain(err)
	}
	t := &Table{Columns: []string{"tx", "state", "age", "waiting for", "from", "next try in", "why"}, Count: true}
	for _, d := range list {
		var from, why []string
		for _, n := range d.WaitingOn {
			from = append(from, fmt.Sprintf("@%d", n.Node))
			switch {
			case !n.Reachable && n.LastError != "":
				why = append(why, fmt.Sprintf("@%d unreachable: %s", n.Node, n.LastError))
			case !n.Reachable:
				why = append(why, fmt.Sprintf("@%d unreachable", n.Node))
			}
		}
		ms := func(v int64) string {
			return (time.Duration(v) * time.Millisecond).Round(100 * time.Millisecond).String()
		}
		t.Rows = append(t.Rows, []any{fmt.Sprint(d.TxID), d.State, ms(d.AgeMillis), d.Waiting, strings.Join(from, ","), ms(d.NextTryMillis), strings.Join(why, "; ")})
	}
	return &Result{Kind: CmdInDoubt, Value: list, Table: t}, nil
}

func (s *Session) nodesResult(ctx context.Context) (*Result, error) {
	nodes, err := s.listNodes(ctx)
	if err != nil {
		return nil, s.explain(err)
	}
	t := &Table{Columns: []string{"node", "address", "reachable", "epoch", "last seen", "last error"}}
	for _, n := range nodes {
		seen := "never"
		if n.LastSeenMillis >= 0 {
			seen = (time.Duration(n.LastSeenMillis) * time.Millisecond).Round(100*time.Millisecond).String() + " ago"
		}
		reach := "no"
		if n.Reachable {
			reach = "yes"
		}
		t.Rows = append(t.Rows, []any{fmt.Sprintf("@%d", n.Node), n.Address, reach, fmt.Sprint(n.Epoch), seen, n.LastError})
	}
	return &Result{Kind: CmdNodes, Value: nodes, Table: t}, nil
}

// txError reports a failed call about the open transaction and updates
// what the session knows of it.
func (s *Session) txError(ctx context.Context, err error, c Command) error {
	id := s.tx
	switch {
	case rpc.IsTransport(err):
		s.txUnsure = true
		if c.Kind == CmdExec {
			return wrapf(err, "no answer from the coordinator, so whether the statement ran is unknown: %s", describe(err, s.Addr()))
		}
	case rpc.IsCode(err, rpc.CodeAborted):
		s.txFailed = true
		var st engine.StatusReply
		// A failed statement leaves the transaction open but doomed; an
		// abort decided meanwhile (timeout, restart) ends it.
		if s.call(ctx, api.MethodStatus, api.TxParams{TxID: id}, &st) == nil && st.State != engine.PhaseActive.String() {
			s.endTx()
			return wrapf(err, "%s; transaction %d is over", rpcMessage(err), id)
		}
		if strings.HasPrefix(rpcMessage(err), fmt.Sprintf("transaction %d will abort", id)) {
			return wrapf(err, "%s; type rollback", rpcMessage(err))
		}
		return wrapf(err, "%s; transaction %d can only roll back now", rpcMessage(err), id)
	case rpc.IsCode(err, rpc.CodeTxNotActive), rpc.IsCode(err, rpc.CodeUnknownTx):
		var st engine.StatusReply
		why := rpcMessage(err)
		if s.call(ctx, api.MethodStatus, api.TxParams{TxID: id}, &st) == nil {
			if st.State == engine.PhaseActive.String() {
				return wrapf(err, "%s", why)
			}
			why = describeState(st)
		}
		s.endTx()
		return wrapf(err, "transaction %d is gone: %s", id, why)
	}
	return s.explain(err)
}

// explain turns an RPC failure into the one line the user reads.
func (s *Session) explain(err error) error {
	if err == nil {
		return nil
	}
	return &cmdError{msg: oneLine(describe(err, s.Addr())), cause: err}
}

// cmdError is a failure worded for the user that still carries its cause,
// so that the JSON output can give the coordinator's error code.
type cmdError struct {
	msg   string
	cause error
}

func (e *cmdError) Error() string { return e.msg }
func (e *cmdError) Unwrap() error { return e.cause }

// wrapf words an error for the user and keeps err as its cause.
func wrapf(err error, format string, args ...any) error {
	return &cmdError{msg: oneLine(fmt.Sprintf(format, args...)), cause: err}
}

// describe drops the transport's wrapping ("call exec at ...: rpc error
// -32006:") that means nothing to someone typing commands.
func describe(err error, addr string) string {
	var rerr *rpc.Error
	var terr *rpc.TransportError
	var werr *WrongAddrError
	switch {
	case errors.As(err, &werr):
		return werr.Error()
	case errors.Is(err, context.Canceled):
		return "cancelled: the client stopped waiting (the coordinator may still carry the command out)"
	case errors.As(err, &terr):
		return fmt.Sprintf("coordinator %s unreachable: %v", addr, terr.Err)
	case errors.As(err, &rerr) && rerr.Code == rpc.CodeUnauthorized:
		return rerr.Message + " (give the coordinator's client token with --auth-token-file, or TPCD_AUTH_TOKEN)"
	case errors.As(err, &rerr):
		return rerr.Message
	}
	return err.Error()
}

func rpcMessage(err error) string {
	var rerr *rpc.Error
	if errors.As(err, &rerr) {
		return oneLine(rerr.Message)
	}
	return oneLine(err.Error())
}

// oneLine folds a multi-line message (PostgreSQL details, hints) onto one
// line: errors never take more.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func execResult(kind Kind, r engine.ExecReply) *Result {
	res := &Result{Kind: kind, Value: r}
	sr := r.Result
	if sr == nil {
		sr = &engine.StmtResult{}
	}
	if len(sr.Columns) > 0 {
		res.Table = &Table{Columns: sr.Columns, Types: typeNames(sr.Types), Rows: sr.Rows, Count: true}
	} else {
		res.Text = sr.Tag
		if res.Text == "" {
			res.Text = fmt.Sprintf("OK, %d rows affected", sr.RowsAffected)
		}
	}
	if kind == CmdExecute {
		note := fmt.Sprintf("(batch transaction %d)", r.TxID)
		if r.Outcome != nil {
			// This execute closed its batch and was answered once it committed
			// (an abort comes as an error).
			note = fmt.Sprintf("(batch transaction %d committed)", r.TxID)
		}
		if res.Text != "" {
			res.Text += " " + note
		} else {
			res.Note = note
		}
	}
	return res
}
