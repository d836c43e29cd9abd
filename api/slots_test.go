package api

import (
	"testing"

	"github.com/tpcd/tpcd/engine"
)

func TestSlotsOfIDsKeysAndClusters(t *testing.T) {
	for s := range MaxSlots {
		first, end := FirstTxOfSlot(s), EndTxOfSlot(s)
		if SlotOfTx(first) != s || SlotOfTx(end-1) != s || SlotOfTx(end) != s+1 {
			t.Fatalf("slot %d's ids [%d, %d) map to slots %d, %d, and %d past the end", s, first, end, SlotOfTx(first), SlotOfTx(end-1), SlotOfTx(end))
		}
		if got := SlotOfCluster(SlotCluster("0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6", s)); got != s {
			t.Fatalf("slot %d's cluster id names slot %d", s, got)
		}
	}
	// Ids stay below 2^53, which every JSON reader holds exactly.
	if end := EndTxOfSlot(MaxSlots - 1); end > 1<<53 {
		t.Fatalf("the last slot's ids end at %d, past 2^53", end)
	}
	if FirstTxOfSlot(0) != 1 || SlotOfTx(engine.TxID(1)) != 0 {
		t.Fatal("slot 0 must keep the ids a cluster without slots hands out")
	}
	for _, c := range []string{"", "9f6c", "a.b", "x.64", "x.-1"} {
		if SlotOfCluster(c) != 0 {
			t.Errorf("cluster %q names slot %d; want 0", c, SlotOfCluster(c))
		}
	}
	// A key's slot is fixed by the key and the number of slots: every
	// coordinator, of any version, must compute the same one.
	for _, c := range []struct {
		key         string
		slots, want int
	}{{"order-17", 2, 0}, {"order-17", 3, 1}, {"order-17", 64, 46}, {"transfer-100000", 64, 16}, {"slots-0", 2, 1}} {
		if got := SlotOfKey(c.key, c.slots); got != c.want {
			t.Errorf("SlotOfKey(%q, %d) = %d, want %d (FNV-1a of the key, modulo the slots)", c.key, c.slots, got, c.want)
		}
	}
	counts := make([]int, 3)
	for i := range 3000 {
		key := "order-" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
		s := SlotOfKey(key, 3)
		if s < 0 || s >= 3 {
			t.Fatalf("key %q: slot %d", key, s)
		}
		counts[s]++
		if SlotOfKey(key, 1) != 0 || SlotOfKey(key, 0) != 0 {
			t.Fatalf("key %q: a single slot must take every key", key)
		}
	}
	for s, n := range counts {
		if n < 800 {
			t.Errorf("slot %d got %d of 3000 keys; the hash should spread them", s, n)
		}
	}
}

func TestSlotNames(t *testing.T) {
	if CoordinatorSlotName(0) != CoordinatorName || CoordinatorSlotName(2) != "coordinator.2" {
		t.Fatalf("coordinator names: %q, %q", CoordinatorSlotName(0), CoordinatorSlotName(2))
	}
	if ParticipantSlotName(1, 0) != ParticipantName(1) || ParticipantSlotName(1, 3) != "participant-1.3" {
		t.Fatalf("participant names: %q, %q", ParticipantSlotName(1, 0), ParticipantSlotName(1, 3))
	}
}
