package main

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/logstore"
	"github.com/tpcd/tpcd/node"
	"github.com/tpcd/tpcd/statuspage"
)

// adopted are the slots a serving coordinator took over from others that
// stopped, each served by a coordinator of its own in this process.
type adopted struct {
	stop context.CancelFunc
	done chan struct{}
}

// adoptSlots watches the other slots of the cluster while this coordinator
// serves slot own. A slot nobody has held for a lease's time past its
// expiry (a standby would have taken it by then), or ever since this
// coordinator started serving, is taken over here: its coordinator starts
// on another port of this host, recovers the slot's log, finishes what was
// in flight and serves the slot's calls, which every coordinator passes on
// to it, until this process stops, loses that lease or hands the slot
// back to a coordinator that waits for it (handBack). Its metrics count
// into observer's, this coordinator's own, and obs's gauges and status
// page show it while it is served.
func (c *CoordinatorCmd) adoptSlots(leasePool, log *pgxpool.Pool, logger *slog.Logger, transport node.Transport, own int, observer node.Observer, obs *observability) *adopted {
	ctx, stop := context.WithCancel(context.Background())
	a := &adopted{stop: stop, done: make(chan struct{})}
	store := logstore.New(leasePool)
	host, _, _ := net.SplitHostPort(c.Host)
	began := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	held := map[int]bool{own: true}
	// serving ends each adopted slot's coordinator: to hand it back.
	serving := map[int]context.CancelFunc{}
	isHeld := func(s int) bool {
		mu.Lock()
		defer mu.Unlock()
		return held[s]
	}
	go func() {
		defer close(a.done)
		defer wg.Wait()
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(c.Lease):
			}
			// free: a slot this process does not hold may be free (or
			// could not be read); nothing goes back while one may be.
			free := false
			for s := range c.Slots {
				if isHeld(s) {
					continue
				}
				l, found, err := store.LeaseOf(ctx, api.CoordinatorSlotName(s))
				free = free || err != nil || !found || l.Remaining <= 0
				switch {
				case err != nil:
					continue
				case found && l.Remaining > -c.Lease:
					continue
				case !found && time.Since(began) < 2*c.Lease:
					continue
				}
				sctx, end := context.WithCancel(ctx)
				mu.Lock()
				held[s] = true
				mu.Unlock()
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() {
						// Free to be tried again, if it is free.
						mu.Lock()
						delete(held, s)
						delete(serving, s)
						mu.Unlock()
						end()
					}()
					err := c.serveAdopted(sctx, leasePool, log, host, logger.With("adopted_slot", s), transport, s, adoptedObserver(observer), obs, func() {
						mu.Lock()
						serving[s] = end
						mu.Unlock()
					})
					if err != nil && ctx.Err() == nil {
						logger.Warn("serving an adopted slot failed; another coordinator may take it", "slot", s, "err", err)
					}
				}()
			}
			if !free {
				c.handBack(ctx, store, logger, &mu, serving)
			}
		}
	}()
	return a
}

// handBack ends the coordinator of one adopted slot that a standby has
// waited for for a lease at least (one that announced itself,
// node.LeaseOptions.Announce: a restarted coordinator, say), so that
// every slot has a process of its own again. It releases the slot's lease
// as it stops, and the standby takes the slot at its next try; meanwhile
// the slot's calls are answered -32003 and retried, as in any take-over.
// Its caller calls it only while no slot is free: a standby takes that
// one first. One slot a round: a second standby gets the next.
func (c *CoordinatorCmd) handBack(ctx context.Context, store *logstore.Store, logger *slog.Logger, mu *sync.Mutex, serving map[int]context.CancelFunc) {
	mu.Lock()
	slots := slices.Sorted(maps.Keys(serving))
	mu.Unlock()
	for _, s := range slots {
		waiting, err := store.StandbyWaitsFor(ctx, s, c.Lease)
		if err != nil || !waiting {
			continue
		}
		mu.Lock()
		end := serving[s]
		delete(serving, s)
		mu.Unlock()
		if end != nil {
			logger.Info("handing an adopted slot back: a coordinator waits for it", "slot", s)
			end()
		}
		return
	}
}

