package embedpg

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
)

// serverUser is the unprivileged account the binaries run as when we are
// root; PostgreSQL refuses to start as root.
const serverUser = "postgres"

// runAs is the identity the PostgreSQL binaries run with; nil means "as we
// are", which is the case whenever we are not root.
type runAs struct {
	name   string
	uid    uint32
	gid    uint32
	groups []uint32
}

// lookupRunAs returns the identity to run the binaries as.
func lookupRunAs() (*runAs, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(serverUser)
	if err != nil {
		return nil, fmt.Errorf("running as root, so PostgreSQL must run as user %q, but: %w", serverUser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: uid %q: %w", serverUser, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %s: gid %q: %w", serverUser, u.Gid, err)
	}
	r := &runAs{name: u.Username, uid: uint32(uid), gid: uint32(gid)}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("user %s: groups: %w", serverUser, err)
	}
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("user %s: group id %q: %w", serverUser, g, err)
		}
		r.groups = append(r.groups, uint32(n))
	}
	if !slices.Contains(r.groups, r.gid) {
		r.groups = append(r.groups, r.gid)
	}
	return r, nil
}

// credential is what exec needs to switch to this identity.
func (r *runAs) credential() *syscall.Credential {
	if r == nil {
		return nil
	}
	return &syscall.Credential{Uid: r.uid, Gid: r.gid, Groups: r.groups}
}

// chown hands path over to this identity; a no-op when not switching users.
func (r *runAs) chown(path string) error {
	if r == nil {
		return nil
	}
	if err := os.Chown(path, int(r.uid), int(r.gid)); err != nil {
		return fmt.Errorf("chown %s to %s: %w", path, r.name, err)
	}
	return nil
}

// checkTraverse fails when this identity cannot reach dir because some
// ancestor lacks the search permission for it. PostgreSQL would fail too,
// but with a message that does not point at the real cause.
func (r *runAs) checkTraverse(dir string) error {
	if r == nil {
		return nil
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("check access to %s: %w", dir, err)
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			return errors.New("check access: no unix file ownership on this platform")
		}
		perm := st.Mode().Perm()
		var need os.FileMode
		switch {
		case sys.Uid == r.uid:
			need = 0o100
		case slices.Contains(r.groups, sys.Gid):
			need = 0o010
		default:
			need = 0o001
		}
		if perm&need == 0 {
			return fmt.Errorf("user %s (uid %d), which runs PostgreSQL because we are root, cannot traverse %s (mode %v, owner uid %d) to reach %s; "+
				"use a directory it can reach (e.g. under /tmp) or grant it access (chmod o+x %s)",
				r.name, r.uid, p, perm, sys.Uid, dir, p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}
