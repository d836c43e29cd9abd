package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/failpoint"
	"github.com/tpcd/tpcd/queries/dataqueries"
)

// dataDB performs a participant's data-database effects. Each transaction
// gets a worker that runs its operations one after another, in the order
// the engine emitted them, on the transaction's own connection while the
// transaction is open.
type dataDB struct {
	pool             *pgxpool.Pool
	q                *dataqueries.Queries
	logger           *slog.Logger
	lockTimeout      time.Duration
	statementTimeout time.Duration
	acquireTimeout   time.Duration
	done             func(engine.DataDone)
	now              func() engine.Instant

	// base is cancelled by closeAll, ending operations still running.
	base    context.Context
	stop    context.CancelFunc
	running sync.WaitGroup

	mu      sync.Mutex
	workers map[engine.TxID]*txWorker
	// idle hands a transaction that has work to a parked goroutine; one is
	// started only when none is parked. Goroutines that ran pgx have grown
	// their stacks, and reusing them saves growing a new one per task.
	idle chan task
	// markers collects marker deletions, which run in batches.
	markers *markerSweeper
}

type task struct {
	id engine.TxID
	w  *txWorker
}

// idleWorker is how long a parked worker goroutine waits for work before it
// ends.
const idleWorker = 10 * time.Second

func newDataDB(d *dataDB) *dataDB {
	d.base, d.stop = context.WithCancel(context.Background())
	d.q = dataqueries.New()
	d.workers = map[engine.TxID]*txWorker{}
	d.idle = make(chan task)
	d.markers = &markerSweeper{d: d, queue: newBatchQueue[engine.Data]()}
	d.running.Add(1)
	go func() { defer d.running.Done(); d.markers.run() }()
	return d
}

type txWorker struct {
	queue   []engine.Data
	running bool
	conn    *pgxpool.Conn // the open data transaction, if any
	// wrote is set once a statement's command tag proves the open
	// transaction wrote, which makes the read-only probe at prepare moot.
	wrote bool
}

// opTimeout bounds one data operation so a hung server cannot hold a worker
// forever; statement_timeout normally ends statements much sooner.
const opTimeout = 5 * time.Minute

func (d *dataDB) do(op engine.Data) {
	if op.Op == engine.DataDeleteMarker {
		// The transaction is over on this node: nothing else of it can be
		// queued, so its marker may go with other transactions' markers.
		d.markers.push(op)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	w := d.workers[op.TxID]
	if w == nil {
		w = &txWorker{}
		d.workers[op.TxID] = w
	}
	w.queue = append(w.queue, op)
	if !w.running {
		w.running = true
		d.running.Add(1)
		t := task{op.TxID, w}
		select {
		case d.idle <- t:
		default:
			go d.worker(t)
		}
	}
}

// worker runs tasks until it has been idle for idleWorker or closeAll.
func (d *dataDB) worker(t task) {
	timer := time.NewTimer(idleWorker)
	defer timer.Stop()
	for {
		d.work(t.id, t.w)
		timer.Reset(idleWorker)
		select {
		case t = <-d.idle:
		case <-timer.C:
			return
		case <-d.base.Done():
			return
		}
	}
}

func (d *dataDB) work(id engine.TxID, w *txWorker) {
	defer d.running.Done()
	for {
		d.mu.Lock()
		if len(w.queue) == 0 {
			w.running = false
			if w.conn == nil {
				delete(d.workers, id)
			}
			d.mu.Unlock()
			return
		}
		op := w.queue[0]
		w.queue = w.queue[1:]
		d.mu.Unlock()
		failpoint.BeforeData(op.Op)
		res := d.run(w, op)
		failpoint.AfterData(op.Op, res)
		res.Now, res.Op, res.TxID, res.Stmt = d.now(), op.Op, op.TxID, op.Stmt
		d.done(res)
	}
}

// closeAll ends running operations and rolls back every open data
// transaction (shutdown; the loop must be stopped first). Prepared
// transactions are not touched: they wait for recovery.
func (d *dataDB) closeAll() {
	d.stop()
	d.running.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, w := range d.workers {
		if w.conn != nil {
			w.conn.Conn().Close(context.Background())
			w.conn.Release()
			w.conn = nil
			delete(d.workers, id)
		}
	}
}

// run performs one operation of w's transaction; its SQL lives with its
// phase: dataexec.go, dataprepare.go, datafinish.go (and markers.go for
// marker deletions, which never reach a worker).
func (d *dataDB) run(w *txWorker, op engine.Data) engine.DataDone {
	ctx, cancel := context.WithTimeout(d.base, opTimeout)
	defer cancel()
	switch op.Op {
	case engine.DataExec:
		return d.execThen(ctx, w, op)
	case engine.DataPrepare:
		return d.prepare(ctx, w, op)
	case engine.DataRollback:
		d.release(ctx, w, "ROLLBACK")
		return engine.DataDone{}
	case engine.DataCommitPrepared:
		return d.finish(ctx, op.GID, op.Xid, "COMMIT PREPARED", true)
	case engine.DataRollbackPrepared:
		return d.finish(ctx, op.GID, op.Xid, "ROLLBACK PREPARED", false)
	case engine.DataCommitBranch:
		return d.commitBranch(ctx, w, op)
	case engine.DataSettle:
		return d.settle(ctx, op)
	}
	return engine.DataDone{Err: fmt.Sprintf("unknown data operation %d", op.Op)}
}
