package rpc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tpcd/tpcd/internal/testbin"
)

// countedMux serves m's methods behind a counter of HTTP requests and
// upgrades, and returns the server, the counter and a client sharing at
// most streams multiplexed streams.
func countedMux(t *testing.T, m *testMethods, streams int) (*Server, *countingHandler, *Client) {
	t.Helper()
	srv := NewServer(ServerOptions{Methods: m.methods(), Logger: testLogger(t)})
	counter := &countingHandler{h: srv.Handler()}
	return srv, counter, newStreamClient(t, serveMux(t, counter, srv), ClientOptions{Multiplex: streams})
}

// Many calls at once share at most Multiplex streams, and a call that
// waits holds up no other call's reply.
func TestMuxCallsShareStreams(t *testing.T) {
	m := newTestMethods()
	_, counter, c := countedMux(t, m, 2)
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()

	const blocked = 5
	done := startBlocked(ctx, t, c, m, blocked)
	// With every stream holding a call that waits, 32 callers making
	// 20 calls each all get their replies.
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				var got echoParams
				if err := c.Call(ctx, "echo", echoParams{Count: i*100 + j}, &got); err != nil || got.Count != i*100+j {
					t.Errorf("call %d.%d: %v, %+v", i, j, err, got)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(m.release)
	for range blocked {
		if err := <-done; err != nil {
			t.Fatalf("blocking call: %v", err)
		}
	}
	if u := counter.upgrades.Load(); u < 1 || u > 2 {
		t.Fatalf("%d upgrades, want 1 or 2 (Multiplex 2)", u)
	}
	if r, u := counter.requests.Load(), counter.upgrades.Load(); r != u {
		t.Fatalf("%d HTTP requests besides %d upgrades", r-u, u)
	}
}

// A call whose context ends is cancelled at the server, whose handler sees
// its context end, and the stream serves the calls after it.
func TestMuxCancelledCall(t *testing.T) {
	ended := make(chan error, 1)
	methods := newTestMethods().methods()
	started := make(chan struct{}, 1)
	methods["wait"] = func(ctx context.Context, _ json.RawMessage) (any, error) {
		started <- struct{}{}
		<-ctx.Done()
		ended <- ctx.Err()
		return nil, ctx.Err()
	}
	srv := NewServer(ServerOptions{Methods: methods, Logger: testLogger(t)})
	counter := &countingHandler{h: srv.Handler()}
	c := newStreamClient(t, serveMux(t, counter, srv), ClientOptions{Multiplex: 1, PingTimeout: muxTestProbe})

	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { res <- c.Call(ctx, "wait", nil, nil) }()
	<-started
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v, want context.Canceled", err)
	}
	wantCanceled(t, ended, "the handler of a cancelled call ran on")

	// A deadline that passes with nothing heard probes the stream: the
	// server answers the cancel as the handler returns, and the stream
	// is kept past the probe's timeout. (The call before it makes sure
	// the reply to the first cancel is in, so that nothing comes in after
	// the call is sent but that answer.)
	if err := c.Call(context.Background(), "nothing", nil, nil); err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer dcancel()
	if err := c.Call(dctx, "wait", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call past its deadline: %v, want context.DeadlineExceeded", err)
	}
	<-started
	wantCanceled(t, ended, "the handler of a call past its deadline ran on")
	time.Sleep(3 * muxTestProbe)
	if err := c.Call(context.Background(), "echo", echoParams{Text: "after"}, nil); err != nil {
		t.Fatalf("call after the cancelled ones: %v", err)
	}
	if u := counter.upgrades.Load(); u != 1 {
		t.Fatalf("%d upgrades, want the one stream kept through cancellations", u)
	}
}

// silentServer accepts MuxProtocol upgrades and reads frames, answering
// none: a peer gone quiet. It counts the upgrades.
func silentServer(t *testing.T) (addr string, upgrades *atomic.Int64) {
	t.Helper()
	ln := testbin.Listen(t)
	upgrades = new(atomic.Int64)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { conn.Close() })
			go func() {
				br := bufio.NewReader(conn)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				upgrades.Add(1)
				io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+MuxProtocol+"\r\n\r\n")
				io.Copy(io.Discard, br)
			}()
		}
	}()
	return ln.Addr().String(), upgrades
}

// muxTestProbe is the probe timeout of the tests' clients.
const muxTestProbe = 200 * time.Millisecond

