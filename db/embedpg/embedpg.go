package embedpg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// Superuser is the name of the cluster's superuser (initdb -U).
	Superuser = "postgres"
	// LogFileName is the server log inside the data directory.
	LogFileName = "logfile"

	defaultMaxConnections          = 200
	defaultMaxPreparedTransactions = 200
	defaultStartTimeout            = 60 * time.Second

	// stopTimeout bounds a fast shutdown before escalating to an immediate
	// one; a fast shutdown only waits for a checkpoint.
	stopTimeout = 60 * time.Second
	// portAttempts is how often a port we picked ourselves is picked again
	// when someone else grabbed it between our probe and the server's bind.
	portAttempts = 3
	// maxSocketPath is the longest unix socket path PostgreSQL accepts
	// (sizeof(sun_path) minus the terminating NUL on Linux).
	maxSocketPath = 107
	// logTailBytes is how much of the server log an error quotes.
	logTailBytes = 2048
	// defaultSocketPort names the socket of a UnixSocketOnly server.
	defaultSocketPort = 5432
)

// Options configures Start. The zero value is a usable throw-away cluster.
type Options struct {
	// Dir is the data directory. Empty means a new temporary directory
	// (os.TempDir()/embedpg-*/data) that Stop removes; one left by a process
	// that died is removed at the next such start (RemoveStale). A directory that already holds a cluster (PG_VERSION) is
	// reused, which after a crash means recovery; an empty or missing one is
	// initialised with initdb.
	Dir string
	// BinDir holds initdb and postgres; empty means FindBinDir("").
	BinDir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// UnixSocketOnly serves on the unix socket in the data directory alone,
	// with no TCP port: nothing another program binds can stand in the way
	// of a restart, and URI names the socket. Port then only names the
	// socket file (.s.PGSQL.<port>; 0 means 5432).
	UnixSocketOnly bool
	// MaxConnections is max_connections; 0 means 200 unless Settings sets it.
	MaxConnections int
	// MaxPreparedTransactions is max_prepared_transactions, which must be
	// positive for PREPARE TRANSACTION; 0 means 200 unless Settings sets it.
	MaxPreparedTransactions int
	// Settings are extra server settings (GUCs), e.g. fsync=off for tests.
	// listen_addresses, unix_socket_directories and port are always ours.
	Settings map[string]string
	// StartTimeout bounds the wait for the server to accept connections,
	// including crash recovery; 0 means one minute.
	StartTimeout time.Duration
	// Logger receives life-cycle events; nil discards them.
	Logger *slog.Logger
	// PrivateAddress, if set, is a further address the server listens on
	// (with Port), and PrivateNetwork the network whose clients it trusts
	// there: for a server alone in a Linux network namespace that nodes in
	// other namespaces reach over a private network (test/netns). Both
	// must be private (10/8, 172.16/12, 192.168/16); the server trusts
	// everyone who reaches it, so nothing else may. Read at initdb only.
	PrivateAddress string
	PrivateNetwork string
}

// privateNet checks PrivateAddress and PrivateNetwork.
func (o Options) privateNet() (addr netip.Addr, network netip.Prefix, err error) {
	if o.PrivateAddress == "" && o.PrivateNetwork == "" {
		return addr, network, nil
	}
	if addr, err = netip.ParseAddr(o.PrivateAddress); err != nil {
		return addr, network, fmt.Errorf("private address: %w", err)
	}
	if network, err = netip.ParsePrefix(o.PrivateNetwork); err != nil {
		return addr, network, fmt.Errorf("private network: %w", err)
	}
	if !addr.IsPrivate() || !network.Addr().IsPrivate() || !network.Contains(addr) {
		return addr, network, fmt.Errorf("private address %s and network %s: both must be private, the address inside the network", addr, network)
	}
	return addr, network.Masked(), nil
}

// Cluster is a running (or killed, or stopped) private PostgreSQL cluster.
// Its methods are safe for concurrent use.
type Cluster struct {
	dir     string
	binDir  string
	unix    bool         // UnixSocketOnly
	network netip.Prefix // PrivateNetwork, trusted in pg_hba.conf
	tmp     *tempDir     // nil unless Start made the directory
	port    int
	args    []string // server arguments except the port
	as      *runAs
	log     *slog.Logger
	timeout time.Duration

	mu      sync.Mutex
	srv     *server // nil when not running
	removed bool    // the temporary directory is gone; no restart possible
}

