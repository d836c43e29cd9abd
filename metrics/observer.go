package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tpcd/tpcd/engine"
)

// latencyBuckets span a fast local commit (a millisecond) to a vote
// timeout (seconds).
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// newCounter, newGauge, newHistogram and their vector forms make this
// package's metrics, which need only a name, a help text, the buckets of a
// histogram and the label of a vector.
func newCounter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

func newCounterVec(name, help, label string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
}

func newGauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
}

func newHistogram(name, help string, buckets []float64) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
}

func newHistogramVec(name, help string, buckets []float64, label string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, []string{label})
}

// loopMetrics are what every node's loop shows: log appends and recovery.
type loopMetrics struct {
	appendEvents   prometheus.Histogram
	appendSeconds  prometheus.Histogram
	appendFailures prometheus.Counter
	recovery       prometheus.Gauge
	recoveryEvents prometheus.Gauge
	violations     prometheus.Counter
	pgRestarts     prometheus.Counter
}

func newLoopMetrics(reg prometheus.Registerer) loopMetrics {
	m := loopMetrics{
		appendEvents:   newHistogram("tpcd_log_append_batch_events", "Events written by one group-commit append to the log.", prometheus.ExponentialBuckets(1, 2, 11)),
		appendSeconds:  newHistogram("tpcd_log_append_seconds", "Time one group-commit append to the log took.", latencyBuckets),
		appendFailures: newCounter("tpcd_log_append_failures_total", "Log appends that failed (and were retried)."),
		recovery:       newGauge("tpcd_recovery_seconds", "How long replaying the log took at the last start."),
		recoveryEvents: newGauge("tpcd_recovery_events", "Events replayed from the log at the last start."),
		violations:     newCounter("tpcd_atomicity_violations_total", "Evidence of broken atomicity seen by this node. Never expected: alert on any."),
		pgRestarts:     newCounter("tpcd_postgres_restarts_total", "Restarts of the node's own (embedded) PostgreSQL after it died."),
	}
	reg.MustRegister(m.appendEvents, m.appendSeconds, m.appendFailures, m.recovery, m.recoveryEvents, m.violations, m.pgRestarts)
	return m
}

// PostgresRestarted implements node.PostgresObserver.
func (m *loopMetrics) PostgresRestarted() { m.pgRestarts.Inc() }

// Appended implements node.Observer.
func (m *loopMetrics) Appended(events int, took time.Duration, err error) {
	if err != nil {
		m.appendFailures.Inc()
		return
	}
	m.appendEvents.Observe(float64(events))
	m.appendSeconds.Observe(took.Seconds())
}

// Recovered implements node.Observer.
func (m *loopMetrics) Recovered(events int, took time.Duration) {
	m.recovery.Set(took.Seconds())
	m.recoveryEvents.Set(float64(events))
}

type nodeTx struct {
	tx   engine.TxID
	node engine.NodeID
}

// Coordinator derives a coordinator's metrics from its loop. Create it with
// NewCoordinator and pass it as node.CoordinatorOptions.Observer.
type Coordinator struct {
	loopMetrics
	begun     prometheus.Counter
	committed prometheus.Counter
	aborted   *prometheus.CounterVec
	commitRPC *prometheus.HistogramVec
	voteRTT   prometheus.Histogram
	decideRTT prometheus.Histogram

	// sibling: an observer of another coordinator of this process
	// (Sibling), whose recovery the node's gauges do not show.
	sibling bool

	// Loop-goroutine state. Entries go when their transaction ends, so the
	// maps hold at most the transactions in flight.
	now        func() time.Time
	commitReqs map[engine.ReqID]time.Time
	batches    map[engine.TxID]struct{}
	decided    map[engine.TxID]struct{}
	prepares   map[nodeTx]time.Time
	decisions  map[nodeTx]time.Time
}

