package embedpg

import (
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

// PostgreSQL puts every child of the postmaster in a session of its own, so
// neither the process group nor (once the postmaster is dead) the parent
// links find them. What they all share is their working directory, the data
// directory, which is how the functions below find a cluster's processes.

// clusterProcs lists the live (non-zombie) postgres processes whose working
// directory is dir.
func clusterProcs(dir string) []int {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		proc := "/proc/" + e.Name()
		if cwd, err := os.Readlink(proc + "/cwd"); err != nil || cwd != dir {
			continue
		}
		if exe, err := os.Readlink(proc + "/exe"); err != nil || filepath.Base(exe) != "postgres" {
			continue
		}
		if procState(proc) == "Z" {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// procState is the one-letter state of a process, "" if it is gone.
func procState(proc string) string {
	b, err := os.ReadFile(proc + "/stat")
	if err != nil {
		return ""
	}
	// The command name is in parentheses and may hold anything; the state
	// is the first field after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// killCluster SIGKILLs the postmaster, then every process left in dir, and
// waits until none is left: a new postmaster refuses to start while old
// backends still hold the previous shared memory.
func killCluster(postmaster int, dir string, timeout time.Duration) error {
	// A dying process loses its working directory before it is done
	// exiting, so every process found here, and every one killed below, is
	// followed by pid until it is gone. Those found before the postmaster
	// dies are followed too: a backend that notices its death exits on its
	// own, and is past recognising by its directory while it does.
	killed := map[int]bool{}
	for _, pid := range clusterProcs(dir) {
		killed[pid] = true
	}
	if postmaster > 0 {
		if err := syscall.Kill(postmaster, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill postmaster %d: %w", postmaster, err)
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		pids := clusterProcs(dir)
		for pid := range killed {
			if st := procState("/proc/" + strconv.Itoa(pid)); st == "" || st == "Z" {
				delete(killed, pid)
			} else if !slices.Contains(pids, pid) {
				pids = append(pids, pid)
			}
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres processes %v of %s still alive after %v", pids, dir, timeout)
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("kill postgres process %d: %w", pid, err)
			}
			killed[pid] = true
		}
		time.Sleep(5 * time.Millisecond)
	}
}
