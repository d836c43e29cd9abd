package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/logstore/memlog"
)

// These tests run the loop alone: on an in-memory log whose appends they
// hold back, fail or release, with a fake clock and a scripted machine in
// place of an engine. Each checks one part of the rule the loop exists
// for: no effect before the events it waits for are durable.

var _ eventLog = (*memlog.Log)(nil)

// patience bounds every wait for the loop; only a broken loop reaches it.
const patience = 10 * time.Second

// scriptedMachine stands in for an engine: a ClientBegin input makes it
// emit what the test scripted under the input's Req, Start emits the start
// script, and other inputs emit nothing.
type scriptedMachine struct {
	mu      sync.Mutex
	scripts map[engine.ReqID]func() ([]engine.Event, []engine.Effect)
	start   func() ([]engine.Event, []engine.Effect)
	applied []engine.Event
	// lastTick is the Now of the latest Tick stepped.
	lastTick engine.Instant

	lsn engine.LSN // loop goroutine only
}

func (m *scriptedMachine) Step(in engine.Input) engine.Ready {
	var script func() ([]engine.Event, []engine.Effect)
	m.mu.Lock()
	switch in := in.(type) {
	case engine.Start:
		script = m.start
	case engine.Tick:
		m.lastTick = in.Now
	case engine.ClientBegin:
		script = m.scripts[in.Req]
		delete(m.scripts, in.Req)
	}
	m.mu.Unlock()
	if script == nil {
		return engine.Ready{}
	}
	evs, effs := script()
	rd := engine.Ready{Events: evs, FirstLSN: m.lsn + 1, Effects: effs}
	m.lsn += engine.LSN(len(evs))
	return rd
}

func (m *scriptedMachine) Apply(ev engine.Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.applied = append(m.applied, ev)
	return nil
}

// fakeClock moves only when the test advances it. Its timers and tickers
// deliver into a buffer of one and drop what does not fit, as time's do.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at    time.Time
	every time.Duration // 0 for a timer that fires once
	c     chan time.Time
	done  bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	return c.add(d, 0).c
}

func (c *fakeClock) NewTicker(d time.Duration) (<-chan time.Time, func()) {
	t := c.add(d, d)
	return t.c, func() {
		c.mu.Lock()
		t.done = true
		c.mu.Unlock()
	}
}

func (c *fakeClock) add(d, every time.Duration) *fakeTimer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), every: every, c: make(chan time.Time, 1)}
	c.timers = append(c.timers, t)
	return t
}

// Advance moves the clock forward by d and fires what came due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for _, t := range c.timers {
		for !t.done && !t.at.After(c.now) {
			select {
			case t.c <- t.at:
			default:
			}
			if t.every == 0 {
				t.done = true
			} else {
				t.at = t.at.Add(t.every)
			}
		}
	}
	c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool { return t.done })
}

// timersPending counts the one-shot timers not yet fired.
func (c *fakeClock) timersPending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if t.every == 0 {
			n++
		}
	}
	return n
}

// harness runs one loop for one test.
type harness struct {
	t     *testing.T
	log   *memlog.Log
	clock *fakeClock
	m     *scriptedMachine
	loop  *loop
	// lsn is the last LSN the machine handed out: effects of the next step
	// name its events h.lsn+1, h.lsn+2, ...
	lsn engine.LSN
	req engine.ReqID

	mu        sync.Mutex
	performed []string
	// loggedAtFirst is how many events the log held when the first effect
	// ran (-1 before).
	loggedAtFirst int64
	// durableSeqs maps each event name, once the loop called it durable,
	// to the loop's durableSeq at that moment.
	durableSeqs map[string]int64

	stop func()
}

func newHarness(t *testing.T, log *memlog.Log) *harness {
	h := &harness{t: t, log: log, clock: newFakeClock(), loggedAtFirst: -1, durableSeqs: map[string]int64{},
		m: &scriptedMachine{scripts: map[engine.ReqID]func() ([]engine.Event, []engine.Effect){}}}
	h.loop = newLoop("n", h.m, log, h.clock, slog.New(slog.NewTextHandler(t.Output(), nil)), 20*time.Millisecond)
	h.loop.perform = h.record
	h.loop.onDurable = func(ev engine.Event) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.durableSeqs[eventName(ev)] = h.loop.durableSeq
	}
	return h
}

// newHeldHarness returns a running loop with no start events whose log
// holds every append back.
func newHeldHarness(t *testing.T) *harness {
	h := newHarness(t, memlog.New())
	h.start(nil)
	h.log.Hold()
	return h
}

