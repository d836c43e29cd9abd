package engine_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tpcd/tpcd/engine"
)

// TestApplyRejects checks that recovery refuses a log it cannot trust rather
// than folding it into a wrong state.
func TestApplyRejects(t *testing.T) {
	c := engine.NewCoordinator(engine.CoordinatorConfig{Participants: 2})
	for _, e := range []engine.Event{
		engine.CoordPreparing{TxID: 1, Epoch: 1, Participants: []engine.NodeID{2}},
		engine.CoordDecided{TxID: 1, Epoch: 1, Outcome: engine.OutcomeCommit, Participants: []engine.NodeID{-1}},
		engine.PartPrepared{TxID: 1, GID: "tpcd:c:1:1:0"},
	} {
		if err := c.Apply(e); err == nil {
			t.Errorf("coordinator applied %s", engine.DescribeEvent(e))
		}
	}
	p := engine.NewParticipant(engine.ParticipantConfig{Node: 0})
	for _, e := range []engine.Event{
		engine.PartPrepared{TxID: 1, GID: "not-ours"},
		engine.CoordEnded{TxID: 1},
	} {
		if err := p.Apply(e); err == nil {
			t.Errorf("participant applied %s", engine.DescribeEvent(e))
		}
	}
	// An end record for a transaction the log no longer holds (compacted)
	// is fine.
	if err := c.Apply(engine.CoordEnded{TxID: 9}); err != nil {
		t.Errorf("end of a compacted transaction: %v", err)
	}
}

