package node

import (
	"sync"
	"time"
)

// batchQueue is a FIFO that any goroutine fills without blocking and one
// goroutine drains in batches: whatever queued while the previous batch was
// out goes next, together. The outboxes and the marker sweeper use it.
type batchQueue[T any] struct {
	mu    sync.Mutex
	items []T
	wake  chan struct{}

	// patient, if set, marks items that may wait up to patience for
	// company: a batch of nothing but patient items is held that long
	// unless an impatient one arrives, so that it rides along in the
	// same request instead of costing one of its own.
	patient  func(T) bool
	patience time.Duration
}

func newBatchQueue[T any]() *batchQueue[T] {
	return &batchQueue[T]{wake: make(chan struct{}, 1)}
}

// push appends v. With limit > 0 and the queue that full, the oldest item
// makes room and is returned (dropped true).
func (q *batchQueue[T]) push(v T, limit int) (oldest T, dropped bool) {
	q.mu.Lock()
	if limit > 0 && len(q.items) >= limit {
		oldest, dropped = q.items[0], true
		q.items = q.items[1:]
	}
	q.items = append(q.items, v)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return oldest, dropped
}

// take moves up to max queued items into buf (reset first). cut, if not
// nil, may end the batch earlier: it sees the candidates and returns how
// many to take (at least one).
func (q *batchQueue[T]) take(buf []T, max int, cut func([]T) int) []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(len(q.items), max)
	if cut != nil && n > 0 {
		n = cut(q.items[:n])
	}
	buf = append(buf[:0], q.items[:n]...)
	clear(q.items[:n])
	q.items = q.items[n:]
	if len(q.items) == 0 {
		// Let the backing array go instead of creeping along it.
		q.items = nil
	}
	return buf
}

// onlyPatient reports whether something is queued and all of it may wait.
func (q *batchQueue[T]) onlyPatient() bool {
	if q.patient == nil {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, v := range q.items {
		if !q.patient(v) {
			return false
		}
	}
	return len(q.items) > 0
}

// drain calls send with each batch until done closes; items still queued
// then are dropped.
func (q *batchQueue[T]) drain(done <-chan struct{}, max int, cut func([]T) int, send func([]T)) {
	var batch []T
	for {
		select {
		case <-done:
			return
		case <-q.wake:
		}
		if q.onlyPatient() {
			// The deadline counts from the first patient item, so a
			// trickle of them cannot hold each other back for ever.
			hold := time.NewTimer(q.patience)
		wait:
			for q.onlyPatient() {
				select {
				case <-done:
					hold.Stop()
					return
				case <-q.wake:
				case <-hold.C:
					break wait
				}
			}
			hold.Stop()
		}
		for {
			select {
			case <-done:
				return
			default:
			}
			if batch = q.take(batch, max, cut); len(batch) == 0 {
				break
			}
			send(batch)
		}
	}
}
