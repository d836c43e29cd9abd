package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

const (
	// watchInterval is how often a node refreshes what operators read: its
	// health (database pings) and a snapshot of its state (one query of the
	// loop).
	watchInterval = time.Second
	// watchTimeout bounds one refresh.
	watchTimeout = 2 * time.Second
	// staleAfter is the age at which a snapshot no longer passes for the
	// node's state: the loop has stopped answering.
	staleAfter = 5 * time.Second
)

// errNotChecked is the health of a node before its first check.
var errNotChecked = errors.New("not checked yet")

// watched holds what health probes, metrics and the status page read: the
// result of the node's last health check and its last snapshot, refreshed
// by the node every watchInterval. Readers touch only memory. When every
// probe pinged the databases itself, each took a pooled connection, and a
// flood of probes starved transactions of connections (then reported the
// node not ready because of it); when every page view queried the loop, it
// queued behind the commits that the loop exists for.
type watched[S any] struct {
	health   atomic.Pointer[healthResult]
	snapshot atomic.Pointer[stampedSnapshot[S]]
}

type healthResult struct{ err error }

type stampedSnapshot[S any] struct {
	s  S
	at time.Time
}

// checkHealth runs check once and keeps its result.
func (w *watched[S]) checkHealth(ctx context.Context, check func(context.Context) error) {
	ctx, cancel := context.WithTimeout(ctx, watchTimeout)
	defer cancel()
	w.health.Store(&healthResult{err: check(ctx)})
}

// run refreshes health and snapshot every watchInterval until ctx ends,
// starting with the snapshot at once (health was checked before the node
// started serving).
func (w *watched[S]) run(ctx context.Context, check func(context.Context) error, snapshot func(context.Context) (S, error), logger *slog.Logger) {
	ticker := time.NewTicker(watchInterval)
	defer ticker.Stop()
	for {
		w.takeSnapshot(ctx, snapshot, logger)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		w.checkHealth(ctx, check)
	}
}

func (w *watched[S]) takeSnapshot(parent context.Context, snapshot func(context.Context) (S, error), logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(parent, watchTimeout)
	defer cancel()
	s, err := snapshot(ctx)
	if err != nil {
		if parent.Err() == nil { // not the node stopping
			logger.Warn("state snapshot for operators failed", "err", err)
		}
		return
	}
	w.snapshot.Store(&stampedSnapshot[S]{s: s, at: time.Now()})
}

// lastHealth is the result of the last check, or errStopped at once
// when the node's loop has stopped.
func (w *watched[S]) lastHealth(stopped <-chan struct{}) error {
	if isClosed(stopped) {
		return errStopped
	}
	r := w.health.Load()
	if r == nil {
		return errNotChecked
	}
	return r.err
}

// lastSnapshot is the last snapshot, unless there is none or it is stale.
func (w *watched[S]) lastSnapshot() (S, error) {
	var zero S
	s := w.snapshot.Load()
	switch {
	case s == nil:
		return zero, errors.New("no state snapshot taken yet")
	case time.Since(s.at) > staleAfter:
		return zero, fmt.Errorf("the last state snapshot is %s old: the node's loop is not answering", time.Since(s.at).Round(time.Second))
	}
	return s.s, nil
}

// Database is one of a node's connection pools, with the name its health
// check and its metrics give it.
type Database struct {
	Name string
	Pool *pgxpool.Pool
}

// checkServing is a node's health check: errStopped once its loop has
// stopped, else the first of dbs that does not answer a ping.
func checkServing(ctx context.Context, stopped <-chan struct{}, dbs []Database) error {
	if isClosed(stopped) {
		return errStopped
	}
	for _, db := range dbs {
		if err := db.Pool.Ping(ctx); err != nil {
			return fmt.Errorf("%s database: %w", db.Name, err)
		}
	}
	return nil
}

// isClosed tells, without waiting, whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// CheckHealth reports whether the coordinator can serve: it has recovered (it
// exists), its loop runs, and its log database answers. It pings the
// database; probes read Health instead, which the node refreshes from it
// every second.
func (c *Coordinator) CheckHealth(ctx context.Context) error {
	return checkServing(ctx, c.loop.stopped, c.Databases())
}

// Databases is the coordinator's connection pool to its log.
func (c *Coordinator) Databases() []Database { return []Database{{"log", c.opts.Log}} }

// Health is the coordinator's health as of its last check, at most about a
// second old (nil: it can serve). It reads memory only, so any number of
// probes cost the node nothing; a stopped loop shows at once.
func (c *Coordinator) Health() error { return c.watch.lastHealth(c.loop.stopped) }

// LatestSnapshot is the snapshot the coordinator took last, at most about a
// second old, for the status page and metrics: reading it costs the loop
// nothing. It fails before the first snapshot and once the last one is
// stale (the loop stopped answering).
func (c *Coordinator) LatestSnapshot() (CoordinatorSnapshot, error) {
	return c.watch.lastSnapshot()
}

// watchState is the coordinator's worker that refreshes Health and
// LatestSnapshot.
func (c *Coordinator) watchState(ctx context.Context) {
	c.watch.run(ctx, c.CheckHealth, c.Snapshot, c.logger)
}

// CheckHealth reports whether the participant can serve: it has recovered, its
// loop runs, and its log and data databases answer. It pings both
// databases; probes read Health instead.
func (p *Participant) CheckHealth(ctx context.Context) error {
	return checkServing(ctx, p.loop.stopped, p.Databases())
}

// Databases is the participant's connection pools: its log's and its data
// database's.
func (p *Participant) Databases() []Database {
	return []Database{{"log", p.opts.Log}, {"data", p.opts.Data}}
}

// Health is the participant's health as of its last check, at most about a
// second old; it reads memory only.
func (p *Participant) Health() error { return p.watch.lastHealth(p.loop.stopped) }

// LatestSnapshot is the snapshot the participant took last, at most about
// a second old, for metrics.
func (p *Participant) LatestSnapshot() (ParticipantSnapshot, error) {
	return p.watch.lastSnapshot()
}

// watchState is the participant's worker that refreshes Health and
// LatestSnapshot.
func (p *Participant) watchState(ctx context.Context) {
	p.watch.run(ctx, p.CheckHealth, p.Snapshot, p.logger)
}