// TestFoldMatchesStep checks the promise of Apply's comment: folding the
// events a run emitted gives the state the run reached.
func TestFoldMatchesStep(t *testing.T) {
	now := engine.Instant(time.Hour)
	c := engine.NewCoordinator(engine.CoordinatorConfig{Participants: 2, ReserveBlock: 2})
	var log []engine.Event
	step := func(in engine.Input) engine.Ready {
		rd := c.Step(in)
		log = append(log, rd.Events...)
		return rd
	}
	step(engine.Start{Now: now, NewCluster: "c"})
	for tx := engine.TxID(1); tx <= 5; tx++ {
		step(engine.ClientBegin{Now: now, Req: 1})
		step(engine.ClientExec{Now: now, Req: 2, TxID: tx, Node: 0, SQL: "insert"})
		step(engine.ClientExec{Now: now, Req: 3, TxID: tx, Node: 1, SQL: "insert"})
		step(engine.Receive{Now: now, Msg: engine.ExecResult{Cluster: "c", From: 0, TxID: tx}})
		step(engine.Receive{Now: now, Msg: engine.ExecResult{Cluster: "c", From: 1, TxID: tx}})
		step(engine.ClientCommit{Now: now, Req: 4, TxID: tx})
		step(engine.Receive{Now: now, Msg: engine.VoteMessage{Cluster: "c", From: 0, TxID: tx, Vote: engine.VoteYes}})
		if tx == 3 {
			continue // left preparing
		}
		v := engine.VoteYes
		if tx == 4 {
			v = engine.VoteNo
		}
		step(engine.Receive{Now: now, Msg: engine.VoteMessage{Cluster: "c", From: 1, TxID: tx, Vote: v}})
		if tx != 2 {
			step(engine.Receive{Now: now, Msg: engine.AckMessage{Cluster: "c", From: 0, TxID: tx, Outcome: engine.OutcomeCommit}})
			step(engine.Receive{Now: now, Msg: engine.AckMessage{Cluster: "c", From: 1, TxID: tx, Outcome: engine.OutcomeCommit}})
		}
	}
	folded := engine.NewCoordinator(engine.CoordinatorConfig{Participants: 2, ReserveBlock: 2})
	for _, e := range log {
		if err := folded.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	// Votes and statement counts are not logged; the phases, outcomes and
	// pending acknowledgements must match.
	for i, want := range c.Transactions() {
		got := folded.Transactions()
		if i >= len(got) || got[i].TxID != want.TxID || got[i].State != want.State || got[i].Outcome != want.Outcome ||
			len(got[i].Pending) != len(want.Pending) {
			t.Errorf("folded state differs:\nstep:\n%s\nfold:\n%s", c.Describe(), folded.Describe())
			break
		}
	}
	if folded.Cluster() != "c" || folded.Epoch() != 1 || len(folded.Ended()) != len(c.Ended()) {
		t.Errorf("folded cluster %q epoch %d ended %v; stepped ended %v", folded.Cluster(), folded.Epoch(), folded.Ended(), c.Ended())
	}
}

// TestStepBeforeStart checks that a machine refuses work until recovery
// finished with a Start step, and that a second Start changes nothing.
func TestStepBeforeStart(t *testing.T) {
	now := engine.Instant(time.Hour)
	c := engine.NewCoordinator(engine.CoordinatorConfig{Participants: 1})
	for _, in := range []engine.Input{
		engine.ClientBegin{Now: now, Req: 1},
		engine.ClientExec{Now: now, Req: 2, TxID: 1},
		engine.ClientExecute{Now: now, Req: 3},
		engine.ClientCommit{Now: now, Req: 4, TxID: 1},
		engine.ClientRollback{Now: now, Req: 5, TxID: 1},
		engine.ClientStatus{Now: now, Req: 6, TxID: 1},
	} {
		rd := c.Step(in)
		if len(rd.Events) != 0 || len(rd.Effects) != 1 {
			t.Fatalf("%T before start: %s", in, engine.DescribeReady(rd))
		}
		r := rd.Effects[0].(engine.Respond)
		if r.Err == nil || r.Err.Code != engine.ErrBadRequest || !strings.Contains(r.Err.Error(), "starting") {
			t.Fatalf("%T before start answered %s", in, engine.DescribeReady(rd))
		}
	}
	if rd := c.Step(engine.Tick{Now: now}); !rd.Empty() {
		t.Fatalf("tick before start: %s", engine.DescribeReady(rd))
	}
	if rd := c.Step(engine.Start{Now: now, NewCluster: "c"}); rd.Empty() {
		t.Fatal("start produced nothing")
	}
	if rd := c.Step(engine.Start{Now: now, NewCluster: "other"}); !rd.Empty() || c.Cluster() != "c" {
		t.Fatalf("second start: %s, cluster %q", engine.DescribeReady(rd), c.Cluster())
	}

	p := engine.NewParticipant(engine.ParticipantConfig{Node: 0})
	h := engine.Header{Cluster: "c", Epoch: 1}
	for _, in := range []engine.Input{
		engine.Tick{Now: now},
		engine.Receive{Now: now, Msg: engine.ExecRequest{Header: h, TxID: 1, SQL: "insert"}},
	} {
		if rd := p.Step(in); !rd.Empty() {
			t.Fatalf("participant %T before start: %s", in, engine.DescribeReady(rd))
		}
	}
	p.Step(engine.Start{Now: now})
	if rd := p.Step(engine.Start{Now: now}); !rd.Empty() {
		t.Fatalf("second participant start: %s", engine.DescribeReady(rd))
	}
	// Messages without a cluster or epoch are nobody's and are ignored.
	if rd := p.Step(engine.Receive{Now: now, Msg: engine.ExecRequest{TxID: 1, SQL: "insert"}}); !rd.Empty() {
		t.Fatalf("headerless exec: %s", engine.DescribeReady(rd))
	}
	if p.Cluster() != "" || p.Epoch() != 0 || p.Violations() != 0 {
		t.Fatalf("participant state changed: %q %d %d", p.Cluster(), p.Epoch(), p.Violations())
	}
}

// TestCoordinatorIgnoresNonsense feeds the coordinator messages no
// participant sends it.
func TestCoordinatorIgnoresNonsense(t *testing.T) {
	now := engine.Instant(time.Hour)
	c := engine.NewCoordinator(engine.CoordinatorConfig{Participants: 1})
	c.Step(engine.Start{Now: now, NewCluster: "c"})
	for _, m := range []engine.Message{
		engine.ExecRequest{Header: engine.Header{Cluster: "c", Epoch: 1}, TxID: 1},
		engine.VoteMessage{Cluster: "c", From: 7, TxID: 1, Vote: engine.VoteYes},
		engine.InquireMessage{Cluster: "c", From: -3, TxID: 1},
		engine.AckMessage{Cluster: "c", From: 0, TxID: 42, Outcome: engine.OutcomeCommit},
	} {
		if rd := c.Step(engine.Receive{Now: now, Msg: m}); !rd.Empty() {
			t.Errorf("%s: %s", engine.DescribeMessage(m), engine.DescribeReady(rd))
		}
	}
	if rd := c.Step(engine.SendFailed{Now: now, To: 9, Msg: engine.PrepareRequest{TxID: 1}}); !rd.Empty() {
		t.Errorf("send failure for an unknown transaction: %s", engine.DescribeReady(rd))
	}
}

// TestParticipantViolations shows the loud path: a commit decision for a
// transaction this participant rolled back, and a data operation that says
// the outcome is not what the coordinator decided.
func TestParticipantViolations(t *testing.T) {
	now := engine.Instant(time.Hour)
	h := engine.Header{Cluster: "c", Epoch: 1}
	p := engine.NewParticipant(engine.ParticipantConfig{Node: 0})
	p.Step(engine.Start{Now: now})
	p.Step(engine.CoordinatorAnswered{Now: now, Cluster: "c", Epoch: 1})
	p.Step(engine.Receive{Now: now, Msg: engine.ExecRequest{Header: h, TxID: 1, SQL: "insert"}})
	p.Step(engine.DataDone{Now: now, Op: engine.DataExec, TxID: 1, Err: "boom"})
	p.Step(engine.DataDone{Now: now, Op: engine.DataRollback, TxID: 1})
	rd := p.Step(engine.Receive{Now: now, Msg: engine.DecisionRequest{Header: h, TxID: 1, TxEpoch: 1, Outcome: engine.OutcomeCommit}})
	if !hasViolation(rd) || p.Violations() != 1 {
		t.Fatalf("commit of a rolled-back transaction: %s", engine.DescribeReady(rd))
	}

	prepared := func(tx engine.TxID) {
		p.Step(engine.Receive{Now: now, Msg: engine.ExecRequest{Header: h, TxID: tx, SQL: "insert"}})
		p.Step(engine.DataDone{Now: now, Op: engine.DataExec, TxID: tx})
		p.Step(engine.Receive{Now: now, Msg: engine.PrepareRequest{Header: h, TxID: tx, Stmts: 1}})
		p.Step(engine.DataDone{Now: now, Op: engine.DataPrepare, TxID: tx, Xid: uint64(tx)})
	}
	prepared(2)
	p.Step(engine.Receive{Now: now, Msg: engine.DecisionRequest{Header: h, TxID: 2, TxEpoch: 1, Outcome: engine.OutcomeCommit}})
	rd = p.Step(engine.DataDone{Now: now, Op: engine.DataCommitPrepared, TxID: 2, Err: "prepared transaction does not exist"})
	if !hasViolation(rd) {
		t.Fatalf("COMMIT PREPARED of a rolled-back GID: %s", engine.DescribeReady(rd))
	}

	prepared(3)
	p.Step(engine.Receive{Now: now, Msg: engine.DecisionRequest{Header: h, TxID: 3, TxEpoch: 1, Outcome: engine.OutcomeAbort}})
	rd = p.Step(engine.DataDone{Now: now, Op: engine.DataRollbackPrepared, TxID: 3, Err: "marker present: committed"})
	if !hasViolation(rd) {
		t.Fatalf("ROLLBACK PREPARED of a committed GID: %s", engine.DescribeReady(rd))
	}
	if p.Violations() != 3 {
		t.Fatalf("violations = %d, want 3", p.Violations())
	}
	// A result for a transaction the participant does not know is dropped.
	if rd := p.Step(engine.DataDone{Now: now, Op: engine.DataExec, TxID: 99}); !rd.Empty() {
		t.Fatalf("result for an unknown transaction: %s", engine.DescribeReady(rd))
	}
}

func hasViolation(rd engine.Ready) bool {
	for _, e := range rd.Effects {
		if _, ok := e.(engine.Violation); ok && strings.HasPrefix(engine.DescribeEffect(e), "VIOLATION") && e.After() == 0 {
			return true
		}
	}
	return false
}

// TestIdleCountsFromLastAnswer: a client that sent several statements at
// once waits for their answers; it is idle only from the last one on.
func TestIdleCountsFromLastAnswer(t *testing.T) {
	start := engine.Instant(time.Hour)
	at := func(d time.Duration) engine.Instant { return start.Add(d) }
	c := engine.NewCoordinator(engine.CoordinatorConfig{Participants: 1, IdleTimeout: 10 * time.Second, ExecTimeout: time.Minute})
	c.Step(engine.Start{Now: start, NewCluster: "c"})
	c.Step(engine.ClientBegin{Now: start, Req: 1})
	c.Step(engine.ClientExec{Now: start, Req: 2, TxID: 1, Node: 0, SQL: "select 1"})
	c.Step(engine.ClientExec{Now: start, Req: 3, TxID: 1, Node: 0, SQL: "select 2"})
	c.Step(engine.Receive{Now: at(6 * time.Second), Msg: engine.ExecResult{Cluster: "c", From: 0, TxID: 1, Stmt: 0}})
	c.Step(engine.Receive{Now: at(12 * time.Second), Msg: engine.ExecResult{Cluster: "c", From: 0, TxID: 1, Stmt: 1}})
	c.Step(engine.Tick{Now: at(15 * time.Second)})
	if st := c.Status(1); st.State != "active" {
		t.Fatalf("5 s after its last answer the transaction is %s, want active", st.State)
	}
	c.Step(engine.Tick{Now: at(23 * time.Second)})
	if st := c.Status(1); st.Outcome != engine.OutcomeAbort {
		t.Fatalf("11 s after its last answer the transaction is %+v, want aborted as idle", st)
	}
}

// TestParticipantAfterCommit covers a committed transaction from its
// part.committed on: a non-presumed abort while its marker is being deleted
// is a violation, a presumed one is not; the Forget effect comes only once
// the marker is gone; a stranger cluster must wait for the deletion; and a
// restart neither adopts a GID the log says committed nor forgets it.
func TestParticipantAfterCommit(t *testing.T) {
	now := engine.Instant(time.Hour)
	h := engine.Header{Cluster: "c", Epoch: 1}
	p := engine.NewParticipant(engine.ParticipantConfig{Node: 0})
	var log []engine.Event
	step := func(in engine.Input) engine.Ready {
		rd := p.Step(in)
		log = append(log, rd.Events...)
		return rd
	}
	step(engine.Start{Now: now})
	step(engine.CoordinatorAnswered{Now: now, Cluster: "c", Epoch: 1})
	step(engine.Receive{Now: now, Msg: engine.ExecRequest{Header: h, TxID: 1, SQL: "insert"}})
	step(engine.DataDone{Now: now, Op: engine.DataExec, TxID: 1})
	step(engine.Receive{Now: now, Msg: engine.PrepareRequest{Header: h, TxID: 1, Stmts: 1}})
	step(engine.DataDone{Now: now, Op: engine.DataPrepare, TxID: 1, Xid: 1})
	step(engine.Receive{Now: now, Msg: engine.DecisionRequest{Header: h, TxID: 1, TxEpoch: 1, Outcome: engine.OutcomeCommit}})
	rd := step(engine.DataDone{Now: now, Op: engine.DataCommitPrepared, TxID: 1})
	// The branch has no marker (its transaction id says it committed):
	// it is forgotten once part.committed is durable.
	if len(rd.Events) != 1 || rd.Events[0].Kind() != "part.committed" || len(p.Transactions()) != 0 || p.MarkerDeletions() != 0 ||
		!slices.ContainsFunc(rd.Effects, func(e engine.Effect) bool { _, ok := e.(engine.Forget); return ok }) {
		t.Fatalf("after COMMIT PREPARED: %s; %d in memory, %d marker deletions", engine.DescribeReady(rd), len(p.Transactions()), p.MarkerDeletions())
	}

	stale := engine.DecisionRequest{Header: h, TxID: 1, TxEpoch: 1, Outcome: engine.OutcomeAbort, Presumed: true}
	if rd := step(engine.Receive{Now: now, Msg: stale}); hasViolation(rd) {
		t.Errorf("a presumed abort of a committed transaction: %s", engine.DescribeReady(rd))
	}
	if rd := step(engine.Receive{Now: now, Msg: engine.ExecRequest{Header: engine.Header{Cluster: "other", Epoch: 1}, TxID: 5, SQL: "insert"}}); len(rd.Events) != 0 || slices.ContainsFunc(rd.Effects, isData) {
		t.Errorf("a stranger cluster's statement ran before the coordinator vouched for it: %s", engine.DescribeReady(rd))
	}
	// The configured coordinator is still cluster c: the stranger's
	// statement is dropped, nothing else changes.
	if rd := step(engine.CoordinatorAnswered{Now: now, Cluster: "c", Epoch: 1}); !rd.Empty() || p.Cluster() != "c" {
		t.Errorf("the coordinator disowns the stranger: %s; cluster %q", engine.DescribeReady(rd), p.Cluster())
	}
	abort := stale
	abort.Presumed = false
	if rd := step(engine.Receive{Now: now, Msg: abort}); !hasViolation(rd) {
		t.Errorf("an abort decision for a committed transaction: %s", engine.DescribeReady(rd))
	}

	// A branch an earlier version prepared has a marker and no transaction
	// id: a restart that finds it committed deletes the marker. Any failure
	// is retried, flagged for a retry or not: the marker may still be
	// there. Not before its time.
	old := engine.NewParticipant(engine.ParticipantConfig{Node: 0})
	for _, e := range []engine.Event{engine.PartEpochSeen{Cluster: "c", Epoch: 1}, engine.PartPrepared{TxID: 2, GID: "tpcd:c:1:2:0"}} {
		if err := old.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	if rd := old.Step(engine.Start{Now: now, Markers: []string{"tpcd:c:1:2:0"}}); old.MarkerDeletions() != 1 {
		t.Fatalf("restart with an earlier version's committed branch: %s", engine.DescribeReady(rd))
	}
	old.Step(engine.CoordinatorAnswered{Now: now, Cluster: "c", Epoch: 1})
	rd = old.Step(engine.DataDone{Now: now, Op: engine.DataDeleteMarker, TxID: 2, Err: "connection reset"})
	if len(rd.Effects) != 0 || old.MarkerDeletions() != 1 {
		t.Fatalf("a failed marker deletion: %s", engine.DescribeReady(rd))
	}
	if rd := old.Step(engine.Tick{Now: now.Add(time.Millisecond)}); !rd.Empty() {
		t.Fatalf("a tick before the retry is due: %s", engine.DescribeReady(rd))
	}
	rd = old.Step(engine.Tick{Now: now.Add(time.Second)})
	if len(rd.Effects) != 1 || engine.DescribeEffect(rd.Effects[0]) != "data delete-marker tx=2 gid=tpcd:c:1:2:0" {
		t.Fatalf("the retry: %s", engine.DescribeReady(rd))
	}
	rd = old.Step(engine.DataDone{Now: now, Op: engine.DataDeleteMarker, TxID: 2})
	if len(rd.Events) != 0 || len(rd.Effects) != 1 || engine.DescribeEffect(rd.Effects[0]) != "forget tx=2" || old.MarkerDeletions() != 0 {
		t.Fatalf("the marker deleted: %s", engine.DescribeReady(rd))
	}
	// Committed here, marker gone or not: an abort decided for it is a
	// violation, where one sent to a read-only voter is not.
	abort2 := abort
	abort2.TxID = 2
	if rd := old.Step(engine.Receive{Now: now, Msg: abort2}); !hasViolation(rd) {
		t.Errorf("an abort after the marker is gone: %s", engine.DescribeReady(rd))
	}

	// A restart that finds the GID prepared again (by hand: the protocol
	// never does) leaves it alone and says so, and keeps its events.
	q := engine.NewParticipant(engine.ParticipantConfig{Node: 0})
	for _, e := range log {
		if _, ok := e.(engine.PartViolation); ok {
			continue
		}
		if err := q.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	rd = q.Step(engine.Start{Now: now, PreparedGIDs: []string{"tpcd:c:1:1:0"}})
	if !hasViolation(rd) || len(q.Transactions()) != 0 {
		t.Fatalf("restart with a committed GID prepared: %s; in memory %v", engine.DescribeReady(rd), q.Transactions())
	}
	for _, e := range rd.Effects {
		if _, ok := e.(engine.Forget); ok {
			t.Errorf("restart forgets a transaction still prepared: %s", engine.DescribeReady(rd))
		}
	}
	// Without it, the restart only forgets the transaction.
	q = engine.NewParticipant(engine.ParticipantConfig{Node: 0})
	for _, e := range log {
		if err := q.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	rd = q.Step(engine.Start{Now: now})
	rd.Effects = slices.DeleteFunc(rd.Effects, func(e engine.Effect) bool { _, ask := e.(engine.AskCoordinator); return ask })
	if len(rd.Events) != 0 || len(rd.Effects) != 1 || !strings.HasPrefix(engine.DescribeEffect(rd.Effects[0]), "forget tx=1") {
		t.Fatalf("restart after the commit: %s", engine.DescribeReady(rd))
	}
}

func isData(e engine.Effect) bool {
	_, ok := e.(engine.Data)
	return ok
}

// TestKeyCheckHasADeadline covers a transaction whose statements run while
// its key is looked up (docs/PROTOCOL.md) when the lookup does not answer:
// the branches must not wait with their locks for ever. Past the vote
// timeout the call is told to retry and the transaction aborts; the late
// answer changes nothing, and the key stays free for the retry, which
// looks it up again.
func TestKeyCheckHasADeadline(t *testing.T) {
	start := engine.Instant(time.Hour)
	c := engine.NewCoordinator(engine.CoordinatorConfig{Participants: 2, Protocol: engine.ProtocolDecider, VoteTimeout: 5 * time.Second, ExecTimeout: time.Minute})
	c.Step(engine.Start{Now: start, NewCluster: "c"})
	stmts := []engine.Statement{{Node: 0, SQL: "insert 1"}, {Node: 1, SQL: "insert 2"}}
	rd := c.Step(engine.ClientTransact{Now: start, Req: 1, Stmts: stmts, Commit: true, Key: "k"})
	var looked, sent int
	for _, e := range rd.Effects {
		switch e := e.(type) {
		case engine.LookupKey:
			looked++
		case engine.Send:
			if _, ok := e.Msg.(engine.ExecRequest); ok {
				sent++
			}
		}
	}
	if looked != 1 || sent != 2 {
		t.Fatalf("the call looked its key up %d times and sent %d statements, want 1 and 2 at once: %v", looked, sent, rd.Effects)
	}
	answers := func(rd engine.Ready) []engine.Respond {
		var out []engine.Respond
		for _, e := range rd.Effects {
			if r, ok := e.(engine.Respond); ok {
				out = append(out, r)
			}
		}
		return out
	}
	if got := answers(c.Step(engine.Tick{Now: start.Add(4 * time.Second)})); len(got) != 0 {
		t.Fatalf("answered before the deadline: %+v", got)
	}
	got := answers(c.Step(engine.Tick{Now: start.Add(6 * time.Second)}))
	if len(got) != 1 || got[0].Req != 1 || got[0].Err == nil || got[0].Err.Code != engine.ErrUnavailable {
		t.Fatalf("past the deadline the call got %+v, want one ErrUnavailable", got)
	}
	if st := c.Status(1); st.Outcome != engine.OutcomeAbort {
		t.Fatalf("the transaction is %+v, want aborted", st)
	}
	if got := answers(c.Step(engine.KeyLookedUp{Now: start.Add(7 * time.Second), Key: "k"})); len(got) != 0 {
		t.Fatalf("the late answer answered %+v", got)
	}
	rd = c.Step(engine.ClientTransact{Now: start.Add(8 * time.Second), Req: 2, Stmts: stmts, Commit: true, Key: "k"})
	if !slices.ContainsFunc(rd.Effects, func(e engine.Effect) bool { _, ok := e.(engine.LookupKey); return ok }) {
		t.Fatalf("the retry did not look its key up again: %v", rd.Effects)
	}
}
