package embedpg

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// openBackends opens n idle sessions, so that a killed postmaster leaves
// backends behind.
func openBackends(t *testing.T, c *Cluster, n int) {
	t.Helper()
	for range n {
		conn := connect(t, c.URI("postgres"))
		queryOne[int](t, conn, "SELECT 1")
	}
}

// startAgain starts a second Cluster on dir, which must succeed on its
// first try, and checks that it serves what the first one committed.
func startAgain(t *testing.T, dir string, port int) *Cluster {
	t.Helper()
	c := start(t, Options{Dir: dir, Port: port})
	conn := connect(t, c.URI("postgres"))
	if got := queryOne[string](t, conn, "SELECT v FROM kept"); got != "before" {
		t.Fatalf("after the restart: %q", got)
	}
	return c
}

func clusterWithRow(t *testing.T) *Cluster {
	t.Helper()
	c := start(t, Options{Dir: filepath.Join(sharedDir(t), "pg")})
	conn := connect(t, c.URI("postgres"))
	mustExec(t, conn, "CREATE TABLE kept (v text)")
	mustExec(t, conn, "INSERT INTO kept VALUES ('before')")
	return c
}

// TestStartWaitsForEarlierPostmaster: the earlier postmaster of the
// directory is still there (stopped here, so that it takes a second to go,
// as a dying one that has work left would); PostgreSQL alone would say
// another postmaster is running.
func TestStartWaitsForEarlierPostmaster(t *testing.T) {
	t.Parallel()
	c1 := clusterWithRow(t)
	openBackends(t, c1, 2)
	pid := c1.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	const after = time.Second
	killed := time.AfterFunc(after, func() { syscall.Kill(pid, syscall.SIGKILL) })
	defer killed.Stop()
	began := time.Now()
	startAgain(t, c1.Dir(), 0)
	if took := time.Since(began); took < after {
		t.Fatalf("started after %v, while the earlier postmaster still ran", took)
	}
}

// TestStartKillsOrphanedBackends: the earlier postmaster was SIGKILLed and
// one of its backends lives on (stopped here, so that it cannot notice);
// PostgreSQL alone would find its shared memory still in use.
func TestStartKillsOrphanedBackends(t *testing.T) {
	t.Parallel()
	c1 := clusterWithRow(t)
	conn := connect(t, c1.URI("postgres"))
	backend := queryOne[int](t, conn, "SELECT pg_backend_pid()")
	if err := syscall.Kill(backend, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(c1.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	startAgain(t, c1.Dir(), 0)
	if st := procState("/proc/" + strconv.Itoa(backend)); st != "" && st != "Z" {
		t.Fatalf("orphaned backend %d still there (state %s)", backend, st)
	}
}

// TestStartWithStaleLockFiles: the lock files name a pid that exists but is
// no postmaster: a zombie nobody reaped yet (a killed postmaster whose
// owner died too) or a process that got the pid later.
func TestStartWithStaleLockFiles(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"zombie", "other process"} {
		c1 := clusterWithRow(t)
		port := c1.Port()
		if err := c1.Kill(); err != nil {
			t.Fatal(err)
		}
		pid := strangerPID(t, c1.as, kind == "zombie")
		for _, name := range []string{lockFileName, ".s.PGSQL." + strconv.Itoa(port) + ".lock"} {
			setLockPID(t, filepath.Join(c1.Dir(), name), pid)
		}
		c2 := startAgain(t, c1.Dir(), port) // the same port: its socket lock file too
		if err := c2.Stop(); err != nil {
			t.Fatal(err)
		}
	}
}

// strangerPID starts a process that is not PostgreSQL and returns its pid,
// after it exited but was not reaped when zombie is set. It runs as the
// server user: PostgreSQL takes a pid it may not signal for a dead one.
func strangerPID(t *testing.T, as *runAs, zombie bool) int {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if zombie {
		cmd = exec.Command("true")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: as.credential()}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if zombie {
		deadline := time.Now().Add(10 * time.Second)
		for procState("/proc/"+strconv.Itoa(pid)) != "Z" {
			if time.Now().After(deadline) {
				t.Fatalf("process %d did not become a zombie", pid)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return pid
}

// setLockPID replaces the pid on a lock file's first line.
func setLockPID(t *testing.T, path string, pid int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	lines[0] = strconv.Itoa(pid) + "\n"
	if err := os.WriteFile(path, []byte(strings.Join(lines, "")), 0o600); err != nil {
		t.Fatal(err)
	}
}
