package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// transact serves api.MethodTransact. Every statement is handed to the engine
// at once, so statements for one participant run there one after another
// in the order given while different participants run theirs at the same
// time. The commit is asked for only once every statement succeeded: a
// statement the engine refuses without dooming the transaction (a limit)
// must not leave the others to commit without it.
func (c *Coordinator) transact(ctx context.Context, raw json.RawMessage) (any, error) {
	var p api.TransactParams
	if err := rpc.DecodeParams(raw, &p); err != nil {
		return nil, err
	}
	return c.transactTyped(ctx, p, false)
}

// transactTyped runs a transact call; promptAcks is
// engine.ClientTransact.PromptAcks, for in-process callers.
func (c *Coordinator) transactTyped(ctx context.Context, p api.TransactParams, promptAcks bool) (any, error) {
	if err := needKey(p.Key); err != nil {
		return nil, err
	}
	if p.Key != "" && p.TxID != 0 {
		return nil, rpc.Errorf(rpc.CodeInvalidParams, "key names the transaction a call begins: give it without tx")
	}
	if len(p.Statements) == 0 {
		return nil, rpc.Errorf(rpc.CodeInvalidParams, "statements is required: at least one {\"node\", \"sql\", \"args\"}")
	}
	if limit := c.opts.Engine.MaxStatements; len(p.Statements) > limit {
		return nil, rpc.Errorf(rpc.CodeLimit, "%d statements, more than one transaction may have (%d)", len(p.Statements), limit)
	}
	nodes := make([]engine.NodeID, len(p.Statements))
	for i, s := range p.Statements {
		n, err := needNode(s.Node)
		if err == nil && (n < 0 || int(n) >= len(c.opts.Participants)) {
			err = rpc.Errorf(rpc.CodeBadNode, "node %d does not exist (participants are 0..%d)", n, len(c.opts.Participants)-1)
		}
		if err == nil {
			err = needSQL(s.SQL)
		}
		if err != nil {
			return nil, statementError(i, err)
		}
		nodes[i] = n
	}

	stmts := make([]engine.Statement, len(p.Statements))
	for i, s := range p.Statements {
		stmts[i] = engine.Statement{Node: nodes[i], SQL: s.SQL, Args: s.Args, ParamTypes: s.ParamTypes}
	}
	// One input: the engine sees the whole transaction and its commit at
	// once, so each participant can prepare (or, alone, commit) with its
	// last statement.
	mk := func(req engine.ReqID, now engine.Instant) engine.Input {
		return engine.ClientTransact{Now: now, Req: req, TxID: p.TxID, Stmts: stmts, Commit: p.Commit, Key: p.Key, PromptAcks: promptAcks}
	}
	if p.TxID != 0 {
		return c.call(ctx, mk)
	}
	// A transaction begun by the call counts against its client's open
	// transactions while it stays open (no commit asked for).
	return c.startTx(ctx, mk, func(r any) engine.TxID {
		if t, ok := r.(engine.TransactReply); ok && t.Outcome == nil && !t.Repeated {
			return t.TxID
		}
		return 0
	})
}

// statementError names the statement an error is about.
func statementError(i int, err error) *rpc.Error {
	e := &rpc.Error{Code: rpc.CodeInternal, Message: err.Error()}
	errors.As(err, &e)
	return &rpc.Error{Code: e.Code, Message: fmt.Sprintf("statements[%d]: %s", i, e.Message), Data: e.Data}
}
