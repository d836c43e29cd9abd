package logstore

import (
	"testing"
	"time"
)

// TestOutcomesOfSlotsStayApart keeps outcomes of two slots in one log
// database: each store prunes and reads only its own slot's ids, and each
// slot's horizon moves only with its own pruning.
func TestOutcomesOfSlotsStayApart(t *testing.T) {
	ctx := t.Context()
	base := newStore(t)
	const slot1 = uint64(1) << 40
	slots := []*Store{base.ForSlot(0, 1, slot1), base.ForSlot(1, slot1, 2*slot1)}
	old := time.Now().Add(-time.Hour)
	for i, s := range slots {
		first := uint64(i)<<40 + 5
		if err := s.SaveOutcomes(ctx, []Outcome{
			{Tx: first, EndedAt: old, Committed: true, Keys: []string{"k" + string(rune('a'+i))}},
			{Tx: first + 1, EndedAt: old, Reason: "voted no"},
		}); err != nil {
			t.Fatalf("save slot %d's outcomes: %v", i, err)
		}
	}
	for i, s := range slots {
		other := uint64(1-i)<<40 + 5
		if _, ok, err := s.OutcomeByTx(ctx, other); err != nil || ok {
			t.Fatalf("slot %d read slot %d's tx %d: %v %v", i, 1-i, other, ok, err)
		}
		if o, ok, err := s.OutcomeByTx(ctx, uint64(i)<<40+5); err != nil || !ok || !o.Committed {
			t.Fatalf("slot %d's own tx: %+v %v %v", i, o, ok, err)
		}
	}

	// Slot 1 prunes: its rows and key go, slot 0's stay, and only slot 1's
	// horizon moves, to its largest id.
	n, err := slots[1].PruneOutcomes(ctx, time.Now())
	if err != nil || n != 2 {
		t.Fatalf("prune slot 1: %d rows, %v; want its outcome row and its key", n, err)
	}
	for i, want := range []uint64{0, slot1 + 6} {
		if h, err := slots[i].OutcomesHorizon(ctx); err != nil || h != want {
			t.Fatalf("slot %d's horizon %d, %v; want %d", i, h, err, want)
		}
	}
	if _, ok, err := slots[0].OutcomeByTx(ctx, 6); err != nil || !ok {
		t.Fatalf("slot 0's tx 6 after slot 1 pruned: %v %v", ok, err)
	}
	if got, err := base.OutcomesByKey(ctx, []string{"ka", "kb"}); err != nil || len(got) != 1 || got["ka"].Tx != 5 {
		t.Fatalf("keys after slot 1 pruned: %+v %v; want slot 0's alone", got, err)
	}
	if n, err := slots[0].PruneOutcomes(ctx, time.Now()); err != nil || n != 2 {
		t.Fatalf("prune slot 0: %d rows, %v", n, err)
	}
	if h, err := slots[0].OutcomesHorizon(ctx); err != nil || h != 6 {
		t.Fatalf("slot 0's horizon %d, %v; want 6", h, err)
	}
}
