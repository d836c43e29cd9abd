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
	onMeasure := l.onMeasure
	if l.opts.Warmup <= 0 && onMeasure != nil {
		// Without a warm-up, measuring starts with the load: the meter
		// reads its counters first, so that no transaction falls due
		// (--rate) before the measured time begins.
		onMeasure()
		onMeasure = nil
	}
	loadStart := time.Now()
	var sched *schedule
	if l.opts.Rate > 0 {
		sched = newSchedule(loadStart, l.opts.Rate, l.opts.Schedule, l.opts.LatencyLimit)
	}
	rec := newRecorder(l.opts.Participants, sched != nil, l.opts.LatencyLimit)
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		remaining atomic.Int64
	)
	// stopped is closed with stop set, for clients waiting for a due time.
	stopped := make(chan struct{})
	remaining.Store(int64(l.opts.Transactions))
	byCount := l.opts.Transactions > 0

	// Calls get their own context so that an interrupt lets every
	// transaction in flight end properly instead of being cut in half.
	callCtx, cancelCalls := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCalls()

	var start time.Time
	startMeasuring := func() {
		if onMeasure != nil {
			onMeasure()
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
				due := began
				if sched != nil {
					var skipped int64
					due, skipped = sched.take(began)
					rec.skip(skipped, measured)
					if !waitUntil(due, stopped) {
						return
					}
					began = time.Now()
				}
				sp.reset(began)
				out, reason := tx(callCtx, plan, sp)
				rec.record(measured, out, time.Since(due), began.Sub(due), plan, reason, sp)
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

	if l.opts.ProgressEvery > 0 && l.opts.ProgressLog != nil {
		stopLog := l.logProgress(loadStart, rec, &measuring)
		defer stopLog()
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
	close(stopped)
	<-finished
	elapsed := time.Since(start)
	if l.onEnd != nil {
		l.onEnd()
	}
	if stopProgress != nil {
		stopProgress()
	}
	return rec.result(l.mode, elapsed, l.opts.Statements, sched)
}

// waitUntil sleeps until t; false if stopped was closed first.
func waitUntil(t time.Time, stopped <-chan struct{}) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-stopped:
		return false
	}
}

// logProgress writes a line to Options.ProgressLog every
// Options.ProgressEvery, as pgbench -P does: the time since the load
// began, the committed rate, the mean latency and its standard deviation
// over the interval, aborts and failures, and with a schedule the mean lag
// and the skipped transactions. It returns a function that stops it.
func (l *load) logProgress(start time.Time, rec *recorder, measuring *atomic.Bool) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(l.opts.ProgressEvery)
		defer t.Stop()
		last := start
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				iv := rec.takeInterval()
				fmt.Fprintln(l.opts.ProgressLog, progressLine(l.mode, now.Sub(start), now.Sub(last), iv, rec.scheduled, !measuring.Load()))
				last = now
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// progressLine words one interval of a progress report.
func progressLine(mode string, since, span time.Duration, iv interval, scheduled, warmup bool) string {
	ms := func(us float64) float64 { return us / 1000 }
	line := fmt.Sprintf("progress: %s %.1f s, %.1f tx/s, lat %.3f ms stddev %.3f, %d aborted, %d failed",
		mode, since.Seconds(), float64(iv.committed)/span.Seconds(), ms(iv.latency.Mean()), ms(iv.latency.StdDev()), iv.aborted, iv.failed)
	if scheduled {
		line += fmt.Sprintf(", lag %.3f ms, %d skipped", ms(iv.lag.Mean()), iv.skipped)
	}
	if warmup {
		line += " (warm-up)"
	}
	return line
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
