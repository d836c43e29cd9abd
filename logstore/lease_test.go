package logstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tpcd/tpcd/queries"
)

// TestLeaseFencesTheHolderItReplaced: one holder at a time; a holder whose
// lease expired and was taken writes nothing more, and cannot renew.
func TestLeaseFencesTheHolderItReplaced(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	const node = "coordinator"

	genA, taken, _, err := s.TakeLease(ctx, node, "a", time.Hour)
	if err != nil || !taken {
		t.Fatalf("first take: generation %d, taken %v, err %v", genA, taken, err)
	}
	if _, taken, current, err := s.TakeLease(ctx, node, "b", time.Hour); err != nil || taken || current.Holder != "a" || current.Generation != genA || current.Remaining <= 0 {
		t.Fatalf("take of a held slot: taken %v, current %+v, err %v; want it refused, naming a", taken, current, err)
	}
	a := s.Fenced(node, genA)
	first := appendRow(t, a, node, entry(1, "a", 0))

	// a lets its lease run out (as a holder that stopped renewing would).
	if _, err := s.pool.Exec(ctx, "UPDATE tpcd_leases SET expires_at = now() - interval '1 second'"); err != nil {
		t.Fatal(err)
	}
	genB, taken, _, err := s.TakeLease(ctx, node, "b", time.Hour)
	if err != nil || !taken || genB <= genA {
		t.Fatalf("take of an expired slot: generation %d (a had %d), taken %v, err %v", genB, genA, taken, err)
	}
	if _, err := a.Append(ctx, node, []Entry{entry(2, "a", 0)}); !errors.Is(err, ErrFenced) {
		t.Fatalf("append of the replaced holder: %v, want %v", err, ErrFenced)
	}
	if _, _, err := a.Last(ctx, node); !errors.Is(err, ErrFenced) {
		t.Fatalf("the replaced holder asks for the newest row: %v, want %v", err, ErrFenced)
	}
	if _, _, err := a.Compact(ctx, node, []int64{first.seq}, nil); !errors.Is(err, ErrFenced) {
		t.Fatalf("compaction by the replaced holder: %v, want %v", err, ErrFenced)
	}
	if held, err := s.RenewLease(ctx, node, genA, time.Hour); err != nil || held {
		t.Fatalf("renewal of the replaced holder: held %v, err %v", held, err)
	}
	b := s.Fenced(node, genB)
	row := appendRow(t, b, node, entry(3, "b", 0))
	if seq, n, err := b.Last(ctx, node); err != nil || seq != row.seq || n != 1 {
		t.Fatalf("the holder's newest row: %d, %d, %v; want %d with one event", seq, n, err, row.seq)
	}
	if held, err := s.RenewLease(ctx, node, genB, time.Hour); err != nil || !held {
		t.Fatalf("renewal of the holder: held %v, err %v", held, err)
	}
	// Another node's log is not fenced by this slot.
	other := appendRow(t, a, "participant-0", entry(4, "p", 0))
	checkRecords(t, scanAll(t, s, node), first, row)
	checkRecords(t, scanAll(t, s, "participant-0"), other)
	if deleted, _, err := b.Compact(ctx, node, []int64{first.seq}, nil); err != nil || deleted != 1 {
		t.Fatalf("compaction by the holder: %d rows deleted, %v; want the first row", deleted, err)
	}
	checkRecords(t, scanAll(t, s, node), row)

	// Released, the slot is taken at once.
	if err := s.ReleaseLease(ctx, node, genA); err != nil {
		t.Fatal(err)
	}
	if _, taken, _, _ := s.TakeLease(ctx, node, "c", time.Hour); taken {
		t.Fatal("a release by the replaced holder freed the slot")
	}
	if err := s.ReleaseLease(ctx, node, genB); err != nil {
		t.Fatal(err)
	}
	if _, taken, _, err := s.TakeLease(ctx, node, "c", time.Hour); err != nil || !taken {
		t.Fatalf("take after release: taken %v, err %v", taken, err)
	}
}