// start runs the start step, which emits evs and effs, and then the loop.
func (h *harness) start(evs []engine.Event, effs ...engine.Effect) {
	h.t.Helper()
	h.m.start = func() ([]engine.Event, []engine.Effect) { return evs, effs }
	initial, err := h.loop.startStep(h.t.Context(), engine.Start{})
	if err != nil {
		h.t.Fatalf("startStep: %v", err)
	}
	h.lsn += engine.LSN(len(evs))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.loop.run(ctx, initial)
	}()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			// Whatever is held now or at shutdown goes through.
			h.log.Pass()
			stopReleasing := make(chan struct{})
			defer close(stopReleasing)
			go func() {
				for {
					select {
					case a := <-h.log.Held():
						a.Release()
					case <-stopReleasing:
						return
					}
				}
			}()
			cancel()
			select {
			case <-done:
			case <-time.After(patience):
				h.t.Error("the loop did not stop")
			}
		})
	}
	h.t.Cleanup(h.stop)
}

func (h *harness) record(e engine.Effect) {
	name := effectName(e)
	logged, err := h.log.Count(context.Background(), "n")
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.loggedAtFirst < 0 {
		if err != nil {
			h.t.Errorf("count the log: %v", err)
		}
		h.loggedAtFirst = logged.Events
	}
	h.performed = append(h.performed, name)
}

// step has the machine emit evs and effs for one input.
func (h *harness) step(evs []engine.Event, effs ...engine.Effect) {
	h.t.Helper()
	h.req++
	h.m.mu.Lock()
	h.m.scripts[h.req] = func() ([]engine.Event, []engine.Effect) { return evs, effs }
	h.m.mu.Unlock()
	if !h.loop.submit(engine.ClientBegin{Req: h.req}) {
		h.t.Fatal("the loop stopped")
	}
	h.lsn += engine.LSN(len(evs))
}

// sync returns once the loop has stepped every input submitted so far and
// finished the turn that stepped them (and so has started any append
// they call for).
func (h *harness) sync() {
	h.t.Helper()
	stepped := make(chan struct{})
	h.req++
	h.m.mu.Lock()
	h.m.scripts[h.req] = func() ([]engine.Event, []engine.Effect) { close(stepped); return nil, nil }
	h.m.mu.Unlock()
	h.loop.submit(engine.ClientBegin{Req: h.req})
	select {
	case <-stepped:
	case <-time.After(patience):
		h.t.Fatal("the loop did not step its inputs")
	}
	// A query runs between turns, so after the one that stepped the input.
	h.inLoop(func() {})
}

// inLoop runs f on the loop goroutine between two turns.
func (h *harness) inLoop(f func()) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), patience)
	defer cancel()
	if err := h.loop.query(ctx, f); err != nil {
		h.t.Fatalf("query the loop: %v", err)
	}
}

// tick moves the clock one tick on and returns once the loop has stepped
// the tick and finished that turn.
func (h *harness) tick() {
	h.t.Helper()
	h.clock.Advance(h.loop.tick)
	at := h.loop.now()
	h.eventually("the loop steps the tick", func() bool {
		h.m.mu.Lock()
		defer h.m.mu.Unlock()
		return h.m.lastTick >= at
	})
	h.sync()
}

// held returns the next append the log holds back.
func (h *harness) held() *memlog.HeldAppend {
	h.t.Helper()
	select {
	case a := <-h.log.Held():
		return a
	case <-time.After(patience):
		h.t.Fatal("no append reached the log")
		return nil
	}
}

// wantAppending checks whether an append is under way.
func (h *harness) wantAppending(want bool) {
	h.t.Helper()
	var got bool
	h.inLoop(func() { got = h.loop.flushing })
	if got != want {
		h.t.Fatalf("append under way: %t, want %t", got, want)
	}
}

func (h *harness) performedNames() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.performed)
}

// wantPerformed checks the effects performed so far, in order.
func (h *harness) wantPerformed(want ...string) {
	h.t.Helper()
	if got := h.performedNames(); !slices.Equal(got, want) {
		h.t.Fatalf("performed %q, want %q", got, want)
	}
}

// waitPerformed waits until as many effects as want ran and checks them.
func (h *harness) waitPerformed(want ...string) {
	h.t.Helper()
	h.eventually(fmt.Sprintf("%d effects run", len(want)), func() bool { return len(h.performedNames()) >= len(want) })
	h.wantPerformed(want...)
}

