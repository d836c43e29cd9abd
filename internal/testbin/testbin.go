// Package testbin serves the end-to-end tests that run nodes as real
// processes: it builds the tpcd binary once for a test process, starts and
// stops such processes keeping their output, and finds free loopback
// addresses. The binary is built without the race detector: only the test
// binary needs it, and the nodes run faster without.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Main builds tpcd into a temporary directory, stores its path in *bin,
// runs the tests (usually pgtest.Main(m)) and removes the directory. It
// returns the exit code for os.Exit.
func Main(bin *string, run func() int) int {
	dir, err := os.MkdirTemp("", "tpcd-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	*bin = filepath.Join(dir, "tpcd")
	out, err := exec.Command("go", "build", "-o", *bin, "github.com/tpcd/tpcd/cmd/tpcd").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build tpcd: %v\n%s", err, out)
		return 1
	}
	return run()
}
