package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/db/embedpg"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/rpc"
)

// Database names on every server.
const (
	logDBName  = "tpcd_log"
	dataDBName = "tpcd_data"
	// rowsTable is where the workload writes; every row names its
	// transaction so outcomes can be checked per transaction per node.
	rowsTable = "chaos_rows"
)

// Node flags: short timeouts, so that faults end in aborts and recoveries
// within seconds rather than minutes.
var (
	coordinatorFlags = []string{"--timeout", "1", "--exec-timeout", "5", "--idle-timeout", "10"}
	participantFlags = []string{"--idle-timeout", "10", "--lock-timeout", "2", "--max-conns", "40"}
)

// server is one private PostgreSQL server.
type server struct {
	name string
	pg   *embedpg.Cluster

	mu   sync.Mutex
	down bool
}

// Kill crashes the server (SIGKILL to every process of it).
func (s *server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return nil
	}
	s.down = true
	return s.pg.Kill()
}

// Restart brings a killed server back (crash recovery first), retrying a
// few times: a restart can fail if the server was slow to release its
// port.
func (s *server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.down {
		return nil
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = s.pg.Restart(ctx); err == nil {
			s.down = false
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	return fmt.Errorf("restart postgres of %s: %w", s.name, err)
}

// cluster is everything the harness started: servers, links, nodes.
type cluster struct {
	root string
	n    int
	log  *slog.Logger
	keep bool // keep the state of replaced coordinators

	servers []*server // participant i's server
	links   []*Link   // 2i: coordinator->participant-i, 2i+1: participant-i->coordinator; 2n+i: participant-i->coordinator-b
	nodes   []*proc   // 0: coordinator; i+1: participant i

	coordAddr    string // the coordinator's own address (clients connect here)
	coordMetrics string // the coordinator's /metrics and /readyz listener
	// second is the other coordinator when two share a log (Options.
	// Coordinators), at secondAddr; nil with one. Either may serve.
	second     *proc
	secondAddr string
	// logServer holds the log the two coordinators share; nil with one.
	logServer *server
	coordArgs []string // the coordinator's arguments but its --state-dir
	nodeAddrs []string // every node's own address, in nodes order
	dataURIs  []string // participant i's data database
	// template is a stopped, initialised PostgreSQL directory every server
	// starts from, each coordinator incarnation's too.
	template string

	// mu guards the coordinator incarnations: the 1-based number of the
	// current one (each has a state directory of its own) and the cluster
	// id each one reported.
	mu          sync.Mutex
	incarnation int
	clusterIDs  []string
}

// nodeName names node i of the cluster as the node names itself (in its
// log and its ping reply): 0 is the coordinator, i the participant i-1.
func nodeName(i int) string {
	if i == 0 {
		return api.CoordinatorName
	}
	return api.ParticipantName(engine.NodeID(i - 1))
}

// startCluster brings everything up. On error the caller still calls
// stop on what it returns.
func startCluster(ctx context.Context, opts Options, root string, log *slog.Logger) (*cluster, error) {
	n := opts.Participants
	c := &cluster{root: root, n: n, log: log, keep: opts.Keep != ""}
	for _, dir := range []string{"pg", "logs"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			return c, fmt.Errorf("create %s: %w", dir, err)
		}
	}
	// The servers run as an unprivileged user when we are root; it must
	// be able to reach its directory.
	if err := os.Chmod(root, 0o755); err != nil {
		return c, err
	}
	// Ports: a server per participant, every node, every link, the
	// coordinator's metrics listener.
	// With two coordinators: their log server, the second's address and
	// metrics listener.
	extra := 0
	if opts.Coordinators == 2 {
		extra = 3 + n // and a link from each participant to the second
	}
	ports, err := allocPorts(n + (n + 1) + 2*n + 1 + extra)
	if err != nil {
		return c, err
	}
	take := func() int { p := ports[0]; ports = ports[1:]; return p }

	// initdb dominates the set-up time and is mostly waiting: run it once
	// and give every server a copy.
	template := filepath.Join(root, "pg", "template")
	pgOpts := func(dir string, port int, name string) embedpg.Options {
		return embedpg.Options{
			Dir:    dir,
			BinDir: opts.PGBin,
			Port:   port,
			// fsync=off keeps everything a killed server wrote (the kernel
			// has it); only an OS crash would lose data, and the harness
			// does not simulate one.
			Settings: map[string]string{"fsync": "off", "full_page_writes": "off"},
			Logger:   log.With("pg", name),
		}
	}
	if err := makeTemplate(ctx, pgOpts(template, 0, "template")); err != nil {
		return c, err
	}
	c.template = template
	c.servers = make([]*server, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		port := take()
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := nodeName(i + 1)
			dir := filepath.Join(root, "pg", name)
			if err := cloneDir(template, dir); err != nil {
				errs[i] = fmt.Errorf("copy postgres template for %s: %w", name, err)
				return
			}
			pg, err := embedpg.Start(ctx, pgOpts(dir, port, name))
			if err != nil {
				errs[i] = fmt.Errorf("postgres for %s: %w", name, err)
				return
			}
			c.servers[i] = &server{name: name, pg: pg}
			for _, db := range []string{logDBName, dataDBName} {
				if err := pg.CreateDatabase(ctx, db); err != nil {
					errs[i] = err
					return
				}
			}
			errs[i] = createRowsTable(ctx, pg.URI(dataDBName))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	for _, s := range c.servers {
		c.dataURIs = append(c.dataURIs, s.pg.URI(dataDBName))
	}

	for range n + 1 {
		c.nodeAddrs = append(c.nodeAddrs, addr(take()))
	}
	c.coordAddr = c.nodeAddrs[0]
	c.coordMetrics = addr(take())
	var logURI, secondMetrics string
	if opts.Coordinators == 2 {
		c.secondAddr, secondMetrics = addr(take()), addr(take())
		if logURI, err = c.startLogServer(ctx, pgOpts, take()); err != nil {
			return c, err
		}
	}
	for i := range n {
		for _, l := range []struct{ name, target string }{
			{fmt.Sprintf("coordinator->participant-%d", i), c.nodeAddrs[i+1]},
			{fmt.Sprintf("participant-%d->coordinator", i), c.coordAddr},
		} {
			link, err := NewLink(l.name, addr(take()), l.target, log)
			if err != nil {
				return c, err
			}
			c.links = append(c.links, link)
		}
	}

	// With two coordinators each participant has a link to each, and knows
	// both (links 2n+i), as a participant would be configured: a paused
	// coordinator still takes connections, and a participant moves on to
	// the other address after a call to it failed.
	if opts.Coordinators == 2 {
		for i := range n {
			link, err := NewLink(fmt.Sprintf("participant-%d->%s", i, secondCoordinator), addr(take()), c.secondAddr, log)
			if err != nil {
				return c, err
			}
			c.links = append(c.links, link)
		}
	}

	// The coordinator keeps its log in its own embedded PostgreSQL, in a
	// state directory of its incarnation: the node supervises that server
	// (kill-embedded-postgres), and a fresh directory is a coordinator
	// that lost its log (replace-coordinator).
	c.coordArgs = []string{"coordinator", "--host", c.coordAddr, "--metrics-addr", c.coordMetrics}
	if opts.PGBin != "" {
		c.coordArgs = append(c.coordArgs, "--pg-bin", opts.PGBin)
	}
	for i := range n {
		c.coordArgs = append(c.coordArgs, "--participant", c.links[2*i].Addr())
	}
	c.coordArgs = append(c.coordArgs, coordinatorFlags...)
	var args []string
	var secondProc *proc
	if opts.Coordinators == 2 {
		// Both on the shared log, by a lease; the second at its own
		// addresses. The links to the participants serve either.
		c.coordArgs = append(c.coordArgs, "--log-db", logURI, "--lease", coordinatorLease.String())
		if opts.Slots == 2 {
			// Both serve at once, each a slot of its own.
			c.coordArgs = append(c.coordArgs, "--slots", "2")
		}
		args = slices.Clone(c.coordArgs)
		c.incarnation = 1
		second := slices.Clone(c.coordArgs)
		second[slices.Index(second, c.coordAddr)] = c.secondAddr
		second[slices.Index(second, c.coordMetrics)] = secondMetrics
		secondProc = newProc(secondCoordinator, opts.Binary, second, filepath.Join(c.root, "logs", secondCoordinator+".log"), log)
	} else if args, err = c.nextCoordinator(); err != nil {
		return c, err
	}
	c.nodes = append(c.nodes, newProc(nodeName(0), opts.Binary, args, c.logPath(0), log))
	for i := range n {
		args := []string{"participant", "--node-id", strconv.Itoa(i), "--host", c.nodeAddrs[i+1],
			"--coordinator", c.participantCoordinators(i),
			"--log-db", c.servers[i].pg.URI(logDBName), "--data-db", c.dataURIs[i]}
		if opts.Slots == 2 {
			args = append(args, "--slots", "2")
		}
		c.nodes = append(c.nodes, newProc(nodeName(i+1), opts.Binary, append(args, participantFlags...), c.logPath(i+1), log))
	}
	for _, p := range c.nodes {
		go p.supervise()
	}
	if err := c.waitServing(ctx, 2*time.Minute); err != nil {
		return c, err
	}
	if secondProc != nil {
		// Started once the first serves, so that it starts as the standby
		// (or, with two slots, takes the other).
		c.second = secondProc
		go c.second.supervise()
		if opts.Slots == 2 {
			// Slot 1 served, by the second or, should it be slow to start,
			// by the first, which then takes it over itself.
			if err := waitPing(ctx, c.coordAddrs(), api.PingParams{Slot: &secondSlot}, time.Now().Add(2*time.Minute)); err != nil {
				return c, fmt.Errorf("the second slot is not served: %w (see %s's log)", err, secondCoordinator)
			}
		}
	}
	return c, c.learnClusterID(ctx)
}

// secondCoordinator names the second coordinator (Options.Coordinators)
// in fault targets and its log file.
const secondCoordinator = "coordinator-b"

// coordinatorLease is the two coordinators' --lease: the standby takes
// over about this long after the serving one stopped renewing.
const coordinatorLease = 2 * time.Second

// startLogServer starts the server that holds the two coordinators' log
// on port and returns the log database's URI.
func (c *cluster) startLogServer(ctx context.Context, pgOpts func(dir string, port int, name string) embedpg.Options, port int) (string, error) {
	const name = "coordinator-log"
	dir := filepath.Join(c.root, "pg", name)
	if err := cloneDir(c.template, dir); err != nil {
		return "", fmt.Errorf("copy postgres template for the coordinators' log: %w", err)
	}
	pg, err := embedpg.Start(ctx, pgOpts(dir, port, name))
	if err != nil {
		return "", fmt.Errorf("postgres for the coordinators' log: %w", err)
	}
	c.logServer = &server{name: name, pg: pg}
	if err := pg.CreateDatabase(ctx, logDBName); err != nil {
		return "", err
	}
	return pg.URI(logDBName), nil
}

// coordAddrs lists the coordinators' addresses: the first's, and the
// second's when two share a log.
func (c *cluster) coordAddrs() []string {
	if c.secondAddr == "" {
		return []string{c.coordAddr}
	}
	return []string{c.coordAddr, c.secondAddr}
}

// participantCoordinators is participant i's --coordinator: its link to
// the coordinator, and to the second one if there is one.
func (c *cluster) participantCoordinators(i int) string {
	addrs := c.links[2*i+1].Addr()
	if c.secondAddr != "" {
		addrs += "," + c.links[2*c.n+i].Addr()
	}
	return addrs
}

// makeTemplate initialises the PostgreSQL directory every server is copied
// from. Settings made with ALTER SYSTEM travel with the copies, so that the
// coordinator's embedded server, which the node starts with its own
// options, runs with fsync off like the others.
func makeTemplate(ctx context.Context, opts embedpg.Options) error {
	tpl, err := embedpg.Start(ctx, opts)
	if err != nil {
		return fmt.Errorf("postgres template: %w", err)
	}
	err = alterSystem(ctx, tpl.URI("postgres"), opts.Settings)
	if serr := tpl.Stop(); serr != nil {
		err = errors.Join(err, fmt.Errorf("stop postgres template: %w", serr))
	}
	return err
}

func alterSystem(ctx context.Context, uri string, settings map[string]string) error {
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		return fmt.Errorf("connect to postgres template: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER SYSTEM SET %s = %s", pgx.Identifier{k}.Sanitize(), quoteLiteral(settings[k]))); err != nil {
			return fmt.Errorf("postgres template: set %s: %w", k, err)
		}
	}
	return nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// coordinatorStateDir is where coordinator incarnation i keeps its
// embedded PostgreSQL (in pg/ below it).
func (c *cluster) coordinatorStateDir(incarnation int) string {
	return filepath.Join(c.root, "coordinator", strconv.Itoa(incarnation))
}

// nextCoordinator prepares the state directory of the next coordinator
// incarnation, a copy of the template (the node finds an initialised
// server there and skips initdb, and creates its log database itself), and
// returns the coordinator's arguments for it. It does not start anything.
func (c *cluster) nextCoordinator() ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := c.incarnation + 1
	dir := c.coordinatorStateDir(next)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("coordinator state dir: %w", err)
	}
	if err := cloneDir(c.template, filepath.Join(dir, "pg")); err != nil {
		return nil, fmt.Errorf("copy postgres template for coordinator #%d: %w", next, err)
	}
	c.incarnation = next
	return append(slices.Clone(c.coordArgs), "--state-dir", dir), nil
}

