package main

import (
	"context"
	"errors"
)

// ClientCmd talks to a coordinator.
type ClientCmd struct {
	Coordinator string `help:"The coordinator's HOST:PORT." default:"127.0.0.1:9990"`
}

// Run is being written.
func (c *ClientCmd) Run(g *Globals, ctx context.Context) error {
	return errors.New("client: not built yet")
}
