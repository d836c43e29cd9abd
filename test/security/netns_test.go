package security

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/tpcd/tpcd/internal/pgtest"
	"github.com/tpcd/tpcd/internal/testbin"
)

// netnsIP is the address nodes listen on inside a test's network
// namespace: private, not a loopback address, and reachable only inside
// that namespace (which has no link to anything).
const netnsIP = "10.213.0.1"

var netnsSeq atomic.Int64

// setnsCall is the number of setns(2), which package syscall predates.
var setnsCall = map[string]uintptr{"amd64": 308, "arm64": 268}[runtime.GOARCH]

// netns is a Linux network namespace the test created and removes when it
// ends. A node listening on netnsIP there is, by tpcd's rule (the address
// bound is not loopback), a node other machines could reach, while nothing
// outside the namespace can.
type netns struct {
	name string
}

// newNetns creates the namespace with its loopback device up and netnsIP
// on it. It needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2.
func newNetns(t *testing.T) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating a network namespace needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("creating a network namespace needs ip (iproute2)")
	}
	if setnsCall == 0 {
		t.Skipf("setns(2) has no known number on %s", runtime.GOARCH)
	}
	n := &netns{name: fmt.Sprintf("tpcd-security-%d-%d", os.Getpid(), netnsSeq.Add(1))}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Skipf("ip netns add (no CAP_SYS_ADMIN here?): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.name, err, out)
		}
	})
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", netnsIP + "/32", "dev", "lo"},
	} {
		if out, err := n.command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s in %s: %v: %s", strings.Join(args, " "), n.name, err, out)
		}
	}
	return n
}

// command runs name inside the namespace (ip netns exec execs it, so the
// process is the command itself).
func (n *netns) command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.name, name}, args...)...)
}

// start runs tpcd inside the namespace as a testbin.Proc.
func (n *netns) start(t *testing.T, env []string, args ...string) *testbin.Proc {
	t.Helper()
	return testbin.Start(t, "ip", env, append([]string{"netns", "exec", n.name, testbin.Binary(t)}, args...)...)
}

// addr is a HOST:PORT on netnsIP. Nothing else listens in a new namespace,
// so any port is free.
var netnsPort atomic.Int64

func (n *netns) addr() string {
	return net.JoinHostPort(netnsIP, strconv.Itoa(int(20000+netnsPort.Add(1))))
}

// dial connects from inside the namespace: a goroutine locks its thread,
// moves the thread into the namespace, dials there and moves the thread
// back. A socket stays in the namespace it was made in, so the connection
// works from any thread. The thread must not end: a child process started
// from it with a parent-death signal (the shared test PostgreSQL is one)
// would get that signal; so if it cannot move back, it stays parked.
func (n *netns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type dialed struct {
		conn net.Conn
		err  error
	}
	ch := make(chan dialed, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- dialed{err: err}
			return
		}
		defer home.Close()
		there, err := os.Open("/run/netns/" + n.name)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- dialed{err: err}
			return
		}
		defer there.Close()
		if err := setns(there); err != nil {
			runtime.UnlockOSThread()
			ch <- dialed{err: fmt.Errorf("enter %s: %w", n.name, err)}
			return
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		ch <- dialed{conn, err}
		if err := setns(home); err != nil {
			select {} // a thread in the wrong namespace is never reused
		}
		runtime.UnlockOSThread()
	}()
	d := <-ch
	return d.conn, d.err
}

// setns moves the calling thread into the network namespace of f.
func setns(f *os.File) error {
	if _, _, errno := syscall.RawSyscall(setnsCall, f.Fd(), syscall.CLONE_NEWNET, 0); errno != 0 {
		return errno
	}
	return nil
}

// outsider is a stranger inside the namespace.
func (n *netns) outsider() outsider {
	return outsider{hc: &http.Client{Transport: &http.Transport{DialContext: n.dial, DisableKeepAlives: true}}}
}

// socketURI turns a test database URI into one that reaches the shared
// test PostgreSQL through its unix socket, which a node inside a network
// namespace can use (a socket file belongs to no network namespace).
func socketURI(t *testing.T, uri string) string {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	pg := pgtest.Cluster(t)
	q := u.Query()
	q.Set("host", pg.Dir())
	q.Set("port", strconv.Itoa(pg.Port()))
	u.Host, u.RawQuery = "", q.Encode()
	return u.String()
}
