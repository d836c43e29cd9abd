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
	// MaxRestarts is how many deaths and failed restarts Window may hold:
	// one more within Window and Supervise gives up. 0 means
	// DefaultMaxRestarts.
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

// restartPause is the wait before a restart that failed is tried again.
const restartPause = time.Second

// Supervise restarts the server whenever it exits without being asked to (a
// crash, a kill, the OOM killer), on the same directory and port, so that
// PostgreSQL's crash recovery runs and the clients' connection strings stay
// valid; a restart that fails is tried again after a pause. A server that
// keeps dying is not restarted for good: once it died or failed to restart
// more than MaxRestarts times within Window, Supervise gives up and returns
// why. It returns nil when ctx ends or the server is stopped with Stop,
// Shutdown or Kill.
func (c *Cluster) Supervise(ctx context.Context, sup Supervision) error {
	if sup.MaxRestarts <= 0 {
		sup.MaxRestarts = DefaultMaxRestarts
	}
	if sup.Window <= 0 {
		sup.Window = DefaultRestartWindow
	}
	var failures []time.Time
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
		last := fmt.Errorf("postgres (pid %d) in %s exited on its own: %v", s.pid, c.dir, s.err)
		c.log.Warn("postgres exited on its own; restarting it (crash recovery)", "dir", c.dir, "pid", s.pid, "status", s.err)
		if sup.Down != nil {
			sup.Down(last)
		}
		began := time.Now()
		for {
			now := time.Now()
			failures = append(failures, now)
			for now.Sub(failures[0]) > sup.Window {
				failures = failures[1:]
			}
			if len(failures) > sup.MaxRestarts {
				c.mu.Unlock()
				err := fmt.Errorf("postgres in %s died or failed to restart %d times within %v, see its log %s; not restarting it again. Last: %w",
					c.dir, len(failures), sup.Window, c.LogFile(), last)
				c.log.Error("giving up on postgres", "dir", c.dir, "failures", len(failures), "window", sup.Window)
				if sup.Down != nil {
					sup.Down(err)
				}
				return err
			}
			err := c.restartLocked(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				c.mu.Unlock()
				return nil
			}
			last = fmt.Errorf("restarting it failed: %w", err)
			c.log.Warn("postgres could not be restarted; trying again", "dir", c.dir, "in", restartPause, "err", err)
			select {
			case <-ctx.Done():
				c.mu.Unlock()
				return nil
			case <-time.After(restartPause):
			}
		}
		pid := c.srv.pid
		c.mu.Unlock()
		c.log.Info("postgres restarted", "dir", c.dir, "pid", pid, "port", c.port, "took", time.Since(began).Round(time.Millisecond))
		if sup.Up != nil {
			sup.Up()
		}
	}
}
