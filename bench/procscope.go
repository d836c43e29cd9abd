package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Which processes are involved is not a matter of names: a shared machine
// runs other clusters' nodes and servers too, and their CPU divided by
// this measurement's commits would favour whichever mode commits more. A
// tpcd process counts when it listens on the address of one of the
// cluster's nodes (found through /proc/net/tcp and its sockets). A
// PostgreSQL server counts when its postmaster is a child of this process
// (the cluster bench starts) or of a counted node (its embedded server),
// or serves one of the databases bench was given (found by asking it for
// a backend's pid); its processes are the postmaster and its children.

// procScope says which processes a snapshot takes. Pids come with their
// start times, so that a later process on a reused pid is not taken for
// them.
type procScope struct {
	// self is this process, whose CPU getrusage measures exactly; it is
	// left out.
	self int
	// nodes are the cluster's tpcd processes on this machine but this one
	// (see findNodes).
	nodes map[int]uint64
	// servers are the postmasters of the databases bench was given (see
	// findServers).
	servers map[int]uint64
}

// snapshot reads /proc/PID/stat of every process and keeps the nodes and
// the processes of the servers in scope. A process that ends while the
// directory is read is simply not there.
func (s procScope) snapshot() (procSnapshot, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	named := procSnapshot{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == s.self {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		comm, p, err := parseProcStat(string(b))
		if err != nil {
			continue
		}
		if kind, ok := kindOfCommand(comm); ok {
			p.kind = kind
			named[pid] = p
		}
	}
	isNode := func(pid int, p procTimes) bool {
		started, ok := s.nodes[pid]
		return ok && p.kind == procTPCD && started == p.started
	}
	isServer := func(pid int, p procTimes) bool {
		if p.kind != procPostgres {
			return false
		}
		if started, ok := s.servers[pid]; ok && started == p.started {
			return true
		}
		parent, ok := named[p.ppid]
		return p.ppid == s.self || ok && isNode(p.ppid, parent)
	}
	snap := procSnapshot{}
	for pid, p := range named {
		parent, ok := named[p.ppid]
		if isNode(pid, p) || isServer(pid, p) || ok && isServer(p.ppid, parent) {
			p.switches = threadSwitches(pid)
			snap[pid] = p
		}
	}
	return snap, nil
}

// findNodes finds the tpcd processes on this machine that listen on one of
// addrs (the nodes' HOST:PORTs): the sockets listening on those ports
// (/proc/net/tcp and tcp6), then the processes that hold one of them. An
// address whose host is not this machine's is left out; so is a process
// whose sockets cannot be read (another user's, without privileges).
func findNodes(addrs []string) map[int]uint64 {
	ports := map[uint16]bool{}
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil || !isLocalHost(host) {
			continue
		}
		if p, err := strconv.ParseUint(port, 10, 16); err == nil {
			ports[uint16(p)] = true
		}
	}
	sockets := map[string]bool{} // "socket:[INODE]", as /proc/PID/fd links read
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		for inode := range listeningInodes(table, ports) {
			sockets["socket:["+inode+"]"] = true
		}
	}
	nodes := map[int]uint64{}
	if len(sockets) == 0 {
		return nodes
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nodes
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, p, err := readProcStat(pid)
		if err != nil {
			continue
		}
		if kind, ok := kindOfCommand(comm); !ok || kind != procTPCD {
			continue
		}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if err == nil && sockets[link] {
				nodes[pid] = p.started
				break
			}
		}
	}
	return nodes
}

// listeningInodes reads a /proc/net/tcp table and returns the inodes of
// the sockets in state LISTEN on one of ports.
func listeningInodes(table string, ports map[uint16]bool) map[string]bool {
	inodes := map[string]bool{}
	b, err := os.ReadFile(table)
	if err != nil {
		return inodes
	}
	const listen = "0A"
	for _, line := range strings.Split(string(b), "\n")[1:] {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when
		// retrnsmt uid timeout inode ...; the address is HEX_IP:HEX_PORT.
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != listen {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		if port, err := strconv.ParseUint(hexPort, 16, 16); err == nil && ports[uint16(port)] {
			inodes[f[9]] = true
		}
	}
	return inodes
}

// isLocalHost tells whether host names this machine: a loopback name or
// address, or an address of one of its interfaces.
func isLocalHost(host string) bool {
	if host == "" || host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// findServers finds the postmasters of the servers of uris that run on
// this machine: a backend's pid, asked for over a new connection, is a
// child of its postmaster. The backend must have started moments ago here
// too, or the pid is another machine's (or another pid namespace's).
// Servers it cannot reach or find are left out; the report's process
// count shows what was counted.
func findServers(ctx context.Context, uris []string) map[int]uint64 {
	servers := map[int]uint64{}
	for _, uri := range uris {
		if pid, started, ok := findServer(ctx, uri); ok {
			servers[pid] = started
		}
	}
	return servers
}

func findServer(ctx context.Context, uri string) (int, uint64, bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		return 0, 0, false
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return 0, 0, false
	}
	comm, b, err := readProcStat(backend)
	if kind, ok := kindOfCommand(comm); err != nil || !ok || kind != procPostgres {
		return 0, 0, false
	}
	now, err := ticksSinceBoot()
	if err != nil || b.started+10*clockTicks() < now {
		return 0, 0, false
	}
	comm, postmaster, err := readProcStat(b.ppid)
	if kind, ok := kindOfCommand(comm); err != nil || !ok || kind != procPostgres {
		return 0, 0, false
	}
	return b.ppid, postmaster.started, true
}

func readProcStat(pid int) (string, procTimes, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", procTimes{}, err
	}
	return parseProcStat(string(b))
}

// ticksSinceBoot is now on the clock of /proc/PID/stat's start times.
func ticksSinceBoot() (uint64, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, err
	}
	f, _, _ := strings.Cut(string(b), " ")
	up, err := strconv.ParseFloat(f, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/uptime: %w", err)
	}
	return uint64(up * float64(clockTicks())), nil
}