// current is the number of the coordinator incarnation that runs now.
func (c *cluster) current() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.incarnation
}

// learnClusterID asks the coordinator for its cluster id and records it as
// the current incarnation's. The id is fixed when the log is created, so a
// replaced coordinator reports a new one.
func (c *cluster) learnClusterID(ctx context.Context) error {
	id, err := pingCluster(ctx, c.coordAddrs())
	if err != nil {
		return fmt.Errorf("ask the coordinator for its cluster id: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.clusterIDs) < c.incarnation {
		c.clusterIDs = append(c.clusterIDs, "")
	}
	c.clusterIDs[c.incarnation-1] = id
	return nil
}

// ClusterIDs lists the cluster id of each coordinator incarnation so far.
func (c *cluster) ClusterIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.clusterIDs)
}

// pingCluster asks the node at addrs (the one of them serving) which
// cluster it belongs to.
func pingCluster(ctx context.Context, addrs []string) (string, error) {
	cl := rpc.NewFailover(addrs, rpc.ClientOptions{DialTimeout: time.Second})
	defer cl.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var r api.PingReply
	if err := cl.Call(cctx, api.MethodPing, struct{}{}, &r); err != nil {
		return "", err
	}
	return r.Cluster, nil
}

// cloneDir copies a stopped PostgreSQL data directory, keeping modes and
// owners (the server user's, when we are root). The server log is left out.
func cloneDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if rel == embedpg.LogFileName {
			return nil
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			if err := os.Mkdir(target, info.Mode().Perm()); err != nil {
				return err
			}
		} else if err := copyFile(path, target, info.Mode().Perm()); err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
			return os.Lchown(target, int(st.Uid), int(st.Gid))
		}
		return nil
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func (c *cluster) logPath(i int) string {
	return filepath.Join(c.root, "logs", nodeName(i)+".log")
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

func createRowsTable(ctx context.Context, uri string) error {
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		return fmt.Errorf("connect to data database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+rowsTable+` (
		key         text PRIMARY KEY,
		incarnation int NOT NULL,
		tx          bigint NOT NULL,
		node        int NOT NULL,
		at          timestamptz NOT NULL DEFAULT now()
	);
	CREATE INDEX IF NOT EXISTS `+rowsTable+`_tx ON `+rowsTable+` (incarnation, tx)`)
	if err != nil {
		return fmt.Errorf("create %s: %w", rowsTable, err)
	}
	return nil
}

// waitServing waits until every node answers a ping on its own address.
func (c *cluster) waitServing(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for i := range c.nodeAddrs {
		if err := c.waitNodeServing(ctx, i, deadline); err != nil {
			return err
		}
	}
	return nil
}

// secondSlot is the slot a ping asks about to learn that the second of
// two slots is served.
var secondSlot = 1

// waitPing waits until the node at one of addrs answers a ping with
// params, up to deadline.
func waitPing(ctx context.Context, addrs []string, params any, deadline time.Time) error {
	cl := rpc.NewFailover(addrs, rpc.ClientOptions{DialTimeout: time.Second})
	defer cl.Close()
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := cl.Call(cctx, api.MethodPing, params, nil)
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case time.Now().After(deadline):
			return fmt.Errorf("no answer at %s: %w", strings.Join(addrs, " or "), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitNodeServing waits until node i answers a ping, up to deadline.
func (c *cluster) waitNodeServing(ctx context.Context, i int, deadline time.Time) error {
	addrs := []string{c.nodeAddrs[i]}
	if i == 0 {
		addrs = c.coordAddrs() // either coordinator
	}
	if err := waitPing(ctx, addrs, struct{}{}, deadline); err != nil {
		if ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("%s does not answer: %v (see %s)", nodeName(i), err, c.logPath(i))
	}
	return nil
}

// restore ends every fault that may be left: links healed, servers up,
// nodes released and resumed.
func (c *cluster) restore(ctx context.Context) error {
	for _, l := range c.links {
		l.Heal()
	}
	var errs []error
	for _, s := range c.servers {
		if s != nil {
			if err := s.Restart(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, p := range c.allProcs() {
		p.Resume()
		p.Release()
	}
	return errors.Join(errs...)
}

// allProcs lists every tpcd process: the nodes, and the second
// coordinator if there is one.
func (c *cluster) allProcs() []*proc {
	if c.second == nil {
		return c.nodes
	}
	return append(slices.Clone(c.nodes), c.second)
}

// stop stops nodes, links and servers, in that order.
func (c *cluster) stop() error {
	errs := []error{c.stopNodes()}
	for _, l := range c.links {
		l.Close()
	}
	for _, s := range append(slices.Clone(c.servers), c.logServer) {
		if s != nil {
			if err := s.pg.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stop postgres of %s: %w", s.name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// stopNodes stops every node process (SIGTERM, then SIGKILL after a
// grace period). Calling it again is fine.
func (c *cluster) stopNodes() error {
	var errs []error
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, p := range c.allProcs() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Stop(15 * time.Second); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// allocPorts picks k free loopback ports below the kernel's ephemeral range.
// A node or server restarted after a fault must get its port back; a port
// from the ephemeral range could meanwhile be the local end of some
// outgoing connection, and the restart would fail to bind it.
func allocPorts(k int) ([]int, error) {
	lo, hi := 20000, ephemeralLow()
	if hi-lo < 1000 {
		lo, hi = 10000, 20000
	}
	seen := map[int]bool{}
	var ports []int
	for attempts := 0; len(ports) < k; attempts++ {
		if attempts > 100*k {
			return nil, fmt.Errorf("could not find %d free ports in %d..%d", k, lo, hi)
		}
		p := lo + rand.IntN(hi-lo)
		if seen[p] {
			continue
		}
		seen[p] = true
		ln, err := net.Listen("tcp", addr(p))
		if err != nil {
			continue
		}
		ln.Close()
		ports = append(ports, p)
	}
	return ports, nil
}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	f, err := os.Open("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 2 {
			if v, err := strconv.Atoi(fields[0]); err == nil {
				return v
			}
		}
	}
	return 32768
}