// wantLogged checks the names of the events in the log, in seq order.
func (h *harness) wantLogged(want ...string) {
	h.t.Helper()
	var got []string
	err := h.log.Scan(h.t.Context(), "n", func(r logstore.Record) error {
		got = append(got, recordName(h.t, r))
		return nil
	})
	if err != nil {
		h.t.Fatalf("scan the log: %v", err)
	}
	if !slices.Equal(got, want) {
		h.t.Fatalf("logged %q, want %q", got, want)
	}
}

func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// ev is an event the test tells apart by name: a no vote, whose reason is
// the name, or for tx 0 a node-level event, whose cluster is the name.
func ev(tx engine.TxID, name string) engine.Event {
	if tx == 0 {
		return engine.PartEpochSeen{Cluster: name, Epoch: 1}
	}
	return engine.PartVotedNo{TxID: tx, Reason: name}
}

func evs(e ...engine.Event) []engine.Event { return e }

func eventName(ev engine.Event) string {
	switch ev := ev.(type) {
	case engine.PartVotedNo:
		return ev.Reason
	case engine.PartEpochSeen:
		return ev.Cluster
	}
	return ev.Kind()
}

func recordName(t *testing.T, r logstore.Record) string {
	t.Helper()
	ev, err := engine.DecodeEvent(r.Payload)
	if err != nil {
		t.Fatalf("event %d: %v", r.Seq, err)
	}
	return eventName(ev)
}

// names returns the names of the events of an append.
func names(t *testing.T, a *memlog.HeldAppend) []string {
	t.Helper()
	var out []string
	for i, e := range a.Entries {
		ev, err := engine.DecodeEvent(e.Event)
		if err != nil {
			t.Fatalf("event %d of the append: %v", i, err)
		}
		out = append(out, eventName(ev))
	}
	return out
}

// dataOp is an operation of tx on the data database, named by its SQL.
func dataOp(tx engine.TxID, name string, wait engine.LSN) engine.Effect {
	return engine.Data{Op: engine.DataExec, TxID: tx, SQL: name, WaitLSN: wait}
}

// deleteMarker is, with Forget, an effect that is not urgent (see urgent).
func deleteMarker(tx engine.TxID, name string, wait engine.LSN) engine.Effect {
	return engine.Data{Op: engine.DataDeleteMarker, TxID: tx, SQL: name, WaitLSN: wait}
}

// answer is an effect other than a data operation: an answer to a client.
func answer(name string, wait engine.LSN) engine.Effect {
	return engine.Respond{Err: &engine.Error{Message: name}, WaitLSN: wait}
}

func effectName(e engine.Effect) string {
	switch e := e.(type) {
	case engine.Data:
		return e.SQL
	case engine.Respond:
		return e.Err.Message
	}
	return fmt.Sprintf("%T", e)
}

func TestEffectWaitsForItsAppend(t *testing.T) {
	h := newHeldHarness(t)

	h.step(evs(ev(1, "a1")), answer("after a1", h.lsn+1))
	first := h.held()
	h.sync()
	h.wantPerformed()

	// Its event rides the next append, as the first is out.
	h.step(evs(ev(2, "b1")), answer("after b1", h.lsn+1))
	h.sync()
	h.wantPerformed()

	first.Release()
	h.waitPerformed("after a1")
	second := h.held()
	if got := names(t, second); !slices.Equal(got, []string{"b1"}) {
		t.Fatalf("second append holds %q, want [b1]", got)
	}
	h.sync()
	h.wantPerformed("after a1")

	second.Release()
	h.waitPerformed("after a1", "after b1")
	h.wantLogged("a1", "b1")
}

func TestFailedAppendIsRetriedAndReleasesNothing(t *testing.T) {
	h := newHeldHarness(t)

	h.step(evs(ev(1, "a1"), ev(1, "a2")), dataOp(1, "exec a", h.lsn+2))
	first := h.held()
	h.step(evs(ev(2, "b1")), answer("answer b", h.lsn+1))
	h.sync()

	failed := first
	for attempt := 1; attempt <= 2; attempt++ {
		failed.Fail(errors.New("log unreachable"))
		// The loop pauses before it tries again; until then, and during
		// the pause, nothing that waits for these events may run.
		h.eventually("the loop pauses or performs", func() bool {
			return h.clock.timersPending() > 0 || len(h.performedNames()) > 0
		})
		h.wantPerformed()
		h.mu.Lock()
		durable := len(h.durableSeqs)
		h.mu.Unlock()
		if durable > 0 {
			t.Fatalf("attempt %d: events reported durable after a failed append", attempt)
		}
		h.clock.Advance(appendRetryPause)
		failed = h.held()
		// The failed events go first, then those that came meanwhile.
		if got := names(t, failed); !slices.Equal(got, []string{"a1", "a2", "b1"}) {
			t.Fatalf("attempt %d: retry appends %q, want [a1 a2 b1]", attempt, got)
		}
	}
	failed.Release()
	h.waitPerformed("exec a", "answer b")
	h.wantLogged("a1", "a2", "b1")
}

