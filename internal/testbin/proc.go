package testbin

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proc is a tpcd process a test started. Its output is kept, and written
// to the test log if the test fails; the process is killed when the test
// ends, if it still runs.
type Proc struct {
	Cmd    *exec.Cmd
	Out    *SyncBuffer
	done   chan error
	exited chan struct{}
}

// Start runs bin with args and env added to this process's environment.
func Start(t testing.TB, bin string, env []string, args ...string) *Proc {
	t.Helper()
	return start(t, exec.Command(bin, args...), env, args)
}

// StartServing is Start for a node that serves on held ports, passed to it
// as Command does.
func StartServing(t testing.TB, bin string, env []string, ports []*Port, args ...string) *Proc {
	t.Helper()
	return start(t, Command(bin, ports, args...), env, args)
}

// StartCommand is Start for a command the test made itself (to run tpcd
// in another network namespace, say).
func StartCommand(t testing.TB, cmd *exec.Cmd, env []string) *Proc {
	t.Helper()
	return start(t, cmd, env, cmd.Args)
}

func start(t testing.TB, cmd *exec.Cmd, env, args []string) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, Out: &SyncBuffer{}, done: make(chan error, 1), exited: make(chan struct{})}
	p.Cmd.Stdout, p.Cmd.Stderr = p.Out, p.Out
	p.Cmd.Env = append(os.Environ(), env...)
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.Cmd.Wait()
		close(p.exited)
		p.done <- err
	}()
	t.Cleanup(func() {
		p.Cmd.Process.Kill()
		if t.Failed() {
			t.Logf("tpcd %s:\n%s", strings.Join(args, " "), p.Out)
		}
	})
	return p
}

// Exited is closed once the process has ended, on its own or not;
// Cmd.ProcessState tells how.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Stop sends SIGTERM and waits up to a minute for a clean exit, reporting
// anything else as a test error.
func (p *Proc) Stop(t testing.TB) {
	t.Helper()
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("tpcd exited with %v after SIGTERM:\n%s", err, p.Out)
		}
	case <-time.After(time.Minute):
		t.Errorf("tpcd did not stop within a minute of SIGTERM:\n%s", p.Out)
	}
}

// SyncBuffer collects a process's output while it runs and may be read
// meanwhile.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Take returns what was written since the last Take and forgets it.
func (s *SyncBuffer) Take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.b.String()
	s.b.Reset()
	return out
}

// ServerTempDir makes a fresh directory under os.TempDir() that the
// PostgreSQL server user can reach (a test's t.TempDir is 0700, which that
// user cannot traverse when the tests run as root); it is removed when the
// test ends.
func ServerTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tpcd-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// WantUsageError runs bin with args, which it must refuse as a command
// line: exit non-zero, print the complaint (naming want) on one line and
// where to read more (--help) on the next, as psql does.
func WantUsageError(t testing.TB, bin string, args []string, want string) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err == nil {
		t.Fatalf("exit 0; want an error\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], want) || !strings.Contains(lines[1], "--help") {
		t.Fatalf("want a line mentioning %q and one naming --help, got:\n%s", want, out)
	}
}
