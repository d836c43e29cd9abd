package rpc

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// StreamProtocol is the HTTP/1.1 Upgrade token of a batch stream: a
// connection that, after "101 Switching Protocols", carries request bodies
// one way and their reply bodies the other, each in a frame (see
// docs/WIRE.md). A frame costs one write and one read at each end where an
// HTTP request costs headers to build and parse and, in Go's client, a hand
// between goroutines for every request; node-to-node batches, many small
// ones per transaction, go this way, and so may a Go caller's calls
// (ClientOptions.Stream).
const StreamProtocol = "tpcd-batch/2"

// streamProtocolV1 is the stream without one-way frames: its length word
// is all length. A server still accepts it from clients written for it.
const streamProtocolV1 = "tpcd-batch/1"

// oneWayFrame, set in a frame's length word on a StreamProtocol stream,
// marks a frame the server answers with nothing: a batch of notifications
// whose sender does not wait (Client.NotifyBatch). It spares a reply
// frame, with its write and its reads at both ends, that its sender
// would only have discarded.
const oneWayFrame = 1 << 31

// frameHeader is a frame's length and the CRC-32C of its body, both big
// endian. The checksum is there because the chaos harness may drop bytes in
// the middle of a connection, which TCP never does: a frame spliced from two
// must not run.
const frameHeader = 8

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// writeFrame sends body as one frame: one vectored write on a TCP
// connection (over TLS, a record each for header and body).
func writeFrame(w io.Writer, body []byte) error {
	return writeFrameWith(w, body, 0)
}

// writeFrameWith is writeFrame with flags (oneWayFrame) in the length word.
func writeFrameWith(w io.Writer, body []byte, flags uint32) error {
	if uint64(len(body)) >= oneWayFrame {
		return fmt.Errorf("frame of %d bytes exceeds the format's 2 GiB", len(body))
	}
	var hdr [frameHeader]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(body))|flags)
	binary.BigEndian.PutUint32(hdr[4:], crc32.Checksum(body, castagnoli))
	bufs := net.Buffers{hdr[:], body}
	_, err := bufs.WriteTo(w)
	return err
}

// errFrameTooLarge reports a frame over the reader's limit, its body still
// unread.
type errFrameTooLarge struct{ size int64 }

func (e errFrameTooLarge) Error() string { return fmt.Sprintf("frame of %d bytes", e.size) }

// past is a deadline long gone: setting it wakes a blocked read or write.
var past = time.Unix(1, 0)

// bindCtx makes ctx's deadline and cancellation apply to conn's reads and
// writes until stop is called; stop reports false when ctx ended first
// (conn may then hold a past deadline).
func bindCtx(ctx context.Context, conn net.Conn) (stop func() bool) {
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	return context.AfterFunc(ctx, func() { conn.SetDeadline(past) })
}

// readFrameHeader reads a frame's header.
func readFrameHeader(r io.Reader) (size uint32, sum uint32, err error) {
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, 0, err
	}
	return binary.BigEndian.Uint32(hdr[:4]), binary.BigEndian.Uint32(hdr[4:]), nil
}

// readFrameBody reads a body of size bytes and checks it against sum.
func readFrameBody(r io.Reader, size, sum uint32) ([]byte, error) {
	body := make([]byte, size)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, errors.New("frame checksum mismatch: the connection lost or changed bytes")
	}
	return body, nil
}

// readFrame reads one frame of at most max bytes.
func readFrame(r io.Reader, max int64) ([]byte, error) {
	size, sum, err := readFrameHeader(r)
	if err != nil {
		return nil, err
	}
	if int64(size) > max {
		return nil, errFrameTooLarge{size: int64(size)}
	}
	return readFrameBody(r, size, sum)
}

