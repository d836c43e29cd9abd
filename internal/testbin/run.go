package testbin

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runTimeout only stops a hung run; it measures nothing.
const runTimeout = 2 * time.Minute

// Run runs bin with args to its end and returns what it wrote and its exit
// status. env is its whole environment (nil: this process's), stdin its
// input. The test fails if bin cannot be run or hangs.
func Run(t testing.TB, bin string, env []string, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errs strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errs
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %v did not end within %v:\nstdout:\n%s\nstderr:\n%s", bin, args, runTimeout, &out, &errs)
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %s %v: %v", bin, args, err)
	}
	return out.String(), errs.String(), code
}