// serveAdopted takes slot s's lease, if it is still free, and serves the
// slot until ctx ends or the lease is lost; up is called once it serves,
// and obs lists the slot meanwhile.
func (c *CoordinatorCmd) serveAdopted(ctx context.Context, leasePool, log *pgxpool.Pool, host string, logger *slog.Logger, transport node.Transport, s int, observer node.Observer, obs *observability, up func()) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return err
	}
	defer ln.Close()
	// Named as --host names this coordinator (a name its certificate
	// holds, say), with the port just opened.
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	addr := net.JoinHostPort(host, port)
	tctx, cancel := context.WithTimeout(ctx, c.Lease)
	lease, err := node.HoldLease(tctx, leasePool, node.LeaseOptions{TTL: c.Lease, Holder: addr, Logger: logger, Slots: []int{s}})
	cancel()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			// Another coordinator took it first.
			return nil
		}
		return err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), c.Lease)
		defer cancel()
		lease.Release(rctx)
	}()
	opts := c.coordinatorOptions(log, logger, transport)
	opts.Lease, opts.Slot, opts.Address, opts.Observer = lease, s, addr, observer
	coord, err := node.StartCoordinator(ctx, ln, opts)
	if err != nil {
		return err
	}
	logger.Warn("took over a slot whose coordinator stopped: serving it too", "slot", s, "addr", addr,
		"cluster", coord.Cluster(), "epoch", coord.Epoch())
	obs.slotAdopted(s, addr, coord)
	up()
	select {
	case <-ctx.Done():
	case <-lease.Lost():
		logger.Error("lost the adopted slot's lease: stopped serving it", "slot", s, "err", lease.Err())
	}
	obs.slotReleased(s)
	return coord.Close()
}

// adoptedSlots are the slots a coordinator adopted, each with the
// coordinator serving it in this process, for its gauges and status page.
type adoptedSlots struct {
	mu    sync.Mutex
	slots map[int]adoptedSlot
}

type adoptedSlot struct {
	slot  int
	addr  string
	coord *node.Coordinator
}

// slotAdopted lists slot s, served by coord at addr, until slotReleased.
func (o *observability) slotAdopted(s int, addr string, coord *node.Coordinator) {
	if o == nil {
		return
	}
	o.adopted.mu.Lock()
	defer o.adopted.mu.Unlock()
	if o.adopted.slots == nil {
		o.adopted.slots = map[int]adoptedSlot{}
	}
	o.adopted.slots[s] = adoptedSlot{slot: s, addr: addr, coord: coord}
}

func (o *observability) slotReleased(s int) {
	if o == nil {
		return
	}
	o.adopted.mu.Lock()
	defer o.adopted.mu.Unlock()
	delete(o.adopted.slots, s)
}

// adoptedList returns the adopted slots in order.
func (o *observability) adoptedList() []adoptedSlot {
	o.adopted.mu.Lock()
	defer o.adopted.mu.Unlock()
	out := make([]adoptedSlot, 0, len(o.adopted.slots))
	for _, s := range slices.Sorted(maps.Keys(o.adopted.slots)) {
		out = append(out, o.adopted.slots[s])
	}
	return out
}

// adoptedForPage is what the status page shows of the adopted slots.
func (o *observability) adoptedForPage() []statuspage.AdoptedSlot {
	var out []statuspage.AdoptedSlot
	for _, a := range o.adoptedList() {
		snap, err := a.coord.LatestSnapshot()
		out = append(out, statuspage.AdoptedSlot{Slot: a.slot, Address: a.addr, Snapshot: snap, Err: err})
	}
	return out
}

// adoptedCoordinators are the adopted slots' coordinators, for the gauges.
func (o *observability) adoptedCoordinators() []*node.Coordinator {
	var out []*node.Coordinator
	for _, a := range o.adoptedList() {
		out = append(out, a.coord)
	}
	return out
}

// close stops serving the adopted slots and releases their leases.
func (a *adopted) close() {
	a.stop()
	<-a.done
}