// isStreamUpgrade reports whether r asks to switch to a batch stream, of
// any version.
func isStreamUpgrade(r *http.Request) bool {
	up := r.Header.Get("Upgrade")
	return (strings.EqualFold(up, StreamProtocol) || strings.EqualFold(up, streamProtocolV1) || strings.EqualFold(up, MuxProtocol)) && headerHasToken(r.Header, "Connection", "upgrade")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// stream is one server-side batch stream.
type stream struct {
	conn net.Conn
	br   *bufio.Reader
	// busy is set while a frame is being read, run or answered; Shutdown
	// interrupts only streams that are not, so no frame is cut in half.
	busy bool
	// broken is set when the client sent bytes while a frame was being
	// answered, which a client waiting for its reply never does.
	broken bool
	// oneWay: the stream is StreamProtocol's, whose frames may be one-way.
	oneWay bool
}

// watch gives handlers that may wait (any but Inline ones) a context that
// ends when the client goes away, as net/http gives an HTTP request: a
// goroutine reads the connection until stop interrupts it. A client sends
// nothing while it waits for its reply, so anything read ends the stream.
func (st *stream) watch(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	if err := st.conn.SetReadDeadline(time.Time{}); err != nil {
		// A connection without deadlines could not be interrupted: no watch.
		return ctx, cancel
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var b [1]byte
		n, err := st.br.Read(b[:])
		if n > 0 {
			st.broken = true
		}
		if n > 0 || err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			cancel()
		}
	}()
	return ctx, func() {
		// Both directions: a TLS read may be writing (a key update's
		// answer), which a read deadline alone would not interrupt. The
		// reply's write deadline is set afresh.
		st.conn.SetDeadline(past)
		<-done
		cancel()
	}
}

// streams tracks a server's batch streams, which net/http forgets once
// they are hijacked.
type streams struct {
	mu      sync.Mutex
	all     map[*stream]struct{}
	closing bool
	wg      sync.WaitGroup
}

// add registers st; false means the server is shutting down.
func (ss *streams) add(st *stream) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closing {
		return false
	}
	if ss.all == nil {
		ss.all = map[*stream]struct{}{}
	}
	ss.all[st] = struct{}{}
	ss.wg.Add(1)
	return true
}

func (ss *streams) remove(st *stream) {
	ss.mu.Lock()
	delete(ss.all, st)
	ss.mu.Unlock()
	ss.wg.Done()
}

// stopping reports whether Shutdown has begun.
func (ss *streams) stopping() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.closing
}

// idle marks st as waiting for its next frame, for at most timeout; false
// means it must end instead, the server is shutting down. The deadline is
// set under the lock so that shutdown's interruption cannot be overwritten.
func (ss *streams) idle(st *stream, timeout time.Duration) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closing {
		return false
	}
	st.busy = false
	st.conn.SetReadDeadline(time.Now().Add(timeout))
	return true
}

// busy marks st as inside a frame, which it finishes even if shutdown
// begins meanwhile.
func (ss *streams) busy(st *stream) {
	ss.mu.Lock()
	st.busy = true
	ss.mu.Unlock()
}

// stop ends every stream between frames: idle ones now, busy ones once
// their frame is answered. New ones are refused.
func (ss *streams) stop() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.closing = true
	for st := range ss.all {
		if !st.busy {
			// Wakes the read of the next frame's header.
			st.conn.SetReadDeadline(past)
		}
	}
}

// wait waits for the streams stop ended; when ctx ends first, it closes
// them mid-frame.
func (ss *streams) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { ss.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		ss.mu.Lock()
		for st := range ss.all {
			st.conn.Close()
		}
		ss.mu.Unlock()
		// Handlers still running end when the server cancels their
		// context, after this returns.
		return ctx.Err()
	}
}

