package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tpcd/tpcd/internal/testbin"
)

// TestVersion runs the binary: --version and the version command print the
// same one line; without recorded version control information it says
// the commit is unknown, and the values `make build` links in show up.
func TestVersion(t *testing.T) {
	platform := " " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	flag, errs, code := runBin(t, testbin.Binary(t), "--version")
	if code != 0 || errs != "" || !strings.HasPrefix(flag, "tpcd ") || !strings.HasSuffix(flag, platform) || strings.Count(flag, "\n") != 1 {
		t.Fatalf("--version: status %d, stdout %q, stderr %q", code, flag, errs)
	}
	cmd, _, code := runBin(t, testbin.Binary(t), "version")
	if code != 0 || cmd != flag {
		t.Fatalf("version: status %d, %q; --version said %q", code, cmd, flag)
	}
	// A subcommand's flags do not hide it.
	if out, _, code := runBin(t, testbin.Binary(t), "client", "--version"); code != 0 || out != flag {
		t.Fatalf("client --version: status %d, %q", code, out)
	}

	// The test binary is built from a linked worktree or with
	// -buildvcs=false (go records nothing then), or from a checkout
	// (go records the commit): say which applies.
	if out, err := exec.Command("go", "version", "-m", testbin.Binary(t)).Output(); err != nil {
		t.Fatal(err)
	} else if strings.Contains(string(out), "vcs.revision=") {
		rev := strings.SplitN(strings.SplitN(string(out), "vcs.revision=", 2)[1], "\n", 2)[0]
		if !strings.HasPrefix(flag, "tpcd "+rev[:12]+" (") {
			t.Fatalf("--version %q does not name the recorded commit %s", flag, rev)
		}
	} else if flag != "tpcd (commit unknown: built without version control information)"+platform {
		t.Fatalf("--version without version control information: %q", flag)
	}

	// What `make build` passes when go records nothing.
	linked := filepath.Join(t.TempDir(), "tpcd")
	const pkg = "github.com/tpcd/tpcd/buildinfo"
	ldflags := "-X " + pkg + ".version=v9.8.7 -X " + pkg + ".revision=0123456789abcdef0123456789abcdef01234567" +
		" -X " + pkg + ".vcsTime=2026-01-02T03:04:05Z -X " + pkg + ".modified=true"
	build := exec.Command("go", "build", "-buildvcs=false", "-ldflags", ldflags, "-o", linked, ".")
	build.Env = os.Environ()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -ldflags: %v\n%s", err, out)
	}
	out, _, code := runBin(t, linked, "--version")
	if want := "tpcd v9.8.7 (0123456789ab, 2026-01-02 03:04:05 UTC, modified)" + platform; code != 0 || out != want {
		t.Fatalf("linked --version: status %d, %q, want %q", code, out, want)
	}
}
