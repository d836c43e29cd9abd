package chaos

import (
	"context"
	"sync"
)

// gate lets the workload's clients begin transactions, or holds them
// between transactions while the coordinator is replaced. It also says
// which coordinator incarnation the transactions it lets through belong
// to: a client reads it when it enters, before its begin, and the gate
// changes it only while no client is inside, so a transaction id is never
// attributed to the wrong coordinator.
type gate struct {
	mu          sync.Mutex
	cond        *sync.Cond
	closed      bool // clients wait at enter
	stopped     bool // clients leave for good
	inside      int  // clients between enter and leave
	incarnation int
}

func newGate() *gate {
	g := &gate{incarnation: 1}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// enter waits while the gate is closed and returns the incarnation of the
// coordinator the client's next transaction belongs to; false once the
// gate is stopped. A client that entered calls leave after its transaction.
func (g *gate) enter() (incarnation int, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.closed && !g.stopped {
		g.cond.Wait()
	}
	if g.stopped {
		return 0, false
	}
	g.inside++
	return g.incarnation, true
}

func (g *gate) leave() {
	g.mu.Lock()
	g.inside--
	g.cond.Broadcast()
	g.mu.Unlock()
}

// close holds clients at enter and waits until every client inside has
// left (its transaction ended as far as the client knows), or ctx ends.
func (g *gate) close(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		g.mu.Lock()
		g.cond.Broadcast()
		g.mu.Unlock()
	})
	defer stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for g.inside > 0 && ctx.Err() == nil {
		g.cond.Wait()
	}
	return ctx.Err()
}

// open lets clients in again; their transactions belong to incarnation.
func (g *gate) open(incarnation int) {
	g.mu.Lock()
	g.closed = false
	g.incarnation = incarnation
	g.cond.Broadcast()
	g.mu.Unlock()
}

// stop sends every client home, waiting ones included.
func (g *gate) stop() {
	g.mu.Lock()
	g.stopped = true
	g.cond.Broadcast()
	g.mu.Unlock()
}

// current is the incarnation transactions begun now belong to.
func (g *gate) current() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.incarnation
}
