package rpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults for ClientOptions.
const (
	DefaultDialTimeout      = 5 * time.Second
	DefaultMaxResponseBytes = 64 << 20
	DefaultPingInterval     = 15 * time.Second
	DefaultPingTimeout      = 5 * time.Second
)

// ClientOptions configure a Client. The zero value of every field selects
// its default.
type ClientOptions struct {
	// Logger receives connection-level events. Default: discard.
	Logger *slog.Logger
	// Path of the endpoint on the server. Default "/rpc".
	Path string
	// DialTimeout bounds one connection attempt (the call's ctx may end it
	// sooner). Default 5s.
	DialTimeout time.Duration
	// MaxResponseBytes bounds a response body; a larger one fails the call
	// with a transport error. Default 64 MiB.
	MaxResponseBytes int64
	// PingInterval is how long an HTTP/2 connection may be silent before
	// the client sends a PING; a peer that does not answer within
	// PingTimeout is considered gone and its connection is dropped, failing
	// the calls waiting on it. This is what notices a peer that vanished
	// without closing its socket (power loss, partition) while a call
	// without a deadline waits. Defaults 15s, 5s. Neither applies with
	// HTTP1 or Stream: there a vanished peer is noticed when a call's ctx
	// ends (with Multiplex, PingTimeout after that; see there).
	PingInterval time.Duration
	PingTimeout  time.Duration
	// Token is sent as "Authorization: Bearer <Token>" with every call (or
	// with a stream's upgrade) when not empty: the server's client token
	// for client methods, its peer token for node-to-node (tpcd.*)
	// methods.
	Token string
	// TLS, when set, makes the client speak TLS (https) instead of plain
	// TCP. Set RootCAs to verify the server against a private CA and
	// Certificates to present a client certificate (mutual TLS);
	// TLSFiles.ClientTLS builds such a config from PEM files.
	TLS *tls.Config
	// HTTP1 makes the client post over HTTP/1.1 instead of HTTP/2, as most
	// HTTP clients do: net/http's transport keeps a connection per call in
	// flight alive for the next call (up to 64 idle, an unused one closed
	// after 90 s). It is there to measure what such clients cost (tpcd
	// bench --transport http): a call may fail with a transport error on a
	// kept-alive connection the server closed meanwhile, since net/http
	// does not send a POST again.
	HTTP1 bool
	// Stream sends every call and batch as one frame on a batch stream
	// (StreamProtocol) instead of an HTTP request: the same JSON-RPC
	// without a request line and headers to build and parse on both ends,
	// the cheapest way to call (docs/WIRE.md). A call has a stream to
	// itself; calls at the same time open one each, and a stream is kept
	// for the next call (up to 64 idle, an unused one closed after 90 s).
	// tpcd nodes call each other this way. The server must serve streams,
	// as every tpcd node does: there is no falling back to HTTP. Stream
	// overrides HTTP1.
	Stream bool
	// Multiplex, with Stream, makes calls share up to this many streams
	// (MuxProtocol), each carrying any number of calls at once: calls made
	// at the same moment go out in one frame, and their replies come back
	// in one as they end. It suits many callers of one server, as a
	// front door's sessions or a benchmark's clients, whose calls would
	// otherwise cost a frame each way apiece; a lone caller's calls cost
	// more CPU than on a stream each (docs/WIRE.md). A call whose
	// context ends is cancelled at the server and its stream kept; when
	// its deadline passed with nothing at all heard from the server since
	// the call was sent, a stream that then stays silent for PingTimeout
	// is closed, failing the calls on it, and the next call dials afresh.
	// Against a server that does not multiplex, calls go a stream each,
	// as with Stream alone. Zero: a stream per call.
	Multiplex int
}

// Client calls one peer. By default it posts over a single HTTP/2
// connection (h2c, or h2 over TLS) shared by any number of concurrent
// calls; with ClientOptions.HTTP1 over kept-alive HTTP/1.1 connections;
// with ClientOptions.Stream it sends frames on batch streams instead. It
// connects on first use and reconnects on the next call after a connection
// breaks. It is safe for concurrent use.
type Client struct {
	addr     string
	url      string
	maxBytes int64
	log      *slog.Logger
	nextID   atomic.Uint64
	closed   atomic.Bool
	token    string
	tls      bool
	// h2 is set when the client posts over HTTP/2, which makes a TLS
	// mismatch look different (see explain).
	h2 bool
	// Exactly one of the two carries the calls: tr (through hc) posts
	// them, streams frames them (ClientOptions.Stream).
	tr      *http.Transport
	hc      *http.Client
	streams *streamPool
	// mux, when set, carries the calls on shared streams, falling back
	// to streams when the server does not multiplex
	// (ClientOptions.Multiplex).
	mux *muxPool
}

