package engine_test

import (
	"strings"
	"testing"

	"github.com/tpcd/tpcd/engine"
)

// respondTo finds the answer to req among rd's effects.
func respondTo(t *testing.T, rd engine.Ready, req engine.ReqID) engine.Respond {
	t.Helper()
	for _, e := range rd.Effects {
		if r, ok := e.(engine.Respond); ok && r.Req == req {
			return r
		}
	}
	t.Fatalf("no answer to request %d in %s", req, engine.DescribeReady(rd))
	return engine.Respond{}
}

func TestMaxStatements(t *testing.T) {
	c := engine.NewCoordinator(engine.CoordinatorConfig{Participants: 2, MaxStatements: 3, Protocol: engine.ProtocolClassic})
	c.Step(engine.Start{Now: 1, NewCluster: "c"})
	tx := respondTo(t, c.Step(engine.ClientBegin{Now: 1, Req: 1}), 1).Reply.(engine.BeginReply).TxID
	for i := range 3 {
		rd := c.Step(engine.ClientExec{Now: 1, Req: engine.ReqID(10 + i), TxID: tx, Node: engine.NodeID(i % 2), SQL: "insert"})
		for _, e := range rd.Effects {
			if r, ok := e.(engine.Respond); ok && r.Err != nil {
				t.Fatalf("statement %d refused: %v", i, r.Err)
			}
		}
	}
	r := respondTo(t, c.Step(engine.ClientExec{Now: 1, Req: 20, TxID: tx, Node: 0, SQL: "one too many"}), 20)
	if r.Err == nil || r.Err.Code != engine.ErrBadRequest || !strings.Contains(r.Err.Message, "3 statements") {
		t.Fatalf("fourth statement: %+v, want ErrBadRequest naming the limit", r)
	}
	// The refusal does not doom the transaction: the three statements
	// commit.
	c.Step(engine.Receive{Now: 1, Msg: engine.ExecResult{Cluster: "c", From: 0, TxID: tx, Stmt: 0}})
	c.Step(engine.Receive{Now: 1, Msg: engine.ExecResult{Cluster: "c", From: 1, TxID: tx, Stmt: 0}})
	c.Step(engine.Receive{Now: 1, Msg: engine.ExecResult{Cluster: "c", From: 0, TxID: tx, Stmt: 1}})
	c.Step(engine.ClientCommit{Now: 1, Req: 30, TxID: tx})
	c.Step(engine.Receive{Now: 1, Msg: engine.VoteMessage{Cluster: "c", From: 0, TxID: tx, Vote: engine.VoteYes}})
	rd := c.Step(engine.Receive{Now: 1, Msg: engine.VoteMessage{Cluster: "c", From: 1, TxID: tx, Vote: engine.VoteYes}})
	if o := respondTo(t, rd, 30).Reply.(engine.OutcomeReply); o.Outcome != engine.OutcomeCommit {
		t.Fatalf("commit after the refusal: %+v", o)
	}

	// A batch never exceeds the limit either: it is committed at it.
	b := engine.NewCoordinator(engine.CoordinatorConfig{Participants: 1, MaxStatements: 2, BatchSize: 100})
	b.Step(engine.Start{Now: 1, NewCluster: "c"})
	var txs []engine.TxID
	for i := range 4 {
		rd := b.Step(engine.ClientExecute{Now: 1, Req: engine.ReqID(i + 1), Node: 0, SQL: "insert"})
		for _, e := range rd.Effects {
			if s, ok := e.(engine.Send); ok {
				if m, ok := s.Msg.(engine.ExecRequest); ok {
					txs = append(txs, m.TxID)
				}
			}
		}
	}
	// One statement runs at a time per node, so each batch's first
	// statement is sent: two batches of two.
	if len(txs) != 2 || txs[0] == txs[1] {
		t.Fatalf("first statements sent for transactions %v, want two different batches", txs)
	}
	if st := b.Status(txs[0]); st.State != "active" || len(st.Participants) != 1 {
		t.Fatalf("first batch: %+v", st)
	}
}

func TestEndedCountAndRecentEnded(t *testing.T) {
	c := engine.NewCoordinator(engine.CoordinatorConfig{Participants: 1, RememberEnded: 2})
	c.Step(engine.Start{Now: 1, NewCluster: "c"})
	for i := range 3 {
		tx := respondTo(t, c.Step(engine.ClientBegin{Now: 1, Req: 1}), 1).Reply.(engine.BeginReply).TxID
		// Nothing ran: commit or rollback ends it at once, without a log record.
		if i == 1 {
			c.Step(engine.ClientRollback{Now: 1, Req: 2, TxID: tx})
		} else {
			c.Step(engine.ClientCommit{Now: 1, Req: 2, TxID: tx})
		}
	}
	if n := c.EndedCount(); n != 3 {
		t.Fatalf("EndedCount %d, want 3", n)
	}
	got := c.RecentEnded(5)
	if len(got) != 2 || got[0].TxID != 2 || got[0].Outcome != engine.OutcomeAbort || got[1].TxID != 3 || got[1].State != "committed" {
		t.Fatalf("RecentEnded(5) = %+v, want transactions 2 (aborted) and 3 (committed)", got)
	}
	if got := c.RecentEnded(1); len(got) != 1 || got[0].TxID != 3 {
		t.Fatalf("RecentEnded(1) = %+v", got)
	}
	if got := c.RecentEnded(0); len(got) != 0 {
		t.Fatalf("RecentEnded(0) = %+v", got)
	}
}