// server is one run of the postmaster.
type server struct {
	cmd  *exec.Cmd
	pid  int
	done chan struct{} // closed once the postmaster has been reaped
	err  error         // exit status, valid after done
}

func (s *server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Start creates (or reuses) the cluster in opts.Dir and starts its server,
// returning once it accepts connections. If it fails after creating anything,
// it stops what it started and removes a temporary directory it made.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	binDir, err := FindBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	as, err := lookupRunAs()
	if err != nil {
		return nil, err
	}
	_, network, err := opts.privateNet()
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		network: network,
		binDir:  binDir,
		unix:    opts.UnixSocketOnly,
		as:      as,
		log:     opts.Logger,
		timeout: opts.StartTimeout,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.timeout <= 0 {
		c.timeout = defaultStartTimeout
	}
	if opts.Dir == "" {
		// A failed sweep is no reason not to start; it is tried again at
		// the next start.
		if _, err := RemoveStale(c.log); err != nil {
			c.log.Warn("could not remove the temporary clusters of dead processes", "err", err)
		}
		tmp, err := newTempDir()
		if err != nil {
			return nil, err
		}
		c.tmp = tmp
		c.dir = tmp.dataDir()
		if err := os.Mkdir(c.dir, 0o700); err != nil {
			tmp.remove()
			return nil, fmt.Errorf("create cluster dir: %w", err)
		}
	} else {
		dir, err := filepath.Abs(opts.Dir)
		if err != nil {
			return nil, fmt.Errorf("cluster dir %q: %w", opts.Dir, err)
		}
		// Parents must stay searchable by the server user, the cluster
		// directory itself must not be readable by others (initdb insists).
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return nil, fmt.Errorf("create parent of cluster dir: %w", err)
		}
		// Checked before creating anything the server user could not use.
		if err := as.checkTraverse(dir); err != nil {
			return nil, err
		}
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("create cluster dir: %w", err)
		}
		c.dir = dir
	}
	c.args = serverArgs(c.dir, opts)

	// setUp stops a server it started but failed to get ready; what may be
	// left is the directory.
	if err := c.setUp(ctx, opts.Port); err != nil {
		if c.tmp != nil {
			err = errors.Join(err, c.tmp.remove())
			c.removed = true
		}
		return nil, err
	}
	return c, nil
}

// setUp does the part of Start that may leave things to undo.
func (c *Cluster) setUp(ctx context.Context, port int) error {
	if err := c.as.chown(c.dir); err != nil {
		return err
	}
	if c.tmp != nil {
		if err := c.as.checkTraverse(c.dir); err != nil {
			return fmt.Errorf("%w (or point TMPDIR elsewhere)", err)
		}
	}
	if n := len(c.dir) + len("/.s.PGSQL.65535"); n > maxSocketPath {
		return fmt.Errorf("cluster dir %s is too long for a unix socket path (%d > %d bytes); use a shorter one", c.dir, n, maxSocketPath)
	}
	if err := c.initdb(ctx); err != nil {
		return err
	}
	if c.unix && port == 0 {
		port = defaultSocketPort
	}
	picked := port == 0
	for attempt := 1; ; attempt++ {
		if picked {
			p, err := freePort()
			if err != nil {
				return err
			}
			port = p
		}
		c.port = port
		srv, logStart, err := c.startServer(ctx)
		if err == nil {
			c.mu.Lock()
			c.srv = srv
			c.mu.Unlock()
			return nil
		}
		if picked && attempt < portAttempts && ctx.Err() == nil && bindFailed(c.logSince(logStart)) {
			c.log.Warn("postgres could not bind its port, picking another", "port", port, "attempt", attempt)
			continue
		}
		return err
	}
}

