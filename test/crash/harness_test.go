package crash

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tpcd/tpcd/failpoint"
	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
	"github.com/tpcd/tpcd/internal/testcluster"
	"github.com/tpcd/tpcd/rpc"
)

func TestMain(m *testing.M) { os.Exit(testbin.Main(m, pgtest.Main)) }

// nodeName names the processes of a cluster: "coordinator", "p0", "p1"...
func partName(i int) string { return "p" + strconv.Itoa(i) }

const coordName = "coordinator"

// proc is one tpcd process. Its output goes to a file, shown when the test
// fails; a restart appends to the same file.
type proc struct {
	name string
	// port is held by the test for the node: every start serves on it,
	// so a restart finds it as the last run left it.
	port    *testbin.Port
	addr    string
	args    []string
	logPath string

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	state *os.ProcessState
	died  time.Time
}

func (p *proc) start(t *testing.T, env ...string) {
	t.Helper()
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "=== start %s %s\n", strings.Join(env, " "), strings.Join(p.args, " "))
	cmd := testbin.Command(testbin.Binary(t), []*testbin.Port{p.port}, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	// A failpoint left in the test's own environment must not arm every
	// node; only env arms one.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, failpoint.EnvVar+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.state = cmd, done, nil
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.state = cmd.ProcessState
		p.mu.Unlock()
		if err != nil && cmd.ProcessState == nil {
			t.Errorf("wait for %s: %v", p.name, err)
		}
		close(done)
	}()
}

// exited waits for the process to end by itself and returns how it ended.
func (p *proc) exited(t *testing.T, within time.Duration) *os.ProcessState {
	t.Helper()
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
	case <-time.After(within):
		t.Fatalf("%s still runs after %s", p.name, within)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// stop ends the process with SIGTERM (SIGKILL if it hangs) and waits.
func (p *proc) stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// running reports whether the process is alive.
func (p *proc) running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// kill ends the process with SIGKILL and waits for it.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	p.exited(t, 30*time.Second)
	p.mu.Lock()
	p.died = time.Now()
	p.mu.Unlock()
}

// freeze stops the process with SIGSTOP: it keeps its connections and
// ports, and answers nothing, as a node stalled by its host does. The test
// thaws it when it ends, whatever happens.
func (p *proc) freeze(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("freeze %s: %v", p.name, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGCONT) })
}

// thaw lets a frozen process run on (SIGCONT).
func (p *proc) thaw(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("thaw %s: %v", p.name, err)
	}
}

// diedAt is when kill last ended the process.
func (p *proc) diedAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.died
}

