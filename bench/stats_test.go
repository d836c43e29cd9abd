package bench

import (
	"slices"
	"testing"
	"time"
)

// Committed transactions count in the second they ended in, from the start
// of the measurement; seconds without any are zeros.
func TestRecorderBySecond(t *testing.T) {
	plan := []stmt{{node: 0}, {node: 1}, {node: 0}}
	r := newRecorder(2, false, 0)
	r.startAt(time.Now().Add(-1500 * time.Millisecond))
	r.record(true, outCommitted, time.Millisecond, 0, plan, "", nil)
	r.record(true, outCommitted, time.Millisecond, 0, plan, "", nil)
	r.record(true, outAborted, time.Millisecond, 0, plan, "lock timeout", nil)
	res := r.result("tpcd", 3200*time.Millisecond, 3, nil)
	if !slices.Equal(res.CommittedBySecond, []int64{0, 2, 0, 0}) {
		t.Errorf("committed by second %v, want [0 2 0 0]", res.CommittedBySecond)
	}
	if res.Startup == nil || res.Startup.FirstSeconds != 1 || res.Startup.FirstPerSec != 0 || res.Startup.LaterPerSec != 1 {
		t.Errorf("start-up over 3 whole seconds: %+v", res.Startup)
	}
}

// The start-up comparison takes a third of the whole seconds, at most
// five, against the whole seconds after them.
func TestStartupOf(t *testing.T) {
	for _, c := range []struct {
		bySecond     []int64
		elapsed      time.Duration
		first        int
		firstPerSec  float64
		laterPerSec  float64
		noComparison bool
	}{
		{bySecond: []int64{10, 20}, elapsed: 2 * time.Second, noComparison: true},
		{bySecond: []int64{10, 20, 30, 4}, elapsed: 3100 * time.Millisecond, first: 1, firstPerSec: 10, laterPerSec: 25},
		{bySecond: []int64{1, 2, 3, 4, 5, 6, 7}, elapsed: 7 * time.Second, first: 2, firstPerSec: 1.5, laterPerSec: 5},
		{bySecond: []int64{130, 130, 130, 130, 130, 326, 326, 326, 326, 326, 326, 326, 326, 326, 326, 326, 326, 326, 326, 326, 50}, elapsed: 20500 * time.Millisecond,
			first: 5, firstPerSec: 130, laterPerSec: 326},
	} {
		st := startupOf(c.bySecond, c.elapsed)
		if c.noComparison {
			if st != nil {
				t.Errorf("%v: compared %+v over too few seconds", c.bySecond, st)
			}
			continue
		}
		if st == nil || st.FirstSeconds != c.first || st.FirstPerSec != c.firstPerSec || st.LaterPerSec != c.laterPerSec || st.Ratio != c.firstPerSec/c.laterPerSec {
			t.Errorf("%v over %v: %+v, want first %d s at %g/s against %g/s", c.bySecond, c.elapsed, st, c.first, c.firstPerSec, c.laterPerSec)
		}
	}
}
