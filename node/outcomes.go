package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bits-and-blooms/bloom/v3"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/logstore"
)

// DefaultKeepOutcomes is how long a coordinator keeps the outcome of a
// transaction after it ended, unless told otherwise: a client that lost
// its answer has a day to ask, by id or by key, before status says
// forgotten.
const DefaultKeepOutcomes = 24 * time.Hour

// outcomeStore keeps outcomes apart from the log (logstore.Store does, in
// the coordinator's log database).
type outcomeStore interface {
	SaveOutcomes(ctx context.Context, outcomes []logstore.Outcome) error
	OutcomesByKey(ctx context.Context, keys []string) (map[string]logstore.Outcome, error)
	OutcomeByTx(ctx context.Context, tx uint64) (logstore.Outcome, bool, error)
	PruneOutcomes(ctx context.Context, before time.Time) (int64, error)
	OutcomesHorizon(ctx context.Context) (uint64, error)
	OutcomeKeysCount(ctx context.Context) (int64, error)
	OutcomeKeysAfter(ctx context.Context, after string, n int) ([]string, error)
}

var _ outcomeStore = (*logstore.Store)(nil)

// outcomeKeeper carries the outcome of each transaction the coordinator
// ended from its log to the outcome store, and answers from both. An
// outcome is held in memory from the moment its coord.ended event is
// durable until the store has it; only then may compaction remove the
// transaction's events (saved), so that at every moment one of the log,
// the memory and the store holds it. Lookups go to memory first and then to
// the store: an entry leaves memory only after the store committed it, so
// a lookup that missed it in memory finds it there.
type outcomeKeeper struct {
	store  outcomeStore
	keep   time.Duration
	logger *slog.Logger
	// saved hears of each outcome once the store holds it.
	saved func(logstore.Ended)
	// answer takes the result of a key lookup (the engine's KeyLookedUp).
	answer func(engine.KeyLookedUp)

	mu      sync.Mutex
	pending map[uint64]*keptOutcome
	byKey   map[string]uint64
	order   []uint64 // pending, in the order they ended
	horizon uint64
	asked   []string // keys to look up
	wake    chan struct{}
	// keys is a Bloom filter of every key the store may hold, so that a key
	// it has never held (nearly every one: a client's key is new but when
	// a call is repeated) is answered without a query. It is filled from
	// the store after the log's replay, and each key goes in before a save
	// writes it; until the filling is done (keysReady) every lookup
	// queries the store.
	keys      *bloom.BloomFilter
	keysMin   uint // keysMinCap but in tests
	keysCap   uint
	keysAdded uint
	keysReady bool
	filling   bool
}

// Sizing of the key filter: room for twice the keys held when it is
// filled (and at least keysMinCap) at a false-positive rate of
// keysFalsePositive. Once more keys went in than it has room for, it is
// filled afresh, sized again; lookups query the store meanwhile.
const (
	keysMinCap        = 1 << 20
	keysFalsePositive = 0.01
	keysPage          = 10_000
)

type keptOutcome struct {
	logstore.Outcome
	upTo int64 // the log's last row when it ended, for compaction
	// filtered: its keys went into the key filter (a save that failed
	// is retried without counting them again).
	filtered bool
}

func newOutcomeKeeper(store outcomeStore, keep time.Duration, logger *slog.Logger) *outcomeKeeper {
	return &outcomeKeeper{store: store, keep: keep, logger: logger, keysMin: keysMinCap,
		pending: map[uint64]*keptOutcome{}, byKey: map[string]uint64{}, wake: make(chan struct{}, 1),
		saved: func(logstore.Ended) {}, answer: func(engine.KeyLookedUp) {}}
}

// start reads the horizon, so that status may tell an unlogged
// transaction from one whose outcome was deleted for age.
func (k *outcomeKeeper) start(ctx context.Context) error {
	h, err := k.store.OutcomesHorizon(ctx)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.horizon = h
	k.mu.Unlock()
	return nil
}

// add holds the outcome of a transaction whose coord.ended event is
// durable in row upTo or before; it never blocks for long (the loop
// goroutine calls it).
func (k *outcomeKeeper) add(e engine.CoordEnded, upTo int64, at time.Time) {
	tx := uint64(e.TxID)
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.pending[tx]; ok {
		return
	}
	k.pending[tx] = &keptOutcome{Outcome: logstore.Outcome{Tx: tx, EndedAt: at, Committed: e.Outcome == engine.OutcomeCommit, Reason: e.Reason, Keys: e.Keys}, upTo: upTo}
	k.order = append(k.order, tx)
	for _, key := range e.Keys {
		k.byKey[key] = tx
	}
}

