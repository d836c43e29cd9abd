package logstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/queries"
)

// ErrFenced is what an append of a leased node returns once its slot was
// taken over: the row was not written, and no append under that lease
// will be.
var ErrFenced = errors.New("the slot's lease was taken over: the log no longer takes this holder's appends")

// Lease describes who holds a node's slot (see TakeLease).
type Lease struct {
	Node       string
	Holder     string
	Generation int64
	// Remaining is how long the lease lasts unless renewed, from the
	// moment it was read, by the log server's clock.
	Remaining time.Duration
}

// Fenced returns a Store whose appends to node's log are written only while
// node's slot is still held under generation (see TakeLease); once another
// holder took it, they fail with ErrFenced. Everything else is as s.
func (s *Store) Fenced(node string, generation int64) *Store {
	f := *s
	f.fence = &fence{node: node, generation: generation}
	return &f
}

// fence names the one node whose appends a Fenced store checks.
type fence struct {
	node       string
	generation int64
}

// appendRow writes one row of node's log on conn, fenced if s is.
func (s *Store) appendRow(ctx context.Context, conn *pgx.Conn, node string, txs []int64, events []byte) (int64, error) {
	if s.fence == nil || s.fence.node != node {
		return s.q.LogAppend(ctx, conn, queries.LogAppendParams{Node: node, Txs: txs, Events: events})
	}
	seq, err := s.q.LogAppendFenced(ctx, conn, queries.LogAppendFencedParams{Node: node, Txs: txs, Events: events, Generation: s.fence.generation})
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrFenced
	}
	return seq, err
}

// fenced runs write on the pool, or, when s fences node's log, in a
// transaction that first checks the lease and holds it FOR SHARE until
// the write commits (ErrFenced once the slot was taken over).
func (s *Store) fenced(ctx context.Context, node string, write func(queries.DBTX) error) error {
	if s.fence == nil || s.fence.node != node {
		return write(s.pool)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := s.q.LeaseHeld(ctx, tx, queries.LeaseHeldParams{Node: node, Generation: s.fence.generation}); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrFenced
			}
			return err
		}
		return write(tx)
	})
}

// TakeLease makes holder the holder of node's slot for ttl, if nobody holds
// it or its lease has expired, and returns the slot's new generation, which
// every append of the new holder must name (Fenced). When another holds
// it, taken is false and current says who, until when. Taking a slot waits
// for the appends and compactions in flight under the old generation, so
// once it returns the log holds everything the old holder will ever have
// written. Renewals do not wait for them: they update the lease, not the
// fence the writes hold.
func (s *Store) TakeLease(ctx context.Context, node, holder string, ttl time.Duration) (generation int64, taken bool, current Lease, err error) {
	// Read first: a take that finds the lease held still locks its row (ON
	// CONFLICT does), which would hold up the holder's appends at every
	// poll of a standby.
	current, found, err := s.LeaseOf(ctx, node)
	if err != nil {
		return 0, false, Lease{}, err
	}
	if found && current.Remaining > 0 {
		return 0, false, current, nil
	}
	err = s.durably(ctx, func(conn *pgx.Conn) error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			var err error
			generation, err = s.q.LeaseTake(ctx, tx, queries.LeaseTakeParams{Node: node, Holder: holder, TtlSeconds: ttl.Seconds()})
			if err != nil {
				return err
			}
			return s.q.LeaseFence(ctx, tx, queries.LeaseFenceParams{Node: node, Generation: generation})
		})
	})
	switch {
	case err == nil:
		return generation, true, Lease{}, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return 0, false, Lease{}, fmt.Errorf("take the lease of %s: %w", node, err)
	}
	// Taken by another since the read.
	if current, found, err = s.LeaseOf(ctx, node); err != nil {
		return 0, false, Lease{}, err
	}
	if !found {
		return 0, false, Lease{Node: node}, nil
	}
	return 0, false, current, nil
}

// RenewLease extends the lease of generation's holder of node's slot by ttl
// from now. held is false when the slot was taken over meanwhile.
func (s *Store) RenewLease(ctx context.Context, node string, generation int64, ttl time.Duration) (held bool, err error) {
	err = s.durably(ctx, func(conn *pgx.Conn) error {
		_, err := s.q.LeaseRenew(ctx, conn, queries.LeaseRenewParams{Node: node, Generation: generation, TtlSeconds: ttl.Seconds()})
		return err
	})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, pgx.ErrNoRows):
		return false, nil
	}
	return false, fmt.Errorf("renew the lease of %s: %w", node, err)
}

// ReleaseLease ends generation's lease of node's slot now, so that another
// holder may take it at once. Releasing a lease already taken over does
// nothing.
func (s *Store) ReleaseLease(ctx context.Context, node string, generation int64) error {
	if err := s.q.LeaseRelease(ctx, s.pool, queries.LeaseReleaseParams{Node: node, Generation: generation}); err != nil {
		return fmt.Errorf("release the lease of %s: %w", node, err)
	}
	return nil
}