// An append the log refused because this node's lease was taken over
// (logstore.ErrFenced) was certainly not written: the loop appends it
// again and does not take a row of the new holder's, of the same size,
// for its own.
func TestFencedAppendIsNotMistakenForTheNewHoldersRow(t *testing.T) {
	h := newHeldHarness(t)
	h.step(evs(ev(1, "a1")), dataOp(1, "exec a", h.lsn+1))
	first := h.held()
	first.Fail(logstore.ErrFenced)
	h.eventually("the loop pauses", func() bool { return h.clock.timersPending() > 0 })

	// The new holder writes a row of one event meanwhile.
	intruder := make(chan error, 1)
	go func() {
		_, err := h.log.Append(context.Background(), first.Node, []logstore.Entry{{Tx: 9, Event: []byte(`{"type":"x"}`)}})
		intruder <- err
	}()
	h.held().Release()
	if err := <-intruder; err != nil {
		t.Fatal(err)
	}

	h.clock.Advance(appendRetryPause)
	again := h.held()
	h.wantPerformed()
	if got := names(t, again); !slices.Equal(got, []string{"a1"}) {
		t.Fatalf("retry appends %q, want [a1]", got)
	}
	again.Release()
	h.waitPerformed("exec a")
}

func TestTransactionsDoNotWaitForEachOther(t *testing.T) {
	h := newHeldHarness(t)

	h.step(evs(ev(1, "a1")), dataOp(1, "exec a1", h.lsn+1))
	first := h.held()
	// Transaction 2 waits for nothing; transaction 1's next operation
	// waits for nothing either, but keeps its place behind exec a1.
	h.step(nil, dataOp(2, "exec b1", 0), answer("answer b1", 0))
	h.step(nil, dataOp(1, "exec a2", 0))
	h.sync()
	h.wantPerformed("exec b1", "answer b1")

	first.Release()
	h.waitPerformed("exec b1", "answer b1", "exec a1", "exec a2")

	// Waiting for an LSN already durable is not waiting, even while
	// transaction 1 waits for a later one.
	durable := h.lsn
	h.step(evs(ev(1, "a2")), dataOp(1, "exec a3", h.lsn+1))
	second := h.held()
	h.step(nil, dataOp(2, "exec b2", durable), answer("answer b2", durable))
	h.sync()
	h.wantPerformed("exec b1", "answer b1", "exec a1", "exec a2", "exec b2", "answer b2")

	second.Release()
	h.waitPerformed("exec b1", "answer b1", "exec a1", "exec a2", "exec b2", "answer b2", "exec a3")
}

func TestDataOrderHoldsWhileAppendsLandInBetween(t *testing.T) {
	h := newHeldHarness(t)

	h.step(evs(ev(1, "a1")), answer("answer a1", h.lsn+1))
	first := h.held()
	// While a1 is out, transaction 1 emits an operation that waits for a2
	// and one that waits for nothing: the second stays behind the first
	// when a1 becomes durable, though a1 is all it would need.
	h.step(evs(ev(1, "a2")), dataOp(1, "prepare", h.lsn+1), dataOp(1, "after prepare", 0))
	h.sync()
	h.wantPerformed()

	first.Release()
	h.waitPerformed("answer a1")
	second := h.held()
	h.sync()
	h.wantPerformed("answer a1")

	second.Release()
	h.waitPerformed("answer a1", "prepare", "after prepare")
}

