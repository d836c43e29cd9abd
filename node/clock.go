package node

import "time"

// clock is where the loop reads time: the engine's instants, its tick, the
// lazy-flush bound and the pause before an append is retried. Nodes run on
// wallClock; the loop's tests drive a fake one.
type clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
	// NewTicker delivers a time on c every d until stop is called.
	NewTicker(d time.Duration) (c <-chan time.Time, stop func())
}

// wallClock is the real time.
type wallClock struct{}

func (wallClock) Now() time.Time                         { return time.Now() }
func (wallClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

func (wallClock) NewTicker(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(d)
	return t.C, t.Stop
}
