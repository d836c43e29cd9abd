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
//
// With TPCD_TEST_BIN set (make test sets it to the bin/tpcd it has just
// built) that binary is used instead: test packages that start at once
// would otherwise each compile tpcd, cgo parts and all, at the same time.
func Main(bin *string, run func() int) int {
	if prebuilt := os.Getenv("TPCD_TEST_BIN"); prebuilt != "" {
		if _, err := os.Stat(prebuilt); err != nil {
			fmt.Fprintf(os.Stderr, "TPCD_TEST_BIN: %v\n", err)
			return 1
		}
		*bin = prebuilt
		return run()
	}
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
