package activation

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
)

// firstFD is the first descriptor the protocol passes (SD_LISTEN_FDS_START).
const firstFD = 3

var (
	once      sync.Once
	mu        sync.Mutex
	inherited []net.Listener
	errSetup  error
)

// take collects the inherited sockets once, and unsets the protocol's
// variables so that processes this one starts (PostgreSQL servers) do not
// take them for their own.
func take() {
	defer func() {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	}()
	pid, err := strconv.Atoi(os.Getenv("LISTEN_PID"))
	if err != nil || pid != os.Getpid() {
		return // not for this process
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n < 0 {
		errSetup = fmt.Errorf("LISTEN_FDS=%q: want the number of sockets passed", os.Getenv("LISTEN_FDS"))
		return
	}
	for fd := firstFD; fd < firstFD+n; fd++ {
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "LISTEN_FD_"+strconv.Itoa(fd))
		ln, err := net.FileListener(f)
		f.Close() // FileListener made its own descriptor
		if err != nil {
			errSetup = errors.Join(errSetup, fmt.Errorf("inherited descriptor %d is no listening socket: %w", fd, err))
			continue
		}
		inherited = append(inherited, ln)
	}
}

// Init takes the inherited sockets over. Call it first thing: until then
// they are not closed on exec and would leak into any process started.
// Listen calls it too.
func Init() error {
	once.Do(take)
	return errSetup
}

// Listen returns the inherited socket bound to addr if there is one (each
// is returned once), else a new listener on addr.
func Listen(network, addr string) (net.Listener, error) {
	once.Do(take)
	if errSetup != nil {
		return nil, errSetup
	}
	want, err := net.ResolveTCPAddr(network, addr)
	if err == nil {
		mu.Lock()
		for i, ln := range inherited {
			have, ok := ln.Addr().(*net.TCPAddr)
			if ok && have.Port == want.Port && have.IP.Equal(want.IP) {
				inherited = append(inherited[:i], inherited[i+1:]...)
				mu.Unlock()
				return ln, nil
			}
		}
		mu.Unlock()
	}
	return net.Listen(network, addr)
}

// Unused lists the addresses of inherited sockets nobody asked for: a
// socket passed for an address the node was not told to serve on.
func Unused() []string {
	once.Do(take)
	mu.Lock()
	defer mu.Unlock()
	var addrs []string
	for _, ln := range inherited {
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// Command returns a command that runs bin with args and passes it sockets
// (listening sockets' files) by this protocol, in order. LISTEN_PID must
// be the new process's own pid, which is known only once it runs: a shell
// sets it and then becomes bin (exec keeps the pid, and signals and the
// exit status are bin's). Without sockets it runs bin directly.
func Command(bin string, sockets []*os.File, args ...string) *exec.Cmd {
	return CommandContext(context.Background(), bin, sockets, args...)
}

// CommandContext is Command for a process killed when ctx is done.
func CommandContext(ctx context.Context, bin string, sockets []*os.File, args ...string) *exec.Cmd {
	if len(sockets) == 0 {
		return exec.CommandContext(ctx, bin, args...)
	}
	script := "LISTEN_PID=$$ LISTEN_FDS=" + strconv.Itoa(len(sockets)) + ` exec "$0" "$@"`
	cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", script, bin}, args...)...)
	cmd.ExtraFiles = sockets
	return cmd
}

// Socket is a listening socket held to be passed to processes (Command),
// one after another: while none runs, connections wait in its queue, and
// no other program can take its port.
type Socket struct {
	Addr string
	ln   *net.TCPListener
	file *os.File
}

// Hold listens on addr (port 0: one the kernel picks).
func Hold(addr string) (*Socket, error) {
	tcpAddr, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, err
	}
	ln, err := net.ListenTCP("tcp", tcpAddr)
	if err != nil {
		return nil, err
	}
	f, err := ln.File()
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket of %s: %w", ln.Addr(), err)
	}
	return &Socket{Addr: ln.Addr().String(), ln: ln, file: f}, nil
}

// File is the socket to pass.
func (s *Socket) File() *os.File { return s.file }

// Listener is the socket as a listener of this process.
func (s *Socket) Listener() *net.TCPListener { return s.ln }

// Close gives the port up.
func (s *Socket) Close() error {
	return errors.Join(s.file.Close(), s.ln.Close())
}