// NewCoordinator registers a coordinator's metrics with reg.
func NewCoordinator(reg prometheus.Registerer) *Coordinator {
	m := &Coordinator{
		loopMetrics: newLoopMetrics(reg),
		begun:       newCounter("tpcd_transactions_begun_total", "Transactions begun: explicit (begin) and seed-form batches."),
		committed:   newCounter("tpcd_transactions_committed_total", "Transactions decided commit."),
		aborted:     newCounterVec("tpcd_transactions_aborted_total", "Transactions decided abort, by reason class.", "reason"),
		commitRPC:   newHistogramVec("tpcd_commit_latency_seconds", "From a commit request to its answer (the decision is durable), by outcome.", latencyBuckets, "outcome"),
		voteRTT:     newHistogram("tpcd_vote_round_trip_seconds", "From sending prepare to a participant to receiving its vote (when it votes to the coordinator), or the decider's commit request to its answer.", latencyBuckets),
		decideRTT:   newHistogram("tpcd_decision_round_trip_seconds", "From first sending a decision to a participant to its acknowledgement.", latencyBuckets),
		now:         time.Now,
		commitReqs:  map[engine.ReqID]time.Time{},
		batches:     map[engine.TxID]struct{}{},
		decided:     map[engine.TxID]struct{}{},
		prepares:    map[nodeTx]time.Time{},
		decisions:   map[nodeTx]time.Time{},
	}
	// Every reason class is shown from the start, at zero, so that rates
	// and alerts work before the first abort of a kind.
	for _, r := range []string{ReasonRollback, ReasonVoteNo, ReasonVoteTimeout, ReasonUnreachable, ReasonExecTimeout,
		ReasonStatementFailed, ReasonClientIdle, ReasonCoordinatorRestart, ReasonOther} {
		m.aborted.WithLabelValues(r)
	}
	reg.MustRegister(m.begun, m.committed, m.aborted, m.commitRPC, m.voteRTT, m.decideRTT)
	return m
}

// Sibling returns an observer for another coordinator running in this
// process, as a slot the node adopted runs (tpcd coordinator --slots):
// it counts into m's counters and histograms, so that the node's metrics
// are the totals of every slot it serves, violations included, and keeps
// its own loop state, as each coordinator's loop runs on its own
// goroutine. The gauges (WatchCoordinator) and the recovery figures stay
// m's coordinator's.
func (m *Coordinator) Sibling() *Coordinator {
	s := *m
	s.sibling = true
	s.commitReqs = map[engine.ReqID]time.Time{}
	s.batches = map[engine.TxID]struct{}{}
	s.decided = map[engine.TxID]struct{}{}
	s.prepares = map[nodeTx]time.Time{}
	s.decisions = map[nodeTx]time.Time{}
	return &s
}

// Recovered implements node.Observer.
func (m *Coordinator) Recovered(events int, took time.Duration) {
	if !m.sibling {
		m.loopMetrics.Recovered(events, took)
	}
}

// Stepped implements node.Observer.
func (m *Coordinator) Stepped(in engine.Input, rd engine.Ready) {
	switch in := in.(type) {
	case engine.ClientCommit:
		if _, ok := m.commitReqs[in.Req]; !ok {
			m.commitReqs[in.Req] = m.now()
		}
	case engine.Receive:
		switch msg := in.Msg.(type) {
		case engine.VoteMessage:
			m.roundTrip(m.prepares, nodeTx{msg.TxID, msg.From}, m.voteRTT)
		case engine.SettleAnswer:
			m.roundTrip(m.prepares, nodeTx{msg.TxID, msg.From}, m.voteRTT)
		case engine.AckMessage:
			m.roundTrip(m.decisions, nodeTx{msg.TxID, msg.From}, m.decideRTT)
		}
	}
	for _, ev := range rd.Events {
		if d, ok := ev.(engine.CoordDecided); ok {
			if _, seen := m.decided[d.TxID]; !seen {
				m.decided[d.TxID] = struct{}{}
				m.countDecision(d.Outcome, d.Reason)
			}
		}
	}
}

func (m *Coordinator) roundTrip(sent map[nodeTx]time.Time, k nodeTx, h prometheus.Histogram) {
	if at, ok := sent[k]; ok {
		h.Observe(m.now().Sub(at).Seconds())
		delete(sent, k)
	}
}

func (m *Coordinator) countDecision(o engine.Outcome, reason string) {
	switch o {
	case engine.OutcomeCommit:
		m.committed.Inc()
	case engine.OutcomeAbort:
		m.aborted.WithLabelValues(ReasonClass(reason)).Inc()
	}
}

// Performed implements node.Observer.
func (m *Coordinator) Performed(e engine.Effect) {
	switch e := e.(type) {
	case engine.Respond:
		switch r := e.Reply.(type) {
		case engine.BeginReply:
			m.begun.Inc()
		case engine.OutcomeReply:
			if at, ok := m.commitReqs[e.Req]; ok {
				m.commitRPC.WithLabelValues(r.Outcome.String()).Observe(m.now().Sub(at).Seconds())
			}
		}
		delete(m.commitReqs, e.Req)
	case engine.Send:
		switch msg := e.Msg.(type) {
		case engine.ExecRequest:
			if _, seen := m.batches[msg.TxID]; msg.Batch && !seen {
				m.batches[msg.TxID] = struct{}{}
				m.begun.Inc()
			}
		case engine.PrepareRequest:
			// A vote that goes to the decider is not seen here; the
			// decider's answer to its commit request is.
			if k := (nodeTx{msg.TxID, e.To}); m.prepares[k].IsZero() && !msg.VoteToDecider {
				m.prepares[k] = m.now()
			}
		case engine.CommitBranchRequest:
			if k := (nodeTx{msg.TxID, e.To}); m.prepares[k].IsZero() {
				m.prepares[k] = m.now()
			}
		case engine.DecisionRequest:
			// Resends keep the first time: the round trip includes the
			// retries a slow or absent participant needed.
			if k := (nodeTx{msg.TxID, e.To}); m.decisions[k].IsZero() && !msg.Presumed {
				m.decisions[k] = m.now()
			}
		}
	case engine.Violation:
		m.violations.Inc()
	}
}

