package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/failpoint"
	"github.com/tpcd/tpcd/logstore"
)

// machine is what the loop needs of an engine.
type machine interface {
	Step(engine.Input) engine.Ready
	Apply(engine.Event) error
}

// loop drives one engine. Everything that touches the engine happens on the
// loop goroutine; other goroutines talk to it through inputs.
type loop struct {
	name   string
	m      machine
	log    eventLog
	clock  clock
	logger *slog.Logger
	start  time.Time
	tick   time.Duration

	inputs chan engine.Input
	// perform runs an effect whose events are durable. It must not block:
	// slow work goes to other goroutines, whose results come back as inputs.
	perform func(engine.Effect)
	// onDurable sees every event once it is durable (compaction, metrics).
	onDurable func(engine.Event)
	// onRecovered sees every event recovery reads from the log.
	onRecovered func(engine.Event)
	// compaction, if set, learns which transactions each row of the log
	// holds, as rows are recovered and appended, before onDurable sees
	// their events.
	compaction *compactor
	// observer, if set, watches steps, effects and appends (metrics);
	// afterStep, if set, runs after every step (see observe.go).
	observer  Observer
	afterStep func()
	// queries run on the loop goroutine for readers of engine state.
	queries chan func()

	// Loop-goroutine state.
	lsn     engine.LSN // last LSN handed out by the engine
	durable engine.LSN
	// durableSeq is the log's seq of the last durable row: a transaction
	// that ended has no event beyond it (compaction is bounded by it).
	durableSeq int64
	unsynced   []pendingEvent
	// lazySince is when the oldest unsynced event arrived while nothing
	// waited for it (see flush).
	lazySince time.Time
	waiting   []engine.Effect
	flushing  bool
	flushed   chan flushResult
	// toFlush hands a batch to the flusher goroutine, which lives as long as
	// the loop: a goroutine per append would grow a fresh stack every time.
	toFlush chan []pendingEvent

	// debug is fixed at start: describing every step costs allocations.
	debug bool

	stopped chan struct{}
	stopErr error
	once    sync.Once
}

type pendingEvent struct {
	lsn engine.LSN
	ev  engine.Event
}

type flushResult struct {
	upTo   engine.LSN
	seq    int64 // the row the events went to
	events []pendingEvent
	// rest are events of the batch that did not go with events (see
	// flushBatch); the loop appends them again.
	rest []pendingEvent
	err  error
}

// newLoop returns the loop of node name around m, writing to log and
// telling time by clk (wallClock{} outside tests). tick is how often m gets
// a Tick; 0 means 20ms.
func newLoop(name string, m machine, log eventLog, clk clock, logger *slog.Logger, tick time.Duration) *loop {
	if tick <= 0 {
		tick = 20 * time.Millisecond
	}
	return &loop{
		name: name, m: m, log: log, clock: clk, logger: logger, start: clk.Now(), tick: tick,
		inputs:  make(chan engine.Input, 1024),
		queries: make(chan func()),
		flushed: make(chan flushResult, 1),
		toFlush: make(chan []pendingEvent, 1),
		stopped: make(chan struct{}),
		debug:   logger.Enabled(context.Background(), slog.LevelDebug),
	}
}

func (l *loop) now() engine.Instant { return engine.Instant(l.clock.Now().Sub(l.start)) }

