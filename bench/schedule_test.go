package bench

import (
	"math/rand/v2"
	"regexp"
	"testing"
	"time"
)

// A fixed schedule is due every 1/rate; one that falls behind by more than
// the limit skips what is too late, and hands out the first due time that
// is not.
func TestFixedSchedule(t *testing.T) {
	start := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	s := newSchedule(start, 100, ScheduleFixed, 25*time.Millisecond)
	for i := 1; i <= 3; i++ {
		due, skipped := s.take(start)
		if want := start.Add(time.Duration(i) * 10 * time.Millisecond); !due.Equal(want) || skipped != 0 {
			t.Fatalf("take %d = %v, %d skipped; want %v, none", i, due.Sub(start), skipped, want.Sub(start))
		}
	}
	// Next due at 40 ms; at 100 ms those at 40, 50, 60 and 70 ms are more
	// than 25 ms late.
	due, skipped := s.take(start.Add(100 * time.Millisecond))
	if due.Sub(start) != 80*time.Millisecond || skipped != 4 {
		t.Errorf("take at 100 ms = %v, %d skipped; want 80ms, 4", due.Sub(start), skipped)
	}
	if s.rate() != 100 {
		t.Errorf("rate %g, want 100", s.rate())
	}
	// Without a limit nothing is skipped, however late.
	s = newSchedule(start, 100, ScheduleFixed, 0)
	if due, skipped := s.take(start.Add(time.Hour)); due.Sub(start) != 10*time.Millisecond || skipped != 0 {
		t.Errorf("no limit: %v, %d skipped", due.Sub(start), skipped)
	}
}

// A Poisson schedule's gaps are exponential with mean 1/rate: their mean
// and their spread (an exponential's standard deviation is its mean).
func TestPoissonSchedule(t *testing.T) {
	start := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	s := newSchedule(start, 200, SchedulePoisson, 0)
	s.rng = rand.New(rand.NewPCG(1, 2))
	const n = 200000
	prev := start
	var sum, sumSq float64
	for range n {
		due, _ := s.take(start)
		gap := due.Sub(prev).Seconds()
		if gap < 0 {
			t.Fatalf("due times out of order: %v after %v", due, prev)
		}
		sum += gap
		sumSq += gap * gap
		prev = due
	}
	mean := sum / n
	sd := sumSq/n - mean*mean
	if mean < 0.00495 || mean > 0.00505 {
		t.Errorf("mean gap %.6f s, want 0.005 (1/200)", mean)
	}
	if sd < 0.005*0.005*0.95 || sd > 0.005*0.005*1.05 {
		t.Errorf("gap variance %.3g, want %.3g (exponential)", sd, 0.005*0.005)
	}
}

// The progress interval counts every transaction, warm-up included, and
// starts over at each report; the result counts measured ones only, with
// the lag of each and the committed ones over the latency limit.
func TestRecorderIntervalAndSchedule(t *testing.T) {
	plan := []stmt{{node: 0}}
	r := newRecorder(1, true, 20*time.Millisecond)
	r.record(false, outCommitted, 50*time.Millisecond, 40*time.Millisecond, plan, "", nil) // warm-up
	r.record(true, outCommitted, 10*time.Millisecond, time.Millisecond, plan, "", nil)
	r.record(true, outCommitted, 30*time.Millisecond, 3*time.Millisecond, plan, "", nil)
	r.record(true, outAborted, 5*time.Millisecond, 2*time.Millisecond, plan, "no vote", nil)
	r.skip(2, true)
	r.skip(1, false)
	iv := r.takeInterval()
	if iv.committed != 3 || iv.aborted != 1 || iv.failed != 0 || iv.skipped != 3 || iv.latency.TotalCount() != 3 || iv.lag.TotalCount() != 4 {
		t.Errorf("interval: %d committed, %d aborted, %d skipped, %d latencies, %d lags", iv.committed, iv.aborted, iv.skipped, iv.latency.TotalCount(), iv.lag.TotalCount())
	}
	if mean := iv.latency.Mean() / 1000; mean < 29.9 || mean > 30.1 {
		t.Errorf("interval latency mean %.2f ms, want 30", mean)
	}
	if next := r.takeInterval(); next.committed != 0 || next.latency.TotalCount() != 0 || next.skipped != 0 {
		t.Errorf("the next interval starts with %+v", next)
	}
	line := progressLine("tpcd", 5*time.Second, 2*time.Second, iv, true, false)
	if !regexp.MustCompile(`^progress: tpcd 5\.0 s, 1\.5 tx/s, lat 30\.0\d\d ms stddev 16\.3\d\d, 1 aborted, 0 failed, lag 11\.5\d\d ms, 3 skipped$`).MatchString(line) {
		t.Errorf("progress line %q", line)
	}

	sched := newSchedule(time.Now(), 50, ScheduleFixed, 20*time.Millisecond)
	res := r.result("tpcd", time.Second, 1, sched)
	if res.Committed != 2 || res.Aborted != 1 || res.Late != 1 || res.LatencyLimitMS != 20 {
		t.Errorf("result: %d committed, %d aborted, %d late of limit %g ms", res.Committed, res.Aborted, res.Late, res.LatencyLimitMS)
	}
	if sc := res.Schedule; sc == nil || sc.Rate != 50 || sc.Kind != ScheduleFixed || sc.Skipped != 2 || sc.Lag.Max < 2.99 || sc.Lag.Max > 3.01 {
		t.Errorf("schedule result %+v", res.Schedule)
	}
}
