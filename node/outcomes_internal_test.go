package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/logstore"
)

// newLogStore opens a log database of the test's own, migrated, closed
// when the test ends.
func newLogStore(t *testing.T) *logstore.Store {
	t.Helper()
	dbs, err := OpenDatabases(context.Background(), DatabaseSpec{LogURI: pgtest.NewDB(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dbs.Close() })
	return logstore.New(dbs.Log)
}

// flakyOutcomes fails saves while failing is set.
type flakyOutcomes struct {
	outcomeStore
	mu      sync.Mutex
	failing bool
}

func (f *flakyOutcomes) SaveOutcomes(ctx context.Context, o []logstore.Outcome) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing {
		return errors.New("log database down")
	}
	return f.outcomeStore.SaveOutcomes(ctx, o)
}

// The keeper answers from memory until the store holds an outcome, lets
// compaction have a transaction only after that, keeps what a failed save
// could not write, and says forgotten only of what it deleted for age.
func TestOutcomeKeeper(t *testing.T) {
	ctx := context.Background()
	store := &flakyOutcomes{outcomeStore: newLogStore(t), failing: true}
	k := newOutcomeKeeper(store, time.Hour, slog.New(slog.NewTextHandler(t.Output(), nil)))
	var saved []logstore.Ended
	k.saved = func(e logstore.Ended) { saved = append(saved, e) }
	answers := make(chan engine.KeyLookedUp, 10)
	k.answer = func(a engine.KeyLookedUp) { answers <- a }
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go k.answerLookups(lctx)
	if err := k.start(ctx); err != nil {
		t.Fatal(err)
	}
	lookUp := func(key string) engine.KeyLookedUp {
		t.Helper()
		k.lookUp(key)
		select {
		case a := <-answers:
			if a.Key != key || a.Err != "" {
				t.Fatalf("lookup of %q: %+v", key, a)
			}
			return a
		case <-time.After(time.Minute):
			t.Fatalf("lookup of %q unanswered", key)
			return engine.KeyLookedUp{}
		}
	}
	status := func(tx engine.TxID) engine.StatusReply {
		t.Helper()
		st, err := k.status(ctx, engine.StatusReply{TxID: tx, State: "forgotten"})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	want := func(when string, tx engine.TxID, state, reason string) {
		t.Helper()
		if st := status(tx); st.State != state || !strings.Contains(st.Reason, reason) {
			t.Fatalf("%s: status of tx %d: %+v, want %s, reason with %q", when, tx, st, state, reason)
		}
	}

	k.add(engine.CoordEnded{TxID: 5, Outcome: engine.OutcomeCommit, Keys: []string{"a", "b"}}, 40, time.Now())
	k.add(engine.CoordEnded{TxID: 6, Outcome: engine.OutcomeAbort, Reason: "vote no"}, 41, time.Now())
	k.save(ctx)
	if len(saved) != 0 {
		t.Fatalf("a failed save handed %v to compaction", saved)
	}
	want("in memory", 5, "committed", "")
	want("in memory", 6, "aborted", "vote no")
	if a := lookUp("b"); !a.Found || a.TxID != 5 || a.Outcome != engine.OutcomeCommit {
		t.Fatalf("lookup from memory: %+v", a)
	}

	store.mu.Lock()
	store.failing = false
	store.mu.Unlock()
	k.save(ctx)
	if len(saved) != 2 || saved[0] != (logstore.Ended{Tx: 5, UpToSeq: 40}) || saved[1] != (logstore.Ended{Tx: 6, UpToSeq: 41}) {
		t.Fatalf("saved %v, want tx 5 up to row 40 and tx 6 up to row 41", saved)
	}
	k.mu.Lock()
	held := len(k.pending) + len(k.byKey) + len(k.order)
	k.mu.Unlock()
	if held != 0 {
		t.Fatalf("%d entries still in memory after a save", held)
	}
	want("stored", 5, "committed", "")
	want("stored", 6, "aborted", "vote no")
	want("never logged", 7, "aborted", "no record")
	if a := lookUp("a"); !a.Found || a.TxID != 5 {
		t.Fatalf("lookup from the store: %+v", a)
	}
	if a := lookUp("zz"); a.Found {
		t.Fatalf("lookup of a key never used: %+v", a)
	}
	// Saved again, as a restart that finds the transaction in its log
	// does, nothing changes.
	k.add(engine.CoordEnded{TxID: 5, Outcome: engine.OutcomeCommit, Keys: []string{"a"}}, 50, time.Now())
	k.save(ctx)
	want("saved twice", 5, "committed", "")

	k.prune(ctx, time.Now().Add(2*time.Hour))
	want("deleted for age", 5, "forgotten", "--keep-outcomes")
	want("deleted for age", 6, "forgotten", "--keep-outcomes")
	want("newer than the horizon", 7, "aborted", "no record")
	if a := lookUp("a"); a.Found {
		t.Fatalf("lookup of a key deleted for age: %+v", a)
	}
}

// countingOutcomes counts the key lookups that reach the store.
type countingOutcomes struct {
	outcomeStore
	mu      sync.Mutex
	lookups int
}

func (c *countingOutcomes) OutcomesByKey(ctx context.Context, keys []string) (map[string]logstore.Outcome, error) {
	c.mu.Lock()
	c.lookups += len(keys)
	c.mu.Unlock()
	return c.outcomeStore.OutcomesByKey(ctx, keys)
}

func (c *countingOutcomes) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lookups
}