// recover folds the node's durable log into the engine.
func (l *loop) recover(ctx context.Context) (int, error) {
	n := 0
	// row collects the events of the row being read, for compaction.
	var row []engine.Event
	var rowSeq int64
	endRow := func() {
		if l.compaction != nil && len(row) > 0 {
			l.compaction.track(rowSeq, row)
		}
		row = row[:0]
	}
	err := l.log.Scan(ctx, l.name, func(r logstore.Record) error {
		if r.Seq != rowSeq {
			endRow()
			rowSeq = r.Seq
		}
		l.durableSeq = max(l.durableSeq, r.Seq)
		ev, err := engine.DecodeEvent(r.Payload)
		if err != nil {
			return fmt.Errorf("event %s: %w", r.Pos, err)
		}
		if err := l.m.Apply(ev); err != nil {
			return fmt.Errorf("event %s: %w", r.Pos, err)
		}
		row = append(row, ev)
		if l.onRecovered != nil {
			l.onRecovered(ev)
		}
		n++
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("replay log of %s: %w", l.name, err)
	}
	endRow()
	return n, nil
}

// startStep runs the Start input and makes its events durable before the node
// serves anything, so the new epoch is fenced in before its first message.
func (l *loop) startStep(ctx context.Context, in engine.Start) ([]engine.Effect, error) {
	rd := l.m.Step(in)
	l.observeStep(in, rd)
	l.lsn += engine.LSN(len(rd.Events))
	if len(rd.Events) > 0 {
		entries, err := entriesOf(nil, rd.Events)
		if err != nil {
			return nil, err
		}
		seq, err := l.log.Append(ctx, l.name, entries)
		if err != nil {
			return nil, fmt.Errorf("log start events: %w", err)
		}
		if l.compaction != nil {
			l.compaction.track(seq, rd.Events)
		}
		l.durableSeq = seq
		for _, ev := range rd.Events {
			l.observe(ev)
		}
	}
	l.durable = l.lsn
	return rd.Effects, nil
}

func (l *loop) observe(ev engine.Event) {
	if l.onDurable != nil {
		l.onDurable(ev)
	}
	if l.observer != nil {
		l.observer.Durable(ev)
	}
}

// entriesOf appends to dst the log entries of evs and returns it.
func entriesOf(dst []logstore.Entry, evs []engine.Event) ([]logstore.Entry, error) {
	for _, ev := range evs {
		payload, err := engine.EncodeEvent(ev)
		if err != nil {
			return nil, err
		}
		dst = append(dst, logstore.Entry{Tx: uint64(ev.Tx()), Event: payload})
	}
	return dst, nil
}

// submit hands an input to the loop; it gives up when the loop stopped.
func (l *loop) submit(in engine.Input) bool {
	select {
	case l.inputs <- in:
		return true
	case <-l.stopped:
		return false
	}
}

// run is the loop goroutine. It returns when ctx is done.
func (l *loop) run(ctx context.Context, initial []engine.Effect) {
	defer l.once.Do(func() { close(l.stopped) })
	go l.flusher(ctx, l.durableSeq)
	defer close(l.toFlush)
	defer l.finalFlush()
	for _, e := range initial {
		l.perform(e)
	}
	ticks, stopTicks := l.clock.NewTicker(l.tick)
	defer stopTicks()
	for {
		select {
		case <-ctx.Done():
			return
		case in := <-l.inputs:
			l.step(in)
			// Drain what else is queued so one flush carries it all.
			for i := 0; i < 256; i++ {
				select {
				case in := <-l.inputs:
					l.step(in)
					continue
				default:
				}
				break
			}
		case r := <-l.flushed:
			l.flushing = false
			if r.err != nil {
				// The log is unreachable: keep everything, try again after a
				// pause. Nothing that waits for these events may run meanwhile.
				l.logger.Error("log append failed; retrying", "node", l.name, "events", len(r.events), "err", r.err)
				l.unsynced = append(r.events, l.unsynced...)
				select {
				case <-ctx.Done():
					return
				case <-l.clock.After(appendRetryPause):
				}
			} else {
				l.durable, l.durableSeq = r.upTo, r.seq
				for _, pe := range r.events {
					l.observe(pe.ev)
				}
				l.unsynced = append(r.rest, l.unsynced...)
				l.release()
			}
		case <-ticks:
			l.step(engine.Tick{Now: l.now()})
		case q := <-l.queries:
			q()
		}
		l.flush(ctx)
	}
}

func (l *loop) step(in engine.Input) {
	rd := l.m.Step(in)
	l.observeStep(in, rd)
	if l.debug && !rd.Empty() {
		l.logger.Debug("step", "input", fmt.Sprintf("%T", in), "tx", inputTx(in), "durable", l.durable, "ready", engine.DescribeReady(rd))
	}
	for i, ev := range rd.Events {
		l.unsynced = append(l.unsynced, pendingEvent{lsn: rd.FirstLSN + engine.LSN(i), ev: ev})
	}
	l.lsn += engine.LSN(len(rd.Events))
	for _, e := range rd.Effects {
		if e.After() <= l.durable && !l.behindWaiting(e) {
			l.perform(e)
		} else {
			l.waiting = append(l.waiting, e)
		}
	}
}

// behindWaiting reports whether e is a data operation of a transaction that
// already has one waiting: those must run in the order they were emitted.
// Anything else may overtake waiting effects.
func (l *loop) behindWaiting(e engine.Effect) bool { return behind(e, l.waiting) }

// behind reports whether e is a data operation of a transaction that has
// one in queue.
func behind(e engine.Effect, queue []engine.Effect) bool {
	d, ok := e.(engine.Data)
	if !ok {
		return false
	}
	for _, w := range queue {
		if wd, ok := w.(engine.Data); ok && wd.TxID == d.TxID {
			return true
		}
	}
	return false
}

// release performs the waiting effects whose events are now durable, in the
// order they were emitted. A data operation whose events are durable still
// waits while an earlier one of its transaction does: an append can make
// the later one ready first when it waits for an earlier LSN.
func (l *loop) release() {
	keep := l.waiting[:0]
	for _, e := range l.waiting {
		if e.After() <= l.durable && !behind(e, keep) {
			l.perform(e)
		} else {
			keep = append(keep, e)
		}
	}
	clear(l.waiting[len(keep):])
	l.waiting = keep
}

// lazyFlush bounds how long events nobody waits for stay in memory. Such
// events (preparing, ended, abort outcomes) may be lost in a crash by
// design; holding them back lets them ride the next append that someone
// waits for instead of costing a forced write each.
const lazyFlush = 100 * time.Millisecond

// maxLazy bounds the events held back that way.
const maxLazy = 512

// appendRetryPause is how long the loop waits before it appends again
// after the log refused a batch.
const appendRetryPause = 200 * time.Millisecond

// flush starts one append of everything not yet durable, unless one is
// already under way (events arriving meanwhile ride the next one) or no
// effect waits for any of it yet.
func (l *loop) flush(ctx context.Context) {
	if l.flushing || len(l.unsynced) == 0 {
		return
	}
	if !l.awaited() && len(l.unsynced) < maxLazy {
		now := l.clock.Now()
		if l.lazySince.IsZero() {
			l.lazySince = now
		}
		if now.Sub(l.lazySince) < lazyFlush {
			return
		}
	}
	l.lazySince = time.Time{}
	batch := l.unsynced
	l.unsynced = nil
	l.flushing = true
	l.toFlush <- batch
}

// awaited reports whether an urgent effect waits for an event not yet
// durable.
func (l *loop) awaited() bool {
	for _, e := range l.waiting {
		if e.After() > l.durable && urgent(e) {
			return true
		}
	}
	return false
}

// urgent tells the effects worth a forced write of their own from those
// that can wait for the next one. Deleting a marker, forgetting a
// transaction's events and a message the engine marks Lazy (the outcome
// that lets a decider drop its marker, after coord.decided) are
// housekeeping: none may run before the event it waits for is durable,
// but nothing waits for them, so they follow whichever append comes next.
func urgent(e engine.Effect) bool {
	switch e := e.(type) {
	case engine.Forget:
		return false
	case engine.Data:
		return e.Op != engine.DataDeleteMarker
	case engine.Send:
		return !e.Lazy
	}
	return true
}

// flushState is the flusher's own: buffers it reuses from batch to batch
// (neither the log nor compaction keeps them) and what it knows of the log.
type flushState struct {
	evs     []engine.Event
	entries []logstore.Entry
	// lastSeq is the node's newest row.
	lastSeq int64
	// unsure counts the events of the last append if it failed: its row may
	// be in the log all the same (the answer to the commit was lost), and
	// the loop hands them back first in the next batch. Appending them again
	// would leave the first copy out of compaction's knowledge, to outlive
	// the rest of its transactions' events.
	unsure int
}

// flusher appends the batches flush hands it, one row each and one at a
// time, until run closes toFlush. lastSeq is the node's newest row.
func (l *loop) flusher(ctx context.Context, lastSeq int64) {
	st := flushState{lastSeq: lastSeq}
	for batch := range l.toFlush {
		l.flushed <- l.flushBatch(ctx, &st, batch)
	}
}

// flushBatch appends batch as one row. If the last append failed, it first
// asks the log whether that row was written all the same; if so, the
// events it holds, the first of batch, are durable, and the rest wait for
// the next append.
func (l *loop) flushBatch(ctx context.Context, st *flushState, batch []pendingEvent) flushResult {
	if st.unsure > 0 {
		seq, n, err := l.log.Last(ctx, l.name)
		if err != nil {
			return flushResult{events: batch, err: err}
		}
		unsure := st.unsure
		st.unsure = 0
		if seq > st.lastSeq {
			if n == unsure && n <= len(batch) {
				st.lastSeq = seq
				evs := st.collect(batch[:n])
				if l.compaction != nil {
					l.compaction.track(seq, evs)
				}
				failpoint.AfterLog(evs, nil)
				clear(st.evs)
				return flushResult{upTo: batch[n-1].lsn, seq: seq, events: batch[:n], rest: batch[n:]}
			}
			l.logger.Warn("the log holds a row this node did not write; is another process running as this node?",
				"node", l.name, "seq", seq, "events", n, "after", st.lastSeq)
		}
	}
	evs := st.collect(batch)
	r := flushResult{upTo: batch[len(batch)-1].lsn, events: batch}
	st.entries, r.err = entriesOf(st.entries[:0], evs)
	if r.err == nil {
		failpoint.BeforeLog(evs)
		began := l.clock.Now()
		r.seq, r.err = l.log.Append(ctx, l.name, st.entries)
		switch {
		case errors.Is(r.err, logstore.ErrFenced):
			// Certainly not written, and nothing of this node will be
			// again: its lease is gone (the process stops on that).
		case r.err != nil:
			st.unsure = len(batch)
		default:
			st.lastSeq = r.seq
			if l.compaction != nil {
				l.compaction.track(r.seq, evs)
			}
		}
		if l.observer != nil {
			l.observer.Appended(len(st.entries), l.clock.Now().Sub(began), r.err)
		}
		failpoint.AfterLog(evs, r.err)
	}
	clear(st.evs)
	clear(st.entries)
	return r
}

// collect returns the events of batch, in st's buffer.
func (st *flushState) collect(batch []pendingEvent) []engine.Event {
	st.evs = st.evs[:0]
	for _, pe := range batch {
		st.evs = append(st.evs, pe.ev)
	}
	return st.evs
}

// finalFlush writes what is still unsynced when the node shuts down cleanly.
// Losing it would be safe (only lazy events can be pending without a waiter
// having been answered), but keeping it makes replay more informative.
func (l *loop) finalFlush() {
	if l.flushing {
		r := <-l.flushed
		if r.err != nil {
			l.unsynced = append(r.events, l.unsynced...)
		} else {
			l.unsynced = append(r.rest, l.unsynced...)
		}
	}
	if len(l.unsynced) == 0 {
		return
	}
	evs := make([]engine.Event, len(l.unsynced))
	for i, pe := range l.unsynced {
		evs[i] = pe.ev
	}
	entries, err := entriesOf(nil, evs)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = l.log.Append(ctx, l.name, entries)
	}
	if err != nil {
		l.logger.Warn("could not write the last events at shutdown", "node", l.name, "events", len(evs), "err", err)
	}
}
