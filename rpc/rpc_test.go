package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingListener counts accepted TCP connections, to prove that a Client
// multiplexes its calls over one.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

type echoParams struct {
	Text  string `json:"text"`
	Count int    `json:"count"`
}

// testLogger logs at level info and above to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// testMethods are shared by most tests. "block" waits until released or its
// context ends, announcing on started that it runs.
type testMethods struct {
	started chan struct{}
	release chan struct{}
}

func newTestMethods() *testMethods {
	return &testMethods{started: make(chan struct{}, 16), release: make(chan struct{})}
}

func (m *testMethods) methods() map[string]Handler {
	return map[string]Handler{
		"echo": func(ctx context.Context, raw json.RawMessage) (any, error) {
			var p echoParams
			if err := DecodeParams(raw, &p); err != nil {
				return nil, err
			}
			return p, nil
		},
		"nothing": func(ctx context.Context, raw json.RawMessage) (any, error) {
			return nil, nil
		},
		"panic": func(ctx context.Context, raw json.RawMessage) (any, error) {
			panic("deliberate test panic")
		},
		"plainerr": func(ctx context.Context, raw json.RawMessage) (any, error) {
			return nil, errors.New("disk on fire")
		},
		"coded": func(ctx context.Context, raw json.RawMessage) (any, error) {
			e := Errorf(CodeTxNotActive, "transaction %d is deciding", 7).WithData(map[string]int{"tx": 7})
			return nil, fmt.Errorf("handle exec: %w", e)
		},
		"unencodable": func(ctx context.Context, raw json.RawMessage) (any, error) {
			return func() {}, nil
		},
		"block": func(ctx context.Context, raw json.RawMessage) (any, error) {
			m.started <- struct{}{}
			select {
			case <-m.release:
				return "released", nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	}
}

// startServer serves opts on a fresh 127.0.0.1 port (or addr if not empty)
// and stops it at the end of the test.
func startServer(t *testing.T, addr string, opts ServerOptions) (*Server, *countingListener) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	cl := &countingListener{Listener: ln}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	srv := NewServer(opts)
	serveUntilCleanup(t, func() error { return srv.Serve(cl) }, srv.Shutdown)
	return srv, cl
}

// countingHandler wraps h and counts the HTTP requests that reach it, the
// upgrades among them apart.
type countingHandler struct {
	h                  http.Handler
	requests, upgrades atomic.Int64
}

func (c *countingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.requests.Add(1)
	if isStreamUpgrade(r) {
		c.upgrades.Add(1)
	}
	c.h.ServeHTTP(w, r)
}

// serveMux serves h on a fresh loopback port with a plain http.Server and
// returns its address; the rpc server srv (if any) is shut down after it.
func serveMux(t *testing.T, h http.Handler, srv *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The protocols Serve speaks without TLS.
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	hs := &http.Server{Handler: h, Protocols: protocols}
	shutdowns := []func(context.Context) error{hs.Shutdown}
	if srv != nil {
		shutdowns = append(shutdowns, srv.Shutdown)
	}
	serveUntilCleanup(t, func() error { return hs.Serve(ln) }, shutdowns...)
	return ln.Addr().String()
}

// serveUntilCleanup runs serve in the background and, at the end of the
// test, calls each of shutdowns in order, then checks that serve returned
// http.ErrServerClosed.
func serveUntilCleanup(t *testing.T, serve func() error, shutdowns ...func(context.Context) error) {
	done := make(chan error, 1)
	go func() { done <- serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, shutdown := range shutdowns {
			if err := shutdown(ctx); err != nil {
				t.Errorf("shutdown: %v", err)
			}
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
}

// newTestClient is a client with the default options, closed at the end of
// the test.
func newTestClient(t *testing.T, addr string) *Client {
	t.Helper()
	return newClientWith(t, addr, ClientOptions{})
}

// newClientWith is a client with opts (and the test's logger), closed at
// the end of the test.
func newClientWith(t *testing.T, addr string, opts ClientOptions) *Client {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	c := NewClient(addr, opts)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestEchoRoundTrip(t *testing.T) {
	m := newTestMethods()
	_, ln := startServer(t, "", ServerOptions{Methods: m.methods()})
	c := newTestClient(t, ln.Addr().String())
	ctx := context.Background()

	var got echoParams
	if err := c.Call(ctx, "echo", echoParams{Text: "héllo", Count: 3}, &got); err != nil {
		t.Fatalf("echo: %v", err)
	}
	if got != (echoParams{Text: "héllo", Count: 3}) {
		t.Fatalf("echo returned %+v", got)
	}

	// Raw params pass through untouched; a nil result is accepted.
	if err := c.Call(ctx, "echo", json.RawMessage(`{"text":"raw"}`), nil); err != nil {
		t.Fatalf("echo raw: %v", err)
	}
	var null any = "unchanged"
	if err := c.Call(ctx, "nothing", nil, &null); err != nil {
		t.Fatalf("nothing: %v", err)
	}
	if null != nil {
		t.Fatalf("nothing returned %v, want null", null)
	}
}

func TestConcurrentCallsShareOneConnection(t *testing.T) {
	const n = 200
	var inFlight atomic.Int64
	allIn := make(chan struct{})
	methods := map[string]Handler{
		// Each call waits until all n are running at once, which proves
		// they are served concurrently rather than one after another.
		"gather": func(ctx context.Context, raw json.RawMessage) (any, error) {
			var p struct {
				I int `json:"i"`
			}
			if err := DecodeParams(raw, &p); err != nil {
				return nil, err
			}
			if inFlight.Add(1) == n {
				close(allIn)
			}
			select {
			case <-allIn:
				return p.I * 2, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	}
	_, ln := startServer(t, "", ServerOptions{Methods: methods})
	c := newTestClient(t, ln.Addr().String())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, n)
	results := make([]int, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = c.Call(ctx, "gather", map[string]int{"i": i}, &results[i])
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if results[i] != 2*i {
			t.Fatalf("call %d returned %d, want %d", i, results[i], 2*i)
		}
	}
	if got := ln.accepted.Load(); got != 1 {
		t.Fatalf("server accepted %d connections, want 1", got)
	}
}

// http1Post sends body as a plain HTTP/1.1 POST, the way curl does.
func http1Post(t *testing.T, url, contentType, body string) (*http.Response, []byte) {
	t.Helper()
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	tr := &http.Transport{Protocols: protocols}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	if resp.ProtoMajor != 1 {
		t.Fatalf("response over %s, want HTTP/1.x", resp.Proto)
	}
	return resp, data
}

type wireResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   *Error          `json:"error"`
}

func decodeWire(t *testing.T, data []byte) wireResponse {
	t.Helper()
	var r wireResponse
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("response %q is not JSON: %v", data, err)
	}
	if r.JSONRPC != "2.0" {
		t.Fatalf("response %q lacks jsonrpc 2.0", data)
	}
	return r
}

func TestHTTP1RawPost(t *testing.T) {
	m := newTestMethods()
	_, ln := startServer(t, "", ServerOptions{Methods: m.methods()})
	url := "http://" + ln.Addr().String() + "/rpc"

	resp, data := http1Post(t, url, "application/json", `{"jsonrpc":"2.0","id":"abc","method":"echo","params":{"text":"curl","count":1}}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s, body %s", resp.Status, data)
	}
	r := decodeWire(t, data)
	if string(r.ID) != `"abc"` || r.Error != nil || string(r.Result) != `{"text":"curl","count":1}` {
		t.Fatalf("unexpected response %s", data)
	}

	// A batch keeps each caller-chosen id.
	resp, data = http1Post(t, url, "application/json; charset=utf-8",
		`[{"jsonrpc":"2.0","id":1,"method":"echo","params":{"text":"a"}},{"jsonrpc":"2.0","id":2,"method":"nosuch"}]`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("batch status %s, body %s", resp.Status, data)
	}
	var batch []wireResponse
	if err := json.Unmarshal(data, &batch); err != nil || len(batch) != 2 {
		t.Fatalf("batch response %s: %v", data, err)
	}
	for _, r := range batch {
		switch string(r.ID) {
		case "1":
			if r.Error != nil || string(r.Result) != `{"text":"a","count":0}` {
				t.Fatalf("batch id 1: %s", data)
			}
		case "2":
			if r.Error == nil || r.Error.Code != CodeMethodNotFound {
				t.Fatalf("batch id 2: %s", data)
			}
		default:
			t.Fatalf("batch response with unexpected id: %s", data)
		}
	}

	// Form-encoded bodies (curl -d without -H) are refused with a hint.
	resp, data = http1Post(t, url, "application/x-www-form-urlencoded", `{"jsonrpc":"2.0","id":1,"method":"echo"}`)
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("form post: status %s, want 415", resp.Status)
	}
	if r := decodeWire(t, data); r.Error == nil || r.Error.Code != CodeInvalidRequest || !strings.Contains(r.Error.Message, "application/json") {
		t.Fatalf("form post: %s", data)
	}

	// GET is refused.
	getResp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	getResp.Body.Close()
	if getResp.StatusCode != http.StatusMethodNotAllowed || getResp.Header.Get("Allow") != "POST" {
		t.Fatalf("GET: status %s, Allow %q", getResp.Status, getResp.Header.Get("Allow"))
	}
}

func TestMalformedJSON(t *testing.T) {
	m := newTestMethods()
	_, ln := startServer(t, "", ServerOptions{Methods: m.methods()})
	url := "http://" + ln.Addr().String() + "/rpc"
	for _, body := range []string{`{"jsonrpc":"2.0","id":1,"method":"echo"`, `not json`, ``} {
		resp, data := http1Post(t, url, "application/json", body)
		r := decodeWire(t, data)
		if resp.StatusCode != http.StatusOK || r.Error == nil || r.Error.Code != CodeParseError || string(r.ID) != "null" {
			t.Fatalf("body %q: status %s, response %s", body, resp.Status, data)
		}
	}
	// Valid JSON that is not a request is an invalid request, not a parse error.
	_, data := http1Post(t, url, "application/json", `{"jsonrpc":"1.0","id":5,"method":"echo"}`)
	if r := decodeWire(t, data); r.Error == nil || r.Error.Code != CodeInvalidRequest {
		t.Fatalf("wrong version: %s", data)
	}
	_, data = http1Post(t, url, "application/json", `[]`)
	if r := decodeWire(t, data); r.Error == nil || r.Error.Code != CodeInvalidRequest {
		t.Fatalf("empty batch: %s", data)
	}
}

func TestErrorCodes(t *testing.T) {
	m := newTestMethods()
	_, ln := startServer(t, "", ServerOptions{Methods: m.methods()})
	c := newTestClient(t, ln.Addr().String())
	ctx := context.Background()

	cases := []struct {
		method  string
		params  any
		code    int
		message string
	}{
		{"nosuch", nil, CodeMethodNotFound, ""},
		{"rpc.serverInfo", nil, CodeMethodNotFound, ""},
		{"echo", map[string]any{"text": 5}, CodeInvalidParams, `field "text": expected a string, got JSON number`},
		{"echo", map[string]any{"count": "three"}, CodeInvalidParams, `field "count": expected an integer, got JSON string`},
		{"echo", map[string]any{"text": "x", "colour": "red"}, CodeInvalidParams, `unknown field "colour"`},
		{"echo", []any{"x", 1}, CodeInvalidParams, "expected an object, got JSON array"},
		{"echo", nil, CodeInvalidParams, "missing params"},
		{"plainerr", nil, CodeInternal, "disk on fire"},
		{"unencodable", nil, CodeInternal, "encode result of unencodable"},
		{"coded", nil, CodeTxNotActive, "transaction 7 is deciding"},
	}
	for _, tc := range cases {
		err := c.Call(ctx, tc.method, tc.params, nil)
		if !IsCode(err, tc.code) {
			t.Fatalf("%s(%v): got %v, want code %d", tc.method, tc.params, err, tc.code)
		}
		if IsTransport(err) {
			t.Fatalf("%s: server error reported as transport error: %v", tc.method, err)
		}
		var e *Error
		errors.As(err, &e)
		if !strings.Contains(e.Message, tc.message) {
			t.Fatalf("%s(%v): message %q lacks %q", tc.method, tc.params, e.Message, tc.message)
		}
		if tc.method == "coded" && string(e.Data) != `{"tx":7}` {
			t.Fatalf("coded data %s", e.Data)
		}
	}
}

func TestOversizedRequest(t *testing.T) {
	m := newTestMethods()
	_, ln := startServer(t, "", ServerOptions{Methods: m.methods(), MaxRequestBytes: 4096})
	ctx := context.Background()

	big := echoParams{Text: strings.Repeat("x", 64<<10)}
	// The server's refusal must reach the caller as the error the node
	// outbox splits batches on, also when the server refuses before the
	// request is all sent: 8 MiB is more than the sockets buffer, and a
	// client that wrote it whole before reading would meet a reset.
	for _, tc := range []struct {
		name string
		opts ClientOptions
		size int
	}{{"h2c", ClientOptions{}, 64 << 10}, {"http1", ClientOptions{HTTP1: true}, 12 << 10}, {"http1-large", ClientOptions{HTTP1: true}, 8 << 20}, {"stream", ClientOptions{Stream: true}, 12 << 10}} {
		c := newClientWith(t, ln.Addr().String(), tc.opts)
		err := c.Call(ctx, "echo", echoParams{Text: strings.Repeat("x", tc.size)}, nil)
		if !IsCode(err, CodeInvalidRequest) || !strings.Contains(err.Error(), "exceeds 4096 bytes") {
			t.Fatalf("%s: oversized call: got %v, want CodeInvalidRequest about the size", tc.name, err)
		}
		var got echoParams
		if err := c.Call(ctx, "echo", echoParams{Text: "small"}, &got); err != nil || got.Text != "small" {
			t.Fatalf("%s: call after oversized one: %+v, %v", tc.name, got, err)
		}
	}

	// Same over HTTP/1.1.
	url := "http://" + ln.Addr().String() + "/rpc"
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "echo", "params": big})
	resp, data := http1Post(t, url, "application/json", string(body))
	if r := decodeWire(t, data); resp.StatusCode != http.StatusRequestEntityTooLarge || r.Error == nil || r.Error.Code != CodeInvalidRequest {
		t.Fatalf("HTTP/1.1 oversized: status %s, body %s", resp.Status, data)
	}
	_, data = http1Post(t, url, "application/json", `{"jsonrpc":"2.0","id":2,"method":"echo","params":{"text":"ok"}}`)
	if r := decodeWire(t, data); r.Error != nil {
		t.Fatalf("HTTP/1.1 after oversized: %s", data)
	}
}

func TestHandlerPanic(t *testing.T) {
	m := newTestMethods()
	_, ln := startServer(t, "", ServerOptions{Methods: m.methods()})
	c := newTestClient(t, ln.Addr().String())
	ctx := context.Background()

	for range 3 {
		err := c.Call(ctx, "panic", nil, nil)
		if !IsCode(err, CodeInternal) || !strings.Contains(err.Error(), "deliberate test panic") {
			t.Fatalf("panic call: got %v, want CodeInternal", err)
		}
		if err := c.Call(ctx, "echo", echoParams{Text: "after"}, nil); err != nil {
			t.Fatalf("call after panic: %v", err)
		}
	}
}

// clientModes are the ways a Client sends its calls.
var clientModes = []struct {
	name string
	opts ClientOptions
}{{"h2c", ClientOptions{}}, {"http1", ClientOptions{HTTP1: true}}, {"stream", ClientOptions{Stream: true}}}

// A server that goes down and comes back on the same port: calls in
// between fail as transport errors, and the first call after it is back
// succeeds on a new connection. A stream the old server closed must not be
// written to (the client checks it before reuse) or that call would fail
// with EOF. Not over HTTP/1.1: there net/http's transport may write the
// first call onto the old connection, and it does not retry a POST.
func TestServerDownAndBack(t *testing.T) {
	for _, tc := range clientModes {
		if tc.opts.HTTP1 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) { testServerDownAndBack(t, tc.opts) })
	}
}

func testServerDownAndBack(t *testing.T, opts ClientOptions) {
	m := newTestMethods()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	srv := NewServer(ServerOptions{Methods: m.methods(), Logger: testLogger(t)})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	c := newClientWith(t, addr, opts)
	ctx := context.Background()
	if err := c.Call(ctx, "echo", echoParams{Text: "up"}, nil); err != nil {
		t.Fatalf("first call: %v", err)
	}

	// Take the server down, breaking the client's open connection.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	<-served
	// Back at once, before the client has had a reason to notice: its
	// idle connection is the old server's.
	srv2, _ := startServer(t, addr, ServerOptions{Methods: m.methods()})
	var got echoParams
	if err := c.Call(ctx, "echo", echoParams{Text: "back"}, &got); err != nil || got.Text != "back" {
		t.Fatalf("first call after a restart: %+v, %v", got, err)
	}
	if err := srv2.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for range 2 {
		err := c.Call(ctx, "echo", echoParams{Text: "down"}, nil)
		if err == nil || !IsTransport(err) {
			t.Fatalf("call with server down: got %v, want a transport error", err)
		}
		if IsCode(err, CodeInternal) {
			t.Fatalf("transport error mistaken for a server error: %v", err)
		}
	}

	// Same port, new server: the same client recovers.
	_, ln3 := startServer(t, addr, ServerOptions{Methods: m.methods()})
	if err := c.Call(ctx, "echo", echoParams{Text: "back"}, &got); err != nil || got.Text != "back" {
		t.Fatalf("call after restart: %+v, %v", got, err)
	}
	if n := ln3.accepted.Load(); n != 1 {
		t.Fatalf("restarted server accepted %d connections, want 1", n)
	}
}

func TestContextCancel(t *testing.T) {
	for _, tc := range clientModes {
		t.Run(tc.name, func(t *testing.T) { testContextCancel(t, tc.opts) })
	}
}

func testContextCancel(t *testing.T, opts ClientOptions) {
	m := newTestMethods()
	_, ln := startServer(t, "", ServerOptions{Methods: m.methods()})
	c := newClientWith(t, ln.Addr().String(), opts)
	defer close(m.release)

	// Cancel while the handler is running: Call must return without waiting
	// for the handler, which stays blocked until the deferred release.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Call(ctx, "block", nil, nil) }()
	<-m.started
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) || !IsTransport(err) {
		t.Fatalf("cancelled call: got %v, want context.Canceled as a transport error", err)
	}

	// A deadline ends the call the same way.
	dctx, dcancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer dcancel()
	err = c.Call(dctx, "block", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) || !IsTransport(err) {
		t.Fatalf("call past deadline: got %v, want context.DeadlineExceeded as a transport error", err)
	}

	// The connection is still good for other calls.
	if err := c.Call(context.Background(), "echo", echoParams{Text: "still here"}, nil); err != nil {
		t.Fatalf("call after cancellations: %v", err)
	}
}

func TestShutdownCancelsStuckHandlers(t *testing.T) {
	m := newTestMethods()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(ServerOptions{Methods: m.methods(), Logger: testLogger(t)})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	c := newTestClient(t, ln.Addr().String())

	callDone := make(chan error, 1)
	go func() { callDone <- c.Call(context.Background(), "block", nil, nil) }()
	<-m.started

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no grace period at all
	if err := srv.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("shutdown with a stuck handler: got %v, want context.Canceled", err)
	}
	if err := <-callDone; !IsTransport(err) {
		t.Fatalf("call cut by shutdown: got %v, want a transport error", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	// A second Shutdown lets the handler context cancellation complete.
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
}

func TestHandlerMountedOnOwnMux(t *testing.T) {
	m := newTestMethods()
	srv := NewServer(ServerOptions{Methods: m.methods(), Logger: testLogger(t)})
	mux := http.NewServeMux()
	mux.Handle("/api/v1/rpc", srv.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	addr := serveMux(t, mux, srv)

	c := newClientWith(t, addr, ClientOptions{Path: "/api/v1/rpc"})
	var got echoParams
	if err := c.Call(context.Background(), "echo", echoParams{Text: "mounted"}, &got); err != nil || got.Text != "mounted" {
		t.Fatalf("call on own mux: %+v, %v", got, err)
	}

	// A path that is not an RPC endpoint answers without JSON-RPC: that is
	// a transport error, since no handler ran.
	wrong := newClientWith(t, addr, ClientOptions{Path: "/nowhere"})
	if err := wrong.Call(context.Background(), "echo", echoParams{}, nil); !IsTransport(err) || !strings.Contains(err.Error(), "404") {
		t.Fatalf("call to wrong path: %v", err)
	}
}

func TestClientClosedAndBadParams(t *testing.T) {
	m := newTestMethods()
	_, ln := startServer(t, "", ServerOptions{Methods: m.methods()})
	c := NewClient(ln.Addr().String(), ClientOptions{})

	if err := c.Call(context.Background(), "echo", "a string", nil); err == nil || IsTransport(err) {
		t.Fatalf("scalar params: got %v, want a local error", err)
	}
	if err := c.Call(context.Background(), "echo", make(chan int), nil); err == nil || IsTransport(err) {
		t.Fatalf("unencodable params: got %v, want a local error", err)
	}
	var wrongType []string
	if err := c.Call(context.Background(), "echo", echoParams{Text: "x"}, &wrongType); err == nil || IsTransport(err) || IsCode(err, CodeInternal) {
		t.Fatalf("result of the wrong type: got %v", err)
	}
	c.Close()
	if err := c.Call(context.Background(), "echo", echoParams{}, nil); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("call after close: %v", err)
	}
}

func TestDecodeParams(t *testing.T) {
	type inner struct {
		N int `json:"n"`
	}
	type params struct {
		Name  string `json:"name"`
		Inner inner  `json:"inner"`
	}
	runDecodeCases(t, func(raw json.RawMessage) error { var p params; return DecodeParams(raw, &p) }, []decodeCase{
		{`{"name":"a","inner":{"n":1}}`, ""},
		{` {"name":"a"} `, ""},
		{``, "missing params"},
		{`null`, "not null"},
		{`{"inner":{"n":"1"}}`, `field "inner.n": expected an integer, got JSON string`},
		{`{"inner":{"m":1}}`, `unknown field "m"`},
		{`{"name":"a"} {"name":"b"}`, "unexpected data after the params value"},
		{`{"name":`, "invalid params"},
	})
}

// decodeCase is params and the message its decoding fails with ("" for
// success).
type decodeCase struct{ raw, message string }

// runDecodeCases decodes each case's params and checks the outcome.
func runDecodeCases(t *testing.T, decode func(json.RawMessage) error, cases []decodeCase) {
	t.Helper()
	for _, tc := range cases {
		err := decode(json.RawMessage(tc.raw))
		if tc.message == "" {
			if err != nil {
				t.Fatalf("DecodeParams(%s): %v", tc.raw, err)
			}
			continue
		}
		if !IsCode(err, CodeInvalidParams) || !strings.Contains(err.Error(), tc.message) {
			t.Fatalf("DecodeParams(%s): got %v, want CodeInvalidParams mentioning %q", tc.raw, err, tc.message)
		}
	}
}

func TestErrorHelpers(t *testing.T) {
	e := Errorf(CodeUnknownTx, "tx %d unknown", 42)
	wrapped := fmt.Errorf("commit: %w", e)
	if !IsCode(wrapped, CodeUnknownTx) || IsCode(wrapped, CodeAborted) || IsCode(errors.New("x"), CodeUnknownTx) {
		t.Fatal("IsCode does not see through wrapping or matches wrongly")
	}
	if IsTransport(wrapped) {
		t.Fatal("an *Error is not a transport error")
	}
	if got := e.Error(); got != "rpc error -32001: tx 42 unknown" {
		t.Fatalf("Error() = %q", got)
	}
	withData := e.WithData([]int{1})
	if string(withData.Data) != "[1]" || e.Data != nil {
		t.Fatalf("WithData changed the original or lost data: %s / %s", withData.Data, e.Data)
	}
	if bad := e.WithData(make(chan int)); bad.Data != nil || !strings.Contains(bad.Message, "not encodable") {
		t.Fatalf("WithData of an unencodable value: %+v", bad)
	}
	var buf bytes.Buffer
	json.NewEncoder(&buf).Encode(e)
	if got := strings.TrimSpace(buf.String()); got != `{"code":-32001,"message":"tx 42 unknown"}` {
		t.Fatalf("wire form %s", got)
	}
}
