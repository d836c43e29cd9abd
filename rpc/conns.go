package rpc

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Defaults for ServerOptions.MaxConns and MaxConnsPerHost.
const (
	// DefaultMaxConns bounds the connections a server keeps open, batch
	// streams included. Each holds a goroutine and its buffers whether it
	// carries anything or not; before the cap, 5,000 idle streams took a
	// coordinator to 496 MiB and halved its commits.
	DefaultMaxConns = 1024
	// DefaultMaxConnsPerHost bounds those of one remote IP address, so
	// that one caller cannot take the whole budget. A node keeps two
	// streams to each peer; a client keeps one connection or stream per
	// call in flight (64 idle at most in tpcd's client), so 256 leaves
	// room for a busy client and nothing for a flood.
	DefaultMaxConnsPerHost = 256
)

// refusalLogEvery spaces the warnings about refused connections: a flood
// would otherwise write one line per connection.
const refusalLogEvery = 10 * time.Second

// connTracker caps a server's open connections, in total and per remote
// IP. A connection over a cap first makes room by closing an idle one
// (an HTTP connection between requests, a batch stream between frames, or
// one that has not sent anything yet), the longest idle of the same
// address, or for the total cap of the address holding the most; only
// when every candidate is busy is the new one refused. Closing an idle
// connection costs its client a re-dial, refusing a busy one would cost
// a request.
type connTracker struct {
	max, perHost int
	log          *slog.Logger

	mu    sync.Mutex
	conns map[net.Conn]*trackedConn
	hosts map[string]int
	// refused and evicted count since start; lastWarn is when refusals
	// were last logged.
	refused, evicted uint64
	lastWarn         time.Time
	unlogged         uint64
}

// trackedConn is one open connection; conn is the TCP connection under
// any TLS.
type trackedConn struct {
	conn  net.Conn
	host  string
	idle  bool
	since time.Time // when it last became idle
}

func newConnTracker(max, perHost int, log *slog.Logger) *connTracker {
	return &connTracker{max: max, perHost: perHost, log: log, conns: map[net.Conn]*trackedConn{}, hosts: map[string]int{}}
}

// baseConn is the connection under c's TLS, if any: the key the tracker
// knows a connection by, whichever layer reports on it.
func baseConn(c net.Conn) net.Conn {
	if tc, ok := c.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return c
}

// hostOf is the IP address of a "host:port" remote address.
func hostOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// admit registers c, closing an idle connection if that is what it takes
// to stay within the caps; false means there was no room and the caller
// must close c. A connection admitted before is admitted again.
func (t *connTracker) admit(c net.Conn) bool {
	c = baseConn(c)
	host := hostOf(c.RemoteAddr().String())
	now := time.Now()
	t.mu.Lock()
	if _, ok := t.conns[c]; ok {
		t.mu.Unlock()
		return true
	}
	victim, ok := t.makeRoom(host)
	if ok {
		// Idle until it sends something: a connection that never does
		// is the first to go.
		t.conns[c] = &trackedConn{conn: c, host: host, idle: true, since: now}
		t.hosts[host]++
	} else {
		t.refused++
	}
	warn := !ok && now.Sub(t.lastWarn) >= refusalLogEvery
	var count, unlogged uint64
	if !ok {
		t.unlogged++
		if warn {
			t.lastWarn, count, unlogged, t.unlogged = now, uint64(t.hosts[host]), t.unlogged, 0
		}
	}
	total := len(t.conns)
	t.mu.Unlock()
	if victim != nil {
		// Outside the lock: closing a connection wakes its goroutine,
		// which reports back here.
		victim.Close()
	}
	if warn {
		t.log.Warn("rpc: connection refused: connection cap reached and every connection busy",
			"remote", host, "of_this_address", count, "open", total,
			"max_per_address", t.perHost, "max", t.max, "refused_since_last_warning", unlogged)
	}
	return ok
}

// makeRoom closes, if needed, one idle connection so that host may open
// another; it returns that connection (dropped from the tracker, to be
// closed by the caller), and false when the caps leave no room. The
// caller holds mu.
func (t *connTracker) makeRoom(host string) (victim net.Conn, ok bool) {
	var pick *trackedConn
	switch {
	case t.perHost > 0 && t.hosts[host] >= t.perHost:
		pick = t.longestIdle(func(tc *trackedConn) bool { return tc.host == host })
	case t.max > 0 && len(t.conns) >= t.max:
		most := 0
		for tc := range t.idleConns() {
			most = max(most, t.hosts[tc.host])
		}
		pick = t.longestIdle(func(tc *trackedConn) bool { return t.hosts[tc.host] == most })
	default:
		return nil, true
	}
	if pick == nil {
		return nil, false
	}
	t.drop(pick.conn)
	t.evicted++
	return pick.conn, true
}

// idleConns yields the idle connections.
func (t *connTracker) idleConns() func(yield func(*trackedConn) bool) {
	return func(yield func(*trackedConn) bool) {
		for _, tc := range t.conns {
			if tc.idle && !yield(tc) {
				return
			}
		}
	}
}

// longestIdle is the idle connection that keep admits and that has idled
// longest, nil if there is none.
func (t *connTracker) longestIdle(keep func(*trackedConn) bool) *trackedConn {
	var pick *trackedConn
	for tc := range t.idleConns() {
		if keep(tc) && (pick == nil || tc.since.Before(pick.since)) {
			pick = tc
		}
	}
	return pick
}

// drop forgets c; the caller holds mu.
func (t *connTracker) drop(c net.Conn) {
	tc, ok := t.conns[c]
	if !ok {
		return
	}
	delete(t.conns, c)
	if t.hosts[tc.host]--; t.hosts[tc.host] <= 0 {
		delete(t.hosts, tc.host)
	}
}

// forget drops c once it is closed.
func (t *connTracker) forget(c net.Conn) {
	t.mu.Lock()
	t.drop(baseConn(c))
	t.mu.Unlock()
}

// setIdle records whether c is between requests (or frames).
func (t *connTracker) setIdle(c net.Conn, idle bool) {
	t.mu.Lock()
	if tc, ok := t.conns[baseConn(c)]; ok && tc.idle != idle {
		tc.idle = idle
		if idle {
			tc.since = time.Now()
		}
	}
	t.mu.Unlock()
}

// connState follows net/http's view of the connections it serves. A
// hijacked connection (a batch stream) is busy until the stream reports
// that it waits for a frame, and is forgotten when the stream closes it.
func (t *connTracker) connState(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateActive, http.StateHijacked:
		t.setIdle(c, false)
	case http.StateIdle:
		t.setIdle(c, true)
	case http.StateClosed:
		t.forget(c)
	}
}

// counts reports the connections open, and those of host.
func (t *connTracker) counts(host string) (open, ofHost int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns), t.hosts[host]
}

// limitListener admits each accepted connection to a connTracker and
// closes those it refuses, so a server never holds more than the caps.
type limitListener struct {
	net.Listener
	t *connTracker
}

// Accept returns the next connection admitted.
func (l limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.t.admit(c) {
			return c, nil
		}
		c.Close()
	}
}