// ErrClientClosed is returned by Call after Close.
var ErrClientClosed = errors.New("rpc: client closed")

// NewClient returns a client for the server at addr ("host:port"). It does
// not connect yet.
func NewClient(addr string, opts ClientOptions) *Client {
	c := &Client{
		addr:     addr,
		maxBytes: opts.MaxResponseBytes,
		log:      opts.Logger,
		token:    opts.Token,
		tls:      opts.TLS != nil,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.maxBytes <= 0 {
		c.maxBytes = DefaultMaxResponseBytes
	}
	path := opts.Path
	if path == "" {
		path = DefaultPath
	}
	scheme := "http://"
	if c.tls {
		scheme = "https://"
	}
	c.url = scheme + addr + path
	dialTimeout := opts.DialTimeout
	if dialTimeout <= 0 {
		dialTimeout = DefaultDialTimeout
	}
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}

	if opts.Stream {
		var tlsConfig *tls.Config
		if c.tls {
			// Streams upgrade from HTTP/1.1: ALPN must not pick HTTP/2.
			tlsConfig = opts.TLS.Clone()
			tlsConfig.NextProtos = []string{"http/1.1"}
			if tlsConfig.ServerName == "" {
				if host, _, err := net.SplitHostPort(addr); err == nil {
					tlsConfig.ServerName = host
				}
			}
		}
		c.streams = &streamPool{dialer: dialer, tls: tlsConfig}
		if opts.Multiplex > 0 {
			c.mux = &muxPool{max: opts.Multiplex, probeTimeout: orDefault(opts.PingTimeout, DefaultPingTimeout)}
		}
		return c
	}

	var tlsConfig *tls.Config
	if c.tls {
		tlsConfig = opts.TLS.Clone()
	}
	c.tr = &http.Transport{
		Protocols:       new(http.Protocols),
		TLSClientConfig: tlsConfig,
		DialContext:     c.logDial(dialer),
	}
	if opts.HTTP1 {
		c.tr.Protocols.SetHTTP1(true)
		c.tr.MaxIdleConnsPerHost = maxIdle
		c.tr.IdleConnTimeout = keepIdle
	} else {
		c.h2 = true
		// Only HTTP/2: with HTTP/1.1 in the set the transport would fall
		// back to one connection per concurrent request.
		if c.tls {
			c.tr.Protocols.SetHTTP2(true)
		} else {
			c.tr.Protocols.SetUnencryptedHTTP2(true)
		}
		// One connection per peer: calls that arrive while it is being
		// dialled wait for it instead of racing to dial their own, and
		// calls beyond the server's stream limit queue on it.
		c.tr.MaxConnsPerHost = 1
		c.tr.HTTP2 = &http.HTTP2Config{
			StrictMaxConcurrentRequests: true,
			SendPingTimeout:             orDefault(opts.PingInterval, DefaultPingInterval),
			PingTimeout:                 orDefault(opts.PingTimeout, DefaultPingTimeout),
		}
	}
	c.hc = &http.Client{Transport: c.tr}
	return c
}

func (c *Client) logDial(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			c.log.Debug("rpc: dial failed", "addr", addr, "err", err)
			return nil, err
		}
		c.log.Debug("rpc: connected", "addr", addr, "local", conn.LocalAddr().String())
		return conn, nil
	}
}

// Addr returns the peer address the client was made for.
func (c *Client) Addr() string { return c.addr }