// serveStream switches an authenticated HTTP/1.1 request to a batch stream
// and answers its frames until the peer closes it, it idles for the
// server's idle timeout, or the server shuts down. Each frame is a request
// body, answered exactly as an HTTP request with that body would be; the
// roles of the token presented with the upgrade apply to every frame.
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request, roles Role, authenticated bool) {
	if r.ProtoMajor != 1 {
		writeError(w, http.StatusBadRequest, Errorf(CodeInvalidRequest, "a %s stream needs HTTP/1.1, not %s", StreamProtocol, r.Proto))
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, Errorf(CodeInvalidRequest, "HTTP method of an upgrade must be GET, not %s", r.Method))
		return
	}
	if s.streams.stopping() {
		// Refused before anything is taken over, so the client knows the
		// batch did not run.
		writeError(w, http.StatusServiceUnavailable, Errorf(CodeUnavailable, "server shutting down"))
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Mounted behind something that cannot hand the connection over
		// (an HTTP/2 server, a wrapping ResponseWriter): nothing ran, and
		// the client says so.
		writeError(w, http.StatusNotImplemented, Errorf(CodeInvalidRequest, "batch streams are not available here: %v", err))
		return
	}
	// A connection that Serve accepted is counted already; one from a
	// caller's server (Handler) is counted from here on.
	if !s.conns.admit(conn) {
		refuseHijacked(conn, http.StatusServiceUnavailable, Errorf(CodeLimit, "too many connections: the server's connection cap is reached and every connection is busy"))
		return
	}
	protocol := StreamProtocol
	switch up := r.Header.Get("Upgrade"); {
	case strings.EqualFold(up, streamProtocolV1):
		protocol = streamProtocolV1
	case strings.EqualFold(up, MuxProtocol):
		protocol = MuxProtocol
	}
	st := &stream{conn: conn, br: brw.Reader, oneWay: protocol == StreamProtocol}
	if !s.streams.add(st) {
		conn.Close()
		s.conns.forget(conn)
		return
	}
	// Closed before it counts as gone, so Shutdown never returns with a
	// stream's connection still open.
	defer func() {
		conn.Close()
		s.conns.forget(conn)
		s.streams.remove(st)
	}()
	// Deadlines net/http set for the upgrade request would cut the stream.
	conn.SetDeadline(time.Time{})
	// Idle from before the peer can know the stream is open: a stream that
	// has sent no frame yet is the first to close when a new connection
	// needs its place, and a peer that opens connections at once must not
	// find it busy only because its goroutine has not reached its first
	// read.
	s.conns.setIdle(conn, true)
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + protocol + "\r\n\r\n")
	if err := brw.Flush(); err != nil {
		return
	}
	s.log.Debug("rpc: batch stream opened", "remote", r.RemoteAddr)
	ctx, cancel := context.WithCancel(WithCaller(s.handlerCtx, Caller{Addr: r.RemoteAddr, Roles: roles, Authenticated: authenticated}))
	defer cancel()
	if protocol == MuxProtocol {
		err = s.serveMux(ctx, st, roles)
	} else {
		err = s.serveFrames(ctx, st, roles)
	}
	s.log.Debug("rpc: batch stream closed", "remote", r.RemoteAddr, "err", err)
}

// refuseHijacked answers an upgrade on a connection already taken from
// net/http with a plain HTTP/1.1 error response, which a stream client
// returns as the server's answer, and closes it.
func refuseHijacked(conn net.Conn, status int, e *Error) {
	body := errorBody(e)
	conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
	conn.Close()
}

func (s *Server) serveFrames(ctx context.Context, st *stream, roles Role) error {
	br := st.br
	for {
		if !s.streams.idle(st, s.http.IdleTimeout) {
			return nil
		}
		// Between frames a stream is idle: the first to close when a
		// new connection needs its place.
		s.conns.setIdle(st.conn, true)
		size, sum, err := readFrameHeader(br)
		if err != nil {
			return err
		}
		s.conns.setIdle(st.conn, false)
		s.streams.busy(st)
		// Also lifts shutdown's interruption if it came after the header.
		st.conn.SetReadDeadline(time.Now().Add(s.http.ReadTimeout))
		// A one-way frame's sender waits for nothing: what would have been
		// its reply, an error included, is dropped, and the stream is not
		// watched while it runs, as the sender may be writing its next.
		oneWay := st.oneWay && size&oneWayFrame != 0
		watch := st.watch
		if oneWay {
			size &^= oneWayFrame
			watch = nil
		}
		var reply []byte
		if int64(size) > s.maxBytes {
			// Skipped rather than cut off, so the peer can split the batch
			// and try again on the same connection, as over HTTP.
			if _, err := io.CopyN(io.Discard, br, int64(size)); err != nil {
				return err
			}
			if oneWay {
				s.droppedOneWayFrame(ctx, size)
				continue
			}
			reply = errorBody(s.tooLarge())
		} else {
			body, err := readFrameBody(br, size, sum)
			if err != nil {
				if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) {
					s.log.Warn("rpc: batch stream broken", "remote", callerAddr(ctx), "err", err)
				}
				return err
			}
			_, reply = s.answer(ctx, roles, body, watch)
			if st.broken {
				return errors.New("the client sent data before its reply")
			}
		}
		if oneWay {
			continue
		}
		st.conn.SetWriteDeadline(time.Now().Add(s.http.WriteTimeout))
		if err := writeFrame(st.conn, reply); err != nil {
			return err
		}
	}
}