// A call whose deadline passes with nothing heard from the stream since it
// was sent, followed by the probe's silence, takes the stream for dead:
// the next call dials a new one, as after a StreamProtocol call that
// timed out.
func TestMuxSilentPeer(t *testing.T) {
	addr, upgrades := silentServer(t)
	c := newStreamClient(t, addr, ClientOptions{Multiplex: 1, PingTimeout: muxTestProbe})
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := c.Call(ctx, "nothing", nil, nil)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || !IsTransport(err) {
			t.Fatalf("call %d to a silent server: %v, want a transport error from the deadline", i, err)
		}
		if u := upgrades.Load(); u != int64(i+1) {
			t.Fatalf("after call %d: %d upgrades, want %d: a silent stream must not be used again", i, u, i+1)
		}
		waitMuxEnded(t, c)
	}
}

// waitMuxEnded waits until every stream of c has ended.
func waitMuxEnded(t *testing.T, c *Client) {
	t.Helper()
	for deadline := time.Now().Add(batchDeadline); ; time.Sleep(10 * time.Millisecond) {
		c.mux.mu.Lock()
		live := 0
		for _, mc := range c.mux.conns {
			if _, usable, _ := mc.load(); usable {
				live++
			}
		}
		c.mux.mu.Unlock()
		if live == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d multiplexed streams still open", live)
		}
	}
}