// initdb creates the cluster unless the directory already holds one.
func (c *Cluster) initdb(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(c.dir, "PG_VERSION")); err == nil {
		c.log.Info("reusing postgres cluster", "dir", c.dir)
		return nil
	}
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("read cluster dir: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("cluster dir %s is not empty but holds no cluster (no PG_VERSION)", c.dir)
	}
	args := []string{"-D", c.dir, "-U", Superuser, "-A", "trust", "-E", "UTF8", "--locale=C"}
	if c.fsyncOff() {
		// Syncing a cluster the server will never sync is wasted time.
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, "initdb"), args...)
	c.prepare(cmd)
	// SIGINT lets initdb remove what it created, which a kill would not.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	c.log.Info("initdb", "dir", c.dir, "bin", c.binDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("initdb %s: %w", c.dir, ctx.Err())
		}
		return fmt.Errorf("initdb %s: %w\n%s", c.dir, err, tail(out))
	}
	hba := hbaConf
	if c.network.IsValid() {
		hba += fmt.Sprintf("host    all           all   %s  trust\nhost    replication   all   %s  trust\n", c.network, c.network)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return fmt.Errorf("write pg_hba.conf: %w", err)
	}
	return c.as.chown(filepath.Join(c.dir, "pg_hba.conf"))
}

// hbaConf trusts every connection that can reach the server at all: the
// socket lives in the private data directory and TCP listens on 127.0.0.1
// (and, asked for, on a private network; see Options.PrivateAddress).
const hbaConf = `# Written by tpcd (db/embedpg): trust connections over the unix socket in
# the data directory and over 127.0.0.1, the only address the server uses.
local   all           all                 trust
host    all           all   127.0.0.1/32  trust
local   replication   all                 trust
host    replication   all   127.0.0.1/32  trust
`

func (c *Cluster) fsyncOff() bool {
	for i := 0; i+1 < len(c.args); i++ {
		if c.args[i] == "-c" && strings.EqualFold(c.args[i+1], "fsync=off") {
			return true
		}
	}
	return false
}

// serverArgs turns the options into postgres arguments, the port aside.
func serverArgs(dir string, opts Options) []string {
	set := maps.Clone(opts.Settings)
	if set == nil {
		set = map[string]string{}
	}
	if _, ok := set["max_connections"]; opts.MaxConnections > 0 || !ok {
		set["max_connections"] = strconv.Itoa(cmpOr(opts.MaxConnections, defaultMaxConnections))
	}
	if _, ok := set["max_prepared_transactions"]; opts.MaxPreparedTransactions > 0 || !ok {
		set["max_prepared_transactions"] = strconv.Itoa(cmpOr(opts.MaxPreparedTransactions, defaultMaxPreparedTransactions))
	}
	set["listen_addresses"] = "127.0.0.1"
	if opts.PrivateAddress != "" {
		set["listen_addresses"] += "," + opts.PrivateAddress
	}
	if opts.UnixSocketOnly {
		set["listen_addresses"] = ""
	}
	// A quoted entry may hold commas; quotes inside are doubled.
	set["unix_socket_directories"] = `"` + strings.ReplaceAll(dir, `"`, `""`) + `"`
	delete(set, "port")
	args := []string{"-D", dir}
	for _, k := range slices.Sorted(maps.Keys(set)) {
		args = append(args, "-c", k+"="+set[k])
	}
	return args
}

func cmpOr(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// prepare sets what every PostgreSQL binary we run needs: the server user
// when we are root, a directory it can enter, and messages in English so
// that the log can be searched for known failures.
func (c *Cluster) prepare(cmd *exec.Cmd) {
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.as.credential()}
}

// shmemRetries and shmemPause bound how long a start waits for the
// backends of a killed postmaster to let go of its shared memory: a
// backend that is exiting has left its directory (clearPrevious no longer
// sees it) but may still hold the segment, and the new postmaster then
// refuses to start.
const (
	shmemRetries = 50
	shmemPause   = 100 * time.Millisecond
)

// startServer runs the postmaster on c.port and waits until it accepts
// connections. It also returns where this run's output starts in the log.
func (c *Cluster) startServer(ctx context.Context) (*server, int64, error) {
	for attempt := 1; ; attempt++ {
		s, logStart, err := c.startServerOnce(ctx)
		if err == nil || attempt == shmemRetries || !shmemInUse(c.logSince(logStart)) {
			return s, logStart, err
		}
		if attempt == 1 {
			c.log.Warn("the backends of the previous postgres still hold its shared memory; starting again once they let go", "dir", c.dir)
		}
		select {
		case <-ctx.Done():
			return nil, logStart, err
		case <-time.After(shmemPause):
		}
	}
}

// shmemInUse recognises the log of a start refused because the previous
// server's shared memory is still attached.
func shmemInUse(log []byte) bool {
	return strings.Contains(string(log), "pre-existing shared memory block")
}