// droppedOneWayFrame counts a one-way frame of size bytes skipped for the
// request limit, and warns of it at most every refusalLogEvery, as of
// refused connections: a peer may send many, and nobody else hears.
func (s *Server) droppedOneWayFrame(ctx context.Context, size uint32) {
	n, now := s.droppedOneWay.Add(1), time.Now().UnixNano()
	if last := s.lastDropWarn.Load(); now-last >= int64(refusalLogEvery) && s.lastDropWarn.CompareAndSwap(last, now) {
		s.log.Warn("rpc: one-way frame over the request limit dropped", "remote", callerAddr(ctx), "bytes", size, "limit", s.maxBytes, "dropped_since_start", n)
	}
}

// keepIdle is how long a client keeps an unused stream or HTTP/1.1
// connection. It closes it well before a tpcd server would (its idle
// timeout, 5 min by default), so a request is never written onto a
// connection the server is closing at that moment: its fate would be
// unknown.
const keepIdle = 90 * time.Second

// maxIdle bounds the streams, or HTTP/1.1 connections, a client keeps for
// reuse: enough for a caller's usual concurrency without re-dialling.
const maxIdle = 64

// streamConn is the client's end of a batch stream.
type streamConn struct {
	conn net.Conn
	br   *bufio.Reader
	used time.Time
	// v1: streamProtocolV1, whose every frame gets a reply.
	v1 bool
}

// streamPool holds a client's batch streams. An exchange has a stream to
// itself: concurrent exchanges open a stream each, and a stream whose
// exchange ended cleanly is kept for the next, as an HTTP/1.1 transport
// keeps its connections. A node has one batch in flight per peer (node's
// outbox), so it uses one, and one more for its pings.
type streamPool struct {
	mu sync.Mutex
	// idle are the streams ready for an exchange, oldest first.
	idle   []*streamConn
	closed bool
	// expiry closes streams that idled for keepIdle; armed while any is
	// idle.
	expiry *time.Timer
	dialer *net.Dialer
	// tls, when set, secures every new stream; it offers only HTTP/1.1
	// by ALPN, as HTTP/2 has no upgrade.
	tls *tls.Config
	// v1 is set once the server refused StreamProtocol and took
	// streamProtocolV1 (a server from before one-way frames, as in a
	// rolling upgrade): new streams ask for that at once.
	v1 atomic.Bool
}

// exchange sends body as one frame and returns the reply frame's body. A
// refused upgrade (unauthorized, or a server that serves no streams) is
// returned as the answer it carries, with its HTTP status. An error means
// no answer arrived.
func (c *Client) exchange(ctx context.Context, body []byte) (answer, error) {
	sc, refused, err := c.stream(ctx)
	switch {
	case err != nil:
		return answer{}, err
	case refused != nil:
		return *refused, nil
	}
	data, err := c.roundTrip(ctx, sc, body)
	if err != nil {
		return answer{}, err
	}
	return answer{status: http.StatusOK, data: data}, nil
}

// stream takes an idle stream or opens one; refused is the server's answer
// to an upgrade it refused.
func (c *Client) stream(ctx context.Context) (sc *streamConn, refused *answer, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if sc, err = c.streams.take(); err != nil || sc != nil {
		return sc, nil, err
	}
	return c.openStream(ctx)
}

// roundTrip runs one exchange on sc and gives sc back to the pool, or
// closes it when the exchange did not end cleanly.
func (c *Client) roundTrip(ctx context.Context, sc *streamConn, body []byte) ([]byte, error) {
	data, reusable, err := sc.roundTrip(ctx, body, c.maxBytes)
	if reusable {
		c.streams.put(sc)
	} else {
		sc.conn.Close()
	}
	return data, err
}

