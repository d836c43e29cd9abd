package main

import (
	"context"
	"errors"
)

// ReplayCmd prints the state recovered from a log.
type ReplayCmd struct {
	LogDB string `name:"log-db" help:"PostgreSQL URI of the log database." required:"" placeholder:"URI"`
}

// Run is being written.
func (c *ReplayCmd) Run(g *Globals, ctx context.Context) error {
	return errors.New("replay: not built yet")
}
