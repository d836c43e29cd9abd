package main

import (
	"os"
	"testing"

	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
)

// tpcdBin is the tpcd binary built for the tests that run it.
var tpcdBin string

func TestMain(m *testing.M) {
	os.Exit(testbin.Main(&tpcdBin, func() int { return pgtest.Main(m) }))
}

// runBin runs a tpcd binary and returns its output and exit status.
func runBin(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return testbin.Run(t, bin, nil, "", args...)
}