func TestLazyEventsAreAppendedWithinTheBound(t *testing.T) {
	h := newHeldHarness(t)

	h.step(evs(ev(1, "ended")))
	// A marker deletion, forgetting a transaction, or a message marked
	// Lazy (the outcome that lets a decider drop its marker) waits for its
	// event but is worth no write of its own.
	h.step(evs(ev(2, "committed")), deleteMarker(2, "delete marker", h.lsn+1))
	h.step(evs(ev(3, "committed 3")), engine.Forget{TxID: 3, WaitLSN: h.lsn + 1})
	h.step(evs(ev(4, "decided 4")), engine.Send{To: 0, Msg: engine.DecisionRequest{TxID: 4, Outcome: engine.OutcomeCommit}, WaitLSN: h.lsn + 1, Lazy: true})
	h.sync()
	h.wantAppending(false)
	for elapsed := h.loop.tick; elapsed < lazyFlush; elapsed += h.loop.tick {
		h.tick()
		h.wantAppending(false)
	}
	h.tick()
	a := h.held()
	if got := names(t, a); !slices.Equal(got, []string{"ended", "committed", "committed 3", "decided 4"}) {
		t.Fatalf("lazy append holds %q, want [ended committed committed 3 decided 4]", got)
	}
	h.wantPerformed()
	a.Release()
	h.waitPerformed("delete marker", "engine.Forget", "engine.Send")
}

func TestManyLazyEventsAreAppendedAtOnce(t *testing.T) {
	h := newHeldHarness(t)

	var many []engine.Event
	for i := range maxLazy {
		many = append(many, ev(engine.TxID(i+1), fmt.Sprint(i)))
	}
	h.step(many)
	if a := h.held(); len(a.Entries) != maxLazy {
		t.Fatalf("append of %d events, want %d", len(a.Entries), maxLazy)
	}
}

func TestUrgentEffectForcesAnAppend(t *testing.T) {
	h := newHeldHarness(t)

	h.step(evs(ev(1, "lazy")))
	h.sync()
	h.wantAppending(false)

	// The clock stands still: only the waiting answer can start this.
	h.step(evs(ev(2, "decided")), answer("answer", h.lsn+1))
	a := h.held()
	if got := names(t, a); !slices.Equal(got, []string{"lazy", "decided"}) {
		t.Fatalf("forced append holds %q, want [lazy decided]", got)
	}
	a.Release()
	h.waitPerformed("answer")
}

func TestStartEventsAreDurableBeforeTheFirstEffect(t *testing.T) {
	t.Run("held then failed", func(t *testing.T) {
		h := newHarness(t, memlog.New())
		h.m.start = func() ([]engine.Event, []engine.Effect) {
			return evs(ev(0, "started")), []engine.Effect{answer("first", 0)}
		}
		h.log.Hold()
		type result struct {
			effects []engine.Effect
			err     error
		}
		res := make(chan result, 1)
		go func() {
			effs, err := h.loop.startStep(t.Context(), engine.Start{})
			res <- result{effs, err}
		}()
		a := h.held()
		select {
		case r := <-res:
			t.Fatalf("startStep returned %v before its events were durable", r)
		case <-time.After(10 * time.Millisecond):
		}
		down := errors.New("log unreachable")
		a.Fail(down)
		if r := <-res; !errors.Is(r.err, down) || r.effects != nil {
			t.Fatalf("startStep with a failed append = %v, %v; want the append's error and no effects", r.effects, r.err)
		}
	})
	t.Run("durable", func(t *testing.T) {
		h := newHarness(t, memlog.New())
		h.start(evs(ev(0, "started"), ev(0, "epoch seen")), answer("first", 0), dataOp(0, "second", 2))
		h.waitPerformed("first", "second")
		h.mu.Lock()
		logged := h.loggedAtFirst
		h.mu.Unlock()
		if logged != 2 {
			t.Fatalf("the first effect ran with %d start events in the log, want 2", logged)
		}
		h.wantLogged("started", "epoch seen")
	})
}

