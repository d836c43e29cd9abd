package engine_test

import (
	"testing"
	"time"

	"github.com/tpcd/tpcd/engine"
)

// BenchmarkCoordinatorStep measures the coordinator's share of one explicit
// transaction on three participants: begin, a statement on each, its result,
// commit, three votes and three acknowledgements (12 steps).
func BenchmarkCoordinatorStep(b *testing.B) {
	c := engine.NewCoordinator(engine.CoordinatorConfig{Participants: 3, Protocol: engine.ProtocolClassic})
	now := engine.Instant(time.Hour)
	c.Step(engine.Start{Now: now, NewCluster: "bench"})
	var req engine.ReqID
	nodes := []engine.NodeID{0, 1, 2}
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Millisecond)
		req++
		rd := c.Step(engine.ClientBegin{Now: now, Req: req})
		tx := rd.Effects[len(rd.Effects)-1].(engine.Respond).Reply.(engine.BeginReply).TxID
		for _, n := range nodes {
			req++
			c.Step(engine.ClientExec{Now: now, Req: req, TxID: tx, Node: n, SQL: "insert into t values ($1)", Args: []any{1}})
		}
		for _, n := range nodes {
			c.Step(engine.Receive{Now: now, Msg: engine.ExecResult{Cluster: "bench", From: n, TxID: tx, Stmt: 0, Result: &engine.StmtResult{RowsAffected: 1}}})
		}
		req++
		c.Step(engine.ClientCommit{Now: now, Req: req, TxID: tx})
		for _, n := range nodes {
			c.Step(engine.Receive{Now: now, Msg: engine.VoteMessage{Cluster: "bench", From: n, TxID: tx, Vote: engine.VoteYes}})
		}
		for _, n := range nodes {
			c.Step(engine.Receive{Now: now, Msg: engine.AckMessage{Cluster: "bench", From: n, TxID: tx, Outcome: engine.OutcomeCommit}})
		}
	}
	if len(c.Transactions()) != 0 {
		b.Fatalf("transactions left over: %v", c.Transactions())
	}
}

// benchParticipant is participant 0 started and in touch with the
// coordinator of epoch 1, with that coordinator's header.
func benchParticipant() (*engine.Participant, engine.Instant, engine.Header) {
	p := engine.NewParticipant(engine.ParticipantConfig{Node: 0})
	now := engine.Instant(time.Hour)
	p.Step(engine.Start{Now: now})
	p.Step(engine.CoordinatorAnswered{Now: now, Cluster: "bench", Epoch: 1})
	return p, now, engine.Header{Cluster: "bench", Epoch: 1}
}

// BenchmarkParticipantStep measures a participant's share of one committed
// transaction with one statement: the statement and its result, prepare and
// its result, the decision, COMMIT PREPARED and the marker deletion (7 steps).
func BenchmarkParticipantStep(b *testing.B) {
	p, now, h := benchParticipant()
	var tx engine.TxID
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Millisecond)
		tx++
		rd := p.Step(engine.Receive{Now: now, Msg: engine.ExecRequest{Header: h, TxID: tx, SQL: "insert into t values ($1)", Args: []any{1}}})
		gid := rd.Effects[len(rd.Effects)-1].(engine.Data).GID
		p.Step(engine.DataDone{Now: now, Op: engine.DataExec, TxID: tx, Result: &engine.StmtResult{RowsAffected: 1}})
		p.Step(engine.Receive{Now: now, Msg: engine.PrepareRequest{Header: h, TxID: tx, Stmts: 1}})
		p.Step(engine.DataDone{Now: now, Op: engine.DataPrepare, TxID: tx, Xid: uint64(tx)})
		p.Step(engine.Receive{Now: now, Msg: engine.DecisionRequest{Header: h, TxID: tx, TxEpoch: 1, Outcome: engine.OutcomeCommit}})
		p.Step(engine.DataDone{Now: now, Op: engine.DataCommitPrepared, TxID: tx})
		rd = p.Step(engine.DataDone{Now: now, Op: engine.DataDeleteMarker, TxID: tx})
		if len(rd.Effects) != 1 || gid == "" {
			b.Fatalf("tx %d did not end: %s", tx, engine.DescribeReady(rd))
		}
		if _, ok := rd.Effects[0].(engine.Forget); !ok {
			b.Fatalf("tx %d did not end: %s", tx, engine.DescribeReady(rd))
		}
	}
	if len(p.Transactions()) != 0 || p.MarkerDeletions() != 0 {
		b.Fatalf("transactions left over: %v, %d marker deletions", p.Transactions(), p.MarkerDeletions())
	}
}

// BenchmarkParticipantTick measures one tick of a participant busy with 32
// transactions (16 running a statement, 16 prepared), none of them due: a
// node ticks every 20 ms whatever the load.
func BenchmarkParticipantTick(b *testing.B) {
	p, now, h := benchParticipant()
	for tx := engine.TxID(1); tx <= 32; tx++ {
		p.Step(engine.Receive{Now: now, Msg: engine.ExecRequest{Header: h, TxID: tx, SQL: "insert"}})
		if tx%2 == 0 {
			p.Step(engine.DataDone{Now: now, Op: engine.DataExec, TxID: tx})
			p.Step(engine.Receive{Now: now, Msg: engine.PrepareRequest{Header: h, TxID: tx, Stmts: 1}})
			p.Step(engine.DataDone{Now: now, Op: engine.DataPrepare, TxID: tx, Xid: uint64(tx)})
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if rd := p.Step(engine.Tick{Now: now}); !rd.Empty() {
			b.Fatalf("a tick with nothing due: %s", engine.DescribeReady(rd))
		}
	}
}

// foldLog is a coordinator log of 100,000 events: a start, id reservations,
// and preparing/decided/ended triples, some still open at the end.
func foldLog() []engine.Event {
	evs := []engine.Event{engine.CoordStarted{Cluster: "bench", Epoch: 1}}
	parts := []engine.NodeID{0, 1, 2}
	for tx := engine.TxID(1); len(evs) < 100000; tx++ {
		if tx%1024 == 1 {
			evs = append(evs, engine.CoordTxIDsReserved{Through: tx + 1023})
		}
		evs = append(evs,
			engine.CoordPreparing{TxID: tx, Epoch: 1, Participants: parts},
			engine.CoordDecided{TxID: tx, Epoch: 1, Outcome: engine.OutcomeCommit, Participants: parts})
		if tx%100 != 0 {
			evs = append(evs, engine.CoordEnded{TxID: tx})
		}
	}
	return evs[:100000]
}

// BenchmarkFold measures recovery: folding a 100,000-event log into a fresh
// coordinator with Apply.
func BenchmarkFold(b *testing.B) {
	evs := foldLog()
	b.ReportAllocs()
	for b.Loop() {
		c := engine.NewCoordinator(engine.CoordinatorConfig{Participants: 3, Protocol: engine.ProtocolClassic})
		for _, e := range evs {
			if err := c.Apply(e); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(len(evs))*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
