package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/logstore/memlog"
)

// These tests run the loop on memlog with a compactor the test drives:
// each append is one row, and a row holds events of several transactions.

// compacting is a running loop whose compactor the test drives.
type compacting struct {
	*harness
	c *compactor
}

// newCompacting returns a loop on log, not yet started, that tells a
// compactor about its rows; the compactor keeps nothing (keep 0).
func newCompacting(t *testing.T, log *memlog.Log) compacting {
	h := newHarness(t, log)
	c := newCompactor(log, "n", 0, slog.New(slog.NewTextHandler(t.Output(), nil)))
	h.loop.compaction = c
	return compacting{h, c}
}

// durable has the machine emit evs, waits until they are durable and
// returns the loop's durableSeq then: the seq of their row.
func (h compacting) durable(evs ...engine.Event) int64 {
	h.t.Helper()
	name := fmt.Sprintf("durable %d", h.req+1)
	h.step(evs, answer(name, h.lsn+engine.LSN(len(evs))))
	h.eventually(name, func() bool {
		for _, p := range h.performedNames() {
			if p == name {
				return true
			}
		}
		return false
	})
	var seq int64
	h.inLoop(func() { seq = h.loop.durableSeq })
	return seq
}

// end hands tx to compaction as a node does when it ends: bounded by the
// last durable row.
func (h compacting) end(tx engine.TxID) {
	h.t.Helper()
	var seq int64
	h.inLoop(func() { seq = h.loop.durableSeq })
	h.c.add(logstore.Ended{Tx: uint64(tx), UpToSeq: seq})
}

func (h compacting) compact() {
	h.t.Helper()
	h.c.compact(h.t.Context())
}

// wantRows checks how many rows the log holds.
func (h compacting) wantRows(want int64) {
	h.t.Helper()
	size, err := h.log.Count(h.t.Context(), "n")
	if err != nil {
		h.t.Fatal(err)
	}
	if size.Rows != want {
		h.t.Fatalf("%d rows in the log, want %d", size.Rows, want)
	}
}

func violationOf(tx engine.TxID) engine.Event {
	return engine.PartViolation{TxID: tx, Detail: "by hand"}
}

func TestCompactionDeletesARowOnceAllItsTransactionsEnded(t *testing.T) {
	h := newCompacting(t, memlog.New())
	h.start(nil)
	h.durable(ev(1, "a1"), ev(2, "b1"))
	h.durable(ev(1, "a2"))
	h.durable(ev(2, "b2"))

	// Transaction 1 ended: its own row goes, and its event leaves the row
	// it shares with transaction 2, which stays for it.
	h.end(1)
	h.compact()
	h.wantLogged("b1", "b2")
	h.wantRows(2)

	h.end(2)
	h.compact()
	h.wantLogged()
	h.wantRows(0)
}

func TestCompactionKeepsNodeLevelEventsAndViolations(t *testing.T) {
	h := newCompacting(t, memlog.New())
	h.start(evs(ev(0, "started")))
	h.durable(ev(0, "epoch 2"), ev(1, "a1"))
	h.durable(violationOf(1), ev(1, "a2"))
	h.durable(violationOf(2))
	h.durable(ev(1, "a3"))

	h.end(1)
	h.end(2)
	h.compact()
	h.wantLogged("started", "epoch 2", "part.violation", "part.violation")
	h.wantRows(4)
}

func TestCompactionAfterRecoveryKnowsTheRecoveredRows(t *testing.T) {
	log := memlog.New()
	before := newCompacting(t, log)
	before.start(nil)
	before.durable(ev(1, "a1"), ev(2, "b1"))
	before.durable(ev(1, "a2"))
	before.durable(ev(3, "c1"))
	before.stop()

	h := newCompacting(t, log)
	if _, err := h.loop.recover(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.start(nil)
	h.end(1)
	h.end(3)
	h.compact()
	h.wantLogged("b1")
	h.wantRows(1)
	h.end(2)
	h.compact()
	h.wantRows(0)
}

// A participant that joined a new cluster meets transaction ids again: the
// end of the old cluster's transaction must not remove the new one's events.
func TestCompactionSparesALaterTransactionOfTheSameID(t *testing.T) {
	h := newCompacting(t, memlog.New())
	h.start(nil)
	h.durable(ev(1, "old a1"), ev(2, "old b1"))
	h.end(1)
	h.end(2)
	h.durable(ev(0, "new cluster"))
	h.durable(ev(1, "new a1"))
	h.durable(ev(2, "new b1"), ev(3, "c1"))

	h.compact()
	h.wantLogged("new cluster", "new a1", "new b1", "c1")

	h.end(1)
	h.end(2)
	h.compact()
	h.wantLogged("new cluster", "c1")
}

// A transaction that never ends keeps its own rows, and nothing more: the
// events of the others leave its rows, and compaction's memory holds only
// its rows.
func TestCompactionMemoryFollowsTheLiveRows(t *testing.T) {
	h := newCompacting(t, memlog.New())
	h.start(nil)
	h.durable(ev(1, "stuck"), ev(2, "first"))
	for i := range 300 {
		tx := engine.TxID(i + 3)
		if i%100 == 0 {
			h.durable(ev(1, "stuck again"), ev(tx, "other"))
		} else {
			h.durable(ev(tx, "other"))
		}
		h.end(tx)
		if i%50 == 0 {
			h.compact()
		}
	}
	h.end(2)
	h.compact()
	h.wantLogged("stuck", "stuck again", "stuck again", "stuck again")
	h.wantRows(4)
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	if len(h.c.rows.rows) != 4 || len(h.c.rows.txs) != 1 || h.c.rows.txs[1].n != 4 {
		t.Fatalf("compaction tracks %d rows and %d transactions (the stuck one in %d rows), want its 4 rows alone",
			len(h.c.rows.rows), len(h.c.rows.txs), h.c.rows.txs[1].n)
	}
}

func TestCompactionRetriesAfterAFailure(t *testing.T) {
	h := newCompacting(t, memlog.New())
	h.start(nil)
	h.durable(ev(1, "a1"), ev(2, "b1"))
	h.durable(ev(1, "a2"))
	h.end(1)
	gone, cancel := context.WithCancel(t.Context())
	cancel()
	h.c.compact(gone)
	h.wantLogged("a1", "b1", "a2")
	h.compact()
	h.wantLogged("b1")
}

// An append whose row was written although the log answered with an error
// (the answer to the commit was lost) is not written again: a second copy
// of its events would be a row compaction never heard of, left behind
// when the rest of its transactions' events go.
func TestAppendWrittenDespiteAnErrorIsNotRepeated(t *testing.T) {
	h := newCompacting(t, memlog.New())
	h.start(nil)
	h.log.Hold()
	h.step(evs(ev(1, "a1"), ev(2, "b1")), answer("after b1", h.lsn+2))
	first := h.held()
	h.step(evs(ev(3, "c1")), answer("after c1", h.lsn+1))
	h.sync()
	first.WriteAndFail(errors.New("connection lost after the commit"))
	h.eventually("the loop pauses", func() bool { return h.clock.timersPending() > 0 })
	h.wantPerformed()
	h.clock.Advance(appendRetryPause)
	second := h.held()
	if got := names(t, second); !slices.Equal(got, []string{"c1"}) {
		t.Fatalf("the append after the lost answer holds %q, want [c1] alone", got)
	}
	h.waitPerformed("after b1")
	second.Release()
	h.waitPerformed("after b1", "after c1")
	h.wantLogged("a1", "b1", "c1")

	for tx := range engine.TxID(3) {
		h.end(tx + 1)
	}
	h.compact()
	h.wantRows(0)
}
