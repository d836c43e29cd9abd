package chaos

import (
	"context"
	"testing"
)

// The gate closes only once the client inside has left, holds clients
// until it opens, and hands them the incarnation it opened for.
func TestGateHoldsClientsBetweenTransactions(t *testing.T) {
	g := newGate()
	inc, ok := g.enter()
	if !ok || inc != 1 {
		t.Fatalf("enter: %d, %v; want 1, true", inc, ok)
	}
	closed := make(chan error, 1)
	go func() { closed <- g.close(context.Background()) }()
	select {
	case err := <-closed:
		t.Fatalf("closed (%v) while a client was inside", err)
	default:
	}
	g.leave()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}

	entered := make(chan int, 1)
	go func() {
		inc, _ := g.enter()
		entered <- inc
	}()
	g.open(2)
	if inc := <-entered; inc != 2 {
		t.Fatalf("a client held at the gate entered for incarnation %d, want 2", inc)
	}
	g.leave()
	if g.current() != 2 {
		t.Fatalf("current %d", g.current())
	}

	if err := g.close(context.Background()); err != nil {
		t.Fatal(err)
	}
	left := make(chan bool, 1)
	go func() {
		_, ok := g.enter()
		left <- ok
	}()
	g.stop()
	if <-left {
		t.Fatal("a client entered a stopped gate")
	}
}

// A close that cannot complete ends with its context.
func TestGateCloseEndsWithContext(t *testing.T) {
	g := newGate()
	g.enter()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.close(ctx); err == nil {
		t.Fatal("close returned nil with a client inside and its context ended")
	}
}
