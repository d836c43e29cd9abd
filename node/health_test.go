package node_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/node"
)

// TestObserversReadMemory: health and snapshots, which probes, metrics and
// the status page read on every request, come from what the node refreshed
// last. Thousands of reads take no database connection (counted by the
// pools' acquires: the node's own once-a-second check takes a few) and
// still show the node's state.
func TestObserversReadMemory(t *testing.T) {
	var logPool, dataPool, coordPool *pgxpool.Pool
	c := testcluster.Start(t, testcluster.Config{
		Participants: 1,
		Participant: func(_ int, o *node.ParticipantOptions) {
			logPool, dataPool = o.Log, o.Data
		},
		Coordinator: func(o *node.CoordinatorOptions) { coordPool = o.Log },
	})
	p := c.Parts[0]
	if err := p.Health(); err != nil {
		t.Fatalf("participant health after start: %v", err)
	}
	if err := c.Coord.Health(); err != nil {
		t.Fatalf("coordinator health after start: %v", err)
	}

	open := c.Begin()
	c.Exec(open, 0, "INSERT INTO kv VALUES (1, 'open')")
	testcluster.Eventually(t, "the open transaction in both snapshots", func() bool {
		cs, err := c.Coord.LatestSnapshot()
		if err != nil || len(cs.InFlight) == 0 || cs.InFlight[0].TxID != open {
			return false
		}
		ps, err := p.LatestSnapshot()
		return err == nil && ps.Open == 1
	})

	const readers, reads = 32, 2000
	logBefore, dataBefore := logPool.Stat().AcquireCount(), dataPool.Stat().AcquireCount()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []error
	for range readers {
		wg.Go(func() {
			for range reads / readers {
				err := p.Health()
				if err == nil {
					_, err = p.LatestSnapshot()
				}
				if err == nil {
					_, err = c.Coord.LatestSnapshot()
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d of %d reads failed, the first: %v", len(failures), reads, failures[0])
	}
	// Reads take nothing from the pools. The node's own refreshes ping
	// once a second, and the open transaction's worker may come and go:
	// a few acquires, not one per read.
	logAcquired := logPool.Stat().AcquireCount() - logBefore
	dataAcquired := dataPool.Stat().AcquireCount() - dataBefore
	t.Logf("%d reads: %d log and %d data connections acquired", reads, logAcquired, dataAcquired)
	if logAcquired > reads/20 || dataAcquired > reads/20 {
		t.Errorf("%d reads acquired %d log and %d data connections: reads reach the databases", reads, logAcquired, dataAcquired)
	}

	c.Rollback(open)
	if r := c.Commit(c.Begin()); r.Outcome != engine.OutcomeCommit {
		t.Fatalf("empty commit: %+v", r)
	}

	// A stopped node says so at once, without waiting for a check; its
	// last snapshot is memory, there until it goes stale.
	last, err := p.LatestSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if err := p.Health(); err == nil {
		t.Fatal("a closed participant reports healthy")
	}
	if s, err := p.LatestSnapshot(); err != nil || s != last {
		t.Errorf("the last snapshot of a stopped participant: %+v %v, want %+v", s, err, last)
	}

	// A database that stops answering shows at the next check.
	coordPool.Close()
	testcluster.Eventually(t, "the coordinator unhealthy without its log database", func() bool {
		err := c.Coord.Health()
		return err != nil && strings.Contains(err.Error(), "log database")
	})
}