// sendOneWay writes body as one one-way frame and returns once it is
// written: the server answers nothing. It returns the server's answer to
// an upgrade it refused; an error means the frame may or may not have gone
// out whole.
func (c *Client) sendOneWay(ctx context.Context, body []byte) (*answer, error) {
	sc, refused, err := c.stream(ctx)
	if err != nil || refused != nil {
		return refused, err
	}
	if sc.v1 {
		// No one-way frames there: the reply is read and dropped.
		_, err := c.roundTrip(ctx, sc, body)
		return nil, err
	}
	stop := bindCtx(ctx, sc.conn)
	err = writeFrameWith(sc.conn, body, oneWayFrame)
	if !stop() || err != nil {
		sc.conn.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, ctxOr(ctx, fmt.Errorf("write frame: %w", err))
	}
	sc.conn.SetDeadline(time.Time{})
	c.streams.put(sc)
	return nil, nil
}

// take returns the most recently used idle stream that is still good, or
// nil when a new one must be opened.
func (sp *streamPool) take() (*streamConn, error) {
	for {
		sc, stale, err := sp.pop()
		// Closed, and checked, outside the lock: a close may write (TLS),
		// the check is a system call.
		closeStreams(stale)
		if err != nil || sc == nil {
			return nil, err
		}
		if sc.br.Buffered() == 0 && !peerClosed(sc.conn) {
			return sc, nil
		}
		sc.conn.Close()
	}
}

// pop takes the most recently used idle stream off the pool, nil when
// there is none; stale are streams that idled too long.
func (sp *streamPool) pop() (sc *streamConn, stale []*streamConn, err error) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.closed {
		return nil, nil, ErrClientClosed
	}
	stale = sp.expired()
	if len(sp.idle) == 0 {
		return nil, stale, nil
	}
	last := len(sp.idle) - 1
	sc = sp.idle[last]
	sp.idle[last] = nil
	sp.idle = sp.idle[:last]
	return sc, stale, nil
}

// put keeps sc for the next exchange, or closes it when the client closed
// or enough streams are idle already.
func (sp *streamPool) put(sc *streamConn) {
	sp.mu.Lock()
	if sp.closed || len(sp.idle) >= maxIdle {
		sp.mu.Unlock()
		sc.conn.Close()
		return
	}
	sc.used = time.Now()
	sp.idle = append(sp.idle, sc)
	if sp.expiry == nil {
		sp.expiry = time.AfterFunc(keepIdle, sp.expire)
	}
	sp.mu.Unlock()
}

// expire closes the streams that idled too long, so that a client gone
// quiet after a burst does not hold its streams until its next call; it
// runs again while any stream is idle.
func (sp *streamPool) expire() {
	sp.mu.Lock()
	stale := sp.expired()
	sp.expiry = nil
	if len(sp.idle) > 0 && !sp.closed {
		sp.expiry = time.AfterFunc(time.Until(sp.idle[0].used.Add(keepIdle)), sp.expire)
	}
	sp.mu.Unlock()
	closeStreams(stale)
}

// expired removes the streams idle longer than keepIdle from the pool
// and returns them; the caller holds mu and closes them after letting go.
func (sp *streamPool) expired() []*streamConn {
	n := 0
	for n < len(sp.idle) && time.Since(sp.idle[n].used) >= keepIdle {
		n++
	}
	if n == 0 {
		return nil
	}
	stale := slices.Clone(sp.idle[:n])
	sp.idle = slices.Delete(sp.idle, 0, n)
	return stale
}

// closeStreams closes connections outside the pool's lock: closing a TLS
// connection writes to it, which may take a while.
func closeStreams(scs []*streamConn) {
	for _, sc := range scs {
		sc.conn.Close()
	}
}

// roundTrip writes one frame and reads the reply. The connection is
// reusable only after a clean exchange, and then has no deadline left, so
// that the next exchange (and peerClosed before it) finds it as it was.
func (sc *streamConn) roundTrip(ctx context.Context, body []byte, max int64) (data []byte, reusable bool, err error) {
	stop := bindCtx(ctx, sc.conn)
	data, err = sc.frameTrip(ctx, body, max)
	if !stop() || err != nil {
		// A ctx that ended just as the reply came may have left a past
		// deadline behind: the reply stands, the connection goes.
		return data, false, err
	}
	sc.conn.SetDeadline(time.Time{})
	return data, true, nil
}

