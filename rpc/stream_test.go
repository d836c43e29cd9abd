package rpc

import (
	"bufio"
	"context"
	"encoding/binary"
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

// newStreamClient is a client with opts and Stream set, closed at the end
// of the test.
func newStreamClient(t *testing.T, addr string, opts ClientOptions) *Client {
	t.Helper()
	opts.Stream = true
	return newClientWith(t, addr, opts)
}

// countedStream serves m's methods on a loopback port behind a counter of
// HTTP requests and upgrades, and returns the server, the counter and a
// stream client of the server.
func countedStream(t *testing.T, m *testMethods) (*Server, *countingHandler, *Client) {
	t.Helper()
	srv := NewServer(ServerOptions{Methods: m.methods(), Logger: testLogger(t)})
	counter := &countingHandler{h: srv.Handler()}
	return srv, counter, newStreamClient(t, serveMux(t, counter, srv), ClientOptions{})
}

// serveOwnShutdown serves fresh test methods m on a loopback port, for a
// test that shuts the server srv down itself, and returns them with the
// server's address and c, a stream client of it.
func serveOwnShutdown(t *testing.T) (m *testMethods, srv *Server, addr string, c *Client) {
	t.Helper()
	ln := testbin.Listen(t)
	m = newTestMethods()
	srv = NewServer(ServerOptions{Methods: m.methods(), Logger: testLogger(t)})
	go srv.Serve(ln)
	addr = ln.Addr().String()
	return m, srv, addr, newStreamClient(t, addr, ClientOptions{})
}

// restartServer shuts srv down and serves m's methods again on its address,
// until the end of the test: a node restarting while its clients keep
// their streams.
func restartServer(ctx context.Context, t *testing.T, srv *Server, addr string, m *testMethods) {
	t.Helper()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	startServer(t, addr, ServerOptions{Methods: m.methods()})
}

// Batches over a stream get what they get over HTTP: each call's result or
// error, in one upgrade for any number of batches.
func TestBatchStreamCarriesBatches(t *testing.T) {
	_, counter, c := countedStream(t, newTestMethods())
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()

	for i := range 10 {
		var a, b echoParams
		untouched := echoParams{Text: "untouched"}
		calls := []BatchCall{
			{Method: "echo", Params: echoParams{Text: "a", Count: i}, Result: &a},
			{Method: "no.such.method"},
			{Method: "coded", Params: map[string]int{}, Result: &untouched},
			{Method: "plainerr"},
			{Method: "echo", Params: echoParams{Text: "b", Count: -i}, Result: &b},
		}
		if err := c.CallBatch(ctx, calls); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if calls[0].Err != nil || calls[4].Err != nil || a != (echoParams{Text: "a", Count: i}) || b != (echoParams{Text: "b", Count: -i}) {
			t.Fatalf("batch %d results: %v %v %+v %+v", i, calls[0].Err, calls[4].Err, a, b)
		}
		for j, code := range map[int]int{1: CodeMethodNotFound, 2: CodeTxNotActive, 3: CodeInternal} {
			if !IsCode(calls[j].Err, code) || IsTransport(calls[j].Err) {
				t.Fatalf("batch %d call %d: %v, want code %d", i, j, calls[j].Err, code)
			}
		}
		if untouched.Text != "untouched" {
			t.Fatalf("a failed call wrote its result: %+v", untouched)
		}
	}
	if n, u := counter.requests.Load(), counter.upgrades.Load(); n != 1 || u != 1 {
		t.Fatalf("%d HTTP requests, %d upgrades for 10 batches; want one upgrade and nothing else", n, u)
	}
}

// serveWithTokens serves the test methods and a peer method, tpcd.vote,
// with a client token ("c-secret") and a peer token ("p-secret").
func serveWithTokens(t *testing.T) (*countingHandler, string) {
	t.Helper()
	methods := newTestMethods().methods()
	methods["tpcd.vote"] = func(context.Context, json.RawMessage) (any, error) { return "voted", nil }
	srv := NewServer(ServerOptions{Methods: methods, Auth: Auth{ClientToken: "c-secret", PeerToken: "p-secret"}, Logger: testLogger(t)})
	counter := &countingHandler{h: srv.Handler()}
	return counter, serveMux(t, counter, srv)
}

// A stream authenticates once, with the upgrade: a wrong token is refused
// as a whole, as an HTTP batch is, and the token's roles bound every frame.
func TestBatchStreamAuth(t *testing.T) {
	_, addr := serveWithTokens(t)
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()

	for _, token := range []string{"", "wrong"} {
		c := newStreamClient(t, addr, ClientOptions{Token: token})
		calls := []BatchCall{{Method: "tpcd.vote"}, {Method: "echo", Params: echoParams{}}}
		err := c.CallBatch(ctx, calls)
		if !IsCode(err, CodeUnauthorized) || IsTransport(err) {
			t.Fatalf("token %q: %v, want code %d", token, err, CodeUnauthorized)
		}
		if calls[0].Err != err || calls[1].Err != err {
			t.Fatalf("token %q: calls carry %v, %v, want the batch's error", token, calls[0].Err, calls[1].Err)
		}
	}

	peer := newStreamClient(t, addr, ClientOptions{Token: "p-secret"})
	var voted string
	calls := []BatchCall{{Method: "tpcd.vote", Result: &voted}, {Method: "echo", Params: echoParams{}}}
	if err := peer.CallBatch(ctx, calls); err != nil {
		t.Fatalf("peer token: %v", err)
	}
	if calls[0].Err != nil || voted != "voted" {
		t.Fatalf("peer method with the peer token: %v, %q", calls[0].Err, voted)
	}
	if !IsCode(calls[1].Err, CodeUnauthorized) {
		t.Fatalf("client method with the peer token: %v, want code %d", calls[1].Err, CodeUnauthorized)
	}
}

// A frame over the server's limit is refused as a whole, as an HTTP body
// would be, and the stream goes on: the sender can split the batch.
func TestBatchStreamFrameTooLarge(t *testing.T) {
	_, ln := startServer(t, "", ServerOptions{Methods: newTestMethods().methods(), MaxRequestBytes: 512})
	c := newStreamClient(t, ln.Addr().String(), ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()

	big := strings.Repeat("x", 600)
	calls := []BatchCall{{Method: "echo", Params: echoParams{Text: big}}, {Method: "nothing"}}
	err := c.CallBatch(ctx, calls)
	if !IsCode(err, CodeInvalidRequest) || IsTransport(err) {
		t.Fatalf("oversized frame: %v, want code %d", err, CodeInvalidRequest)
	}
	var got echoParams
	small := []BatchCall{{Method: "echo", Params: echoParams{Text: "small"}, Result: &got}}
	if err := c.CallBatch(ctx, small); err != nil || small[0].Err != nil || got.Text != "small" {
		t.Fatalf("batch after an oversized one: %v, %v, %+v", err, small[0].Err, got)
	}
	if n := ln.accepted.Load(); n != 1 {
		t.Fatalf("%d connections, want 1: the oversized frame must not cost the stream", n)
	}
}

// A client notices a stream its server closed while it sat idle (here: the
// server restarted on the same address) and opens a new one instead of
// losing the next batch on the dead one.
func TestBatchStreamAfterServerRestart(t *testing.T) {
	m, srv, addr, c := serveOwnShutdown(t)
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()
	one := func(text string) error {
		var got echoParams
		calls := []BatchCall{{Method: "echo", Params: echoParams{Text: text}, Result: &got}}
		if err := c.CallBatch(ctx, calls); err != nil {
			return err
		}
		if calls[0].Err != nil || got.Text != text {
			return errors.Join(calls[0].Err, errors.New("wrong echo "+got.Text))
		}
		return nil
	}
	if err := one("before"); err != nil {
		t.Fatalf("before restart: %v", err)
	}
	restartServer(ctx, t, srv, addr, m)
	for i := range 3 {
		if err := one("after"); err != nil {
			t.Fatalf("batch %d after restart: %v", i, err)
		}
	}
}

// Shutdown lets a frame being answered finish and its reply reach the
// client, then ends the stream.
func TestBatchStreamShutdownFinishesFrame(t *testing.T) {
	m, srv, _, c := serveOwnShutdown(t)
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()

	var res string
	calls := []BatchCall{{Method: "block", Result: &res}}
	batch := make(chan error, 1)
	go func() { batch <- c.CallBatch(ctx, calls) }()
	<-m.started
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(ctx) }()
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned (%v) while a frame was being answered", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(m.release)
	if err := <-batch; err != nil || calls[0].Err != nil || res != "released" {
		t.Fatalf("batch answered during shutdown: %v, %v, %q", err, calls[0].Err, res)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// The stream is gone with the server.
	err := c.CallBatch(ctx, []BatchCall{{Method: "nothing"}})
	if !IsTransport(err) {
		t.Fatalf("batch after shutdown: %v, want a transport error", err)
	}
}

// A client whose context ends while a frame is out gives up at once and
// starts a fresh stream for the next batch: the reply of the abandoned one
// must not be taken for the next one's. The server sees the client go and
// cancels the handler's context, as it would an HTTP request's.
func TestBatchStreamContextEnds(t *testing.T) {
	m := newTestMethods()
	methods := m.methods()
	handlerDone := make(chan error, 1)
	methods["wait"] = func(ctx context.Context, _ json.RawMessage) (any, error) {
		m.started <- struct{}{}
		<-ctx.Done()
		handlerDone <- ctx.Err()
		return nil, ctx.Err()
	}
	_, ln := startServer(t, "", ServerOptions{Methods: methods})
	c := newStreamClient(t, ln.Addr().String(), ClientOptions{})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.CallBatch(ctx, []BatchCall{{Method: "wait"}}) }()
	<-m.started
	cancel()
	if err := <-done; !IsTransport(err) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled batch: %v, want context.Canceled as a transport error", err)
	}
	wantCanceled(t, handlerDone, "the handler's context did not end when its client went away")
	var got echoParams
	calls := []BatchCall{{Method: "echo", Params: echoParams{Text: "next"}, Result: &got}}
	if err := c.CallBatch(context.Background(), calls); err != nil || calls[0].Err != nil || got.Text != "next" {
		t.Fatalf("batch after a cancelled one: %v, %v, %+v", err, calls[0].Err, got)
	}
	if n := ln.accepted.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (the abandoned stream is not reused)", n)
	}
}

