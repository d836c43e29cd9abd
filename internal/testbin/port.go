package testbin

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tpcd/tpcd/activation"
)

// Port is a loopback port a test holds from start to end and lends to one
// node at a time, in this process (Lend) or in a tpcd process (Command,
// which passes the socket by socket activation). The port is never free
// for another program to take: not between choosing it and a node's start,
// nor while a node is down between a kill and its restart. A connection
// made while no node serves waits in the socket's queue for the next one.
type Port struct {
	Addr string
	sock *activation.Socket

	mu   sync.Mutex
	lent *lentListener
}

// HoldPort takes a port the kernel picks on 127.0.0.1 for the test.
func HoldPort(t testing.TB) *Port {
	t.Helper()
	sock, err := activation.Hold("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	return &Port{Addr: sock.Addr, sock: sock}
}

// HoldPorts holds n ports.
func HoldPorts(t testing.TB, n int) []*Port {
	ports := make([]*Port, n)
	for i := range ports {
		ports[i] = HoldPort(t)
	}
	return ports
}

// Addrs are the ports' addresses.
func Addrs(ports []*Port) []string {
	addrs := make([]string, len(ports))
	for i, p := range ports {
		addrs[i] = p.Addr
	}
	return addrs
}

// Lend returns a listener on the port for a node in this process. Closing
// it, as the node does when it stops, stops its Accept without giving up
// the port, which the next Lend lends again.
func (p *Port) Lend() net.Listener {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lent != nil {
		// The last borrower's Accept may still be on its way out.
		p.lent.Close()
		p.lent.accepting.Wait()
	}
	// Clear the deadline that woke that Accept.
	p.sock.Listener().SetDeadline(time.Time{})
	p.lent = &lentListener{port: p}
	return p.lent
}

// lentListener is a node's view of a held port.
type lentListener struct {
	port      *Port
	accepting sync.WaitGroup
	mu        sync.Mutex
	done      bool
}

func (l *lentListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.done {
		l.mu.Unlock()
		return nil, net.ErrClosed
	}
	l.accepting.Add(1)
	l.mu.Unlock()
	c, err := l.port.sock.Listener().Accept()
	l.accepting.Done()
	l.mu.Lock()
	done := l.done
	l.mu.Unlock()
	if done {
		// Accepted as the node stopped: nobody would serve it.
		if c != nil {
			c.Close()
		}
		return nil, net.ErrClosed
	}
	return c, err
}

// Close wakes a waiting Accept and ends this view; the socket stays.
func (l *lentListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return nil
	}
	l.done = true
	return l.port.sock.Listener().SetDeadline(time.Now())
}

func (l *lentListener) Addr() net.Addr { return l.port.sock.Listener().Addr() }

// Command returns a command that runs bin with args, serving on ports:
// they are passed as systemd's socket activation passes them
// (activation.Command), and a tpcd node serves on the one bound to the
// address it is given.
func Command(bin string, ports []*Port, args ...string) *exec.Cmd {
	return CommandContext(context.Background(), bin, ports, args...)
}

// CommandContext is Command for a process killed when ctx is done.
func CommandContext(ctx context.Context, bin string, ports []*Port, args ...string) *exec.Cmd {
	files := make([]*os.File, len(ports))
	for i, p := range ports {
		files[i] = p.sock.File()
	}
	return activation.CommandContext(ctx, bin, files, args...)
}

// Listen listens on a loopback port the kernel picks, until the test ends.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// RefusingAddr is a loopback address where nothing serves and connections
// are refused, for a peer that must be absent. Its port stays the test's
// until the end: the socket is bound but never listens, and without
// SO_REUSEADDR no other socket can bind the port meanwhile.
func RefusingAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind 127.0.0.1:0: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}
