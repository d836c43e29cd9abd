package bench

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Busy processes under the names tpcd and postgres (shells by those
// names): a node's tpcd process counts, and a postgres process when it is
// a server of this process or of a node, or a child of one; another tpcd
// process, or a postgres process started by something else, is another
// cluster's and does not count.
func TestProcSnapshotCountsInvolvedProcesses(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	for _, name := range []string{"tpcd", "postgres"} {
		if err := os.Symlink(sh, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	tpcd, postgres := filepath.Join(dir, "tpcd"), filepath.Join(dir, "postgres")
	const spin = "while :; do :; done"
	start := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(name, args...)
		// Its own process group, so that the cleanup ends its children
		// too.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
		return cmd
	}
	// A server of this process, with a busy child (a backend).
	ownServer := start(postgres, "-c", postgres+" -c '"+spin+"' & wait")
	// A node: a tpcd process, busy itself, whose server is busy.
	node := start(tpcd, "-c", postgres+" -c '"+spin+"' & "+spin)
	// Another cluster's server, started by a plain shell, and another
	// cluster's node.
	other := start(sh, "-c", postgres+" -c '"+spin+"' & wait")
	otherNode := start(tpcd, "-c", spin)

	// children are parent's children that run postgres: a child forked
	// but not yet executing it still bears its parent's name.
	children := func(parent int) []int {
		var pids []int
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if comm, p, err := readProcStat(pid); err == nil && p.ppid == parent && comm == "postgres" {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	var ownBackend, nodeServer, otherServer []int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ownBackend, nodeServer, otherServer = children(ownServer.Process.Pid), children(node.Process.Pid), children(other.Process.Pid)
		if len(ownBackend) > 0 && len(nodeServer) > 0 && len(otherServer) > 0 {
			break
		}
	}
	if len(ownBackend) != 1 || len(nodeServer) != 1 || len(otherServer) != 1 {
		t.Fatalf("children: %v of the own server, %v of the node, %v of the other shell", ownBackend, nodeServer, otherServer)
	}

	_, nodeStat, err := readProcStat(node.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	scope := procScope{self: os.Getpid(), nodes: map[int]uint64{node.Process.Pid: nodeStat.started}}
	before, err := scope.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for pid, kind := range map[int]procKind{ownServer.Process.Pid: procPostgres, ownBackend[0]: procPostgres, node.Process.Pid: procTPCD, nodeServer[0]: procPostgres} {
		if p, ok := before[pid]; !ok || p.kind != kind {
			t.Errorf("pid %d not counted as kind %d: %+v", pid, kind, p)
		}
	}
	if _, ok := before[otherServer[0]]; ok {
		t.Errorf("another cluster's postgres process (pid %d) is counted", otherServer[0])
	}
	if _, ok := before[otherNode.Process.Pid]; ok {
		t.Errorf("another cluster's tpcd process (pid %d) is counted", otherNode.Process.Pid)
	}
	if _, ok := before[os.Getpid()]; ok {
		t.Error("this process is in the snapshot; getrusage counts it")
	}
	// Named as a server of the databases bench uses, the other one counts.
	_, otherStat, err := readProcStat(otherServer[0])
	if err != nil {
		t.Fatal(err)
	}
	withOther := procScope{self: os.Getpid(), nodes: scope.nodes, servers: map[int]uint64{otherServer[0]: otherStat.started}}
	if snap, err := withOther.snapshot(); err != nil || snap[otherServer[0]].kind != procPostgres {
		t.Errorf("a server bench was given is not counted: %v", err)
	}

	// The busy processes get some CPU soon even on a busy machine; it
	// must show as their kinds' CPU.
	var got procCPU
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		after, err := scope.snapshot()
		if err != nil {
			t.Fatal(err)
		}
		got = cpuBetween(before, after, clockTicks())
		if got.tpcd >= 50*time.Millisecond && got.postgres >= 100*time.Millisecond {
			break
		}
	}
	if got.tpcd < 50*time.Millisecond || got.postgres < 100*time.Millisecond || got.tpcdProcs != 1 || got.postgresProcs != 3 {
		t.Errorf("busy processes: %+v, want tpcd and postgres CPU of 1 node and 3 postgres processes", got)
	}
}

// listenEnv makes this test binary, run by TestFindNodes under the name
// tpcd, listen on a port, print it and wait.
const listenEnv = "BENCH_TEST_LISTEN"

func TestMain(m *testing.M) {
	if os.Getenv(listenEnv) != "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(l.Addr().String())
		// Until the test kills it.
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A node is found by the address it listens on, and only a tpcd process
// on this machine is.
func TestFindNodes(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "tpcd")
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link)
	cmd.Env = append(os.Environ(), listenEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	addr = strings.TrimSpace(addr)
	_, port, _ := net.SplitHostPort(addr)

	// This process listens too, but is not named tpcd.
	self, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()

	nodes := findNodes([]string{addr, "localhost:" + port, self.Addr().String(), "192.0.2.1:" + port})
	if len(nodes) != 1 {
		t.Fatalf("nodes found: %v, want pid %d alone", nodes, cmd.Process.Pid)
	}
	_, p, err := readProcStat(cmd.Process.Pid)
	if err != nil || nodes[cmd.Process.Pid] != p.started {
		t.Errorf("nodes found: %v, want pid %d started at %d (%v)", nodes, cmd.Process.Pid, p.started, err)
	}
	if nodes := findNodes([]string{"192.0.2.1:" + port}); len(nodes) != 0 {
		t.Errorf("another machine's address matched local processes: %v", nodes)
	}
}
