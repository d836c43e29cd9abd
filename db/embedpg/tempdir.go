package embedpg

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// A temporary cluster lives in os.TempDir()/embedpg-*/data. Beside the data
// directory, owner.lock holds an exclusive flock for as long as the process
// that made the cluster lives; the kernel drops it when that process dies,
// however it dies, and a pid reused by another process cannot hold it. A
// directory whose lock can be taken therefore belongs to a dead run, and the
// next start of a temporary cluster removes it. A process killed with
// SIGKILL, or one whose terminal closed before it handled SIGHUP, could not
// remove its directory itself; each holds a whole cluster (about 40 MB).

const (
	tempPattern   = "embedpg-"
	ownerLockName = "owner.lock"
	tempDataName  = "data"
)

// tempDir is a temporary cluster's directory and the lock that marks it in use.
type tempDir struct {
	root string
	lock *os.File
}

// newTempDir creates a temporary cluster directory owned by this process.
func newTempDir() (*tempDir, error) {
	root, err := os.MkdirTemp("", tempPattern)
	if err != nil {
		return nil, fmt.Errorf("create temporary cluster dir: %w", err)
	}
	lock, err := lockNewOwnerFile(root)
	if err != nil {
		os.RemoveAll(root)
		return nil, err
	}
	// The server user must pass through root to reach the data directory
	// (MkdirTemp makes it 0700); it need not list it.
	if err := os.Chmod(root, 0o711); err != nil {
		lock.Close()
		os.RemoveAll(root)
		return nil, fmt.Errorf("temporary cluster dir: %w", err)
	}
	return &tempDir{root: root, lock: lock}, nil
}

// lockNewOwnerFile writes this process's pid (for people; the lock is what
// counts) to a file it locks before giving it its final name, so that no
// sweep ever sees owner.lock unlocked while its owner lives.
func lockNewOwnerFile(root string) (*os.File, error) {
	tmp := filepath.Join(root, ownerLockName+".new")
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create owner lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", tmp, err)
	}
	if _, err := f.WriteString(strconv.Itoa(os.Getpid()) + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(root, ownerLockName)); err != nil {
		f.Close()
		return nil, fmt.Errorf("owner lock: %w", err)
	}
	return f, nil
}

// dataDir is where the cluster itself lives.
func (d *tempDir) dataDir() string { return filepath.Join(d.root, tempDataName) }

// remove deletes the directory, then gives up the lock.
func (d *tempDir) remove() error {
	err := os.RemoveAll(d.root)
	d.lock.Close()
	if err != nil {
		return fmt.Errorf("remove %s: %w", d.root, err)
	}
	return nil
}

// RemoveStale removes the temporary clusters under os.TempDir() whose owner
// process has died, first killing any server process still running in one.
// Directories of live owners, and those without an owner lock (made by an
// older tpcd, or another program's), are left alone. It returns the
// directories it removed. Start calls it before making a temporary cluster.
func RemoveStale(log *slog.Logger) ([]string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	roots, err := filepath.Glob(filepath.Join(os.TempDir(), tempPattern+"*"))
	if err != nil {
		return nil, fmt.Errorf("find temporary clusters: %w", err)
	}
	var removed []string
	var errs []error
	for _, root := range roots {
		ok, err := removeIfStale(root)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			log.Info("removed the temporary cluster of a process that has died", "dir", root)
			removed = append(removed, root)
		}
	}
	return removed, errors.Join(errs...)
}

// removeIfStale removes root if its owner lock exists and can be taken.
func removeIfStale(root string) (bool, error) {
	f, err := os.Open(filepath.Join(root, ownerLockName))
	if err != nil {
		return false, nil // no owner lock, or gone meanwhile: not ours to judge
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil // its owner lives
		}
		return false, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	// Holding the lock, nobody else sweeps root meanwhile. A server whose
	// owner died got SIGQUIT from the kernel (Pdeathsig) but may still be
	// exiting, and its backends may outlive it.
	data := filepath.Join(root, tempDataName)
	if err := killCluster(0, data, 10*time.Second); err != nil {
		return false, fmt.Errorf("stale temporary cluster %s: %w", root, err)
	}
	if err := os.RemoveAll(root); err != nil {
		return false, fmt.Errorf("remove stale temporary cluster: %w", err)
	}
	return true, nil
}
