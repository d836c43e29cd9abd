package rpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// muxWriteTimeout bounds one write on a multiplexed stream. The stream is
// shared, so no one call's context can bound it; a peer that takes no
// bytes for this long is taken for gone.
const muxWriteTimeout = 30 * time.Second

// muxResult is what a call on a multiplexed stream gets: its reply body,
// or why none will come.
type muxResult struct {
	data []byte
	err  error
}

// muxConn is the client's end of a MuxProtocol stream, shared by the
// calls its pool gives it. A goroutine reads its frames and hands each
// reply to the call of its tag; a writer (muxWriter) sends the calls.
type muxConn struct {
	conn net.Conn
	br   *bufio.Reader
	max  int64
	// probeTimeout is how long a stream found silent may stay so
	// (ClientOptions.PingTimeout).
	probeTimeout time.Duration
	// lastRead is when a frame last arrived (unix nanoseconds), to tell a
	// silent peer from a slow call.
	lastRead atomic.Int64

	w *muxWriter
	// ended is closed when the stream ends, which stops its writer.
	ended chan struct{}

	mu sync.Mutex
	// waiting holds the channel of each call awaiting its reply, by tag.
	waiting map[uint32]chan muxResult
	nextTag uint32
	// err is why the stream ended; once set, no call is taken.
	err error
	// used is when a call last began or ended, for the pool's expiry.
	used time.Time
	// closeIdle is set by Client.Close: the stream closes once its last
	// call ends.
	closeIdle bool
}

func newMuxConn(sc *streamConn, max int64, probeTimeout time.Duration) *muxConn {
	mc := &muxConn{conn: sc.conn, br: sc.br, max: max, probeTimeout: probeTimeout, waiting: map[uint32]chan muxResult{}, used: time.Now(), ended: make(chan struct{})}
	mc.lastRead.Store(time.Now().UnixNano())
	mc.w = newMuxWriter(mc.write, func(_ int, err error) {
		if err != nil {
			mc.fail(fmt.Errorf("write frame: %w", err))
		}
	})
	go mc.readLoop()
	go mc.w.run(mc.ended)
	return mc
}

// readLoop hands each reply to its call until the stream breaks.
func (mc *muxConn) readLoop() {
	for {
		msgs, err := readMuxFrame(mc.br, mc.max)
		var tooLarge errMuxTooLarge
		switch {
		case errors.As(err, &tooLarge):
			mc.lastRead.Store(time.Now().UnixNano())
			mc.deliver(tooLarge.tag, muxResult{err: fmt.Errorf("response of %d bytes exceeds the limit of %d bytes", tooLarge.size, mc.max)})
			continue
		case err != nil:
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: the peer closed the stream", io.ErrUnexpectedEOF)
			}
			mc.fail(fmt.Errorf("read frame: %w", err))
			return
		}
		mc.lastRead.Store(time.Now().UnixNano())
		for _, msg := range msgs {
			switch {
			case msg.cancel:
				mc.fail(errors.New("read frame: the server sent a cancel message"))
				return
			case int64(len(msg.body)) > mc.max:
				mc.deliver(msg.tag, muxResult{err: fmt.Errorf("response of %d bytes exceeds the limit of %d bytes", len(msg.body), mc.max)})
			default:
				mc.deliver(msg.tag, muxResult{data: msg.body})
			}
		}
	}
}

// deliver hands a reply to the call of tag, if it still waits.
func (mc *muxConn) deliver(tag uint32, r muxResult) {
	mc.mu.Lock()
	ch := mc.waiting[tag]
	delete(mc.waiting, tag)
	mc.left()
	mc.mu.Unlock()
	if ch != nil {
		ch <- r
	}
}

// left notes that a call left; the caller holds mu. The last call to
// leave a stream Client.Close marked closes it.
func (mc *muxConn) left() {
	mc.used = time.Now()
	if mc.closeIdle && len(mc.waiting) == 0 && mc.err == nil {
		mc.err = ErrClientClosed
		close(mc.ended)
		mc.conn.Close()
	}
}

// fail ends the stream: every call still waiting gets err.
func (mc *muxConn) fail(err error) {
	mc.mu.Lock()
	if mc.err == nil {
		mc.err = err
		close(mc.ended)
	}
	waiting := mc.waiting
	mc.waiting = map[uint32]chan muxResult{}
	mc.mu.Unlock()
	mc.conn.Close()
	for _, ch := range waiting {
		ch <- muxResult{err: err}
	}
}