// Durable implements node.Observer.
func (m *Coordinator) Durable(engine.Event) {}

// Ended implements node.Observer. A transaction decided without a log
// record (nobody to tell: read-only, or aborted before any work reached a
// participant) is counted here; one decided with a record was counted when
// the record was made.
func (m *Coordinator) Ended(txs []engine.StatusReply) {
	for _, t := range txs {
		if _, seen := m.decided[t.TxID]; !seen {
			m.countDecision(t.Outcome, t.Reason)
		}
		delete(m.decided, t.TxID)
		delete(m.batches, t.TxID)
		for k := range m.prepares {
			if k.tx == t.TxID {
				delete(m.prepares, k)
			}
		}
		for k := range m.decisions {
			if k.tx == t.TxID {
				delete(m.decisions, k)
			}
		}
	}
}

// Participant derives a participant's metrics from its loop. Create it
// with NewParticipant and pass it as node.ParticipantOptions.Observer.
type Participant struct {
	loopMetrics
	votes    *prometheus.CounterVec
	outcomes *prometheus.CounterVec
	stmts    prometheus.Counter
	plain    *prometheus.CounterVec
}

// NewParticipant registers a participant's metrics with reg.
func NewParticipant(reg prometheus.Registerer) *Participant {
	m := &Participant{
		loopMetrics: newLoopMetrics(reg),
		votes:       newCounterVec("tpcd_votes_total", "Votes sent to the coordinator or, under the decider protocol, to the decider, by vote (committed: a decider's commit).", "vote"),
		outcomes:    newCounterVec("tpcd_participant_outcomes_total", "Transactions finished in the data database, by outcome (durable).", "outcome"),
		stmts:       newCounter("tpcd_statements_total", "Statements received from the coordinator."),
		plain:       newCounterVec("tpcd_plain_transactions_total", "Plain transactions (plain_transact) run here, by how they ended: committed; rolled_back (PostgreSQL refused a statement or the COMMIT, or nothing was sent to commit it); unknown (the connection broke once the COMMIT may have been sent, or the COMMIT is on the primary alone).", "outcome"),
	}
	for _, v := range []engine.Vote{engine.VoteYes, engine.VoteNo, engine.VoteReadOnly, engine.VoteCommitted} {
		m.votes.WithLabelValues(v.String())
	}
	for _, o := range []engine.Outcome{engine.OutcomeCommit, engine.OutcomeAbort} {
		m.outcomes.WithLabelValues(o.String())
	}
	for _, o := range []string{"committed", "rolled_back", "unknown"} {
		m.plain.WithLabelValues(o)
	}
	reg.MustRegister(m.votes, m.outcomes, m.stmts, m.plain)
	return m
}

// PlainEnded implements node.PlainObserver.
func (m *Participant) PlainEnded(outcome string) { m.plain.WithLabelValues(outcome).Inc() }

// Stepped implements node.Observer.
func (m *Participant) Stepped(in engine.Input, _ engine.Ready) {
	if r, ok := in.(engine.Receive); ok {
		if _, ok := r.Msg.(engine.ExecRequest); ok {
			m.stmts.Inc()
		}
	}
}

// Performed implements node.Observer.
func (m *Participant) Performed(e engine.Effect) {
	switch e := e.(type) {
	case engine.Send:
		if v, ok := e.Msg.(engine.VoteMessage); ok {
			m.votes.WithLabelValues(v.Vote.String()).Inc()
		}
	case engine.Violation:
		m.violations.Inc()
	}
}

// Durable implements node.Observer.
func (m *Participant) Durable(ev engine.Event) {
	switch ev.(type) {
	case engine.PartCommitted:
		m.outcomes.WithLabelValues(engine.OutcomeCommit.String()).Inc()
	case engine.PartAborted:
		m.outcomes.WithLabelValues(engine.OutcomeAbort.String()).Inc()
	}
}

// Ended implements node.Observer; participants have no such feed.
func (m *Participant) Ended([]engine.StatusReply) {}