// A batch's deadline ends with the batch: a stream used under a short
// deadline is still good after the deadline has passed.
func TestBatchStreamOutlivesDeadlines(t *testing.T) {
	_, ln := startServer(t, "", ServerOptions{Methods: newTestMethods().methods()})
	c := newStreamClient(t, ln.Addr().String(), ClientOptions{})
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var got echoParams
		calls := []BatchCall{{Method: "echo", Params: echoParams{Count: i}, Result: &got}}
		err := c.CallBatch(ctx, calls)
		cancel()
		if err != nil || calls[0].Err != nil || got.Count != i {
			t.Fatalf("batch %d: %v, %v, %+v", i, err, calls[0].Err, got)
		}
		time.Sleep(1100 * time.Millisecond)
	}
	if n := ln.accepted.Load(); n != 1 {
		t.Fatalf("%d connections for 3 batches with deadlines long past, want 1", n)
	}
}

// Close while a batch is out: the batch finishes, then the stream is
// closed rather than left open.
func TestBatchStreamCloseDuringBatch(t *testing.T) {
	m, srv, _, c := serveOwnShutdown(t)
	defer srv.Shutdown(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.CallBatch(context.Background(), []BatchCall{{Method: "block"}}) }()
	<-m.started
	c.Close()
	close(m.release)
	if err := <-done; err != nil {
		t.Fatalf("batch during Close: %v", err)
	}
	if err := c.CallBatch(context.Background(), []BatchCall{{Method: "nothing"}}); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("batch after Close: %v, want ErrClientClosed", err)
	}
	waitStreams(t, srv, 0)
}