// register takes a tag for a call and the channel its reply comes on.
func (mc *muxConn) register() (uint32, chan muxResult, error) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if mc.err != nil {
		return 0, nil, mc.err
	}
	for {
		mc.nextTag++
		if _, inUse := mc.waiting[mc.nextTag]; mc.nextTag != 0 && !inUse {
			break
		}
	}
	ch := make(chan muxResult, 1)
	mc.waiting[mc.nextTag] = ch
	mc.used = time.Now()
	return mc.nextTag, ch, nil
}

// forget gives up a call's reply; false means it came already and is on
// its channel.
func (mc *muxConn) forget(tag uint32) bool {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if _, ok := mc.waiting[tag]; !ok {
		return false
	}
	delete(mc.waiting, tag)
	mc.left()
	return true
}

// load is how many calls wait on the stream, whether it can take more,
// and when a call last began or ended on it.
func (mc *muxConn) load() (calls int, usable bool, used time.Time) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	return len(mc.waiting), mc.err == nil, mc.used
}

// write sends one frame: the writer's, which no call's context can
// bound, so it has a deadline of its own.
func (mc *muxConn) write(frame []byte) error {
	mc.conn.SetWriteDeadline(time.Now().Add(muxWriteTimeout))
	_, err := mc.conn.Write(frame)
	return err
}

// errMuxUnsent wraps the error of a call that never left: the stream it
// was given had ended. The call may go on another.
type errMuxUnsent struct{ err error }

func (e errMuxUnsent) Error() string { return e.err.Error() }
func (e errMuxUnsent) Unwrap() error { return e.err }

// call sends body as one message and waits for its reply. An error means
// no reply arrived: the call may or may not have run, except for
// errMuxUnsent. A call whose ctx ends first is cancelled at the server.
// When its deadline passed with nothing at all heard from the stream
// since the call was sent, the stream is probed: the server answers a
// cancel as soon as the call's handler returns, and a stream that stays
// silent for the probe timeout after it is taken for dead and closed, as
// a StreamProtocol stream whose call timed out would be, so that the next
// call dials afresh. The calls still waiting on it fail then; before,
// their own deadlines are theirs.
func (mc *muxConn) call(ctx context.Context, body []byte) ([]byte, error) {
	tag, ch, err := mc.register()
	if err != nil {
		return nil, errMuxUnsent{err}
	}
	sent := time.Now().UnixNano()
	mc.w.send(muxMsg{tag: tag, body: body})
	select {
	case r := <-ch:
		return r.data, r.err
	case <-ctx.Done():
	}
	if !mc.forget(tag) {
		// The reply came as ctx ended: it stands.
		r := <-ch
		return r.data, r.err
	}
	mc.w.send(muxMsg{tag: tag, cancel: true})
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && mc.lastRead.Load() < sent {
		mc.probe(sent)
	}
	return nil, ctx.Err()
}

// probe closes the stream unless a frame arrives within the probe
// timeout; sent is when the call that found it silent was sent.
func (mc *muxConn) probe(sent int64) {
	asked := time.Now().UnixNano()
	time.AfterFunc(mc.probeTimeout, func() {
		if mc.lastRead.Load() < asked {
			mc.fail(fmt.Errorf("nothing heard from the server since a call %v ago", time.Duration(time.Now().UnixNano()-sent).Round(time.Millisecond)))
		}
	})
}

// muxPool holds a client's multiplexed streams: at most max, each shared
// by any number of calls. A call takes the stream with the fewest calls
// waiting, and opens another while all have some and there are fewer than
// max.
type muxPool struct {
	max          int
	probeTimeout time.Duration
	// refused is set once the server refused MuxProtocol (one from before
	// it, met in a rolling upgrade): calls go on StreamProtocol streams.
	refused atomic.Bool

	mu      sync.Mutex
	conns   []*muxConn
	opening int
	// opened is closed, and replaced, whenever an opening ends: calls
	// that found no stream and max of them opening wait on it.
	opened chan struct{}
	closed bool
}

