package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

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

	tx, began := p.TxID, false
	if tx == 0 {
		r, err := c.begin(ctx, nil)
		if err != nil {
			return nil, err
		}
		tx, began = r.(engine.BeginReply).TxID, true
	}
	execs := make([]func(engine.ReqID, engine.Instant) engine.Input, len(p.Statements))
	for i, s := range p.Statements {
		execs[i] = func(req engine.ReqID, now engine.Instant) engine.Input {
			return engine.ClientExec{Now: now, Req: req, TxID: tx, Node: nodes[i], SQL: s.SQL, Args: s.Args}
		}
	}
	answers, failed, err := c.callAll(ctx, execs...)
	if err != nil {
		if began {
			c.abandon(tx)
		}
		return nil, err
	}
	if failed >= 0 {
		// The first failure to arrive is the cause; statements refused
		// because of it come later (or, on another participant, are
		// answered as their turn comes).
		e := statementError(failed, rpcError(answers[failed].Err))
		switch {
		case began:
			// No reply named the transaction, so its client cannot end it.
			c.abandon(tx)
			e.Message += fmt.Sprintf(" (transaction %d rolled back)", tx)
		case e.Code == rpc.CodeLimit:
			// The refusal left the transaction usable: the client must
			// know which statements of the call ran.
			var ran []string
			for i, a := range answers {
				if a.Err == nil {
					ran = append(ran, strconv.Itoa(i))
				}
			}
			e.Message += fmt.Sprintf(" (transaction %d is still active; of this call's statements these ran: [%s])", tx, strings.Join(ran, ", "))
		}
		return nil, e
	}
	reply := api.TransactReply{TxID: tx, Results: make([]*engine.StmtResult, len(answers))}
	for i, a := range answers {
		reply.Results[i] = a.Reply.(engine.ExecReply).Result
	}
	if !p.Commit {
		return reply, nil
	}
	r, err := c.call(ctx, func(req engine.ReqID, now engine.Instant) engine.Input {
		return engine.ClientCommit{Now: now, Req: req, TxID: tx}
	})
	if err != nil {
		return nil, err
	}
	o := r.(engine.OutcomeReply)
	reply.Outcome, reply.Reason = &o.Outcome, o.Reason
	return reply, nil
}

// statementError names the statement an error is about.
func statementError(i int, err error) *rpc.Error {
	e := &rpc.Error{Code: rpc.CodeInternal, Message: err.Error()}
	errors.As(err, &e)
	return &rpc.Error{Code: e.Code, Message: fmt.Sprintf("statements[%d]: %s", i, e.Message), Data: e.Data}
}

// abandon rolls back a transaction whose client was never told its id; the
// answer goes nowhere.
func (c *Coordinator) abandon(tx engine.TxID) {
	req := engine.ReqID(c.nextReq.Add(1))
	c.loop.submit(engine.ClientRollback{Now: c.loop.now(), Req: req, TxID: tx})
}