// startServerOnce is one try of startServer.
func (c *Cluster) startServerOnce(ctx context.Context) (*server, int64, error) {
	if err := c.clearPrevious(ctx); err != nil {
		return nil, 0, err
	}
	logPath := c.LogFile()
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("open server log: %w", err)
	}
	defer f.Close()
	if err := c.as.chown(logPath); err != nil {
		return nil, 0, err
	}
	logStart, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, 0, fmt.Errorf("server log: %w", err)
	}
	args := append(slices.Clone(c.args), "-p", strconv.Itoa(c.port))
	cmd := exec.Command(filepath.Join(c.binDir, "postgres"), args...)
	c.prepare(cmd)
	cmd.Stdout, cmd.Stderr = f, f
	// Own process group: terminal signals are for us, not the server; we
	// shut it down when we are done with it. Pdeathsig: an owner that dies
	// (even by SIGKILL) takes its server with it (immediate shutdown). Linux
	// ties it to the starting thread, which Go only ends for a goroutine
	// that exits while locked to its thread; do not Start from one.
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	if err := cmd.Start(); err != nil {
		return nil, logStart, fmt.Errorf("start postgres: %w", err)
	}
	s := &server{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	c.log.Info("postgres starting", "dir", c.dir, "port", c.port, "pid", s.pid)
	if err := c.waitReady(ctx, s); err != nil {
		_ = c.halt(s)
		return nil, logStart, fmt.Errorf("start postgres in %s on port %d: %w\nserver log:\n%s", c.dir, c.port, err, tail(c.logSince(logStart)))
	}
	c.log.Info("postgres ready", "dir", c.dir, "port", c.port, "pid", s.pid)
	return s, logStart, nil
}

// errWrongServer means the port answers, but not with our cluster.
var errWrongServer = errors.New("another server answers on our port")

