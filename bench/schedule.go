package bench

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Arrival schedules that Options.Schedule accepts, for Options.Rate.
const (
	// SchedulePoisson spaces transactions by exponentially distributed
	// gaps of mean 1/Rate (a Poisson process, as pgbench --rate does):
	// arrivals of independent users, bursts included.
	SchedulePoisson = "poisson"
	// ScheduleFixed spaces them exactly 1/Rate apart.
	ScheduleFixed = "fixed"
)

// schedule hands out the times transactions are due, in order, to
// whichever client is free first: an open system, where transactions
// arrive at a set rate whether or not the last ones are done. A due time
// that no client could start in time waits for one (its lag), as a user's
// request waits in a queue; latency counts from the due time, so that the
// wait shows in it.
type schedule struct {
	mu   sync.Mutex
	next time.Time
	mean time.Duration
	perS float64 // the rate asked for
	kind string
	rng  *rand.Rand
	// limit: a due time more than limit late when a client takes it is
	// skipped, not run (0: none is skipped).
	limit time.Duration
}

func newSchedule(start time.Time, rate float64, kind string, limit time.Duration) *schedule {
	s := &schedule{
		mean:  time.Duration(float64(time.Second) / rate),
		perS:  rate,
		kind:  kind,
		rng:   rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		limit: limit,
	}
	s.next = start.Add(s.gap())
	return s
}

// rate is the arrival rate per second.
func (s *schedule) rate() float64 { return s.perS }

// gap is the time from one due time to the next.
func (s *schedule) gap() time.Duration {
	if s.kind == ScheduleFixed {
		return s.mean
	}
	return time.Duration(s.rng.ExpFloat64() * float64(s.mean))
}

// take returns the next due time, skipping those already more than the
// limit late at now; skipped says how many it skipped.
func (s *schedule) take(now time.Time) (due time.Time, skipped int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.limit > 0 && now.Sub(s.next) > s.limit {
		skipped++
		s.next = s.next.Add(s.gap())
	}
	due = s.next
	s.next = s.next.Add(s.gap())
	return due, skipped
}
