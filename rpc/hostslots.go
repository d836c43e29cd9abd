package rpc

import (
	"context"
	"sync"
)

// hostSlots bounds the handlers running at once for one remote IP
// address, below the server's total (ServerOptions.MaxConcurrency): one
// caller with a thousand calls that wait (statements queued behind a long
// one in its own transactions) would otherwise hold every handler slot,
// and everybody else's requests would wait for them.
type hostSlots struct {
	max int
	mu  sync.Mutex
	// hosts holds a semaphore per address with handlers running or
	// waiting; it is dropped when the last one leaves.
	hosts map[string]*hostSem
}

type hostSem struct {
	slots chan struct{}
	users int
}

func newHostSlots(max int) *hostSlots {
	return &hostSlots{max: max, hosts: map[string]*hostSem{}}
}

// acquire waits for a slot of host; false means ctx ended first. Every
// true must be followed by release.
func (h *hostSlots) acquire(ctx context.Context, host string) bool {
	if h.max <= 0 {
		return true
	}
	h.mu.Lock()
	sem := h.hosts[host]
	if sem == nil {
		sem = &hostSem{slots: make(chan struct{}, h.max)}
		h.hosts[host] = sem
	}
	sem.users++
	h.mu.Unlock()
	select {
	case sem.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		h.leave(host, sem)
		return false
	}
}

// release gives back a slot acquire returned.
func (h *hostSlots) release(host string) {
	if h.max <= 0 {
		return
	}
	h.mu.Lock()
	sem := h.hosts[host]
	h.mu.Unlock()
	<-sem.slots
	h.leave(host, sem)
}

func (h *hostSlots) leave(host string, sem *hostSem) {
	h.mu.Lock()
	if sem.users--; sem.users == 0 {
		delete(h.hosts, host)
	}
	h.mu.Unlock()
}
