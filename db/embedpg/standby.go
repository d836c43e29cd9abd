package embedpg

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// StartStandby copies this running cluster with pg_basebackup into
// opts.Dir (which must not exist yet, or be empty) and starts the copy as a
// streaming standby of it, known to the primary as name (its
// application_name, what synchronous_standby_names lists). opts are the
// standby's own; opts.Dir is required, and max_prepared_transactions
// defaults to the primary's, which PostgreSQL requires of a standby.
func (c *Cluster) StartStandby(ctx context.Context, name string, opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("start standby: a directory is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("standby dir %q: %w", opts.Dir, err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("create parent of standby dir: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create standby dir: %w", err)
	}
	if err := c.as.chown(dir); err != nil {
		return nil, err
	}
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=%s application_name=%s", c.port, Superuser, name)
	if c.unix {
		conninfo = fmt.Sprintf("host=%s port=%d user=%s application_name=%s", c.dir, c.port, Superuser, name)
	}
	// -R writes standby.signal and the primary's connection settings; the
	// application name is set again below, where it cannot be lost.
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, "pg_basebackup"), "-D", dir, "-d", conninfo, "-R", "-X", "stream", "-c", "fast")
	c.prepare(cmd)
	cmd.Dir = dir
	cmd.WaitDelay = 10 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pg_basebackup of %s into %s: %w\n%s", c.dir, dir, err, tail(out))
	}
	opts.Dir = dir
	opts.BinDir = c.binDir
	opts.Settings = maps.Clone(opts.Settings)
	if opts.Settings == nil {
		opts.Settings = map[string]string{}
	}
	opts.Settings["primary_conninfo"] = conninfo
	if opts.MaxPreparedTransactions == 0 {
		if v, ok := settingOf(c.args, "max_prepared_transactions"); ok {
			opts.MaxPreparedTransactions, _ = strconv.Atoi(v)
		}
	}
	return Start(ctx, opts)
}

// settingOf finds setting name among server arguments ("-c", "name=value").
func settingOf(args []string, name string) (string, bool) {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-c" && len(args[i+1]) > len(name) && args[i+1][:len(name)+1] == name+"=" {
			return args[i+1][len(name)+1:], true
		}
	}
	return "", false
}