// outcomesPerSave bounds one save, so that a long backlog (the store was
// down) goes in transactions of a sensible size.
const outcomesPerSave = 2000

// pruneEvery is how often outcomes older than the window are deleted.
const pruneEvery = time.Minute

// run saves held outcomes every interval, deletes the old ones every
// pruneEvery, and answers key lookups, until ctx ends.
func (k *outcomeKeeper) run(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = time.Second
	}
	save := time.NewTicker(every)
	defer save.Stop()
	prune := time.NewTicker(pruneEvery)
	defer prune.Stop()
	go k.answerLookups(ctx)
	k.refillKeys(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-save.C:
			k.save(ctx)
			k.refillKeys(ctx)
		case <-prune.C:
			k.prune(ctx, time.Now())
		}
	}
}

// save writes the held outcomes to the store and lets compaction have their
// transactions; after an error they stay held for the next round.
func (k *outcomeKeeper) save(ctx context.Context) {
	for ctx.Err() == nil {
		k.mu.Lock()
		n := min(len(k.order), outcomesPerSave)
		batch := make([]logstore.Outcome, n)
		upTo := make([]int64, n)
		for i, tx := range k.order[:n] {
			o := k.pending[tx]
			batch[i], upTo[i] = o.Outcome, o.upTo
			// Into the filter before the store may hold them: a lookup
			// that misses them in memory then asks the store.
			if !o.filtered {
				o.filtered = true
				for _, key := range o.Keys {
					k.noteKeyLocked(ctx, key)
				}
			}
		}
		k.mu.Unlock()
		if n == 0 {
			return
		}
		if err := k.store.SaveOutcomes(ctx, batch); err != nil {
			if ctx.Err() == nil {
				k.logger.Warn("saving outcomes failed; will retry", "outcomes", n, "err", err)
			}
			return
		}
		k.mu.Lock()
		for _, o := range batch {
			delete(k.pending, o.Tx)
			for _, key := range o.Keys {
				if k.byKey[key] == o.Tx {
					delete(k.byKey, key)
				}
			}
		}
		k.order = k.order[n:]
		k.mu.Unlock()
		for i, o := range batch {
			k.saved(logstore.Ended{Tx: o.Tx, UpToSeq: upTo[i]})
		}
	}
}

// prune deletes the outcomes older than the window and moves the horizon.
func (k *outcomeKeeper) prune(ctx context.Context, now time.Time) {
	n, err := k.store.PruneOutcomes(ctx, now.Add(-k.keep))
	if err != nil {
		if ctx.Err() == nil {
			k.logger.Warn("deleting old outcomes failed; will retry", "err", err)
		}
		return
	}
	if n == 0 {
		return
	}
	h, err := k.store.OutcomesHorizon(ctx)
	if err != nil {
		k.logger.Warn("reading the outcomes horizon failed", "err", err)
		return
	}
	k.mu.Lock()
	k.horizon = max(k.horizon, h)
	k.mu.Unlock()
	k.logger.Debug("deleted old outcomes", "outcomes", n, "horizon", h)
}

// lookUp asks, without blocking, for the transaction key named; the answer
// comes through answer. Lookups asked meanwhile go to the store together.
func (k *outcomeKeeper) lookUp(key string) {
	k.mu.Lock()
	k.asked = append(k.asked, key)
	k.mu.Unlock()
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

func (k *outcomeKeeper) answerLookups(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-k.wake:
		}
		k.mu.Lock()
		asked := k.asked
		k.asked = nil
		var ask, unheard []string
		held := map[string]logstore.Outcome{}
		for _, key := range asked {
			if tx, ok := k.byKey[key]; ok {
				held[key] = k.pending[tx].Outcome
				continue
			}
			if k.keysReady && !k.keys.TestString(key) {
				unheard = append(unheard, key)
				continue
			}
			ask = append(ask, key)
		}
		k.mu.Unlock()
		for _, key := range unheard {
			k.answer(engine.KeyLookedUp{Key: key})
		}
		// Answered outside the lock: answering may wait for the loop,
		// which calls add.
		for key, o := range held {
			k.answerFound(key, o)
		}
		if len(ask) == 0 {
			continue
		}
		found, err := k.store.OutcomesByKey(ctx, ask)
		for _, key := range ask {
			switch o, ok := found[key]; {
			case err != nil:
				k.answer(engine.KeyLookedUp{Key: key, Err: err.Error()})
			case ok:
				k.answerFound(key, o)
			default:
				k.answer(engine.KeyLookedUp{Key: key})
			}
		}
	}
}

