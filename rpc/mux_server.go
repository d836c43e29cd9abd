package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// muxServer is the server's end of a MuxProtocol stream. Its goroutine
// reads frames and starts a goroutine for each call in them; a writer
// (muxWriter) sends the replies.
type muxServer struct {
	s     *Server
	st    *stream
	roles Role
	// ctx is the stream's: it ends, and with it every call still
	// running, when the client goes away, as a StreamProtocol frame's
	// does (stream.watch).
	ctx   context.Context
	calls sync.WaitGroup

	// Under s.streams.mu, with st.busy: pending counts the calls whose
	// replies are not yet written, reading is set while a frame is read.
	// The stream is idle, to the connection caps and to Shutdown, when
	// neither holds.
	pending int
	reading bool

	w *muxWriter
	// room holds a token for each call running, up to the server's
	// MaxConcurrency.
	room chan struct{}

	mu sync.Mutex
	// running cancels each running call's context, by tag.
	running map[uint32]context.CancelFunc
}

// serveMux answers a MuxProtocol stream until the peer closes it, it
// idles for the server's idle timeout, or the server shuts down; then it
// waits for the calls still running, whose contexts end when the peer is
// gone.
func (s *Server) serveMux(ctx context.Context, st *stream, roles Role) error {
	ctx, cancel := context.WithCancel(ctx)
	m := &muxServer{s: s, st: st, roles: roles, ctx: ctx, running: map[uint32]context.CancelFunc{}, room: make(chan struct{}, cap(s.slots))}
	m.w = newMuxWriter(m.write, m.written)
	done := make(chan struct{})
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		m.w.run(done)
	}()
	err := m.read()
	cancel()
	m.calls.Wait()
	close(done)
	<-wrote
	return err
}

func (m *muxServer) read() error {
	ss, conn := &m.s.streams, m.st.conn
	if !m.settle() {
		return nil
	}
	for {
		size, sum, err := readFrameHeader(m.st.br)
		if err != nil {
			if ss.stopping() {
				return nil
			}
			return err
		}
		// Under the lock that the last reply's idle marking takes too,
		// so that it cannot mark the stream idle after this.
		ss.mu.Lock()
		m.reading, m.st.busy = true, true
		m.s.conns.setIdle(conn, false)
		ss.mu.Unlock()
		// Also lifts shutdown's interruption if it came after the header.
		conn.SetReadDeadline(time.Now().Add(m.s.http.ReadTimeout))
		msgs, err := readMuxBody(m.st.br, size, sum, m.s.maxBytes)
		var tooLarge errMuxTooLarge
		skipped := errors.As(err, &tooLarge)
		if skipped {
			msgs = []muxMsg{{tag: tooLarge.tag}}
		} else if err != nil {
			if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) {
				m.s.log.Warn("rpc: multiplexed stream broken", "remote", callerAddr(m.ctx), "err", err)
			}
			return err
		}
		calls := 0
		for _, msg := range msgs {
			if !msg.cancel {
				calls++
			}
		}
		ss.mu.Lock()
		m.reading = false
		m.pending += calls
		closing := ss.closing
		ss.mu.Unlock()
		for _, msg := range msgs {
			switch {
			case msg.cancel:
				m.cancel(msg.tag)
			case skipped || int64(len(msg.body)) > m.s.maxBytes:
				m.reply(msg.tag, errorBody(m.s.tooLarge()))
			case closing:
				// Answered rather than dropped, so that its caller knows
				// it did not run.
				m.reply(msg.tag, errorBody(Errorf(CodeUnavailable, "server shutting down: the call did not run")))
			default:
				if err := m.start(msg); err != nil {
					return err
				}
			}
		}
		if !m.settle() {
			return nil
		}
	}
}

// settle sets the deadline of the next frame's header after a frame: none
// while calls run, the idle timeout when none do. False means the stream
// must end: it is idle and the server is shutting down.
func (m *muxServer) settle() bool {
	ss := &m.s.streams
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if m.pending > 0 {
		m.st.conn.SetReadDeadline(time.Time{})
		return true
	}
	if ss.closing {
		return false
	}
	m.idle()
	return true
}

// idle marks the stream idle; the caller holds s.streams.mu and has seen
// no call pending and no frame being read.
func (m *muxServer) idle() {
	m.st.busy = false
	if m.s.streams.closing {
		// Wakes the read of the next frame's header.
		m.st.conn.SetReadDeadline(past)
		return
	}
	m.st.conn.SetReadDeadline(time.Now().Add(m.s.http.IdleTimeout))
	m.s.conns.setIdle(m.st.conn, true)
}

// start runs a call on a goroutine of its own, once fewer than the
// server's MaxConcurrency run on the stream: until then the reader reads
// nothing more, so a client's calls beyond that wait in the connection's
// buffers rather than as goroutines holding their bodies. An error ends
// the stream: the tag is a running call's, which a reply could not tell
// apart, or the stream ended while the call waited for room.
func (m *muxServer) start(msg muxMsg) error {
	select {
	case m.room <- struct{}{}:
	case <-m.ctx.Done():
		return m.ctx.Err()
	}
	ctx, cancel := context.WithCancel(m.ctx)
	m.mu.Lock()
	if _, ok := m.running[msg.tag]; ok {
		m.mu.Unlock()
		cancel()
		<-m.room
		return fmt.Errorf("tag %d sent again while its call runs", msg.tag)
	}
	m.running[msg.tag] = cancel
	m.mu.Unlock()
	m.calls.Add(1)
	go func() {
		defer m.calls.Done()
		_, reply := m.s.answer(ctx, m.roles, msg.body, nil)
		m.mu.Lock()
		delete(m.running, msg.tag)
		m.mu.Unlock()
		cancel()
		<-m.room
		m.reply(msg.tag, reply)
	}()
	return nil
}

// cancel ends the context of the call of tag, if it still runs; the call
// is answered as it ends.
func (m *muxServer) cancel(tag uint32) {
	m.mu.Lock()
	cancel := m.running[tag]
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// reply queues a call's reply for the writer.
func (m *muxServer) reply(tag uint32, body []byte) {
	if !m.w.send(muxMsg{tag: tag, body: body}) {
		// A write failed: the stream is ending, and the reply is lost
		// with it.
		m.written(1, nil)
	}
}

// write sends one frame of replies.
func (m *muxServer) write(frame []byte) error {
	m.st.conn.SetWriteDeadline(time.Now().Add(m.s.http.WriteTimeout))
	_, err := m.st.conn.Write(frame)
	return err
}

// written counts n replies as written; the last of them makes the stream
// idle, or ends it when the server is shutting down. After a failed write
// the connection is closed, so the reader fails and ends the stream.
func (m *muxServer) written(n int, err error) {
	if err != nil {
		m.st.conn.Close()
	}
	ss := &m.s.streams
	ss.mu.Lock()
	defer ss.mu.Unlock()
	m.pending -= n
	if m.pending == 0 && !m.reading {
		m.idle()
	}
}

// takeMux takes the messages at the head of *queue that fill one frame:
// as many as fit in muxCoalesce, and at least one.
func takeMux(queue *[]muxMsg) []muxMsg {
	q := *queue
	n, size := 1, muxHeader+len(q[0].body)
	for n < len(q) && size+muxHeader+len(q[n].body) <= muxCoalesce {
		size += muxHeader + len(q[n].body)
		n++
	}
	batch := q[:n:n]
	if n == len(q) {
		*queue = nil
	} else {
		*queue = q[n:]
	}
	return batch
}
