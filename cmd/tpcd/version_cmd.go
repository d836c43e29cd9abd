package main

import (
	"fmt"

	"github.com/tpcd/tpcd/buildinfo"
)

// VersionCmd prints what --version prints, for those who type it as a
// command (as with `go version`).
type VersionCmd struct{}

// Run prints the version line.
func (VersionCmd) Run() error {
	_, err := fmt.Println(buildinfo.Read())
	return err
}