// Shutdown lets calls in flight finish and delivers their replies; the
// stream then closes, which the client sees.
func TestMuxShutdownFinishesCalls(t *testing.T) {
	m, srv, addr, _ := serveOwnShutdown(t)
	c := newStreamClient(t, addr, ClientOptions{Multiplex: 1})
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()
	if err := c.Call(ctx, "nothing", nil, nil); err != nil {
		t.Fatal(err)
	}
	res := startBlocked(ctx, t, c, m, 1)
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	// Shutdown waits for the call.
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned with a call running: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(m.release)
	if err := <-res; err != nil {
		t.Fatalf("call running at shutdown: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// Shutdown returned once the stream was gone; the client notices.
	waitMuxEnded(t, c)
}

// A frame read while the server shuts down is answered, call by call, with
// an error that says it did not run.
func TestMuxCallsRefusedWhileStopping(t *testing.T) {
	m, srv, addr, _ := serveOwnShutdown(t)
	conn, br := openRawMux(t, addr)
	if err := writeMuxFrame(conn, muxMsg{tag: 1, body: []byte(`{"jsonrpc":"2.0","id":1,"method":"block"}`)}); err != nil {
		t.Fatal(err)
	}
	<-m.started
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	for !srv.streams.stopping() {
		time.Sleep(time.Millisecond)
	}
	if err := writeMuxFrame(conn, muxMsg{tag: 2, body: []byte(`{"jsonrpc":"2.0","id":2,"method":"nothing"}`)}); err != nil {
		t.Fatal(err)
	}
	msgs, err := readMuxFrame(br, 1<<20)
	if err != nil || len(msgs) != 1 || msgs[0].tag != 2 || !strings.Contains(string(msgs[0].body), "did not run") {
		t.Fatalf("call sent during shutdown: %+v, %v; want tag 2 refused", msgs, err)
	}
	close(m.release)
	msgs, err = readMuxFrame(br, 1<<20)
	if err != nil || len(msgs) != 1 || msgs[0].tag != 1 || !strings.Contains(string(msgs[0].body), "released") {
		t.Fatalf("call running at shutdown: %+v, %v", msgs, err)
	}
	if _, err := readMuxFrame(br, 1<<20); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last reply: %v, want the stream closed", err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// openRawMux upgrades a connection to MuxProtocol by hand.
func openRawMux(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	return openRawUpgrade(t, addr, MuxProtocol)
}

func writeMuxFrame(w io.Writer, msgs ...muxMsg) error {
	buf, err := appendMuxFrame(nil, msgs)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

// The wire: the messages of one frame run at once and are answered by tag,
// in the order they end; a cancel message ends its call, which is still
// answered; a message over the request limit is answered as too large, the
// stream kept; a malformed frame ends the stream.
func TestMuxFrames(t *testing.T) {
	m := newTestMethods()
	_, ln := startServer(t, "", ServerOptions{Methods: m.methods(), MaxRequestBytes: 4096})
	conn, br := openRawMux(t, ln.Addr().String())

	if err := writeMuxFrame(conn,
		muxMsg{tag: 7, body: []byte(`{"jsonrpc":"2.0","id":1,"method":"block"}`)},
		muxMsg{tag: 9, body: []byte(`{"jsonrpc":"2.0","id":1,"method":"echo","params":{"text":"x"}}`)},
		muxMsg{tag: 8, body: []byte(`[{"jsonrpc":"2.0","method":"nothing"}]`)},
	); err != nil {
		t.Fatal(err)
	}
	<-m.started
	got := readMuxReplies(t, br, 2)
	if !strings.Contains(got[9], `"text":"x"`) || got[8] != "" || len(got) != 2 {
		t.Fatalf("replies while tag 7 waits: %v", got)
	}

	if err := writeMuxFrame(conn, muxMsg{tag: 7, cancel: true}); err != nil {
		t.Fatal(err)
	}
	msgs, err := readMuxFrame(br, 1<<20)
	if err != nil || len(msgs) != 1 || msgs[0].tag != 7 || !strings.Contains(string(msgs[0].body), "canceled") {
		t.Fatalf("cancelled call: %+v, %v", msgs, err)
	}

	big := `{"jsonrpc":"2.0","id":3,"method":"echo","params":{"text":"` + strings.Repeat("a", 5000) + `"}}`
	if err := writeMuxFrame(conn, muxMsg{tag: 3, body: []byte(big)}, muxMsg{tag: 4, body: []byte(`{"jsonrpc":"2.0","id":4,"method":"nothing"}`)}); err != nil {
		t.Fatal(err)
	}
	got = readMuxReplies(t, br, 2)
	if !strings.Contains(got[3], fmt.Sprint(CodeInvalidRequest)) || !strings.Contains(got[3], "4096") || !strings.Contains(got[4], `"result":null`) {
		t.Fatalf("a message over the limit beside one within it: %v", got)
	}

	// Tag 0 is no request's.
	if err := writeMuxFrame(conn, muxMsg{tag: 0, body: []byte(`{"jsonrpc":"2.0","id":5,"method":"nothing"}`)}); err != nil {
		t.Fatal(err)
	}
	if msgs, err := readMuxFrame(br, 1<<20); !errors.Is(err, io.EOF) {
		t.Fatalf("after a message of tag 0: %+v, %v; want the stream closed", msgs, err)
	}
}

// readMuxReplies reads frames until n replies came, and returns their
// bodies by tag.
func readMuxReplies(t *testing.T, br *bufio.Reader, n int) map[uint32]string {
	t.Helper()
	got := map[uint32]string{}
	for len(got) < n {
		msgs, err := readMuxFrame(br, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, msg := range msgs {
			got[msg.tag] = string(msg.body)
		}
	}
	return got
}

// refuseMux answers MuxProtocol upgrades as a server from before it does,
// and counts them.
type refuseMux struct {
	h       http.Handler
	refused atomic.Int64
}

func (r *refuseMux) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if strings.EqualFold(req.Header.Get("Upgrade"), MuxProtocol) {
		r.refused.Add(1)
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	r.h.ServeHTTP(w, req)
}

// Against a server that does not multiplex, calls go a stream each, and
// the client asks no more.
func TestMuxFallsBackToStreams(t *testing.T) {
	srv := NewServer(ServerOptions{Methods: newTestMethods().methods(), Logger: testLogger(t)})
	h := &refuseMux{h: srv.Handler()}
	c := newStreamClient(t, serveMux(t, h, srv), ClientOptions{Multiplex: 2})
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()
	for i := range 5 {
		var got echoParams
		if err := c.Call(ctx, "echo", echoParams{Count: i}, &got); err != nil || got.Count != i {
			t.Fatalf("call %d: %v, %+v", i, err, got)
		}
	}
	if n := h.refused.Load(); n != 1 {
		t.Fatalf("%d multiplexed upgrades refused, want the one", n)
	}
}

// Close closes the streams at once when no call waits, and otherwise when
// the last call ends; calls after it fail.
func TestMuxClose(t *testing.T) {
	m := newTestMethods()
	srv, _, c := countedMux(t, m, 1)
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()
	res := make(chan error, 1)
	go func() { res <- c.Call(ctx, "block", nil, nil) }()
	<-m.started
	c.Close()
	if err := c.Call(ctx, "nothing", nil, nil); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("call after Close: %v, want ErrClientClosed", err)
	}
	waitStreams(t, srv, 1)
	close(m.release)
	if err := <-res; err != nil {
		t.Fatalf("call in flight at Close: %v", err)
	}
	waitStreams(t, srv, 0)

	// With no call waiting, Close closes the stream at once.
	idle := newStreamClient(t, c.Addr(), ClientOptions{Multiplex: 1})
	if err := idle.Call(ctx, "nothing", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitStreams(t, srv, 1)
	idle.Close()
	waitStreams(t, srv, 0)
}