// waitStreams waits until srv serves n batch streams; it fails the test if
// that has not happened within batchDeadline.
func waitStreams(t *testing.T, srv *Server, n int) {
	t.Helper()
	for deadline := time.Now().Add(batchDeadline); ; time.Sleep(10 * time.Millisecond) {
		srv.streams.mu.Lock()
		have := len(srv.streams.all)
		srv.streams.mu.Unlock()
		if have == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server has %d batch streams, want %d", have, n)
		}
	}
}

// A Shutdown whose ctx ends while a frame is being answered closes the
// stream and cancels the handler; the client sees a transport error.
func TestBatchStreamShutdownTimesOut(t *testing.T) {
	m, srv, _, c := serveOwnShutdown(t)
	done := make(chan error, 1)
	go func() { done <- c.CallBatch(context.Background(), []BatchCall{{Method: "block"}}) }()
	<-m.started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a frame stuck: %v, want context.DeadlineExceeded", err)
	}
	if err := <-done; !IsTransport(err) {
		t.Fatalf("batch cut by shutdown: %v, want a transport error", err)
	}
	waitStreams(t, srv, 0)
}

// Mounted where the connection cannot be taken over, the endpoint answers
// the upgrade with 501 and a JSON-RPC error, which the client returns as
// the server's answer: nothing ran, and nothing is posted instead.
func TestBatchStreamWithoutHijack(t *testing.T) {
	m := newTestMethods()
	srv := NewServer(ServerOptions{Methods: m.methods(), Logger: testLogger(t)})
	endpoint := srv.Handler()
	wrapped := &countingHandler{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		endpoint.ServeHTTP(plainWriter{w}, r)
	})}
	addr := serveMux(t, wrapped, srv)
	c := newStreamClient(t, addr, ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()
	for i := range 2 {
		calls := []BatchCall{{Method: "block"}}
		err := c.CallBatch(ctx, calls)
		if !IsCode(err, CodeInvalidRequest) || IsTransport(err) || !strings.Contains(err.Error(), "not available") {
			t.Fatalf("batch %d: %v, want code %d saying streams are not available", i, err, CodeInvalidRequest)
		}
		if err := c.Call(ctx, "block", nil, nil); !IsCode(err, CodeInvalidRequest) {
			t.Fatalf("call %d: %v, want code %d", i, err, CodeInvalidRequest)
		}
	}
	if n, u := wrapped.requests.Load(), wrapped.upgrades.Load(); n != 4 || u != 4 {
		t.Fatalf("%d HTTP requests, %d upgrades; want 4 upgrades and nothing else", n, u)
	}
	if len(m.started) != 0 {
		t.Fatal("a refused upgrade ran its request")
	}
}

