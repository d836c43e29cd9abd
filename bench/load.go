package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// txFunc runs one planned transaction and says how it ended; reason
// explains an abort or a failure.
type txFunc func(ctx context.Context, plan []stmt, sp *spans) (out outcome, reason string)

// load is one measurement: Concurrency clients running transactions
// through one kind of driver.
type load struct {
	mode    string
	opts    *Options
	keys    *keySource
	clients []txFunc
	// oneNode plans every transaction on one participant (the local
	// baseline).
	oneNode  bool
	progress io.Writer
	// onMeasure, if set, runs when the warm-up is over and measuring
	// starts; onEnd when the last measured transaction finished.
	onMeasure, onEnd func()
}

// run warms up, measures, and drains: a client that is inside a
// transaction when time is up finishes it (and it counts), but starts no
// other. ctx ending stops the load early; the result covers what was
// measured until then.
func (l *load) run(ctx context.Context) *Result {
	rec := newRecorder(l.opts.Participants)
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		remaining atomic.Int64
	)
	remaining.Store(int64(l.opts.Transactions))
	byCount := l.opts.Transactions > 0

	// Calls get their own context so that an interrupt lets every
	// transaction in flight end properly instead of being cut in half.
	callCtx, cancelCalls := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCalls()

	var start time.Time
	startMeasuring := func() {
		if l.onMeasure != nil {
			l.onMeasure()
		}
		start = time.Now()
		rec.startAt(start)
		measuring.Store(true)
	}
	// Without a warm-up, nothing may run before measuring starts: every
	// transaction must be counted.
	if l.opts.Warmup <= 0 {
		startMeasuring()
	}

	var wg sync.WaitGroup
	for _, tx := range l.clients {
		p := newPlanner(l.keys, l.opts.Participants, l.opts.Statements, l.oneNode)
		sp := &spans{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				measured := measuring.Load()
				if measured && byCount && remaining.Add(-1) < 0 {
					return
				}
				plan := p.next()
				began := time.Now()
				sp.reset(began)
				out, reason := tx(callCtx, plan, sp)
				if measured {
					rec.record(out, time.Since(began), plan, reason, sp)
				}
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()

	wait := func(d time.Duration) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-finished:
		}
	}

	if l.opts.Warmup > 0 {
		l.show("warm-up", time.Now(), rec, true)
		wait(l.opts.Warmup)
		startMeasuring()
	}

	var stopProgress func()
	if l.progress != nil {
		stopProgress = l.showEverySecond(start, rec)
	}
	if byCount {
		select {
		case <-finished:
		case <-ctx.Done():
		}
	} else {
		wait(l.opts.Duration)
	}
	stop.Store(true)
	<-finished
	elapsed := time.Since(start)
	if l.onEnd != nil {
		l.onEnd()
	}
	if stopProgress != nil {
		stopProgress()
	}
	return rec.result(l.mode, elapsed, l.opts.Statements)
}

func (l *load) showEverySecond(start time.Time, rec *recorder) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				// Leave the line empty for what is printed next.
				fmt.Fprint(l.progress, "\r\033[K")
				return
			case <-t.C:
				l.show("measuring", start, rec, false)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func (l *load) show(phase string, start time.Time, rec *recorder, warm bool) {
	if l.progress == nil {
		return
	}
	if warm {
		fmt.Fprintf(l.progress, "\r\033[K%s: warming up for %s...", l.mode, l.opts.Warmup)
		return
	}
	s := time.Since(start).Seconds()
	c, a, f := rec.committed.Load(), rec.aborted.Load(), rec.failed.Load()
	fmt.Fprintf(l.progress, "\r\033[K%s: %s %4.0fs  committed %d (%.0f/s)  aborted %d  failed %d",
		l.mode, phase, s, c, float64(c)/s, a, f)
}
