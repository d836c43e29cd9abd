package metrics

import (
	"sync"
	"time"
)

// bucket is a token bucket: it holds up to burst tokens, gains rate tokens
// a second, and every request it lets through takes one. One bucket guards
// a whole listener: it bounds the work observers can ask of a node, not
// who gets a share of it.
type bucket struct {
	rate, burst float64
	now         func() time.Time

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newBucket(rate float64, burst int, now func() time.Time) *bucket {
	return &bucket{rate: rate, burst: float64(burst), tokens: float64(burst), now: now, last: now()}
}

// take reports whether a request may go ahead, taking a token if so.
func (b *bucket) take() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		b.tokens = min(b.burst, b.tokens+elapsed*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