// Call invokes method with params (nil for none; a json.RawMessage is sent
// as is) and decodes the result into result (which may be nil to ignore it).
//
// Errors: when the server answered with a JSON-RPC error, the returned error
// wraps an *Error (see IsCode). When no answer arrived — connection refused
// or broken, ctx cancelled or past its deadline, a reply that is not
// JSON-RPC — it wraps a *TransportError (see IsTransport), and the request
// may or may not have been executed. Call returns as soon as ctx ends.
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	if c.closed.Load() {
		return fmt.Errorf("call %s at %s: %w", method, c.addr, ErrClientClosed)
	}
	id := c.nextID.Add(1)
	body, err := encodeRequest(id, method, params)
	if err != nil {
		return fmt.Errorf("call %s at %s: encode params: %w", method, c.addr, err)
	}
	transportErr := func(err error) error {
		return &TransportError{Method: method, Addr: c.addr, Err: err}
	}
	ans, err := c.send(ctx, body)
	if err != nil {
		return transportErr(err)
	}
	data := ans.data

	var msg response
	if err := json.Unmarshal(data, &msg); err != nil || msg.JSONRPC != "2.0" || (msg.Error == nil && msg.Result == nil) {
		if ans.status != http.StatusOK {
			return transportErr(c.statusError(ans))
		}
		return transportErr(fmt.Errorf("malformed JSON-RPC response: %s", snippet(data)))
	}
	if msg.Error != nil {
		// Errors about the request as a whole (too large, unparsable) carry
		// a null id; any other id must be ours.
		if !isNullID(msg.ID) && !sameID(msg.ID, id) {
			return transportErr(fmt.Errorf("response id %s does not match request id %d", msg.ID, id))
		}
		return fmt.Errorf("call %s at %s: %w", method, c.addr, msg.Error)
	}
	if ans.status != http.StatusOK {
		return transportErr(fmt.Errorf("HTTP %s with a result", ans.statusText))
	}
	if !sameID(msg.ID, id) {
		return transportErr(fmt.Errorf("response id %s does not match request id %d", msg.ID, id))
	}
	if result == nil {
		return nil
	}
	if err := json.Unmarshal(msg.Result, result); err != nil {
		return fmt.Errorf("call %s at %s: decode result into %T: %w", method, c.addr, result, err)
	}
	return nil
}

// answer is what came back for a request body: the reply body and the HTTP
// status it came with (200 for a stream's reply).
type answer struct {
	status     int
	statusText string
	data       []byte
}

// send sends one request body, as a frame on a stream or as an HTTP
// request, and reads the whole answer. An error means no answer arrived
// (see TransportError).
func (c *Client) send(ctx context.Context, body []byte) (answer, error) {
	if c.mux != nil && !c.mux.refused.Load() {
		if ans, ok, err := c.muxExchange(ctx, body); ok {
			return ans, err
		}
	}
	if c.streams != nil {
		return c.exchange(ctx, body)
	}
	return c.post(ctx, body)
}

// post sends one request body as an HTTP POST.
func (c *Client) post(ctx context.Context, body []byte) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// url.Error only repeats the method and URL; keep its cause.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return answer{}, c.explain(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1))
	if err != nil {
		return answer{}, fmt.Errorf("read response: %w", err)
	}
	if int64(len(data)) > c.maxBytes {
		return answer{}, fmt.Errorf("response exceeds %d bytes", c.maxBytes)
	}
	return answer{status: resp.StatusCode, statusText: resp.Status, data: data}, nil
}

// BatchCall is one call of a batch: the caller sets Method, Params and
// optionally Result; CallBatch sets Err.
type BatchCall struct {
	Method string
	Params any
	// Result, if not nil, receives the call's result.
	Result any
	// Err is the call's outcome, with the meaning Call gives its error.
	Err error
}

// CallBatch sends calls as one JSON-RPC batch in one HTTP request (or one
// frame on a batch stream, ClientOptions.Stream) and sets each call's Err. It returns an error, which every call's
// Err then repeats, when no usable answer arrived (it wraps a
// *TransportError: each call may or may not have run), when the server
// refused the request as a whole (it wraps the server's *Error: none ran),
// or when a call could not be encoded (nothing is sent). A call the
// server's reply leaves out gets a transport error of its own.
// A batch costs one request's (or frame's) framing and system calls however
// many calls it carries; the server may run its calls in any order.
func (c *Client) CallBatch(ctx context.Context, calls []BatchCall) error {
	if len(calls) == 0 {
		return nil
	}
	fail := func(err error) error {
		for i := range calls {
			calls[i].Err = err
		}
		return err
	}
	if c.closed.Load() {
		return fail(fmt.Errorf("call batch of %d at %s: %w", len(calls), c.addr, ErrClientClosed))
	}
	first := c.nextID.Add(uint64(len(calls))) - uint64(len(calls)) + 1
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, call := range calls {
		one, err := encodeRequest(first+uint64(i), call.Method, call.Params)
		if err != nil {
			return fail(fmt.Errorf("call %s at %s: encode params: %w", call.Method, c.addr, err))
		}
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(one)
	}
	buf.WriteByte(']')
	method := fmt.Sprintf("batch of %d (%s...)", len(calls), calls[0].Method)
	transportErr := func(err error) error {
		return fail(&TransportError{Method: method, Addr: c.addr, Err: err})
	}
	ans, err := c.send(ctx, buf.Bytes())
	if err != nil {
		return transportErr(err)
	}
	data := ans.data
	var msgs []response
	if err := json.Unmarshal(data, &msgs); err != nil {
		if err := c.refusal(ans, method); err != nil {
			return fail(err)
		}
		if ans.status != http.StatusOK {
			return transportErr(c.statusError(ans))
		}
		return transportErr(fmt.Errorf("malformed JSON-RPC batch response: %s", snippet(data)))
	}
	answered := make([]bool, len(calls))
	for _, msg := range msgs {
		id, err := strconv.ParseUint(string(bytes.TrimSpace(msg.ID)), 10, 64)
		if err != nil || id < first || id >= first+uint64(len(calls)) || msg.JSONRPC != "2.0" || (msg.Error == nil && msg.Result == nil) {
			return transportErr(fmt.Errorf("malformed or foreign response in batch: id %s", snippet(msg.ID)))
		}
		i := id - first
		call := &calls[i]
		answered[i] = true
		switch {
		case msg.Error != nil:
			call.Err = fmt.Errorf("call %s at %s: %w", call.Method, c.addr, msg.Error)
		case call.Result != nil:
			if err := json.Unmarshal(msg.Result, call.Result); err != nil {
				call.Err = fmt.Errorf("call %s at %s: decode result into %T: %w", call.Method, c.addr, call.Result, err)
			}
		}
	}
	for i, ok := range answered {
		if !ok {
			calls[i].Err = &TransportError{Method: calls[i].Method, Addr: c.addr, Err: errors.New("no response to this call in the batch reply")}
		}
	}
	return nil
}