// noteKeyLocked puts a key the store is about to hold into the filter,
// and has the filter filled afresh once it holds more than it has room
// for. k.mu is held.
func (k *outcomeKeeper) noteKeyLocked(ctx context.Context, key string) {
	if k.keys == nil {
		return
	}
	k.addKeyLocked(key)
	if k.keysAdded > k.keysCap && !k.filling {
		k.keysReady, k.filling = false, true
		go k.fillKeys(ctx)
	}
}

// addKeyLocked puts key into the filter and counts it against its room.
// k.mu is held.
func (k *outcomeKeeper) addKeyLocked(key string) {
	k.keys.AddString(key)
	k.keysAdded++
}

// refillKeys starts filling the key filter unless it is filled or being
// filled: at start, and again after a fill failed.
func (k *outcomeKeeper) refillKeys(ctx context.Context) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keysReady || k.filling {
		return
	}
	k.filling = true
	go k.fillKeys(ctx)
}

// fillKeys fills a new key filter, with room for twice the keys the store
// and the memory hold, with every one of them, page by page; keys saved
// meanwhile go in too (noteKeyLocked). Only then are lookups answered from
// it. After a failure every lookup goes to the store, as before the
// filter, until a later try (refillKeys) succeeds.
func (k *outcomeKeeper) fillKeys(ctx context.Context) {
	n, err := k.store.OutcomeKeysCount(ctx)
	if err == nil {
		k.mu.Lock()
		held := len(k.byKey)
		k.mu.Unlock()
		capacity := max(k.keysMin, 2*(uint(n)+uint(held)))
		filter := bloom.NewWithEstimates(capacity, keysFalsePositive)
		k.mu.Lock()
		k.keys, k.keysCap, k.keysAdded, k.keysReady, k.filling = filter, capacity, 0, false, true
		// A save under way may have noted its keys in the filter this one
		// replaces, and commit them after the pages below were read: its
		// keys are still held in memory until it committed.
		for key := range k.byKey {
			k.addKeyLocked(key)
		}
		k.mu.Unlock()
		after := ""
		for ctx.Err() == nil {
			var page []string
			if page, err = k.store.OutcomeKeysAfter(ctx, after, keysPage); err != nil || len(page) == 0 {
				break
			}
			k.mu.Lock()
			for _, key := range page {
				k.addKeyLocked(key)
			}
			k.mu.Unlock()
			after = page[len(page)-1]
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.filling = false
	if err != nil || ctx.Err() != nil {
		if ctx.Err() == nil {
			k.logger.Warn("could not read the kept keys into the key filter; every key is looked up in the log database", "err", err)
		}
		return
	}
	k.keysReady = true
}

func (k *outcomeKeeper) answerFound(key string, o logstore.Outcome) {
	k.answer(engine.KeyLookedUp{Key: key, Found: true, TxID: engine.TxID(o.Tx), Outcome: outcomeOf(o), Reason: o.Reason})
}

func outcomeOf(o logstore.Outcome) engine.Outcome {
	if o.Committed {
		return engine.OutcomeCommit
	}
	return engine.OutcomeAbort
}

// status completes the engine's answer about a transaction it forgot from
// the outcomes kept: the outcome if kept; aborted if the id is newer than
// every outcome deleted for age, since a transaction that may commit is
// logged before it does and its outcome kept once it ends; forgotten only
// when the window has passed.
func (k *outcomeKeeper) status(ctx context.Context, st engine.StatusReply) (engine.StatusReply, error) {
	if st.State != "forgotten" {
		return st, nil
	}
	tx := uint64(st.TxID)
	k.mu.Lock()
	held, inMemory := k.pending[tx]
	var o logstore.Outcome
	if inMemory {
		o = held.Outcome
	}
	horizon := k.horizon
	k.mu.Unlock()
	if !inMemory {
		var err error
		var ok bool
		if o, ok, err = k.store.OutcomeByTx(ctx, tx); err != nil {
			return st, err
		}
		if !ok {
			if tx > horizon {
				st.State, st.Outcome = engine.PhaseAborted.String(), engine.OutcomeAbort
				st.Reason = "no record of it: it ended before anything of it was logged, so nothing of it committed"
			} else {
				st.Reason = fmt.Sprintf("ended more than %s ago; outcomes are kept that long (--keep-outcomes)", k.keep)
			}
			return st, nil
		}
	}
	st.Outcome = outcomeOf(o)
	if st.Outcome == engine.OutcomeCommit {
		st.State = engine.PhaseCommitted.String()
	} else {
		st.State = engine.PhaseAborted.String()
	}
	st.Reason = o.Reason
	return st, nil
}
