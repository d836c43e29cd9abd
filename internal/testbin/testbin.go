// Package testbin serves the tests that run tpcd as real processes: it
// builds the tpcd binary at most once per test process, when a test first
// asks for it and the environment names none already built (BinaryEnv),
// starts and stops such processes keeping their output, runs programs on
// a pseudo-terminal, and finds free loopback addresses. A test package
// that uses Binary calls Main from its TestMain, which removes what was
// built.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	dirOnce sync.Once
	dir     string
	dirErr  error
	// builds are without and with the race detector.
	builds [2]build
)

type build struct {
	once sync.Once
	path string
	err  error
}

// Main runs m's tests through run (pgtest.Main for tests that need
// PostgreSQL; nil: m.Run), then removes the binaries Binary built. It
// returns the exit code for os.Exit.
func Main(m *testing.M, run func(*testing.M) int) int {
	if run == nil {
		run = (*testing.M).Run
	}
	code := run(m)
	if dir != "" {
		os.RemoveAll(dir)
	}
	return code
}

// BinaryEnv names a tpcd binary already built from this tree, for Binary
// to use instead of building its own: make test builds one for all the
// packages that run it, which would each link it otherwise.
const BinaryEnv = "TPCD_TEST_BINARY"

// Binary returns the tpcd binary: the one BinaryEnv names, or else one
// built on the first call in this test process, so that tests run without
// it (-run, -short) build nothing. It is built without the race detector:
// only the test binary needs it, and the nodes run faster without.
func Binary(t testing.TB) string {
	t.Helper()
	if path := os.Getenv(BinaryEnv); path != "" {
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("%s names no binary: %v", BinaryEnv, err)
		}
		return path
	}
	return builds[0].get(t, "tpcd")
}

// RaceBinary is Binary built with -race, for tests of code that runs in
// the binary itself (the client's shell) rather than in nodes it drives.
func RaceBinary(t testing.TB) string {
	t.Helper()
	return builds[1].get(t, "tpcd-race", "-race")
}

func (b *build) get(t testing.TB, name string, flags ...string) string {
	t.Helper()
	b.once.Do(func() {
		dirOnce.Do(func() { dir, dirErr = os.MkdirTemp("", "tpcd-test-bin-") })
		if b.err = dirErr; b.err != nil {
			return
		}
		b.path = filepath.Join(dir, name)
		args := append(append([]string{"build", "-o", b.path}, flags...), "github.com/tpcd/tpcd/cmd/tpcd")
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go %v: %v\n%s", args, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}