func (sc *streamConn) frameTrip(ctx context.Context, body []byte, max int64) ([]byte, error) {
	if err := writeFrame(sc.conn, body); err != nil {
		return nil, ctxOr(ctx, fmt.Errorf("write frame: %w", err))
	}
	data, err := readFrame(sc.br, max)
	if err != nil {
		var tooLarge errFrameTooLarge
		if errors.As(err, &tooLarge) {
			return nil, fmt.Errorf("response of %d bytes exceeds the limit of %d bytes", tooLarge.size, max)
		}
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: the peer closed the stream", io.ErrUnexpectedEOF)
		}
		return nil, ctxOr(ctx, fmt.Errorf("read frame: %w", err))
	}
	return data, nil
}

// ctxOr prefers ctx's error, the cause, to the deadline error it provoked:
// bindCtx gives the connection ctx's deadline, which may fire a moment
// before the context's own.
func ctxOr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if d, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return err
}

// openStream dials the server and asks it to switch to a batch stream.
// When the server answers the upgrade with anything but 101, that answer
// is returned in refused and the connection is closed. A server that does
// not know StreamProtocol (one from before one-way frames, met in a
// rolling upgrade, answers 405 or 400) is asked again for
// streamProtocolV1, and so are the client's later streams.
func (c *Client) openStream(ctx context.Context) (sc *streamConn, refused *answer, err error) {
	if !c.streams.v1.Load() {
		sc, refused, err = c.openStreamAs(ctx, StreamProtocol)
		if refused == nil || (refused.status != http.StatusMethodNotAllowed && refused.status != http.StatusBadRequest) {
			return sc, refused, err
		}
	}
	sc, refused, err = c.openStreamAs(ctx, streamProtocolV1)
	if sc != nil {
		if !c.streams.v1.Swap(true) {
			c.log.Info("rpc: the server speaks only the first batch stream version: no one-way frames", "addr", c.addr)
		}
		sc.v1 = true
	}
	return sc, refused, err
}

// openStreamAs opens a stream of the given protocol version.
func (c *Client) openStreamAs(ctx context.Context, protocol string) (sc *streamConn, refused *answer, err error) {
	sp := c.streams
	conn, err := c.logDial(sp.dialer)(ctx, "tcp", c.addr)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if sc == nil {
			conn.Close()
		}
	}()
	if sp.tls != nil {
		tc := tls.Client(conn, sp.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, nil, fmt.Errorf("TLS handshake: %w", err)
		}
		conn = tc
	}
	stop := bindCtx(ctx, conn)
	defer stop()
	req, err := http.NewRequest(http.MethodGet, c.url, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", protocol)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if err := req.Write(conn); err != nil {
		return nil, nil, ctxOr(ctx, c.explain(fmt.Errorf("write upgrade request: %w", err)))
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, nil, ctxOr(ctx, c.explain(fmt.Errorf("read upgrade response: %w", err)))
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		data, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1))
		if err != nil {
			return nil, nil, ctxOr(ctx, fmt.Errorf("read upgrade response: %w", err))
		}
		if int64(len(data)) > c.maxBytes {
			return nil, nil, fmt.Errorf("upgrade response exceeds %d bytes", c.maxBytes)
		}
		return nil, &answer{status: resp.StatusCode, statusText: resp.Status, data: data}, nil
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), protocol) {
		return nil, nil, fmt.Errorf("server switched to %q, not %s", resp.Header.Get("Upgrade"), protocol)
	}
	if !stop() {
		return nil, nil, ctx.Err()
	}
	conn.SetDeadline(time.Time{})
	c.log.Debug("rpc: batch stream opened", "addr", c.addr)
	return &streamConn{conn: conn, br: br}, nil, nil
}

// close closes the idle streams; one in an exchange is closed when the
// exchange ends.
func (sp *streamPool) close() {
	sp.mu.Lock()
	sp.closed = true
	idle := sp.idle
	sp.idle = nil
	if sp.expiry != nil {
		sp.expiry.Stop()
		sp.expiry = nil
	}
	sp.mu.Unlock()
	closeStreams(idle)
}
