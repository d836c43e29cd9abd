package embedpg

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// previousServerWait bounds how long a start waits for an earlier
	// postmaster of its directory to exit. One in immediate shutdown
	// (its owner died, so it got SIGQUIT) is gone within moments; one
	// that serves someone else never goes.
	previousServerWait = 20 * time.Second
	// orphanGrace is how long the backends of a dead postmaster get to
	// notice its death and exit by themselves before they are killed.
	orphanGrace = 3 * time.Second
	// lockFileName is the data directory's lock file, which names the
	// postmaster's pid on its first line.
	lockFileName = "postmaster.pid"
)

// clearPrevious makes the directory ready for a new postmaster after an
// earlier one was killed or its owner was. PostgreSQL alone refuses to
// start, with a misleading "lock file postmaster.pid already exists / Is
// another postmaster running", while the earlier postmaster is still
// exiting, while it is a zombie nobody has reaped yet, or when its pid now
// belongs to another process; and with "shared memory block is still in
// use" while its backends outlive it. clearPrevious waits for the earlier
// postmaster to exit, gives its orphaned backends orphanGrace to exit and
// then kills them, and removes lock files naming a pid that still exists
// but is no server of this directory. It fails only when a postmaster of
// this directory runs on for previousServerWait.
func (c *Cluster) clearPrevious(ctx context.Context) error {
	lockPath := filepath.Join(c.dir, lockFileName)
	pid := lockFilePID(lockPath)
	deadline := time.Now().Add(previousServerWait)
	var orphansSince time.Time
	waited := false
	for {
		procs := clusterProcs(c.dir)
		if len(procs) == 0 {
			break
		}
		now := time.Now()
		switch {
		case pid > 0 && slices.Contains(procs, pid):
			if !waited {
				c.log.Warn("an earlier postgres of this directory still runs; waiting for it to exit", "dir", c.dir, "pid", pid)
				waited = true
			}
			if now.After(deadline) {
				return fmt.Errorf("another PostgreSQL server (pid %d) runs in %s and did not exit within %v; "+
					"is another tpcd node using the same state directory? Stop it first", pid, c.dir, previousServerWait)
			}
		case orphansSince.IsZero():
			orphansSince = now
			c.log.Warn("backends of a dead postgres are left in this directory; waiting for them to exit", "dir", c.dir, "pids", procs)
		case now.Sub(orphansSince) > orphanGrace:
			// Their postmaster is gone: nobody serves through them.
			if err := killCluster(0, c.dir, 10*time.Second); err != nil {
				return err
			}
			continue
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the earlier postgres of %s to exit: %w", c.dir, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if waited {
		c.log.Info("the earlier postgres of this directory has exited", "dir", c.dir, "pid", pid)
	}
	return c.removeStaleLocks()
}

// removeStaleLocks removes the directory's lock files (postmaster.pid and
// the unix socket's .s.PGSQL.<port>.lock, which lives here too) whose pid
// still exists. It runs when no process of the directory is left, so that
// pid is a zombie or someone else's process, which PostgreSQL cannot tell
// from a running postmaster. A lock file naming a pid that is gone is left
// to PostgreSQL, which replaces it by itself.
func (c *Cluster) removeStaleLocks() error {
	locks, err := filepath.Glob(filepath.Join(c.dir, ".s.PGSQL.*.lock"))
	if err != nil {
		return fmt.Errorf("find socket lock files: %w", err)
	}
	locks = append(locks, filepath.Join(c.dir, lockFileName))
	for _, path := range locks {
		pid := lockFilePID(path)
		if pid <= 0 || !pidExists(pid) {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale lock file: %w", err)
		}
		c.log.Info("removed a stale lock file; its pid is no server of this directory", "file", path, "pid", pid, "state", procState("/proc/"+strconv.Itoa(pid)))
	}
	return nil
}

// lockFilePID reads the pid on a PostgreSQL lock file's first line; 0 when
// there is no such file or it holds no pid.
func lockFilePID(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	if !s.Scan() {
		return 0
	}
	// A postmaster started as a single-user backend writes its pid negated.
	pid, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(s.Text()), "-"))
	if err != nil {
		return 0
	}
	return pid
}

// pidExists reports whether a process (a zombie included) has pid, which
// is what PostgreSQL's own check of a lock file asks.
func pidExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