// waitReady polls with real connections until the server answers, exits,
// the start timeout passes or ctx ends.
func (c *Cluster) waitReady(ctx context.Context, s *server) error {
	ctx, cancel := context.WithTimeoutCause(ctx, c.timeout, fmt.Errorf("server not ready after %v", c.timeout))
	defer cancel()
	for {
		err := c.ping(ctx)
		if err == nil {
			return nil
		}
		if errors.Is(err, errWrongServer) {
			return err
		}
		select {
		case <-s.done:
			return fmt.Errorf("postgres exited during start-up (%v)", s.err)
		case <-ctx.Done():
			return fmt.Errorf("%w (last attempt: %v)", context.Cause(ctx), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ping connects once and checks that the server is ours, since a port we
// picked may have been taken by someone else before our server bound it.
func (c *Cluster) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URI("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var dataDir string
	if err := conn.QueryRow(ctx, "SELECT current_setting('data_directory')").Scan(&dataDir); err != nil {
		return fmt.Errorf("query data_directory: %w", err)
	}
	if filepath.Clean(dataDir) != c.dir {
		return fmt.Errorf("%w: port %d serves %s", errWrongServer, c.port, dataDir)
	}
	return nil
}

// halt stops one run of the server: fast shutdown, then immediate, then
// SIGKILL to every process of the cluster, and waits until none is left.
func (c *Cluster) halt(s *server) error {
	if s.exited() {
		// It crashed on its own; its orphaned backends must not survive it.
		c.log.Warn("postgres had already exited", "dir", c.dir, "pid", s.pid, "status", s.err)
		return killCluster(0, c.dir, 10*time.Second)
	}
	steps := []struct {
		sig  syscall.Signal
		wait time.Duration
	}{
		{syscall.SIGINT, stopTimeout},       // fast shutdown
		{syscall.SIGQUIT, 10 * time.Second}, // immediate shutdown
	}
	for _, st := range steps {
		if err := syscall.Kill(s.pid, st.sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal postgres %d: %w", s.pid, err)
		}
		select {
		case <-s.done:
			c.log.Info("postgres stopped", "dir", c.dir, "pid", s.pid, "signal", st.sig.String())
			var err error
			if s.err != nil {
				err = fmt.Errorf("postgres %d exited with %w after %v", s.pid, s.err, st.sig)
			}
			// The postmaster only exits after its children, but a
			// stray one would block the next start.
			return errors.Join(err, killCluster(0, c.dir, 10*time.Second))
		case <-time.After(st.wait):
			c.log.Warn("postgres ignores shutdown request, escalating", "pid", s.pid, "signal", st.sig.String())
		}
	}
	return c.kill(s)
}

// kill SIGKILLs the postmaster and all its backends and waits for them.
func (c *Cluster) kill(s *server) error {
	err := killCluster(s.pid, c.dir, 10*time.Second)
	<-s.done
	return err
}

// Port is the TCP port the server listens on at 127.0.0.1 (with
// UnixSocketOnly, the number in its socket's name).
func (c *Cluster) Port() int { return c.port }

// PID is the postmaster's process id, 0 while the server is not running.
func (c *Cluster) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.srv == nil || c.srv.exited() {
		return 0
	}
	return c.srv.pid
}

// Dir is the data directory.
func (c *Cluster) Dir() string { return c.dir }

// LogFile is the path of the server log.
func (c *Cluster) LogFile() string { return filepath.Join(c.dir, LogFileName) }

// URI is a connection string for database dbname as the superuser.
func (c *Cluster) URI(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(Superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	if c.unix {
		u.Host = ""
		u.RawQuery = url.Values{"host": {c.dir}, "port": {strconv.Itoa(c.port)}, "sslmode": {"disable"}}.Encode()
	}
	return u.String()
}

// CreateDatabase creates database name; it is not an error if it exists.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	err := c.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	// 23505: a concurrent CREATE DATABASE of the same name won the race.
	if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// DropDatabase drops database name, disconnecting its sessions; it is not
// an error if it does not exist.
func (c *Cluster) DropDatabase(ctx context.Context, name string) error {
	if err := c.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// exec runs one statement in the postgres database.
func (c *Cluster) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, c.URI("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// Stop shuts the server down (fast shutdown) and waits for it, then removes
// the directory if Start created it as a temporary one. Calling it again,
// or after Kill, is fine.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var err error
	if c.srv != nil {
		err = c.halt(c.srv)
		c.srv = nil
	}
	if c.tmp != nil && !c.removed {
		if rmErr := c.tmp.remove(); rmErr != nil {
			return errors.Join(err, rmErr)
		}
		c.removed = true
		c.log.Info("removed temporary cluster", "dir", c.tmp.root)
	}
	return err
}

// Shutdown stops the server like Stop but always keeps the directory, so
// that Restart can follow, even for a temporary cluster.
func (c *Cluster) Shutdown() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.srv == nil {
		return nil
	}
	err := c.halt(c.srv)
	c.srv = nil
	return err
}

// Kill crashes the server: SIGKILL to the postmaster and all its backends,
// no shutdown checkpoint, directory kept. It returns once none of them is
// left, so that Restart finds no stale shared memory users.
func (c *Cluster) Kill() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.srv == nil {
		return errors.New("kill postgres: not running")
	}
	err := c.kill(c.srv)
	c.srv = nil
	c.log.Info("postgres killed", "dir", c.dir)
	return err
}

// Restart starts the server again on the same directory and port after
// Kill or Shutdown (or Stop of a kept directory); after a Kill the server
// runs crash recovery first.
func (c *Cluster) Restart(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.restartLocked(ctx)
}

// restartLocked is Restart with c.mu held.
func (c *Cluster) restartLocked(ctx context.Context) error {
	if c.removed {
		return fmt.Errorf("restart postgres: temporary cluster %s was removed by Stop", c.dir)
	}
	if c.srv != nil {
		if !c.srv.exited() {
			return errors.New("restart postgres: already running")
		}
		// It died on its own; reap what is left before starting over.
		_ = c.halt(c.srv)
		c.srv = nil
	}
	srv, _, err := c.startServer(ctx)
	if err != nil {
		return err
	}
	c.srv = srv
	return nil
}

// logSince returns the server log from offset on.
func (c *Cluster) logSince(offset int64) []byte {
	f, err := os.Open(c.LogFile())
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil
	}
	b, _ := io.ReadAll(f)
	return b
}

// tail keeps the end of a log, where the reason for a failure is.
func tail(b []byte) string {
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
		if i := strings.IndexByte(string(b), '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimRight(string(b), "\n")
}

// bindFailed recognises the log of a server that lost its port.
func bindFailed(log []byte) bool {
	s := string(log)
	return strings.Contains(s, "could not bind") || strings.Contains(s, "Address already in use")
}

// freePort asks the kernel for a free port on 127.0.0.1. Someone may take
// it before the server binds it; Start then tries again.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