func (p *proc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// cluster is a coordinator and its participants as processes.
type cluster struct {
	t     *testing.T
	coord *proc
	parts []*proc
	// data and logs are pools on the participants' data and log
	// databases, for checks.
	data, logs []*pgxpool.Pool
	// coordLog is a pool on the coordinator's log database.
	coordLog *pgxpool.Pool
	// status asks the coordinator where transactions stand.
	status *rpc.Client
}

// clusterSpec says where the nodes' databases are. Empty URIs get a fresh
// database on the test binary's shared server.
type clusterSpec struct {
	participants int
	coordLog     string
	partLog      map[int]string
	partData     map[int]string
	// lazyPrepared runs the participants with --lazy-prepared.
	lazyPrepared bool
	// protocol is the coordinator's --protocol ("": its default).
	protocol string
}

// Flags that keep recovery quick: a vote is awaited 2s, an abandoned
// transaction is rolled back after 3s at the coordinator and 4s at a
// participant, and a lock wait gives up after 1s.
var (
	coordFlags = []string{"--timeout", "2", "--exec-timeout", "5", "--idle-timeout", "3"}
	partFlags  = []string{"--idle-timeout", "4", "--lock-timeout", "1", "--max-conns", "20"}
)

func newCluster(t *testing.T, spec clusterSpec) *cluster {
	t.Helper()
	dir := t.TempDir()
	c := &cluster{t: t}
	coordPort, partPorts := testbin.HoldPort(t), testbin.HoldPorts(t, spec.participants)
	coordAddr, partAddrs := coordPort.Addr, testbin.Addrs(partPorts)
	coordLog := spec.coordLog
	if coordLog == "" {
		coordLog = pgtest.NewDB(t)
	}
	c.coordLog = openPool(t, coordLog)
	args := []string{"coordinator", "--host", coordAddr, "--log-db", coordLog}
	for _, a := range partAddrs {
		args = append(args, "--participant", a)
	}
	args = append(args, coordFlags...)
	if spec.protocol != "" {
		args = append(args, "--protocol", spec.protocol)
	}
	c.coord = &proc{name: coordName, port: coordPort, addr: coordAddr, args: args, logPath: filepath.Join(dir, coordName+".log")}
	for i, addr := range partAddrs {
		data := spec.partData[i]
		if data == "" {
			data = pgtest.NewDB(t)
		}
		c.data = append(c.data, openPool(t, data))
		createTable(t, data)
		log := spec.partLog[i]
		if log == "" {
			log = pgtest.NewDB(t)
		}
		c.logs = append(c.logs, openPool(t, log))
		args := []string{"participant", "--node-id", strconv.Itoa(i), "--host", addr, "--coordinator", coordAddr,
			"--log-db", log, "--data-db", data}
		args = append(args, partFlags...)
		if spec.lazyPrepared {
			args = append(args, "--lazy-prepared")
		} else {
			args = append(args, "--no-lazy-prepared")
		}
		c.parts = append(c.parts, &proc{name: partName(i), port: partPorts[i], addr: addr, args: args, logPath: filepath.Join(dir, partName(i)+".log")})
	}
	c.status = rpc.NewClient(coordAddr, rpc.ClientOptions{})
	t.Cleanup(func() {
		c.status.Close()
		// Processes stop before the databases are dropped (cleanups run
		// last-registered first).
		var wg sync.WaitGroup
		for _, p := range c.procs() {
			wg.Go(p.stop)
		}
		wg.Wait()
		if t.Failed() {
			for _, p := range c.procs() {
				t.Logf("----- %s log -----\n%s", p.name, tail(p.log(), 120))
			}
		}
	})
	return c
}

func (c *cluster) procs() []*proc { return append([]*proc{c.coord}, c.parts...) }

// proc finds a process by name.
func (c *cluster) proc(name string) *proc {
	for _, p := range c.procs() {
		if p.name == name {
			return p
		}
	}
	c.t.Fatalf("no process %s", name)
	return nil
}

// start starts every process, arming failpoints in the one named armed.
func (c *cluster) start(armed, failpoints string) {
	c.t.Helper()
	for _, p := range c.procs() {
		var env []string
		if p.name == armed {
			env = []string{failpoint.EnvVar + "=" + failpoints}
		}
		p.start(c.t, env...)
	}
	for _, p := range c.procs() {
		c.waitReady(p)
	}
}

// restart starts a process that died again, with no failpoint armed.
func (c *cluster) restart(p *proc) {
	c.t.Helper()
	p.start(c.t)
	c.waitReady(p)
}

// waitReady waits for p to answer a ping, failing the test if it exits
// first.
func (c *cluster) waitReady(p *proc) {
	c.t.Helper()
	testcluster.WaitServing(c.t, p.addr, time.Minute, func() (string, bool) {
		p.mu.Lock()
		done := p.done
		p.mu.Unlock()
		select {
		case <-done:
			return fmt.Sprintf("%s exited while starting:\n%s", p.name, tail(p.log(), 40)), true
		default:
			return "", false
		}
	})
}

// violations returns the lines of every process log that report an
// atomicity violation.
func (c *cluster) violations() []string {
	var out []string
	for _, p := range c.procs() {
		for line := range strings.SplitSeq(p.log(), "\n") {
			if strings.Contains(line, "ATOMICITY VIOLATION") || strings.Contains(line, "violation recorded") {
				out = append(out, p.name+": "+line)
			}
		}
	}
	return out
}

func openPool(t *testing.T, uri string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(uri)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func createTable(t *testing.T, uri string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE kv (k int PRIMARY KEY, v text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
}

func tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > lines {
		all = append([]string{fmt.Sprintf("[%d earlier lines]", len(all)-lines)}, all[len(all)-lines:]...)
	}
	return strings.Join(all, "\n")
}

// killedBySIGKILL reports whether a process state is a death by SIGKILL.
func killedBySIGKILL(st *os.ProcessState) bool {
	ws, ok := st.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

var errStop = errors.New("workload stopped")
