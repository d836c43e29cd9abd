package bench

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram bounds: 1 µs to 10 minutes at 3 significant digits (0.1%
// relative error) is about 40 KiB, however many samples.
const (
	histMin     = 1
	histMax     = int64(10 * time.Minute / time.Microsecond)
	histSigFigs = 3
	// maxReasons bounds the distinct abort reasons a result keeps.
	maxReasons = 8
	// reasonLen is where a reason is cut: the rest is usually ids.
	reasonLen = 120
)

// Latency percentiles of committed transactions, in milliseconds.
type Latency struct {
	P50  float64 `json:"p50_ms"`
	P95  float64 `json:"p95_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

// Result is one measured load: either through tpcd or the raw baseline.
type Result struct {
	// Mode is "tpcd" or "raw".
	Mode string `json:"mode"`
	// Seconds is the measured time: from the end of the warm-up until the
	// last measured transaction finished.
	Seconds float64 `json:"seconds"`
	// Attempted = Committed + Aborted + Failed. Failed transactions ended
	// in an error that leaves their outcome unknown to the client (a lost
	// connection, a timeout); aborted ones were answered "abort".
	Attempted int64 `json:"attempted"`
	Committed int64 `json:"committed"`
	Aborted   int64 `json:"aborted"`
	Failed    int64 `json:"failed"`
	// Per-second rates over Seconds. StatementsPerSec counts the statements
	// of committed transactions.
	CommittedPerSec  float64 `json:"committed_per_sec"`
	AbortedPerSec    float64 `json:"aborted_per_sec"`
	StatementsPerSec float64 `json:"statements_per_sec"`
	// Latency is from the client's first call of a transaction until its
	// commit was answered (tpcd) or COMMIT PREPARED returned everywhere
	// (raw), for committed transactions only.
	Latency Latency `json:"latency"`
	// Steps are the latencies of the steps of committed transactions, as
	// the client saw them: for tpcd "exec" (one sample per statement; the
	// first begins the transaction) and "commit", or in the single form
	// "transact" (the whole call), and in the plain form "plain" for a
	// plain transaction at its participant; for raw "exec" (the first on a server
	// includes its BEGIN; in the single form one sample for all servers'
	// statements at once), "prepare", "decision" and "commit prepared".
	Steps map[string]Latency `json:"steps,omitempty"`
	// Costs are the work per committed transaction.
	Costs *Costs `json:"costs,omitempty"`
	// NodeStatements counts the committed statements per participant.
	NodeStatements []int64 `json:"node_statements"`
	// Reasons counts aborts and failures by their (shortened) reason; at
	// most a few distinct ones are kept, the rest count as "other".
	Reasons map[string]int64 `json:"reasons,omitempty"`
	// CommittedBySecond counts the committed transactions by the second of
	// the measured time they ended in, from its start: entry i is the rate
	// over second i. The last entry covers what is left of Seconds (the
	// transactions in flight when time was up) and may be a part of a
	// second. A transaction begun before the measurement started is not
	// measured, so the first second misses those that ended in it.
	CommittedBySecond []int64 `json:"committed_by_second,omitempty"`
	// Startup compares the first seconds with the rest; nil when fewer
	// than minStartupSeconds whole seconds were measured.
	Startup *Startup `json:"startup,omitempty"`
	// Schedule is how well the arrival schedule was kept, with
	// Options.Rate; Latency then counts from each transaction's due time.
	Schedule *ScheduleResult `json:"schedule,omitempty"`
	// Late counts the committed transactions whose latency was over
	// LatencyLimitMS (Options.LatencyLimit); both are 0 without a limit.
	LatencyLimitMS float64 `json:"latency_limit_ms,omitempty"`
	Late           int64   `json:"late,omitempty"`
}

// ScheduleResult describes a measurement at a fixed arrival rate.
type ScheduleResult struct {
	// Rate is the arrival rate asked for, per second, and Kind the
	// schedule (SchedulePoisson or ScheduleFixed).
	Rate float64 `json:"rate"`
	Kind string  `json:"kind"`
	// Lag is how long transactions waited past their due time for a free
	// client, every measured transaction that ran.
	Lag Latency `json:"lag"`
	// Skipped counts due times that were already more than the latency
	// limit past when a client was free, and were not run.
	Skipped int64 `json:"skipped"`
}

// Startup compares the committed rate of a measurement's first seconds
// with that of its later whole seconds: right after the nodes start
// (--warmup 0), a start-up tail shows as a Ratio well below 1.
type Startup struct {
	// FirstSeconds is how many seconds count as the start: a third of the
	// whole seconds measured, at most maxStartupSeconds.
	FirstSeconds int `json:"first_seconds"`
	// FirstPerSec and LaterPerSec are the committed rates over the first
	// seconds and over the whole seconds after them; Ratio is
	// FirstPerSec / LaterPerSec.
	FirstPerSec float64 `json:"first_per_sec"`
	LaterPerSec float64 `json:"later_per_sec"`
	Ratio       float64 `json:"ratio"`
}

// Bounds of Startup.FirstSeconds.
const (
	minStartupSeconds = 3
	maxStartupSeconds = 5
)

// startupOf compares the first seconds of bySecond with the later whole
// ones; the last entry is left out when the measurement ended inside it.
func startupOf(bySecond []int64, elapsed time.Duration) *Startup {
	whole := min(int(elapsed/time.Second), len(bySecond))
	if whole < minStartupSeconds {
		return nil
	}
	first := min(whole/3, maxStartupSeconds)
	rate := func(counts []int64) float64 {
		var sum int64
		for _, n := range counts {
			sum += n
		}
		return float64(sum) / float64(len(counts))
	}
	st := &Startup{FirstSeconds: first, FirstPerSec: rate(bySecond[:first]), LaterPerSec: rate(bySecond[first:whole])}
	if st.LaterPerSec > 0 {
		st.Ratio = st.FirstPerSec / st.LaterPerSec
	}
	return st
}

// recorder collects the outcomes of one measurement from all clients, and
// those of every transaction, warm-up included, for the progress report.
type recorder struct {
	committed, aborted, failed atomic.Int64
	skipped, late              atomic.Int64

	// scheduled: transactions have due times and lags (Options.Rate);
	// limit is Options.LatencyLimit.
	scheduled bool
	limit     time.Duration

	mu sync.Mutex
	// start is when the measurement began; bySecond counts committed
	// transactions by the second after it that they ended in.
	start    time.Time
	bySecond []int64
	hist     *hdrhistogram.Histogram
	lag      *hdrhistogram.Histogram
	steps    map[string]*hdrhistogram.Histogram
	nodes    []int64
	reasons  map[string]int64
	// iv is the progress report's current interval.
	iv interval
}

func newRecorder(nodes int, scheduled bool, limit time.Duration) *recorder {
	return &recorder{
		scheduled: scheduled,
		limit:     limit,
		hist:      hdrhistogram.New(histMin, histMax, histSigFigs),
		lag:       hdrhistogram.New(histMin, histMax, histSigFigs),
		steps:     map[string]*hdrhistogram.Histogram{},
		nodes:     make([]int64, nodes),
		reasons:   map[string]int64{},
		iv:        newInterval(),
	}
}

// interval is what ended since the last progress report, measured or not.
type interval struct {
	committed, aborted, failed, skipped int64
	// latency of committed transactions, lag of all that ran.
	latency, lag *hdrhistogram.Histogram
}

func newInterval() interval {
	return interval{
		latency: hdrhistogram.New(histMin, histMax, histSigFigs),
		lag:     hdrhistogram.New(histMin, histMax, histSigFigs),
	}
}

// takeInterval returns the interval since the last call and starts the
// next.
func (r *recorder) takeInterval() interval {
	r.mu.Lock()
	defer r.mu.Unlock()
	iv := r.iv
	r.iv = newInterval()
	return iv
}

// skip counts due times the schedule skipped.
func (r *recorder) skip(n int64, measured bool) {
	if n == 0 {
		return
	}
	if measured {
		r.skipped.Add(n)
	}
	r.mu.Lock()
	r.iv.skipped += n
	r.mu.Unlock()
}

// outcome is how one transaction ended.
type outcome uint8

const (
	outCommitted outcome = 1 + iota
	outAborted
	outFailed
)

// startAt sets when the measurement began, before anything is recorded.
func (r *recorder) startAt(t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.start = t
}

// record files a transaction that ended: took is its latency (from its
// due time with a schedule), lag how late it started. Only a measured one
// counts in the result; every one counts in the progress interval.
func (r *recorder) record(measured bool, out outcome, took, lag time.Duration, plan []stmt, reason string, sp *spans) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch out {
	case outCommitted:
		r.iv.committed++
		recordDuration(r.iv.latency, took)
	case outAborted:
		r.iv.aborted++
	default:
		r.iv.failed++
	}
	if r.scheduled {
		recordDuration(r.iv.lag, lag)
	}
	if !measured {
		return
	}
	switch out {
	case outCommitted:
		r.committed.Add(1)
	case outAborted:
		r.aborted.Add(1)
	default:
		r.failed.Add(1)
	}
	if r.scheduled {
		recordDuration(r.lag, lag)
	}
	if out == outCommitted {
		if r.limit > 0 && took > r.limit {
			r.late.Add(1)
		}
		if !r.start.IsZero() {
			second := int(time.Since(r.start) / time.Second)
			for len(r.bySecond) <= second {
				r.bySecond = append(r.bySecond, 0)
			}
			r.bySecond[second]++
		}
		recordDuration(r.hist, took)
		if sp != nil {
			for i := range sp.n {
				h := r.steps[sp.name[i]]
				if h == nil {
					h = hdrhistogram.New(histMin, histMax, histSigFigs)
					r.steps[sp.name[i]] = h
				}
				recordDuration(h, sp.took[i])
			}
		}
		for _, s := range plan {
			r.nodes[s.node]++
		}
		return
	}
	reason = maskNumbers(reason)
	if len(reason) > reasonLen {
		reason = reason[:reasonLen] + "..."
	}
	if _, ok := r.reasons[reason]; !ok && len(r.reasons) >= maxReasons {
		reason = "other"
	}
	r.reasons[reason]++
}

// result sums the measurement up; sched is the schedule it ran on, nil
// without one.
func (r *recorder) result(mode string, elapsed time.Duration, stmts int, sched *schedule) *Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := &Result{
		Mode:           mode,
		Seconds:        elapsed.Seconds(),
		Committed:      r.committed.Load(),
		Aborted:        r.aborted.Load(),
		Failed:         r.failed.Load(),
		NodeStatements: append([]int64(nil), r.nodes...),
	}
	if sched != nil {
		res.Schedule = &ScheduleResult{Rate: sched.rate(), Kind: sched.kind, Skipped: r.skipped.Load()}
		if r.lag.TotalCount() > 0 {
			res.Schedule.Lag = latencyOf(r.lag)
		}
	}
	if r.limit > 0 {
		res.LatencyLimitMS = float64(r.limit) / float64(time.Millisecond)
		res.Late = r.late.Load()
	}
	// Seconds in which nothing committed are there as zeros, the last
	// one too.
	seconds := int((elapsed + time.Second - 1) / time.Second)
	res.CommittedBySecond = append(make([]int64, 0, max(seconds, len(r.bySecond))), r.bySecond...)
	for len(res.CommittedBySecond) < seconds {
		res.CommittedBySecond = append(res.CommittedBySecond, 0)
	}
	res.Startup = startupOf(res.CommittedBySecond, elapsed)
	res.Attempted = res.Committed + res.Aborted + res.Failed
	if s := elapsed.Seconds(); s > 0 {
		res.CommittedPerSec = float64(res.Committed) / s
		res.AbortedPerSec = float64(res.Aborted) / s
		res.StatementsPerSec = float64(res.Committed*int64(stmts)) / s
	}
	if r.hist.TotalCount() > 0 {
		res.Latency = latencyOf(r.hist)
	}
	if len(r.steps) > 0 {
		res.Steps = make(map[string]Latency, len(r.steps))
		for name, h := range r.steps {
			res.Steps[name] = latencyOf(h)
		}
	}
	if len(r.reasons) > 0 {
		res.Reasons = make(map[string]int64, len(r.reasons))
		for k, v := range r.reasons {
			res.Reasons[k] = v
		}
	}
	return res
}

// topReasons lists reasons by count, most frequent first.
func topReasons(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys
}

// maskNumbers replaces every run of digits with "N", so that reasons that
// differ only in transaction ids, GIDs or ports count as one.
func maskNumbers(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			if len(b) == 0 || b[len(b)-1] != 'N' {
				b = append(b, 'N')
			}
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

func recordDuration(h *hdrhistogram.Histogram, d time.Duration) {
	us := max(d.Microseconds(), histMin)
	// A value past the top is clamped, not lost: it is still the max.
	_ = h.RecordValue(min(us, histMax))
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		P50:  ms(h.ValueAtQuantile(50)),
		P95:  ms(h.ValueAtQuantile(95)),
		P99:  ms(h.ValueAtQuantile(99)),
		Max:  ms(h.Max()),
		Mean: h.Mean() / 1000,
	}
}

// maxSpans bounds the steps one transaction records; steps past it are
// not timed (S statements take S of them).
const maxSpans = 16

// spans times the steps of one transaction; each client reuses its own.
type spans struct {
	n    int
	name [maxSpans]string
	took [maxSpans]time.Duration
	last time.Time
}

func (s *spans) reset(now time.Time) {
	s.n = 0
	s.last = now
}

// mark ends the step that began at the previous mark (or the reset).
func (s *spans) mark(name string) {
	now := time.Now()
	if s.n < maxSpans {
		s.name[s.n], s.took[s.n] = name, now.Sub(s.last)
		s.n++
	}
	s.last = now
}
