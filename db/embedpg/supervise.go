package embedpg

import (
	"context"
	"fmt"
	"time"
)

// Defaults of Supervision.
const (
	DefaultMaxRestarts   = 5
	DefaultRestartWindow = time.Minute
)

// Supervision says how Supervise treats a server that died.
type Supervision struct {
	// MaxRestarts is how many restarts Window may hold: one death more
	// within Window and Supervise gives up. 0 means DefaultMaxRestarts.
	MaxRestarts int
	// Window is the span MaxRestarts counts over; 0 means
	// DefaultRestartWindow.
	Window time.Duration
	// Down, if set, is called when the server died, before it is restarted
	// (and when Supervise gives up), with what happened. It runs while the
	// cluster is locked and must not call the Cluster's methods.
	Down func(err error)
	// Up, if set, is called once a restarted server accepts connections.
	Up func()
}

// Supervise restarts the server whenever it exits without being asked to (a
// crash, a kill, the OOM killer), on the same directory and port, so that
// PostgreSQL's crash recovery runs and the clients' connection strings stay
// valid. A server that keeps dying is not restarted for good: Supervise
// gives up and returns an error when it died more than MaxRestarts times
// within Window, or when a restart fails. It returns nil when ctx ends or
// the server is stopped with Stop, Shutdown or Kill.
func (c *Cluster) Supervise(ctx context.Context, sup Supervision) error {
	if sup.MaxRestarts <= 0 {
		sup.MaxRestarts = DefaultMaxRestarts
	}
	if sup.Window <= 0 {
		sup.Window = DefaultRestartWindow
	}
	var deaths []time.Time
	for {
		c.mu.Lock()
		s := c.srv
		c.mu.Unlock()
		if s == nil {
			return nil // stopped
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.done:
		}
		c.mu.Lock()
		if c.srv != s {
			// Stopped or restarted by a call of ours, not a death.
			c.mu.Unlock()
			continue
		}
		if ctx.Err() != nil {
			c.mu.Unlock()
			return nil
		}
		now := time.Now()
		deaths = append(deaths, now)
		for len(deaths) > 0 && now.Sub(deaths[0]) > sup.Window {
			deaths = deaths[1:]
		}
		died := fmt.Errorf("postgres (pid %d) in %s exited on its own: %v", s.pid, c.dir, s.err)
		if len(deaths) > sup.MaxRestarts {
			c.mu.Unlock()
			err := fmt.Errorf("postgres in %s exited %d times within %v (last: pid %d, %v); not restarting it again, see its log %s",
				c.dir, len(deaths), sup.Window, s.pid, s.err, c.LogFile())
			c.log.Error("giving up on postgres", "dir", c.dir, "deaths", len(deaths), "window", sup.Window, "status", s.err)
			if sup.Down != nil {
				sup.Down(err)
			}
			return err
		}
		c.log.Warn("postgres exited on its own; restarting it (crash recovery)", "dir", c.dir, "pid", s.pid, "status", s.err,
			"restart", len(deaths), "of_at_most", sup.MaxRestarts, "window", sup.Window)
		if sup.Down != nil {
			sup.Down(died)
		}
		began := time.Now()
		err := c.restartLocked(ctx)
		pid := 0
		if c.srv != nil {
			pid = c.srv.pid
		}
		c.mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.log.Error("postgres could not be restarted", "dir", c.dir, "err", err)
			return fmt.Errorf("%w, and restarting it failed: %w", died, err)
		}
		c.log.Info("postgres restarted", "dir", c.dir, "pid", pid, "port", c.port, "took", time.Since(began).Round(time.Millisecond))
		if sup.Up != nil {
			sup.Up()
		}
	}
}