// NotifyBatch sends calls as JSON-RPC notifications, in one one-way frame
// of a batch stream, and returns once the frame is written: the server
// sends nothing back, so whether a call ran, or was refused (unknown
// method, wrong token, the server stopping), stays unknown. It suits
// messages whose sender survives their loss anyway and would only discard
// their answers, as a participant's messages to its coordinator. The
// calls' Result and Err are not used. It returns an error wrapping a
// *TransportError when the frame may not have gone out, an upgrade the
// server refused, or an encoding error (nothing was sent). Without
// ClientOptions.Stream it is CallBatch, whose per-call errors it drops;
// to a server that speaks only tpcd-batch/1, each frame is two-way, its
// reply dropped. Frames are cut to fit the default
// request limit (DefaultMaxRequestBytes): a server given a smaller one
// drops larger frames unanswered.
func (c *Client) NotifyBatch(ctx context.Context, calls []BatchCall) error {
	if len(calls) == 0 {
		return nil
	}
	if c.streams == nil {
		return c.CallBatch(ctx, calls)
	}
	if c.closed.Load() {
		return fmt.Errorf("notify batch of %d at %s: %w", len(calls), c.addr, ErrClientClosed)
	}
	encoded := make([][]byte, len(calls))
	for i, call := range calls {
		var err error
		if encoded[i], err = encodeRequest(0, call.Method, call.Params); err != nil {
			return fmt.Errorf("notify %s at %s: encode params: %w", call.Method, c.addr, err)
		}
	}
	method := fmt.Sprintf("notification batch of %d (%s...)", len(calls), calls[0].Method)
	var buf bytes.Buffer
	for start := 0; start < len(encoded); {
		// Nobody hears that a server refused a frame as too large, so the
		// calls are cut into frames its default limit takes; one call
		// larger than that goes alone, and is dropped there.
		buf.Reset()
		buf.WriteByte('[')
		end := start
		for end < len(encoded) && (end == start || buf.Len()+len(encoded[end])+1 < DefaultMaxRequestBytes) {
			if end > start {
				buf.WriteByte(',')
			}
			buf.Write(encoded[end])
			end++
		}
		buf.WriteByte(']')
		refused, err := c.sendOneWay(ctx, buf.Bytes())
		if err != nil && start > 0 {
			// Earlier frames went out: this is no failure to connect,
			// which would let a Failover send them all elsewhere again.
			err = fmt.Errorf("after %d of %d calls were sent: %s", start, len(calls), err)
		}
		if err != nil {
			return &TransportError{Method: method, Addr: c.addr, Err: err}
		}
		if refused != nil {
			if err := c.refusal(*refused, method); err != nil {
				return err
			}
			return &TransportError{Method: method, Addr: c.addr, Err: c.statusError(*refused)}
		}
		start = end
	}
	return nil
}

// refusal is the error of a request the server refused as a whole
// (unauthorized, too large), which it answers with one error object in
// place of a batch's answers; nil when ans is not that.
func (c *Client) refusal(ans answer, method string) error {
	var msg response
	if json.Unmarshal(ans.data, &msg) == nil && msg.JSONRPC == "2.0" && msg.Error != nil {
		return fmt.Errorf("call %s at %s: %w", method, c.addr, msg.Error)
	}
	return nil
}