// TestTakeOverOrdersWithAppendsInFlight: an append in flight when the slot
// is taken over either commits before the take-over ends (so the new holder
// reads it) or writes nothing; it never lands after. A renewal does not
// wait for appends.
func TestTakeOverOrdersWithAppendsInFlight(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	const node = "coordinator"
	gen, _, _, err := s.TakeLease(ctx, node, "a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expire := func() {
		t.Helper()
		if _, err := s.pool.Exec(ctx, "UPDATE tpcd_leases SET expires_at = now() - interval '1 second'"); err != nil {
			t.Fatal(err)
		}
	}
	// lockWaits reports whether some statement waits for a row lock.
	lockWaits := func() bool {
		var n int
		if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	q := queries.New()

	// An append not yet committed: a renewal does not wait for it, a
	// take-over does.
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := q.LogAppendFenced(ctx, tx, queries.LogAppendFencedParams{Node: node, Txs: []int64{1}, Events: []byte(`[{"type":"a"}]`), Generation: gen})
	if err != nil {
		t.Fatal(err)
	}
	renewCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if held, err := s.RenewLease(renewCtx, node, gen, time.Hour); err != nil || !held {
		t.Fatalf("renewal while an append is in flight: held %v, %v", held, err)
	}
	expire()
	type took struct {
		gen   int64
		taken bool
		err   error
	}
	done := make(chan took, 1)
	go func() {
		g, taken, _, err := s.TakeLease(context.Background(), node, "b", time.Hour)
		done <- took{g, taken, err}
	}()
	waitFor(t, "the take-over to wait for the append", lockWaits)
	select {
	case r := <-done:
		t.Fatalf("take-over ended (%+v) while an append under the old lease was in flight", r)
	default:
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || !r.taken {
		t.Fatalf("take-over after the append: %+v", r)
	}
	if recs := scanAll(t, s, node); len(recs) != 1 || recs[0].Seq != seq {
		t.Fatalf("log after the take-over: %+v, want the append in flight (seq %d)", recs, seq)
	}

	// A take-over not yet committed: the append waits for it, then writes
	// nothing.
	expire()
	tx, err = s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next, err := q.LeaseTake(ctx, tx, queries.LeaseTakeParams{Node: node, Holder: "c", TtlSeconds: 3600})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.LeaseFence(ctx, tx, queries.LeaseFenceParams{Node: node, Generation: next}); err != nil {
		t.Fatal(err)
	}
	appended := make(chan error, 1)
	go func() {
		_, err := s.Fenced(node, r.gen).Append(context.Background(), node, []Entry{entry(2, "b", 0)})
		appended <- err
	}()
	waitFor(t, "the append to wait for the take-over", lockWaits)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-appended; !errors.Is(err, ErrFenced) {
		t.Fatalf("append that waited for a take-over: %v, want %v", err, ErrFenced)
	}
	if recs := scanAll(t, s, node); len(recs) != 1 {
		t.Fatalf("log holds %d events, want only the first append's", len(recs))
	}
}

// TestSlotsAgreeWhileCoordinatorsRun: a log records how many slots its
// coordinators serve; another number is refused while a coordinator's
// lease is live, and taken once none is.
func TestSlotsAgreeWhileCoordinatorsRun(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	if n, err := s.Slots(ctx); err != nil || n != 1 {
		t.Fatalf("slots of a new log: %d, %v; want 1", n, err)
	}
	if before, err := s.AgreeSlots(ctx, 1); err != nil || before != 1 {
		t.Fatalf("agree on 1 slot: %d, %v", before, err)
	}
	if before, err := s.AgreeSlots(ctx, 2); err != nil || before != 1 {
		t.Fatalf("agree on 2 slots with nobody running: %d, %v", before, err)
	}
	if _, taken, _, err := s.TakeLease(ctx, "coordinator.1", "b", time.Hour); err != nil || !taken {
		t.Fatalf("take slot 1: %v %v", taken, err)
	}
	var differ *SlotsDiffer
	if _, err := s.AgreeSlots(ctx, 3); !errors.As(err, &differ) || differ.Recorded != 2 || differ.Live != 1 {
		t.Fatalf("agree on 3 slots while slot 1 is held: %v; want a refusal naming 2 slots and 1 live lease", err)
	}
	if before, err := s.AgreeSlots(ctx, 2); err != nil || before != 2 {
		t.Fatalf("agree on the recorded 2 while slot 1 is held: %d, %v", before, err)
	}
	// Another node's lease (not a coordinator's) does not count.
	if _, err := s.pool.Exec(ctx, "UPDATE tpcd_leases SET expires_at = now() - interval '1 second'"); err != nil {
		t.Fatal(err)
	}
	if _, taken, _, err := s.TakeLease(ctx, "other", "c", time.Hour); err != nil || !taken {
		t.Fatalf("take another node's lease: %v %v", taken, err)
	}
	if before, err := s.AgreeSlots(ctx, 3); err != nil || before != 2 {
		t.Fatalf("agree on 3 slots once no coordinator runs: %d, %v", before, err)
	}
	if n, err := s.Slots(ctx); err != nil || n != 3 {
		t.Fatalf("slots recorded: %d, %v; want 3", n, err)
	}
	// Never fewer: slot 2's log would be left to nobody.
	if _, err := s.AgreeSlots(ctx, 2); !errors.As(err, &differ) || differ.Asked != 2 || differ.Recorded != 3 {
		t.Fatalf("agree on 2 slots after 3: %v; want a refusal", err)
	}
}

// TestStandbysAnnounceWhatTheyWaitFor: a standby's announcement names the
// slots it waits for until it expires or is withdrawn; renewing it
// replaces the slots.
func TestStandbysAnnounceWhatTheyWaitFor(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	waits := func(slot int) bool {
		t.Helper()
		w, err := s.StandbyWaitsFor(ctx, slot, 0)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	if waits(0) {
		t.Fatal("a standby waits for slot 0 of a new log")
	}
	if err := s.AnnounceStandby(ctx, "a", []int{0, 2}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if !waits(0) || waits(1) || !waits(2) {
		t.Fatalf("a waits for slots 0 and 2: 0 %v, 1 %v, 2 %v", waits(0), waits(1), waits(2))
	}
	// A slot goes back only to a standby that has waited a while.
	if w, err := s.StandbyWaitsFor(ctx, 0, time.Hour); err != nil || w {
		t.Fatalf("a, announced just now, has waited an hour: %v, %v", w, err)
	}
	if _, err := s.pool.Exec(ctx, "UPDATE tpcd_standbys SET since = now() - interval '2 hours'"); err != nil {
		t.Fatal(err)
	}
	if w, err := s.StandbyWaitsFor(ctx, 0, time.Hour); err != nil || !w {
		t.Fatalf("a, waiting for two hours, has not waited an hour: %v, %v", w, err)
	}
	if err := s.AnnounceStandby(ctx, "a", []int{1}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if waits(0) || !waits(1) {
		t.Fatalf("a, announced again for slot 1 alone: 0 %v, 1 %v", waits(0), waits(1))
	}
	if err := s.AnnounceStandby(ctx, "b", []int{1}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.WithdrawStandby(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if !waits(1) {
		t.Fatal("b still waits for slot 1 once a withdrew")
	}
	// An announcement that ran out counts no more, as of a standby that
	// died waiting.
	if _, err := s.pool.Exec(ctx, "UPDATE tpcd_standbys SET expires_at = now() - interval '1 second'"); err != nil {
		t.Fatal(err)
	}
	if waits(1) {
		t.Fatal("an expired announcement still counts")
	}
}
