package chaos

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Link is a TCP proxy that carries one node-to-node link: the node that
// dials (the coordinator, or a participant) connects to the link's address
// and the link connects on to the real peer. Every byte of the link passes
// through it, so the harness can cut, stall, delay or discard the traffic.
//
// tpcd speaks HTTP/2 over one connection per peer, so single messages
// cannot be dropped without corrupting the stream: "losing messages" means
// cutting the connection (everything in flight is lost, the dialler
// reconnects) or discarding bytes for a while and cutting at the end.
type Link struct {
	name   string
	target string
	ln     net.Listener
	log    *slog.Logger

	mu      sync.Mutex
	down    bool          // refuse new connections
	discard bool          // black hole: read and drop every byte
	stalled chan struct{} // non-nil while stalled; closed when it ends
	latency time.Duration
	conns   map[*pconn]struct{}
	closed  bool

	wg sync.WaitGroup
}

// pconn is one proxied connection: a from the dialler, b to the target.
type pconn struct {
	a, b net.Conn
	once sync.Once
	done chan struct{}
}

func (c *pconn) close() {
	c.once.Do(func() {
		close(c.done)
		c.a.Close()
		c.b.Close()
	})
}

// chunk is data read from one side, due for writing to the other at due.
type chunk struct {
	data []byte
	due  time.Time
}

const (
	proxyDialTimeout = 2 * time.Second
	// chunkQueue bounds the data held per direction; a stalled link stops
	// reading once it is full, so the sender feels TCP back-pressure.
	chunkQueue = 256
	chunkSize  = 32 << 10
)

// NewLink listens on listen (HOST:PORT) and forwards every connection to
// target.
func NewLink(name, listen, target string, log *slog.Logger) (*Link, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("link %s: listen on %s: %w", name, listen, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Link{name: name, target: target, ln: ln, log: log, conns: map[*pconn]struct{}{}}
	l.wg.Add(1)
	go l.accept()
	return l, nil
}

// Name says which nodes the link joins, e.g. "coordinator->participant-1".
func (l *Link) Name() string { return l.name }

// Addr is where the dialling node must connect.
func (l *Link) Addr() string { return l.ln.Addr().String() }

func (l *Link) accept() {
	defer l.wg.Done()
	for {
		a, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.log.Warn("link accept failed", "link", l.name, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		l.mu.Lock()
		refuse := l.down || l.closed
		l.mu.Unlock()
		if refuse {
			a.Close()
			continue
		}
		l.wg.Add(1)
		go l.open(a)
	}
}

// open dials the target for an accepted connection and starts pumping. A
// target that is down closes the accepted connection, which the dialler
// sees as the peer being unreachable.
func (l *Link) open(a net.Conn) {
	defer l.wg.Done()
	b, err := net.DialTimeout("tcp", l.target, proxyDialTimeout)
	if err != nil {
		a.Close()
		return
	}
	c := &pconn{a: a, b: b, done: make(chan struct{})}
	l.mu.Lock()
	if l.closed || l.down {
		l.mu.Unlock()
		c.close()
		return
	}
	l.conns[c] = struct{}{}
	l.mu.Unlock()
	var pumps sync.WaitGroup
	pumps.Add(2)
	go func() { defer pumps.Done(); l.pump(c, a, b) }()
	go func() { defer pumps.Done(); l.pump(c, b, a) }()
	pumps.Wait()
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// pump copies src to dst through a queue, so that latency delays every
// chunk by the same amount without limiting throughput, and order is kept.
func (l *Link) pump(c *pconn, src, dst net.Conn) {
	q := make(chan chunk, chunkQueue)
	var writer sync.WaitGroup
	writer.Add(1)
	go func() {
		defer writer.Done()
		for ch := range q {
			if !l.await(c, ch.due) {
				return
			}
			if l.discarding() {
				continue
			}
			if _, err := dst.Write(ch.data); err != nil {
				c.close()
				return
			}
		}
	}()
	defer writer.Wait()
	defer close(q)
	buf := make([]byte, chunkSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			l.mu.Lock()
			drop, lat := l.discard, l.latency
			l.mu.Unlock()
			if !drop {
				data := make([]byte, n)
				copy(data, buf[:n])
				select {
				case q <- chunk{data: data, due: time.Now().Add(lat)}:
				case <-c.done:
					return
				}
			}
		}
		if err != nil {
			c.close()
			return
		}
	}
}

// await waits until due and until the link is not stalled; false means the
// connection was closed meanwhile.
func (l *Link) await(c *pconn, due time.Time) bool {
	if d := time.Until(due); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.done:
			t.Stop()
			return false
		}
	}
	for {
		l.mu.Lock()
		stalled := l.stalled
		l.mu.Unlock()
		if stalled == nil {
			return true
		}
		select {
		case <-stalled:
		case <-c.done:
			return false
		}
	}
}

func (l *Link) discarding() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.discard
}

// Cut closes every live connection of the link: what was in flight is
// lost, and the dialler has to connect again.
func (l *Link) Cut() int {
	l.mu.Lock()
	conns := make([]*pconn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	return len(conns)
}

// Down cuts the link and refuses new connections until Heal: the peer looks
// crashed to the dialler, while it is in fact alive.
func (l *Link) Down() {
	l.mu.Lock()
	l.down = true
	l.mu.Unlock()
	l.Cut()
}

// Blackhole silently discards everything sent either way until Heal, over
// connections that stay open: the dialler only notices by timeouts. Heal
// cuts the connections, whose streams lost bytes.
func (l *Link) Blackhole() {
	l.mu.Lock()
	l.discard = true
	l.mu.Unlock()
}

// Stall stops delivering data until Heal, which delivers all of it: every
// message in flight is delayed by the stall, none is lost.
func (l *Link) Stall() {
	l.mu.Lock()
	if l.stalled == nil {
		l.stalled = make(chan struct{})
	}
	l.mu.Unlock()
}

// Delay adds d of latency to every chunk read from now on, until Heal.
func (l *Link) Delay(d time.Duration) {
	l.mu.Lock()
	l.latency = d
	l.mu.Unlock()
}

// Heal ends every fault of the link.
func (l *Link) Heal() {
	l.mu.Lock()
	wasDiscarding := l.discard
	l.down, l.discard, l.latency = false, false, 0
	if l.stalled != nil {
		close(l.stalled)
		l.stalled = nil
	}
	l.mu.Unlock()
	if wasDiscarding {
		l.Cut()
	}
}

// Close stops the link and closes its connections.
func (l *Link) Close() error {
	l.mu.Lock()
	l.closed = true
	if l.stalled != nil {
		close(l.stalled)
		l.stalled = nil
	}
	l.mu.Unlock()
	err := l.ln.Close()
	l.Cut()
	l.wg.Wait()
	return err
}