// LeaseOf reads who holds node's slot; found is false if nobody ever took it.
func (s *Store) LeaseOf(ctx context.Context, node string) (l Lease, found bool, err error) {
	row, err := s.q.LeaseOf(ctx, s.pool, node)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Lease{}, false, nil
	case err != nil:
		return Lease{}, false, fmt.Errorf("read the lease of %s: %w", node, err)
	}
	return Lease{
		Node: node, Holder: row.Holder, Generation: row.Generation,
		Remaining: time.Duration(row.RemainingSeconds * float64(time.Second)),
	}, true, nil
}

// AnnounceStandby records that holder waits for one of slots, for ttl:
// a coordinator serving one of them as an adopted slot hands it back
// (StandbyWaitsFor). The standby renews it while it waits.
func (s *Store) AnnounceStandby(ctx context.Context, holder string, slots []int, ttl time.Duration) error {
	ids := make([]int32, len(slots))
	for i, slot := range slots {
		ids[i] = int32(slot)
	}
	if err := s.q.StandbyAnnounce(ctx, s.pool, queries.StandbyAnnounceParams{Holder: holder, Slots: ids, TtlSeconds: ttl.Seconds()}); err != nil {
		return fmt.Errorf("announce standby %s: %w", holder, err)
	}
	return nil
}

// WithdrawStandby removes holder's announcement, once it took a slot or
// stops waiting.
func (s *Store) WithdrawStandby(ctx context.Context, holder string) error {
	if err := s.q.StandbyWithdraw(ctx, s.pool, holder); err != nil {
		return fmt.Errorf("withdraw standby %s: %w", holder, err)
	}
	return nil
}

// StandbyWaitsFor reports whether a standby whose announcement has not
// expired has waited for slot for at least waited.
func (s *Store) StandbyWaitsFor(ctx context.Context, slot int, waited time.Duration) (bool, error) {
	n, err := s.q.StandbyWaitsFor(ctx, s.pool, queries.StandbyWaitsForParams{Slot: int32(slot), WaitedSeconds: waited.Seconds()})
	if err != nil {
		return false, fmt.Errorf("read the standbys waiting for slot %d: %w", slot, err)
	}
	return n > 0, nil
}

// SlotsDiffer is AgreeSlots's refusal: coordinators serving another
// number of slots hold leases on the log (Live), or the number asked is
// smaller than the recorded one.
type SlotsDiffer struct {
	Recorded, Asked, Live int
}

func (e *SlotsDiffer) Error() string {
	if e.Asked < e.Recorded {
		return fmt.Sprintf("the coordinators of this log serve %d slot(s); this one was asked to serve %d, but slots are never taken away: the higher slots' logs and transactions would be left to nobody (fewer coordinators than slots serve them all: a serving one takes over a slot nobody holds)", e.Recorded, e.Asked)
	}
	return fmt.Sprintf("the coordinators of this log serve %d slot(s), and %d of them hold a lease now; this one was asked to serve %d: give every coordinator the same --slots, or stop them all to change it", e.Recorded, e.Live, e.Asked)
}

// AgreeSlots records that the log's coordinators serve slots slots at once
// and returns how many they served before (1 if never recorded). While any
// coordinator's lease is live it refuses another number (*SlotsDiffer):
// an idempotency key belongs to the slot it hashes to among that many, so
// coordinators that disagree could each run one key's transaction. It
// never lowers the number: a slot taken away would leave its log, its
// transactions and the participants' branches of them to nobody.
func (s *Store) AgreeSlots(ctx context.Context, slots int) (before int, err error) {
	err = s.durably(ctx, func(conn *pgx.Conn) error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			n, err := s.q.SlotsOf(ctx, tx)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				before = 1
			case err != nil:
				return err
			default:
				before = int(n)
			}
			if before == slots {
				return nil
			}
			if slots < before {
				return &SlotsDiffer{Recorded: before, Asked: slots}
			}
			live, err := s.q.CoordinatorLeasesLive(ctx, tx)
			if err != nil {
				return err
			}
			if live > 0 {
				return &SlotsDiffer{Recorded: before, Asked: slots, Live: int(live)}
			}
			return s.q.SlotsSet(ctx, tx, int32(slots))
		})
	})
	if err != nil {
		var differ *SlotsDiffer
		if errors.As(err, &differ) {
			return before, differ
		}
		return before, fmt.Errorf("agree on the slots: %w", err)
	}
	return before, nil
}

// Slots reads how many slots the log's coordinators serve (1 if never
// recorded).
func (s *Store) Slots(ctx context.Context) (int, error) {
	n, err := s.q.SlotsOf(ctx, s.pool)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 1, nil
	case err != nil:
		return 0, fmt.Errorf("read the slots: %w", err)
	}
	return int(n), nil
}
