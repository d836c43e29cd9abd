package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tpcd/tpcd/activation"
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

	servers []*server // 0: coordinator's log; i+1: participant i
	links   []*Link   // 2i: coordinator->participant-i, 2i+1: participant-i->coordinator
	nodes   []*proc   // 0: coordinator; i+1: participant i

	coordAddr string               // the coordinator's own address (clients connect here)
	nodeAddrs []string             // every node's own address, in nodes order
	sockets   []*activation.Socket // every node's held port, in nodes order
	dataURIs  []string             // participant i's data database
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
	c := &cluster{root: root, n: n, log: log}
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
	// initdb dominates the set-up time and is mostly waiting: run it once
	// and give every server a copy.
	template := filepath.Join(root, "pg", "template")
	pgOpts := func(dir string, name string) embedpg.Options {
		return embedpg.Options{
			Dir:    dir,
			BinDir: opts.PGBin,
			// On its unix socket alone: a server killed by a fault gets
			// no TCP port to lose before its restart.
			UnixSocketOnly: true,
			// fsync=off keeps everything a killed server wrote (the kernel
			// has it); only an OS crash would lose data, and the harness
			// does not simulate one.
			Settings: map[string]string{"fsync": "off", "full_page_writes": "off"},
			Logger:   log.With("pg", name),
		}
	}
	tpl, err := embedpg.Start(ctx, pgOpts(template, "template"))
	if err != nil {
		return c, fmt.Errorf("postgres template: %w", err)
	}
	if err := tpl.Stop(); err != nil {
		return c, fmt.Errorf("stop postgres template: %w", err)
	}
	c.servers = make([]*server, n+1)
	errs := make([]error, n+1)
	var wg sync.WaitGroup
	for i := range n + 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := nodeName(i)
			dir := filepath.Join(root, "pg", name)
			if err := cloneDir(template, dir); err != nil {
				errs[i] = fmt.Errorf("copy postgres template for %s: %w", name, err)
				return
			}
			pg, err := embedpg.Start(ctx, pgOpts(dir, name))
			if err != nil {
				errs[i] = fmt.Errorf("postgres for %s: %w", name, err)
				return
			}
			c.servers[i] = &server{name: name, pg: pg}
			dbs := []string{logDBName}
			if i > 0 {
				dbs = append(dbs, dataDBName)
			}
			for _, db := range dbs {
				if err := pg.CreateDatabase(ctx, db); err != nil {
					errs[i] = err
					return
				}
			}
			if i > 0 {
				errs[i] = createRowsTable(ctx, pg.URI(dataDBName))
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	if err := os.RemoveAll(template); err != nil {
		return c, err
	}
	for i := 1; i <= n; i++ {
		c.dataURIs = append(c.dataURIs, c.servers[i].pg.URI(dataDBName))
	}

	// Each node's port is a socket the kernel picked and the harness holds
	// for the whole run, passed to every start of the node: a node killed
	// by a fault finds its port as it left it.
	for range n + 1 {
		sock, err := activation.Hold("127.0.0.1:0")
		if err != nil {
			return c, fmt.Errorf("hold a node's port: %w", err)
		}
		c.sockets = append(c.sockets, sock)
		c.nodeAddrs = append(c.nodeAddrs, sock.Addr)
	}
	c.coordAddr = c.nodeAddrs[0]
	for i := range n {
		for _, l := range []struct{ name, target string }{
			{fmt.Sprintf("coordinator->participant-%d", i), c.nodeAddrs[i+1]},
			{fmt.Sprintf("participant-%d->coordinator", i), c.coordAddr},
		} {
			link, err := NewLink(l.name, "127.0.0.1:0", l.target, log)
			if err != nil {
				return c, err
			}
			c.links = append(c.links, link)
		}
	}

	args := []string{"coordinator", "--host", c.coordAddr, "--log-db", c.servers[0].pg.URI(logDBName)}
	for i := range n {
		args = append(args, "--participant", c.links[2*i].Addr())
	}
	c.nodes = append(c.nodes, newProc(nodeName(0), opts.Binary, append(args, coordinatorFlags...), c.logPath(0), log, c.sockets[0].File()))
	for i := range n {
		args := []string{"participant", "--node-id", strconv.Itoa(i), "--host", c.nodeAddrs[i+1],
			"--coordinator", c.links[2*i+1].Addr(),
			"--log-db", c.servers[i+1].pg.URI(logDBName), "--data-db", c.dataURIs[i]}
		c.nodes = append(c.nodes, newProc(nodeName(i+1), opts.Binary, append(args, participantFlags...), c.logPath(i+1), log, c.sockets[i+1].File()))
	}
	for _, p := range c.nodes {
		go p.supervise()
	}
	return c, c.waitServing(ctx, 2*time.Minute)
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

func createRowsTable(ctx context.Context, uri string) error {
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		return fmt.Errorf("connect to data database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+rowsTable+` (
		key  text PRIMARY KEY,
		tx   bigint NOT NULL,
		node int NOT NULL,
		at   timestamptz NOT NULL DEFAULT now()
	);
	CREATE INDEX IF NOT EXISTS `+rowsTable+`_tx ON `+rowsTable+` (tx)`)
	if err != nil {
		return fmt.Errorf("create %s: %w", rowsTable, err)
	}
	return nil
}

// waitServing waits until every node answers a ping on its own address.
func (c *cluster) waitServing(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for i, a := range c.nodeAddrs {
		cl := rpc.NewClient(a, rpc.ClientOptions{DialTimeout: time.Second})
		for {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			err := cl.Call(cctx, api.MethodPing, struct{}{}, nil)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				cl.Close()
				return ctx.Err()
			}
			if time.Now().After(deadline) {
				cl.Close()
				return fmt.Errorf("%s does not answer at %s after %v: %v (see %s)", nodeName(i), a, limit, err, c.logPath(i))
			}
			time.Sleep(100 * time.Millisecond)
		}
		cl.Close()
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
	for _, p := range c.nodes {
		p.Resume()
		p.Release()
	}
	return errors.Join(errs...)
}

// stop stops nodes, links and servers, in that order.
func (c *cluster) stop() error {
	errs := []error{c.stopNodes()}
	for _, l := range c.links {
		l.Close()
	}
	for _, sock := range c.sockets {
		sock.Close()
	}
	for _, s := range c.servers {
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
	for _, p := range c.nodes {
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
