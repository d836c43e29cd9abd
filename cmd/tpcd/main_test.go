package main

import (
	"os"
	"testing"

	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
)

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, pgtest.Main)) }

// runBin runs a tpcd binary and returns its output and exit status.
func runBin(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return testbin.Run(t, bin, nil, "", args...)
}
