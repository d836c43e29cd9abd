package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/db"
	"github.com/tpcd/tpcd/logstore"
)

// LeaseOptions configure HoldLease.
type LeaseOptions struct {
	// TTL is how long the lease lasts unless renewed; it is renewed every
	// third of it. A standby takes over at most about TTL after the holder
	// stopped renewing.
	TTL time.Duration
	// Holder names this process in the lease row and in the standbys'
	// logs: its address, say.
	Holder string
	Logger *slog.Logger
	// Slots, where several coordinators serve one cluster
	// (CoordinatorOptions.Slots), are the slots this process may take,
	// tried in order; nil is slot 0 alone.
	Slots []int
	// Announce, while this process waits, records in the log that it
	// waits for Slots (renewed every third of TTL, withdrawn once it
	// holds one or stops waiting): a coordinator that serves one of them
	// as an adopted slot hands it back.
	Announce bool
}

// Lease is the coordinator's slot in a shared log, held by this process
// and renewed in the background until Release or until it is lost.
type Lease struct {
	store      *logstore.Store
	node       string
	slot       int
	opts       LeaseOptions
	generation int64

	stop context.CancelFunc
	done chan struct{}
	lossSignal
}

// HoldLease waits until this process holds the coordinator's slot in the
// log at pool (a standby, meanwhile: it logs who holds it), then keeps the
// lease renewed. It returns when the slot is held, or with ctx's error.
// A coordinator started with the lease (CoordinatorOptions.Lease) writes to
// the log only while the slot is still its own; when the lease is lost,
// Lost is closed, and the process must stop acting as the coordinator.
func HoldLease(ctx context.Context, pool *pgxpool.Pool, opts LeaseOptions) (*Lease, error) {
	if opts.TTL <= 0 {
		return nil, errors.New("lease: TTL must be positive")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	store := logstore.New(pool)
	slots := opts.Slots
	if len(slots) == 0 {
		slots = []int{0}
	}
	// The row names this process alone, so that a take whose answer was
	// lost is recognised as its own at the next try.
	holder := opts.Holder + holderNonceSep + strconv.FormatUint(rand.Uint64(), 36)
	// A standby asks every tenth of the TTL: it takes over within that of
	// the lease's expiry.
	poll := opts.TTL / 10
	var reported string
	// announced is when this process last announced itself; tried, that
	// it tried at all: an announcement whose answer was lost may stand.
	var announced time.Time
	var tried bool
	if opts.Announce {
		defer func() {
			if !tried {
				return
			}
			// In the background, with a moment of its own (ctx may have
			// ended): a slot just taken is served meanwhile, and an
			// announcement left behind expires after TTL.
			go func() {
				wctx, cancel := context.WithTimeout(context.Background(), opts.TTL)
				defer cancel()
				if err := store.WithdrawStandby(wctx, holder); err != nil {
					opts.Logger.Debug("standby: withdrawing the announcement failed; it expires", "err", err)
				}
			}()
		}()
	}
	// lockedOut reports whether a coordinator without a lease holds the
	// log lock: while it does, the slot is not taken from it.
	lockedOut := func() (bool, error) {
		other, held, err := LogLockHolder(ctx, pool)
		if held && other != reported {
			reported = other
			opts.Logger.Warn("standby: a coordinator without --lease serves on this log; taking over only once it stops", "holder", other)
		}
		return held, err
	}
	for {
		start := time.Now()
		var (
			gen     int64
			taken   bool
			current logstore.Lease
			slot    int
			node    string
		)
		locked, err := lockedOut()
		for _, slot = range slots {
			if err != nil || locked {
				// Nothing is taken while a coordinator without a lease
				// holds the log lock, or the lock cannot be read.
				break
			}
			node = api.CoordinatorSlotName(slot)
			gen, taken, current, err = store.TakeLease(ctx, node, holder, opts.TTL)
			if !taken && err == nil && current.Holder == holder && current.Remaining > 0 {
				// Counted from when the lease was taken, as the server did.
				gen, taken, start = current.Generation, true, time.Now().Add(current.Remaining-opts.TTL)
			}
			if taken {
				break
			}
			if err != nil {
				// Its take may have succeeded unheard: this slot is
				// tried first next time, so that the lease is not left
				// naming this process while it takes another.
				i := slices.Index(slots, slot)
				slots = slices.Concat([]int{slot}, slots[:i], slots[i+1:])
				break
			}
		}
		if taken {
			// It may have taken the lock meanwhile: it took that before it
			// claimed the slot, so one of the two sees the other. (Its
			// appends are fenced by the slot it claimed, so taking the slot
			// from it is safe, but it would stop.)
			if locked, err = lockedOut(); err != nil || locked {
				store.ReleaseLease(ctx, node, gen)
				taken = false
			}
		}
		switch {
		case taken:
			l := &Lease{store: store, node: node, slot: slot, opts: opts, generation: gen, done: make(chan struct{}), lossSignal: newLossSignal()}
			var rctx context.Context
			rctx, l.stop = context.WithCancel(context.Background())
			go l.renew(rctx, start)
			opts.Logger.Info("holding the coordinator's slot in the log", "slot", slot, "generation", gen, "ttl", opts.TTL)
			return l, nil
		case err != nil:
			opts.Logger.Warn("lease: cannot reach the log to take the coordinator's slot; trying again", "err", err)
		case locked:
		case current.Holder != reported:
			reported = current.Holder
			opts.Logger.Info("standby: another coordinator holds the slot; taking over once its lease expires",
				"holder", current.Holder, "generation", current.Generation, "expires_in", current.Remaining.Round(time.Millisecond))
		}
		if opts.Announce && err == nil && !locked && time.Since(announced) >= opts.TTL/3 {
			tried = true
			if aerr := store.AnnounceStandby(ctx, holder, slots, opts.TTL); aerr != nil {
				opts.Logger.Debug("standby: announcing failed; trying again", "err", aerr)
			} else {
				announced = time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// Slot is the slot this lease holds (LeaseOptions.Slots).
func (l *Lease) Slot() int { return l.slot }

// holderNonceSep parts a lease holder's address (LeaseOptions.Holder) from
// the nonce that names its process in the lease row.
const holderNonceSep = " #"

// holderAddr is the address a lease row's holder names.
func holderAddr(holder string) string {
	addr, _, _ := strings.Cut(holder, holderNonceSep)
	return addr
}

// Generation is the slot's generation this lease holds; appends name it.
func (l *Lease) Generation() int64 { return l.generation }

// renew renews the lease every third of its TTL. The lease counts as lost
// once the TTL has passed since the start of the last renewal that
// succeeded: by the log server's clock the lease ran until at least then,
// and a standby may hold it now.
func (l *Lease) renew(ctx context.Context, renewed time.Time) {
	defer close(l.done)
	every := l.opts.TTL / 3
	next := renewed.Add(every)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		deadline := renewed.Add(l.opts.TTL)
		start := time.Now()
		rctx, cancel := context.WithDeadline(ctx, deadline)
		held, err := l.store.RenewLease(rctx, l.node, l.generation, l.opts.TTL)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil && held:
			renewed, next = start, start.Add(every)
		case err == nil:
			l.lose(errors.New("another coordinator took the slot over"))
			return
		case !time.Now().Before(deadline):
			l.lose(fmt.Errorf("not renewed within %s: %w", l.opts.TTL, err))
			return
		default:
			l.opts.Logger.Warn("lease: renewal failed; trying again", "err", err)
			next = time.Now().Add(l.opts.TTL / 10)
		}
	}
}

func (l *Lease) lose(why error) {
	if l.signal(fmt.Errorf("lost the coordinator's slot in the log: %w", why)) {
		l.opts.Logger.Error("lease lost: this coordinator stops", "err", why)
	}
}

// lossSignal is how a lease or the log lock, which a coordinator must hold
// to serve, tells that it was lost.
type lossSignal struct {
	once sync.Once
	lost chan struct{}
	why  error
}

func newLossSignal() lossSignal { return lossSignal{lost: make(chan struct{})} }

// signal records the loss; only the first counts (true).
func (s *lossSignal) signal(why error) (first bool) {
	s.once.Do(func() {
		s.why, first = why, true
		close(s.lost)
	})
	return first
}

// Lost is closed once it is lost: a lease taken over or not renewed in
// time, the log lock taken by another. Err then says why.
func (s *lossSignal) Lost() <-chan struct{} { return s.lost }

// Err says why it was lost (nil while it is held).
func (s *lossSignal) Err() error {
	select {
	case <-s.lost:
		return s.why
	default:
		return nil
	}
}

// Release stops renewing and ends the lease at once, so that a standby
// takes over without waiting for it to expire. Call it after the
// coordinator has stopped.
func (l *Lease) Release(ctx context.Context) error {
	l.stop()
	<-l.done
	if l.Err() != nil {
		return nil
	}
	return l.store.ReleaseLease(ctx, l.node, l.generation)
}

// OpenLeasePool opens a small pool on the log database at uri, with the
// log's schema brought up to date, for HoldLease: its own connections, so
// that a renewal never waits for a connection the coordinator's appends
// hold.
func OpenLeasePool(ctx context.Context, uri string, logger *slog.Logger) (*pgxpool.Pool, error) {
	pool, err := openPool(ctx, uri, 2, 1)
	if err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	if err := db.MigrateLog(ctx, pool, logger); err != nil {
		pool.Close()
		return nil, fmt.Errorf("lease: %w", err)
	}
	return pool, nil
}

// AgreeSlots records, in the log database at pool, that its coordinators
// serve slots slots at once (CoordinatorOptions.Slots), before this one
// takes one. It refuses another number than the recorded one while any
// coordinator holds a lease (logstore.SlotsDiffer); with none running,
// the number may grow, and the keys of calls repeated across the change
// may name another slot than their first call's; it never shrinks.
func AgreeSlots(ctx context.Context, pool *pgxpool.Pool, slots int, logger *slog.Logger) error {
	store := logstore.New(pool)
	recorded, err := store.Slots(ctx)
	if err != nil {
		return err
	}
	if recorded != slots {
		// A coordinator without a lease holds no live lease, but the
		// log lock: it serves as many slots as recorded.
		if holder, held, err := LogLockHolder(ctx, pool); err != nil {
			return err
		} else if held {
			return fmt.Errorf("a coordinator without --lease (%s) serves this log with %d slot(s); this one was asked to serve %d: stop it first", holder, recorded, slots)
		}
	}
	before, err := store.AgreeSlots(ctx, slots)
	if err != nil {
		return err
	}
	if before != slots {
		logger.Warn("the log's coordinators now serve another number of slots: a call repeated with its idempotency key across the change may run again", "before", before, "slots", slots)
	}
	return nil
}