// The key filter answers a key the store never held without asking it,
// asks it about every key it may hold (kept before the start, saved since,
// or saved while the filter was filled), asks it about everything until
// the filter is filled, and fills itself afresh, larger, once full.
func TestKeyFilter(t *testing.T) {
	ctx := context.Background()
	store := &countingOutcomes{outcomeStore: newLogStore(t)}
	if err := store.SaveOutcomes(ctx, []logstore.Outcome{{Tx: 1, EndedAt: time.Now(), Committed: true, Keys: []string{"before-start"}}}); err != nil {
		t.Fatal(err)
	}
	k := newOutcomeKeeper(store, time.Hour, slog.New(slog.NewTextHandler(t.Output(), nil)))
	k.keysMin = 8
	answers := make(chan engine.KeyLookedUp, 10)
	k.answer = func(a engine.KeyLookedUp) { answers <- a }
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go k.answerLookups(lctx)
	lookUp := func(key string, found bool, asked int) {
		t.Helper()
		before := store.count()
		k.lookUp(key)
		select {
		case a := <-answers:
			if a.Key != key || a.Err != "" || a.Found != found {
				t.Fatalf("lookup of %q: %+v, want found %v", key, a, found)
			}
		case <-time.After(time.Minute):
			t.Fatalf("lookup of %q unanswered", key)
		}
		if got := store.count() - before; got != asked {
			t.Fatalf("lookup of %q asked the store %d times, want %d", key, got, asked)
		}
	}
	filled := func() {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			k.mu.Lock()
			ready := k.keysReady
			k.mu.Unlock()
			if ready {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the key filter was never filled")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	lookUp("unfilled", false, 1) // no filter yet: the store is asked
	// A save under way when the filter is filled: its key is held in
	// memory, and its row is written after the filter read the store.
	k.add(engine.CoordEnded{TxID: 2, Outcome: engine.OutcomeCommit, Keys: []string{"in-flight"}}, 1, time.Now())
	k.mu.Lock()
	k.filling = true
	k.mu.Unlock()
	k.fillKeys(ctx)
	filled()
	if err := store.SaveOutcomes(ctx, []logstore.Outcome{{Tx: 2, EndedAt: time.Now(), Committed: true, Keys: []string{"in-flight"}}}); err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	delete(k.byKey, "in-flight")
	delete(k.pending, 2)
	k.order = nil
	k.mu.Unlock()

	lookUp("before-start", true, 1)
	lookUp("in-flight", true, 1)
	lookUp("never-used", false, 0)

	k.add(engine.CoordEnded{TxID: 3, Outcome: engine.OutcomeAbort, Keys: []string{"saved"}}, 2, time.Now())
	k.save(ctx)
	lookUp("saved", true, 1)

	// Past its room (8) the filter is filled afresh, from the store.
	for i := range 10 {
		k.add(engine.CoordEnded{TxID: engine.TxID(10 + i), Outcome: engine.OutcomeCommit, Keys: []string{fmt.Sprintf("more-%d", i)}}, 3, time.Now())
	}
	k.save(ctx)
	filled()
	k.mu.Lock()
	room := k.keysCap
	k.mu.Unlock()
	if room < 16 {
		t.Fatalf("filter refilled with room for %d keys, want at least 16", room)
	}
	lookUp("more-9", true, 1)
	lookUp("before-start", true, 1)
	lookUp("still-never-used", false, 0)
}
