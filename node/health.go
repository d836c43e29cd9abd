package node

import (
	"context"
	"fmt"
)

// CheckHealth reports whether the coordinator can serve: it has recovered (it
// exists), its loop runs, and its log database answers.
func (c *Coordinator) CheckHealth(ctx context.Context) error {
	select {
	case <-c.loop.stopped:
		return errStopped
	default:
	}
	if err := c.opts.Log.Ping(ctx); err != nil {
		return fmt.Errorf("log database: %w", err)
	}
	return nil
}

// CheckHealth reports whether the participant can serve: it has recovered, its
// loop runs, and its log and data databases answer.
func (p *Participant) CheckHealth(ctx context.Context) error {
	select {
	case <-p.loop.stopped:
		return errStopped
	default:
	}
	if err := p.opts.Log.Ping(ctx); err != nil {
		return fmt.Errorf("log database: %w", err)
	}
	if err := p.opts.Data.Ping(ctx); err != nil {
		return fmt.Errorf("data database: %w", err)
	}
	return nil
}