// Close releases the idle connections. Calls still in flight finish or
// fail on their own; cancel their contexts to stop them. Later calls fail
// with ErrClientClosed.
func (c *Client) Close() error {
	c.closed.Store(true)
	if c.mux != nil {
		c.mux.close()
	}
	if c.streams != nil {
		c.streams.close()
	} else {
		c.tr.CloseIdleConnections()
	}
	return nil
}

type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   *Error          `json:"error"`
}

// encodeRequest writes the request envelope by hand around params encoded
// once: marshalling a struct that holds the encoded params would scan them
// all over again. The bytes are what json.Marshal of the envelope struct
// (jsonrpc, id, method, params omitempty) would give; id 0, which no call
// uses, leaves the id out: a notification.
func encodeRequest(id uint64, method string, params any) ([]byte, error) {
	var raw []byte
	if params != nil {
		// json.Marshal validates, compacts and escapes a json.RawMessage
		// too, so a caller's JSON goes out in the same form as ours.
		var err error
		if raw, err = json.Marshal(params); err != nil {
			return nil, err
		}
		if first := firstNonSpace(raw); first != '{' && first != '[' {
			// JSON-RPC allows only structured params; failing here beats a
			// round trip that ends in CodeInvalidRequest.
			return nil, fmt.Errorf("params must encode as a JSON object or array, got %s", snippet(raw))
		}
	}
	name, err := json.Marshal(method)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 48+len(name)+len(raw))
	out = append(out, `{"jsonrpc":"2.0",`...)
	if id != 0 {
		out = append(out, `"id":`...)
		out = strconv.AppendUint(out, id, 10)
		out = append(out, ',')
	}
	out = append(out, `"method":`...)
	out = append(out, name...)
	if raw != nil {
		out = append(out, `,"params":`...)
		out = append(out, raw...)
	}
	return append(out, '}'), nil
}

func firstNonSpace(b []byte) byte {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

func isNullID(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

func sameID(raw json.RawMessage, id uint64) bool {
	return string(bytes.TrimSpace(raw)) == strconv.FormatUint(id, 10)
}

// snippet keeps error messages readable when a peer sends something large.
func snippet(b []byte) string {
	const max = 200
	b = bytes.TrimSpace(b)
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + "..."
	}
	return strconv.Quote(string(b))
}

// statusError describes an HTTP answer that is not JSON-RPC. A TLS server
// answers plain HTTP/1.1 with a 400 that says so; HTTP/2 clients see the
// connection close instead (see explain).
func (c *Client) statusError(ans answer) error {
	err := fmt.Errorf("HTTP %s: %s", ans.statusText, snippet(ans.data))
	if !c.tls && ans.status == http.StatusBadRequest && bytes.Contains(ans.data, []byte("HTTPS server")) {
		return fmt.Errorf("%w (the server serves TLS: this client needs TLS settings too)", err)
	}
	return err
}

// explain adds the likely cause to the failures that otherwise read as a
// bare EOF or "could not be established": a TLS server drops a plain-text
// HTTP/2 connection without a word, and a server that refuses a client
// certificate says so in a TLS alert the HTTP/2 layer does not pass on.
// The server's log has the exact reason. A stream gets the hints only
// while it opens; an HTTP/1.1 post may also have met a kept-alive
// connection the server closed.
func (c *Client) explain(err error) error {
	setup := strings.Contains(err.Error(), "could not be established")
	eof := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err)
	switch {
	case !c.tls && (setup || eof) && c.h2:
		return fmt.Errorf("%w (the server closed the connection before HTTP/2 started: if it serves TLS, this client needs TLS settings too)", err)
	case !c.tls && eof && c.streams == nil:
		return fmt.Errorf("%w (the server closed the connection without an answer: it closed a kept-alive connection, or it serves TLS and this client needs TLS settings too)", err)
	case !c.tls && eof:
		return fmt.Errorf("%w (the server closed the connection without an answer: if it serves TLS, this client needs TLS settings too)", err)
	case c.tls && setup:
		return fmt.Errorf("%w (the server closed the connection after the TLS handshake: it probably refused this client's certificate; its log says why)", err)
	}
	return err
}

func isReset(err error) bool {
	var op *net.OpError
	// A server that hangs up at once may also beat the client's first
	// write, which then fails with a broken pipe, or with a reset when the
	// server's kernel already answered the bytes it will never read.
	return errors.As(err, &op) && op.Op == "read" || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}