// plainWriter hides every optional interface of the ResponseWriter it
// carries, Hijacker included, as some middleware does.
type plainWriter struct{ w http.ResponseWriter }

func (p plainWriter) Header() http.Header         { return p.w.Header() }
func (p plainWriter) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p plainWriter) WriteHeader(code int)        { p.w.WriteHeader(code) }

// openRawStream upgrades a connection by hand, for tests of what the server
// does with frames no Client would send.
func openRawStream(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	return openRawUpgrade(t, addr, StreamProtocol)
}

// openRawUpgrade upgrades a connection to protocol by hand.
func openRawUpgrade(t *testing.T, addr, protocol string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(batchDeadline))
	io.WriteString(conn, "GET /rpc HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: "+protocol+"\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(resp.Header.Get("Upgrade"), protocol) {
		t.Fatalf("upgrade answered %s, %q", resp.Status, resp.Header.Get("Upgrade"))
	}
	return conn, br
}

// A frame whose checksum does not match its body (bytes lost or changed on
// the way) never runs: the server drops the stream. Frames that carry only
// notifications are answered with an empty frame.
func TestBatchStreamFrames(t *testing.T) {
	var ran atomic.Int64
	methods := newTestMethods().methods()
	methods["count"] = func(context.Context, json.RawMessage) (any, error) {
		ran.Add(1)
		return nil, nil
	}
	_, ln := startServer(t, "", ServerOptions{Methods: methods})
	conn, br := openRawStream(t, ln.Addr().String())

	if err := writeFrame(conn, []byte(`[{"jsonrpc":"2.0","method":"count"},{"jsonrpc":"2.0","method":"count"}]`)); err != nil {
		t.Fatal(err)
	}
	reply, err := readFrame(br, 1<<20)
	if err != nil || len(reply) != 0 {
		t.Fatalf("notifications only: reply %q, %v; want an empty frame", reply, err)
	}
	if n := ran.Load(); n != 2 {
		t.Fatalf("%d notifications ran, want 2", n)
	}

	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"count"}`)
	var hdr [frameHeader]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(body)))
	binary.BigEndian.PutUint32(hdr[4:], 12345)
	conn.Write(append(hdr[:], body...))
	if _, err := readFrame(br, 1<<20); !errors.Is(err, io.EOF) {
		t.Fatalf("after a corrupt frame: %v, want the server to close the stream", err)
	}
	if n := ran.Load(); n != 2 {
		t.Fatalf("the corrupt frame ran (%d calls)", n)
	}
}

// Over TLS the stream negotiates HTTP/1.1 by ALPN (the server also offers
// HTTP/2) and presents the client's certificate.
func TestBatchStreamTLS(t *testing.T) {
	s := newTLSSetup(t)
	_, ln := startServer(t, "", ServerOptions{Methods: newTestMethods().methods(), TLS: mustTLS(t, s.server.ServerTLS)})
	addr := ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()

	good := newStreamClient(t, addr, ClientOptions{TLS: mustTLS(t, s.client.ClientTLS)})
	for i := range 3 {
		var got echoParams
		calls := []BatchCall{{Method: "echo", Params: echoParams{Text: "tls", Count: i}, Result: &got}}
		if err := good.CallBatch(ctx, calls); err != nil || calls[0].Err != nil || got.Count != i {
			t.Fatalf("batch %d over TLS: %v, %v, %+v", i, err, calls[0].Err, got)
		}
	}
	if n := ln.accepted.Load(); n != 1 {
		t.Fatalf("%d connections for 3 batches, want 1", n)
	}

	stranger := newStreamClient(t, addr, ClientOptions{TLS: mustTLS(t, s.stranger.ClientTLS)})
	if err := stranger.CallBatch(ctx, []BatchCall{{Method: "nothing"}}); !IsTransport(err) {
		t.Fatalf("stranger's certificate: %v, want a transport error", err)
	}
	plain := newStreamClient(t, addr, ClientOptions{})
	err := plain.CallBatch(ctx, []BatchCall{{Method: "nothing"}})
	if !IsTransport(err) || !strings.Contains(err.Error(), "this client needs TLS settings too") {
		t.Fatalf("plain stream to a TLS port: %v, want a transport error pointing at TLS", err)
	}
}

// A client sends nothing while it waits for its reply; bytes arriving then
// end the stream and cancel the handlers still running.
func TestBatchStreamStrayBytes(t *testing.T) {
	started := make(chan struct{}, 1)
	ended := make(chan error, 1)
	methods := map[string]Handler{"wait": func(ctx context.Context, _ json.RawMessage) (any, error) {
		started <- struct{}{}
		<-ctx.Done()
		ended <- ctx.Err()
		return nil, ctx.Err()
	}}
	_, ln := startServer(t, "", ServerOptions{Methods: methods})
	conn, br := openRawStream(t, ln.Addr().String())
	if err := writeFrame(conn, []byte(`{"jsonrpc":"2.0","id":1,"method":"wait"}`)); err != nil {
		t.Fatal(err)
	}
	<-started
	conn.Write([]byte{0})
	wantCanceled(t, ended, "stray bytes did not cancel the handler")
	if _, err := readFrame(br, 1<<20); !errors.Is(err, io.EOF) {
		t.Fatalf("after stray bytes: %v, want the server to close the stream", err)
	}
}

// wantCanceled waits for a handler's context error and checks that the
// context was cancelled; missed says what failed if it never ends.
func wantCanceled(t *testing.T, ended <-chan error, missed string) {
	t.Helper()
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("handler's context ended with %v, want context.Canceled", err)
		}
	case <-time.After(batchDeadline):
		t.Fatal(missed)
	}
}

// With Stream, plain calls go over a stream too, and so do batches, and get
// what they get over HTTP: results, and errors with their codes; one
// upgrade serves them all, a stream per call or a multiplexed one.
func TestStreamCarriesCalls(t *testing.T) {
	t.Run("stream", func(t *testing.T) {
		_, counter, c := countedStream(t, newTestMethods())
		testStreamCarriesCalls(t, counter, c)
	})
	t.Run("mux", func(t *testing.T) {
		_, counter, c := countedMux(t, newTestMethods(), 4)
		testStreamCarriesCalls(t, counter, c)
	})
}

func testStreamCarriesCalls(t *testing.T, counter *countingHandler, c *Client) {
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()
	for i := range 10 {
		var got echoParams
		if err := c.Call(ctx, "echo", echoParams{Text: "s", Count: i}, &got); err != nil || got != (echoParams{Text: "s", Count: i}) {
			t.Fatalf("call %d: %v, %+v", i, err, got)
		}
	}
	for method, code := range map[string]int{"no.such.method": CodeMethodNotFound, "coded": CodeTxNotActive, "plainerr": CodeInternal} {
		err := c.Call(ctx, method, map[string]int{}, nil)
		if !IsCode(err, code) || IsTransport(err) {
			t.Fatalf("%s: %v, want code %d", method, err, code)
		}
	}
	var bad echoParams
	if err := c.Call(ctx, "echo", map[string]any{"text": 1}, &bad); !IsCode(err, CodeInvalidParams) {
		t.Fatalf("bad params: %v, want code %d", err, CodeInvalidParams)
	}
	var a echoParams
	calls := []BatchCall{{Method: "echo", Params: echoParams{Text: "batch"}, Result: &a}, {Method: "nothing"}}
	if err := c.CallBatch(ctx, calls); err != nil || calls[0].Err != nil || calls[1].Err != nil || a.Text != "batch" {
		t.Fatalf("batch: %v, %v, %v, %+v", err, calls[0].Err, calls[1].Err, a)
	}
	if n, u := counter.requests.Load(), counter.upgrades.Load(); n != 1 || u != 1 {
		t.Fatalf("%d HTTP requests, %d upgrades; want one upgrade and nothing else", n, u)
	}
}

// runBlocked makes n calls of the test method "block" at once and waits
// until every one has reached its handler, so each has a stream of its own
// (calls sharing one would wait here until ctx ends); then it releases
// them and fails the test unless all succeed.
func runBlocked(ctx context.Context, t *testing.T, c *Client, m *testMethods, n int) {
	t.Helper()
	done := startBlocked(ctx, t, c, m, n)
	close(m.release)
	for range n {
		if err := <-done; err != nil {
			t.Fatalf("concurrent call: %v", err)
		}
	}
}

// startBlocked makes n calls of the test method "block" at once and waits
// until every one has reached its handler; each call's outcome comes on
// the channel it returns, an error unless it was released.
func startBlocked(ctx context.Context, t *testing.T, c *Client, m *testMethods, n int) <-chan error {
	t.Helper()
	done := make(chan error, n)
	for range n {
		go func() {
			var got string
			err := c.Call(ctx, "block", nil, &got)
			if err == nil && got != "released" {
				err = fmt.Errorf("result %q", got)
			}
			done <- err
		}()
	}
	for i := range n {
		select {
		case <-m.started:
		case <-ctx.Done():
			t.Fatalf("%d of %d concurrent calls reached the server", i, n)
		}
	}
	return done
}

// idleStreams is how many streams c keeps idle, and whether their expiry
// is armed.
func idleStreams(c *Client) (int, bool) {
	c.streams.mu.Lock()
	defer c.streams.mu.Unlock()
	return len(c.streams.idle), c.streams.expiry != nil
}

// Calls at the same time do not wait for each other: each takes a stream of
// its own, and the streams are kept for the calls after them.
func TestStreamConcurrentCalls(t *testing.T) {
	m := newTestMethods()
	srv, counter, c := countedStream(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()

	const n = 3
	runBlocked(ctx, t, c, m, n)
	if u := counter.upgrades.Load(); u != n {
		t.Fatalf("%d upgrades for %d concurrent calls", u, n)
	}
	// The streams stay open for reuse: more calls, in any concurrency up
	// to n, open no new ones.
	var wg sync.WaitGroup
	for i := range n {
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
	if u := counter.upgrades.Load(); u > n {
		t.Fatalf("%d upgrades after reuse, want at most %d", u, n)
	}
	if r, u := counter.requests.Load(), counter.upgrades.Load(); r != u {
		t.Fatalf("%d HTTP requests besides %d upgrades", r-u, u)
	}
	// Close closes the idle streams; the server sees them go.
	c.Close()
	waitStreams(t, srv, 0)
	if err := c.Call(context.Background(), "nothing", nil, nil); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("call after Close: %v, want ErrClientClosed", err)
	}
}

// A burst leaves at most maxIdle streams open, and those that then sit
// unused for keepIdle are closed without waiting for another call, the
// oldest first.
func TestStreamPoolBoundsIdle(t *testing.T) {
	m := newTestMethods()
	m.started = make(chan struct{}, maxIdle+2)
	srv := NewServer(ServerOptions{Methods: m.methods(), Logger: testLogger(t)})
	addr := serveMux(t, srv.Handler(), srv)
	c := newStreamClient(t, addr, ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()

	runBlocked(ctx, t, c, m, maxIdle+2)
	waitStreams(t, srv, maxIdle)
	if n, armed := idleStreams(c); n != maxIdle || !armed {
		t.Fatalf("%d streams idle, expiry armed %v; want %d and armed", n, armed, maxIdle)
	}

	// Make the older half look expired, and let the expiry run as its
	// timer would: the rest stay, and the timer is armed for them.
	c.streams.mu.Lock()
	for _, sc := range c.streams.idle[:maxIdle/2] {
		sc.used = sc.used.Add(-keepIdle)
	}
	c.streams.mu.Unlock()
	c.streams.expire()
	waitStreams(t, srv, maxIdle/2)
	if n, armed := idleStreams(c); n != maxIdle/2 || !armed {
		t.Fatalf("after a partial expiry: %d idle, expiry armed %v; want %d and armed", n, armed, maxIdle/2)
	}

	c.streams.mu.Lock()
	for _, sc := range c.streams.idle {
		sc.used = sc.used.Add(-keepIdle)
	}
	c.streams.mu.Unlock()
	c.streams.expire()
	waitStreams(t, srv, 0)
	if n, armed := idleStreams(c); n != 0 || armed {
		t.Fatalf("after expiry: %d idle, expiry armed %v; want none", n, armed)
	}
	if err := c.Call(ctx, "nothing", nil, nil); err != nil {
		t.Fatalf("call after the pool emptied: %v", err)
	}
}

// The upgrade carries the token: a wrong one refuses the call as HTTP
// would, with its code, and the right one's roles bound what may be called.
func TestStreamCallAuth(t *testing.T) {
	counter, addr := serveWithTokens(t)
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()
	for _, token := range []string{"", "wrong"} {
		c := newClientWith(t, addr, ClientOptions{Stream: true, Token: token})
		if err := c.Call(ctx, "echo", echoParams{}, nil); !IsCode(err, CodeUnauthorized) || IsTransport(err) {
			t.Fatalf("token %q: %v, want code %d", token, err, CodeUnauthorized)
		}
	}
	client := newClientWith(t, addr, ClientOptions{Stream: true, Token: "c-secret"})
	var got echoParams
	if err := client.Call(ctx, "echo", echoParams{Text: "ok"}, &got); err != nil || got.Text != "ok" {
		t.Fatalf("client token: %v, %+v", err, got)
	}
	if err := client.Call(ctx, "tpcd.vote", nil, nil); !IsCode(err, CodeUnauthorized) {
		t.Fatalf("peer method with the client token: %v, want code %d", err, CodeUnauthorized)
	}
	// Each call was an upgrade: the refused ones, and one that served both
	// calls with the client token.
	if r, u := counter.requests.Load(), counter.upgrades.Load(); r != 3 || u != 3 {
		t.Fatalf("%d HTTP requests, %d upgrades; want 3 upgrades", r, u)
	}
}

// Streams the server closed while they sat idle are noticed before use:
// the next calls open new ones instead of failing.
func TestStreamCallsAfterServerRestart(t *testing.T) {
	m, srv, addr, c := serveOwnShutdown(t)
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()
	const n = 3
	runBlocked(ctx, t, c, m, n)
	restartServer(ctx, t, srv, addr, m)
	for i := range n + 1 {
		var got echoParams
		if err := c.Call(ctx, "echo", echoParams{Count: i}, &got); err != nil || got.Count != i {
			t.Fatalf("call %d after the server restarted: %v, %+v", i, err, got)
		}
	}
	if idle, _ := idleStreams(c); idle != 1 {
		t.Fatalf("%d streams idle after sequential calls, want 1 (the stale ones dropped)", idle)
	}
}

// A response over the client's limit fails the call with both sizes named
// (over HTTP only the limit is known), and the client stays usable.
func TestOversizedResponse(t *testing.T) {
	_, ln := startServer(t, "", ServerOptions{Methods: newTestMethods().methods()})
	for _, tc := range []struct {
		name string
		opts ClientOptions
		want string
	}{
		{"http", ClientOptions{HTTP1: true}, "response exceeds 4096 bytes"},
		{"stream", ClientOptions{Stream: true}, "bytes exceeds the limit of 4096 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.MaxResponseBytes = 4096
			c := newClientWith(t, ln.Addr().String(), tc.opts)
			ctx := context.Background()
			var got echoParams
			err := c.Call(ctx, "echo", echoParams{Text: strings.Repeat("x", 8<<10)}, &got)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("oversized response: got %v, want an error containing %q", err, tc.want)
			}
			if err := c.Call(ctx, "echo", echoParams{Text: "small"}, &got); err != nil || got.Text != "small" {
				t.Fatalf("call after oversized response: %+v, %v", got, err)
			}
		})
	}
}

// NotifyBatch sends one-way frames: the server runs every call, errors
// included, and answers nothing, so calls that wait for their replies on
// the same stream get theirs and not a stray one; batches larger than the
// server's request limit together go out in frames it takes. A client of
// the first stream version is still served, one-way frames aside.
func TestBatchStreamOneWayFrames(t *testing.T) {
	var ran atomic.Int64
	var sizes sync.Map
	m := newTestMethods()
	methods := m.methods()
	methods["count"] = func(_ context.Context, raw json.RawMessage) (any, error) {
		ran.Add(1)
		sizes.Store(len(raw), true)
		return nil, errors.New("an error nobody hears")
	}
	srv := NewServer(ServerOptions{Methods: methods, Logger: testLogger(t)})
	counter := &countingHandler{h: srv.Handler()}
	addr := serveMux(t, counter, srv)
	c := newStreamClient(t, addr, ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()

	big := strings.Repeat("x", DefaultMaxRequestBytes/3)
	for i := range 20 {
		calls := []BatchCall{{Method: "count"}, {Method: "no.such.method"}, {Method: "count", Params: []int{i}}}
		if i == 10 {
			// Three calls of a third of the limit each: more than one
			// frame may carry.
			calls = []BatchCall{{Method: "count", Params: []string{big}}, {Method: "count", Params: []string{big}}, {Method: "count", Params: []string{big}}}
		}
		if err := c.NotifyBatch(ctx, calls); err != nil {
			t.Fatalf("notify %d: %v", i, err)
		}
		var out echoParams
		if err := c.Call(ctx, "echo", echoParams{Text: "after", Count: i}, &out); err != nil || out != (echoParams{Text: "after", Count: i}) {
			t.Fatalf("call after notification batch %d: %+v %v", i, out, err)
		}
	}
	if n := ran.Load(); n != 19*2+3 {
		t.Fatalf("%d notifications ran, want %d", n, 19*2+3)
	}
	if _, ok := sizes.Load(len(big) + 4); !ok {
		t.Fatal("the large notifications never ran")
	}
	if n, u := counter.requests.Load(), counter.upgrades.Load(); n != 1 || u != 1 {
		t.Fatalf("%d HTTP requests, %d upgrades; want one stream for everything", n, u)
	}
	// One call over the server's limit goes alone and is dropped there,
	// unanswered; the stream goes on.
	if err := c.NotifyBatch(ctx, []BatchCall{{Method: "count", Params: []string{strings.Repeat("y", DefaultMaxRequestBytes)}}}); err != nil {
		t.Fatalf("notify oversized: %v", err)
	}
	var out echoParams
	if err := c.Call(ctx, "echo", echoParams{Text: "still"}, &out); err != nil || out.Text != "still" {
		t.Fatalf("call after an oversized one-way frame: %+v %v", out, err)
	}
	if n := ran.Load(); n != 19*2+3 {
		t.Fatalf("the oversized notification ran (%d calls)", n)
	}
	if n := srv.droppedOneWay.Load(); n != 1 {
		t.Fatalf("%d one-way frames dropped, want 1", n)
	}

	// The first version: the upgrade names it, and a frame's length word
	// is all length (a frame with the one-way bit is one too large).
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(batchDeadline))
	io.WriteString(conn, "GET /rpc HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: "+streamProtocolV1+"\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != streamProtocolV1 {
		t.Fatalf("version 1 upgrade: %v %v", resp, err)
	}
	if err := writeFrame(conn, []byte(`{"jsonrpc":"2.0","id":7,"method":"echo","params":{"text":"v1"}}`)); err != nil {
		t.Fatal(err)
	}
	if reply, err := readFrame(br, 1<<20); err != nil || !strings.Contains(string(reply), `"v1"`) {
		t.Fatalf("version 1 frame: %q %v", reply, err)
	}
}

// A server from before one-way frames refuses tpcd-batch/2 as a plain GET
// (405), as in a rolling upgrade: the client opens tpcd-batch/1 streams
// instead, and its notifications still run, each frame answered and the
// answer dropped, while calls between them get their own replies.
func TestBatchStreamToAFirstVersionServer(t *testing.T) {
	var ran atomic.Int64
	m := newTestMethods()
	methods := m.methods()
	methods["count"] = func(context.Context, json.RawMessage) (any, error) {
		ran.Add(1)
		return nil, nil
	}
	srv := NewServer(ServerOptions{Methods: methods, Logger: testLogger(t)})
	var refusedV2 atomic.Int64
	old := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), StreamProtocol) {
			refusedV2.Add(1)
			writeError(w, http.StatusMethodNotAllowed, Errorf(CodeInvalidRequest, "HTTP method GET not allowed"))
			return
		}
		srv.Handler().ServeHTTP(w, r)
	})
	c := newStreamClient(t, serveMux(t, old, srv), ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), batchDeadline)
	defer cancel()
	for i := range 5 {
		if err := c.NotifyBatch(ctx, []BatchCall{{Method: "count"}, {Method: "count"}}); err != nil {
			t.Fatalf("notify %d: %v", i, err)
		}
		var out echoParams
		if err := c.Call(ctx, "echo", echoParams{Text: "v1", Count: i}, &out); err != nil || out.Count != i {
			t.Fatalf("call %d: %+v %v", i, out, err)
		}
	}
	if n := ran.Load(); n != 10 {
		t.Fatalf("%d notifications ran, want 10", n)
	}
	// Three calls at once need three streams.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if err := c.Call(ctx, "block", nil, nil); err != nil {
				t.Errorf("block: %v", err)
			}
		})
	}
	for range 3 {
		<-m.started
	}
	close(m.release)
	wg.Wait()
	if n := refusedV2.Load(); n != 1 {
		t.Fatalf("tpcd-batch/2 asked for %d times, want once: later streams ask for the first version at once", n)
	}
}