// muxStream returns a stream for one call, opening one when it should;
// refused is the server's answer to an upgrade it refused.
func (c *Client) muxStream(ctx context.Context) (*muxConn, *answer, error) {
	for {
		mc, refused, wait, err := c.tryMuxStream(ctx)
		if wait == nil {
			return mc, refused, err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// tryMuxStream is muxStream's one attempt; it returns a channel to wait
// on, and nothing else, when streams are being opened and none is open.
func (c *Client) tryMuxStream(ctx context.Context) (mc *muxConn, refused *answer, wait <-chan struct{}, err error) {
	p := c.mux
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, nil, nil, ErrClientClosed
	}
	var best *muxConn
	bestLoad := 0
	live := p.conns[:0]
	var stale []*muxConn
	for _, mc := range p.conns {
		calls, usable, used := mc.load()
		if !usable || calls == 0 && time.Since(used) >= keepIdle {
			// Closed before the server's idle timeout could close it
			// under a call just written.
			stale = append(stale, mc)
			continue
		}
		live = append(live, mc)
		if best == nil || calls < bestLoad {
			best, bestLoad = mc, calls
		}
	}
	clear(p.conns[len(live):])
	p.conns = live
	full := len(p.conns)+p.opening >= p.max
	if best != nil && (bestLoad == 0 || full) {
		p.mu.Unlock()
		closeMux(stale)
		return best, nil, nil, nil
	}
	if best == nil && full {
		if p.opened == nil {
			p.opened = make(chan struct{})
		}
		wait = p.opened
		p.mu.Unlock()
		closeMux(stale)
		return nil, nil, wait, nil
	}
	p.opening++
	p.mu.Unlock()
	closeMux(stale)

	sc, refused, err := c.openStreamAs(ctx, MuxProtocol)
	if sc != nil {
		mc = newMuxConn(sc, c.maxBytes, p.probeTimeout)
	}
	p.mu.Lock()
	p.opening--
	if p.opened != nil {
		close(p.opened)
		p.opened = nil
	}
	if mc != nil {
		if p.closed {
			mc.mu.Lock()
			mc.closeIdle = true
			mc.mu.Unlock()
		}
		p.conns = append(p.conns, mc)
	}
	p.mu.Unlock()
	if mc == nil && best != nil {
		// The streams open already will do.
		return best, nil, nil, nil
	}
	return mc, refused, nil, err
}

// errMuxStale ends a stream that idled too long or broke; a call that
// chose it just then goes on another (errMuxUnsent).
var errMuxStale = errors.New("rpc: multiplexed stream closed after idling")

func closeMux(conns []*muxConn) {
	for _, mc := range conns {
		mc.fail(errMuxStale)
	}
}

// muxExchange sends body on a multiplexed stream. ok is false when the
// server does not speak MuxProtocol, and the body was not sent.
func (c *Client) muxExchange(ctx context.Context, body []byte) (ans answer, ok bool, err error) {
	if err := ctx.Err(); err != nil {
		return answer{}, true, err
	}
	mc, refused, err := c.muxStream(ctx)
	switch {
	case err != nil:
		return answer{}, true, err
	case refused != nil && (refused.status == http.StatusMethodNotAllowed || refused.status == http.StatusBadRequest):
		if !c.mux.refused.Swap(true) {
			c.log.Info("rpc: the server does not multiplex batch streams: a stream per call", "addr", c.addr)
		}
		return answer{}, false, nil
	case refused != nil:
		return *refused, true, nil
	}
	data, err := mc.call(ctx, body)
	var unsent errMuxUnsent
	for tries := 1; errors.As(err, &unsent) && tries < 3; tries++ {
		// The stream ended between being chosen and taking the call
		// (the server closed it, or it idled too long): another will do.
		if mc, refused, err = c.muxStream(ctx); err != nil || refused != nil {
			break
		}
		data, err = mc.call(ctx, body)
	}
	switch {
	case err != nil:
		return answer{}, true, ctxOr(ctx, err)
	case refused != nil:
		return *refused, true, nil
	}
	return answer{status: http.StatusOK, data: data}, true, nil
}

// close closes the streams no call waits on; the others close as their
// last call ends.
func (p *muxPool) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, mc := range conns {
		mc.mu.Lock()
		mc.closeIdle = true
		idle := len(mc.waiting) == 0
		mc.mu.Unlock()
		if idle {
			mc.fail(ErrClientClosed)
		}
	}
}
