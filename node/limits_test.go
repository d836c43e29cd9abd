package node

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// fakeEngine stands for the coordinator's engine in admission tests: the
// transactions it holds undecided.
type fakeEngine struct {
	mu     sync.Mutex
	next   engine.TxID
	closed map[engine.TxID]bool
}

func (f *fakeEngine) begin() engine.TxID {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	return f.next
}

func (f *fakeEngine) end(tx engine.TxID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed[tx] = true
}

func (f *fakeEngine) stillOpen(_ context.Context, ids []engine.TxID) ([]engine.TxID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var open []engine.TxID
	for _, id := range ids {
		if !f.closed[id] {
			open = append(open, id)
		}
	}
	return open, nil
}

func newTestAdmission(total, perClient int, wait time.Duration) (*admission, *fakeEngine) {
	f := &fakeEngine{closed: map[engine.TxID]bool{}}
	return newAdmission(total, perClient, wait, slog.New(slog.DiscardHandler), f.stillOpen), f
}

// open begins n transactions for client, failing the test unless all are
// admitted.
func open(t *testing.T, a *admission, f *fakeEngine, client string, n int) []engine.TxID {
	t.Helper()
	var txs []engine.TxID
	for range n {
		if err := a.reserve(context.Background(), client); err != nil {
			t.Fatalf("%s: begin %d refused: %v", client, len(txs)+1, err)
		}
		tx := f.begin()
		a.settle(client, tx)
		txs = append(txs, tx)
	}
	return txs
}

func wantLimit(t *testing.T, err error, what string) {
	t.Helper()
	if !rpc.IsCode(err, rpc.CodeLimit) {
		t.Fatalf("%s: %v, want code %d", what, err, rpc.CodeLimit)
	}
}

func TestAdmissionShares(t *testing.T) {
	a, f := newTestAdmission(8, 6, 50*time.Millisecond)
	ctx := context.Background()
	// Alone, a client gets up to its cap, three quarters of the total.
	hog := open(t, a, f, "hog", 6)
	wantLimit(t, a.reserve(ctx, "hog"), "seventh begin of a client alone")

	// A second client shrinks the first's share to half, but takes
	// nothing it holds: it gets what is left of the total.
	open(t, a, f, "steady", 2)
	wantLimit(t, a.reserve(ctx, "steady"), "begin past the total")

	// A slot freed by the hog goes to the client below its share that
	// waits, not to the hog, which is above its own.
	hogWaits := make(chan error, 1)
	go func() { hogWaits <- a.reserve(ctx, "hog") }()
	steadyWaits := make(chan error, 1)
	go func() { steadyWaits <- a.reserve(ctx, "steady") }()
	waitQueue(t, a, 2)
	a.ended(hog[0])
	if err := <-steadyWaits; err != nil {
		t.Fatalf("steady's waiting begin after the hog freed a slot: %v", err)
	}
	a.settle("steady", f.begin())
	wantLimit(t, <-hogWaits, "the hog's begin above its share")
}

// waitQueue waits until n begins wait.
func waitQueue(t *testing.T, a *admission, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		a.mu.Lock()
		have := len(a.queue)
		a.mu.Unlock()
		if have == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d begins wait, want %d", have, n)
		}
	}
}

// A client may have no more begins waiting than it may hold; the rest are
// refused at once, not queued.
func TestAdmissionQueueIsBounded(t *testing.T) {
	a, f := newTestAdmission(4, 4, time.Hour)
	open(t, a, f, "hog", 4)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	ctx, cancel := context.WithCancel(context.Background())
	for range 100 {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- a.reserve(ctx, "hog") }()
	}
	waitQueue(t, a, 4)
	for range 96 {
		wantLimit(t, <-errs, "a begin beyond the queue")
	}
	cancel()
	wg.Wait()
	for range 4 {
		if err := <-errs; err != context.Canceled {
			t.Fatalf("a waiting begin whose caller left: %v", err)
		}
	}
	if a.held != 4 || len(a.queue) != 0 {
		t.Fatalf("held %d, queue %d after the callers left; want 4 and 0", a.held, len(a.queue))
	}
}

// Transactions that end without a commit or rollback through the
// coordinator's handlers (the idle timeout, a failure) free their slots
// when the engine is asked, which it is while begins wait.
func TestAdmissionSeesTransactionsEndedElsewhere(t *testing.T) {
	a, f := newTestAdmission(2, 2, 10*time.Second)
	txs := open(t, a, f, "c", 2)
	done := make(chan error, 1)
	go func() { done <- a.reserve(context.Background(), "c") }()
	waitQueue(t, a, 1)
	f.end(txs[1])
	if err := <-done; err != nil {
		t.Fatalf("begin after a transaction ended in the engine: %v", err)
	}
	a.settle("c", 0) // that begin failed: its slot is free again
	if err := a.reserve(context.Background(), "c"); err != nil {
		t.Fatalf("begin after a failed begin: %v", err)
	}
}

// An inactive client stops counting after activeWindow, so the others'
// shares grow back.
func TestAdmissionForgetsInactiveClients(t *testing.T) {
	a, f := newTestAdmission(8, 8, time.Millisecond)
	txs := open(t, a, f, "gone", 1)
	a.ended(txs[0])
	open(t, a, f, "stays", 4)
	wantLimit(t, a.reserve(context.Background(), "stays"), "a fifth begin while two clients are active")
	a.mu.Lock()
	a.clients["gone"].lastSeen = time.Now().Add(-activeWindow)
	a.lastSweep = time.Time{}
	a.mu.Unlock()
	open(t, a, f, "stays", 4)
}