func TestDurableSeqCoversEachDurableEvent(t *testing.T) {
	log := memlog.New()
	// Another node's events take seqs in between, as in a shared log.
	if _, err := log.Append(t.Context(), "other", []logstore.Entry{{Event: []byte("{}")}}); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, log)
	h.start(evs(ev(0, "started")))
	h.step(evs(ev(1, "a1"), ev(1, "a2")), answer("after a2", h.lsn+2))
	h.waitPerformed("after a2")

	// Compaction deletes a transaction's events up to the durableSeq seen
	// when it ended: that must reach the event itself.
	err := log.Scan(t.Context(), "n", func(r logstore.Record) error {
		name := recordName(t, r)
		h.mu.Lock()
		seen, ok := h.durableSeqs[name]
		h.mu.Unlock()
		if !ok || seen < r.Seq {
			return fmt.Errorf("%s (seq %d) called durable with durableSeq %d", name, r.Seq, seen)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// appendEvents appends evs as one row of node's log and returns its seq.
func appendEvents(t *testing.T, log eventLog, node string, evs ...engine.Event) int64 {
	t.Helper()
	entries, err := entriesOf(nil, evs)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := log.Append(t.Context(), node, entries)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func TestRecoverFoldsOnlyThisNodesLog(t *testing.T) {
	log := memlog.New()
	h := newHarness(t, log)
	appendEvents(t, log, "n", ev(1, "a"), ev(2, "b"))
	appendEvents(t, log, "other", ev(9, "x"))
	last := appendEvents(t, log, "n", ev(1, "c"))
	appendEvents(t, log, "other", ev(9, "y"))
	n, err := h.loop.recover(t.Context())
	if err != nil || n != 3 {
		t.Fatalf("recover = %d, %v; want 3 events", n, err)
	}
	var got []string
	for _, e := range h.m.applied {
		got = append(got, eventName(e))
	}
	if !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("applied %q, want [a b c]", got)
	}
	if h.loop.durableSeq != last {
		t.Fatalf("durableSeq after recovery = %d, want %d (this node's last row)", h.loop.durableSeq, last)
	}

	if _, err := log.Append(t.Context(), "n", []logstore.Entry{{Event: []byte(`{"type":"no.such.kind"}`)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := newHarness(t, log).loop.recover(t.Context()); err == nil {
		t.Fatal("recover folded an event it cannot decode")
	}
}

func TestStopAppendsWhatIsLeft(t *testing.T) {
	h := newHarness(t, memlog.New())
	h.start(nil)
	h.step(evs(ev(1, "lazy")))
	h.sync()
	h.wantAppending(false)
	h.stop()
	h.wantLogged("lazy")
}

// echoMachine emits, for each ClientBegin, one event and an answer that
// waits for it: the shape of a coordinator's commit decision.
type echoMachine struct{ lsn engine.LSN }

func (m *echoMachine) Step(in engine.Input) engine.Ready {
	begin, ok := in.(engine.ClientBegin)
	if !ok {
		return engine.Ready{}
	}
	m.lsn++
	return engine.Ready{
		Events:   []engine.Event{engine.CoordEnded{TxID: engine.TxID(begin.Req)}},
		FirstLSN: m.lsn,
		Effects:  []engine.Effect{engine.Respond{Req: begin.Req, WaitLSN: m.lsn}},
	}
}

func (m *echoMachine) Apply(engine.Event) error { return nil }

// BenchmarkLoopEvent is the loop's own cost of one event and the effect that
// waits for it (step, encode, group commit, release) on an in-memory log,
// without a database.
func BenchmarkLoopEvent(b *testing.B) {
	benchmarkLoop(b, newLoop("n", &echoMachine{}, memlog.New(), wallClock{}, slog.New(slog.DiscardHandler), time.Hour))
}

// BenchmarkLoopEventCompacting is BenchmarkLoopEvent on a loop that tells
// compaction about every row it appends, with every transaction ending at
// once and compacted every 10ms, as a coordinator's are.
func BenchmarkLoopEventCompacting(b *testing.B) {
	log := memlog.New()
	l := newLoop("n", &echoMachine{}, log, wallClock{}, slog.New(slog.DiscardHandler), time.Hour)
	c := newCompactor(log, "n", 0, slog.New(slog.DiscardHandler))
	l.compaction = c
	l.onDurable = func(ev engine.Event) { c.add(logstore.Ended{Tx: uint64(ev.Tx()), UpToSeq: l.durableSeq}) }
	benchmarkLoop(b, l, func(ctx context.Context) { c.run(ctx, 10*time.Millisecond) })
}

// benchmarkLoop runs l, and workers beside it, on b.N inputs of an
// echoMachine and waits until every answer was performed.
func benchmarkLoop(b *testing.B, l *loop, workers ...func(context.Context)) {
	var performed int
	done := make(chan struct{})
	l.perform = func(engine.Effect) {
		if performed++; performed == b.N {
			close(done)
		}
	}
	initial, err := l.startStep(b.Context(), engine.Start{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.Context())
	go l.run(ctx, initial)
	for _, w := range workers {
		go w(ctx)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		l.submit(engine.ClientBegin{Req: engine.ReqID(i + 1)})
	}
	<-done
	b.StopTimer()
	cancel()
	<-l.stopped
}
