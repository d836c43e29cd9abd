package rpc

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/creachadair/jrpc2"
)

// Handler implements one method. params is the raw "params" member of the
// request (nil when absent); decode it with DecodeParams. The result is
// encoded as JSON. An *Error (possibly wrapped) is sent to the caller as is;
// any other error is sent as CodeInternal with its message. ctx ends when
// the caller goes away or the server shuts down.
type Handler func(ctx context.Context, params json.RawMessage) (any, error)

// Defaults for ServerOptions.
const (
	DefaultMaxRequestBytes = 1 << 20
	DefaultPath            = "/rpc"
	DefaultMaxConcurrency  = 1024
	// DefaultReadTimeout bounds reading one request, headers and body: a
	// client that trickles a body in cannot hold a handler slot forever.
	DefaultReadTimeout = 30 * time.Second
	// DefaultWriteTimeout bounds one request from its headers to the end of
	// its response, handler included, so it must exceed the longest a
	// handler may wait (an exec waits up to the coordinator's exec timeout).
	DefaultWriteTimeout = 5 * time.Minute
	// DefaultIdleTimeout closes connections silent for this long; clients
	// re-dial on demand.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultMaxHeaderBytes bounds request headers (HTTP/1.1) and the
	// header list (HTTP/2). Nothing tpcd sends comes near it.
	DefaultMaxHeaderBytes = 64 << 10
)

// ServerOptions configure a Server. The zero value of every field selects
// its default.
type ServerOptions struct {
	// Logger receives handler failures, panics and HTTP server errors.
	// Default: discard.
	Logger *slog.Logger
	// MaxRequestBytes bounds a request body; a larger one is answered with
	// HTTP 413 and a CodeInvalidRequest error. Default 1 MiB.
	MaxRequestBytes int64
	// Methods maps method names to handlers. Names starting with "rpc." are
	// reserved by JSON-RPC and are not reachable.
	Methods map[string]Handler
	// Path is where Serve mounts the endpoint. Default "/rpc".
	Path string
	// MaxConcurrency bounds the handlers running at once across all
	// connections, and the concurrent HTTP/2 streams of one connection;
	// further requests wait. Default 1024: handlers mostly wait on
	// databases and peers, so the limit guards memory, not CPU.
	MaxConcurrency int
	// MaxConcurrencyPerHost bounds those of one remote IP address, so
	// that one caller's waiting requests cannot take every slot; further
	// requests of that address wait. Default a quarter of MaxConcurrency;
	// negative: no bound but MaxConcurrency.
	MaxConcurrencyPerHost int
	// Inline names methods whose handlers return at once (they only hand
	// their message to another goroutine). The entries of a batch that call
	// them run one after another on the request's goroutine, in batch
	// order; every other entry of a batch gets a goroutine of its own so
	// that one waiting handler holds up none of the rest.
	Inline []string
	// Auth lists the bearer tokens required; the zero value requires none.
	// A request without a token the server accepts is answered with HTTP
	// 401 and a CodeUnauthorized error before its body is read.
	Auth Auth
	// TLS, when set, makes Serve speak TLS (HTTP/2 negotiated by ALPN, and
	// HTTP/1.1) instead of plain HTTP/1.1 and h2c. It must hold a
	// certificate; with ClientCAs and ClientAuth set (TLSFiles.ServerTLS
	// does so when given a CA) every caller must present a certificate.
	TLS *tls.Config
	// ReadTimeout, WriteTimeout, IdleTimeout and MaxHeaderBytes are those of
	// http.Server; the defaults are the Default* constants.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	MaxHeaderBytes                         int
	// MaxConns and MaxConnsPerHost bound the connections the server keeps
	// open (HTTP connections and batch streams alike), in total and per
	// remote IP address. A connection over a cap closes an idle one to
	// make room (see connTracker); when none is idle it is refused:
	// closed at once, or for a batch stream opened through Handler,
	// answered 503 with CodeLimit. Defaults DefaultMaxConns and
	// DefaultMaxConnsPerHost; negative: no cap.
	MaxConns, MaxConnsPerHost int
}

// Server answers JSON-RPC requests over HTTP/1.1, h2c and batch streams
// (over TLS: HTTP/2, HTTP/1.1 and batch streams).
type Server struct {
	log      *slog.Logger
	path     string
	maxBytes int64
	// droppedOneWay counts one-way frames over maxBytes; lastDropWarn
	// (unix nanoseconds) spaces the warnings about them.
	droppedOneWay, lastDropWarn atomic.Int64

	methods map[string]Handler
	inline  map[string]bool
	auth    Auth
	tls     bool
	// slots bounds the handlers running at once, hostSlots those of one
	// address.
	slots     chan struct{}
	hostSlots *hostSlots
	http      *http.Server
	// streams are the batch streams (stream.go) being served.
	streams streams
	// conns caps the open connections, streams included.
	conns *connTracker

	// handlerCtx is the parent of every handler's context; cancelling it
	// tells handlers still running at the end of a Shutdown to give up.
	handlerCtx    context.Context
	cancelHandler context.CancelFunc
}

// NewServer builds a server for opts.Methods. It does not listen; call Serve,
// or mount Handler on a mux of your own.
func NewServer(opts ServerOptions) *Server {
	s := &Server{
		log:      opts.Logger,
		path:     opts.Path,
		maxBytes: opts.MaxRequestBytes,
		methods:  map[string]Handler{},
		inline:   map[string]bool{},
		auth:     opts.Auth,
	}
	for _, name := range opts.Inline {
		s.inline[name] = true
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.path == "" {
		s.path = DefaultPath
	}
	if s.maxBytes <= 0 {
		s.maxBytes = DefaultMaxRequestBytes
	}
	concurrency := opts.MaxConcurrency
	if concurrency <= 0 {
		concurrency = DefaultMaxConcurrency
	}
	s.handlerCtx, s.cancelHandler = context.WithCancel(context.Background())
	s.conns = newConnTracker(capOrDefault(opts.MaxConns, DefaultMaxConns), capOrDefault(opts.MaxConnsPerHost, DefaultMaxConnsPerHost), s.log)

	s.slots = make(chan struct{}, concurrency)
	s.hostSlots = newHostSlots(capOrDefault(opts.MaxConcurrencyPerHost, max(1, concurrency/4)))
	for name, h := range opts.Methods {
		if strings.HasPrefix(name, "rpc.") {
			s.log.Warn("rpc: method name reserved by JSON-RPC, not served", "method", name)
			continue
		}
		s.methods[name] = h
	}

	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	var tlsConfig *tls.Config
	if opts.TLS != nil {
		s.tls = true
		protocols.SetHTTP2(true)
		tlsConfig = opts.TLS.Clone()
		tlsConfig.NextProtos = []string{"h2", "http/1.1"}
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	mux := http.NewServeMux()
	// Requests on our own server inherit handlerCtx through the
	// connection, so they need no link of their own to it (see serveRPC).
	mux.Handle(s.path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveRPC(w, r, true) }))
	s.http = &http.Server{
		BaseContext:       func(net.Listener) context.Context { return s.handlerCtx },
		Handler:           mux,
		Protocols:         protocols,
		TLSConfig:         tlsConfig,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: concurrency},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       orDefault(opts.ReadTimeout, DefaultReadTimeout),
		WriteTimeout:      orDefault(opts.WriteTimeout, DefaultWriteTimeout),
		IdleTimeout:       orDefault(opts.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		ConnState:         s.conns.connState,
		// TLS handshake failures (a peer with a stranger's certificate,
		// plain text on a TLS port) land here, one line each.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if s.http.MaxHeaderBytes <= 0 {
		s.http.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	return s
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// capOrDefault reads a cap option: 0 is the default, negative none (0).
func capOrDefault(n, def int) int {
	switch {
	case n == 0:
		return def
	case n < 0:
		return 0
	}
	return n
}

// Handler returns the JSON-RPC endpoint as an http.Handler, for mounting on
// a mux of the caller's (next to metrics or health checks). It answers at
// whatever path it is mounted on; ServerOptions.Path applies to Serve only.
// Batch streams opened through it are no longer the http.Server's: they end
// with this Server's Shutdown (or their client), not with the mux's server.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveRPC(w, r, false) })
}

// Serve accepts HTTP/1.1 and h2c connections on ln (TLS connections when
// ServerOptions.TLS is set) within the connection caps and serves Path on
// them, batch streams included, until Shutdown, after which it returns
// http.ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	ln = limitListener{Listener: ln, t: s.conns}
	if s.tls {
		return s.http.ServeTLS(ln, "", "")
	}
	return s.http.Serve(ln)
}

// Shutdown stops accepting connections and waits for running requests to
// finish or ctx to end, whichever comes first. When ctx ends first, open
// connections are closed and the contexts of still-running handlers are
// cancelled; Shutdown then returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	// Streams stop taking frames at once, like connections; the frames
	// they are answering finish within ctx as requests do.
	s.streams.stop()
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
		s.cancelHandler()
	}
	if serr := s.streams.wait(ctx); err == nil {
		err = serr
	}
	s.cancelHandler()
	if err != nil {
		return fmt.Errorf("rpc server shutdown: %w", err)
	}
	return nil
}

// serveRPC does the HTTP-level checks and the parsing itself, so that every
// failure is reported as a JSON-RPC error object a client can decode, then
// runs each request's handler on this goroutine (several at once for a
// batch, except Inline methods). Every HTTP request is dispatched on its own, so a handler that
// waits (a commit waiting for votes) never holds up another request; jrpc2's
// HTTP bridge funnels all requests through one channel and stalls exactly
// that way under load.
//
// own says the request came through Serve, whose connections derive their
// contexts from handlerCtx; on a caller's mux the request's context is
// linked to handlerCtx here, which costs every request a registration on
// that one shared context.
func (s *Server) serveRPC(w http.ResponseWriter, r *http.Request, own bool) {
	// Authentication comes first, so a stranger learns nothing, not even
	// which methods or content types exist.
	roles, authenticated, reason := s.auth.authenticate(r)
	if roles == 0 {
		s.log.Warn("rpc: request refused: not authenticated", "remote", r.RemoteAddr, "reason", reason)
		w.Header().Set("WWW-Authenticate", `Bearer realm="tpcd"`)
		writeError(w, http.StatusUnauthorized, Errorf(CodeUnauthorized, "unauthorized: %s", reason))
		return
	}
	if isStreamUpgrade(r) {
		s.serveStream(w, r, roles, authenticated)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, Errorf(CodeInvalidRequest, "HTTP method must be POST, not %s", r.Method))
		return
	}
	// Requiring application/json is a guard, not pedantry: browsers send
	// only "simple" content types cross-origin without a CORS preflight, so
	// this keeps a web page from driving a node on localhost.
	if mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" ||
		(params["charset"] != "" && !strings.EqualFold(params["charset"], "utf-8")) {
		writeError(w, http.StatusUnsupportedMediaType, Errorf(CodeInvalidRequest, "Content-Type must be application/json, not %q", r.Header.Get("Content-Type")))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, s.tooLarge())
			return
		}
		// The client most likely went away; answer anyway in case it did not.
		writeError(w, http.StatusBadRequest, Errorf(CodeInvalidRequest, "reading request body: %v", err))
		return
	}
	// net/http cancels r.Context() when this handler returns.
	ctx := WithCaller(r.Context(), Caller{Addr: r.RemoteAddr, Roles: roles, Authenticated: authenticated})
	if !own {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(s.handlerCtx, cancel)
		defer stop()
	}
	status, reply := s.answer(ctx, roles, body, nil)
	w.Header().Set("Content-Type", "application/json")
	if reply == nil && status == http.StatusOK {
		// Only notifications: JSON-RPC sends nothing back.
		status = http.StatusNoContent
	}
	w.WriteHeader(status)
	w.Write(reply)
}

func (s *Server) tooLarge() *Error {
	return Errorf(CodeInvalidRequest, "request body exceeds %d bytes", s.maxBytes)
}

// answer parses one request body (a single request or a batch), runs each
// request's handler (several at once for a batch, except Inline methods)
// and returns the reply body, nil when the body held only notifications,
// and the HTTP status that goes with it. Both HTTP requests and stream
// frames come here, so they behave alike. watch, if not nil, gives the
// handlers a context that ends when the caller goes away; it is called only
// when some handler is not Inline (Inline ones return at once).
func (s *Server) answer(ctx context.Context, roles Role, body []byte, watch func(context.Context) (context.Context, func())) (int, []byte) {
	// JSON must be UTF-8 (RFC 8259). encoding/json would quietly turn bad
	// bytes into U+FFFD, so a statement would run with text its client
	// never sent; refuse instead.
	if !utf8.Valid(body) {
		return http.StatusOK, errorBody(Errorf(CodeParseError, "parse error: request body is not valid UTF-8"))
	}
	// The same holds for an escape of half a UTF-16 pair: valid JSON
	// syntax, no character, and decoded as U+FFFD.
	if at := loneSurrogate(body); at >= 0 {
		return http.StatusOK, errorBody(Errorf(CodeParseError, "parse error: %s at byte %d is a lone UTF-16 surrogate, not a character", body[at:at+6], at))
	}
	reqs, err := parseRequests(body)
	if err != nil {
		return http.StatusOK, errorBody(Errorf(CodeParseError, "parse error: request body is not a JSON object or array"))
	}
	if len(reqs) == 0 {
		return http.StatusOK, errorBody(Errorf(CodeInvalidRequest, "empty batch"))
	}
	if watch != nil && slices.ContainsFunc(reqs, func(r *jrpc2.ParsedRequest) bool { return s.mayWait(roles, r) }) {
		var stop func()
		ctx, stop = watch(ctx)
		defer stop()
	}
	out := make([]json.RawMessage, len(reqs))
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Add(1)
		run := func() {
			defer wg.Done()
			out[i] = s.dispatch(ctx, req)
		}
		if len(reqs) == 1 || s.inline[req.Method] {
			run()
		} else {
			go run()
		}
	}
	wg.Wait()
	var replies []json.RawMessage
	for _, o := range out {
		if o != nil {
			replies = append(replies, o)
		}
	}
	status := http.StatusOK
	if len(reqs) == 1 && !reqs[0].Batch && !allows(roles, reqs[0].Method) && reqs[0].Error == nil {
		// A token for the wrong kind of method: the request is refused as a
		// whole, so HTTP says so too.
		status = http.StatusForbidden
	}
	switch {
	case len(replies) == 0:
		return status, nil
	case len(reqs) == 1 && !reqs[0].Batch:
		return status, replies[0]
	}
	// Each reply is JSON that dispatch encoded; joining them by hand spares
	// encoding/json validating them all over again.
	n := 1 + len(replies)
	for _, r := range replies {
		n += len(r)
	}
	joined := make([]byte, 0, n)
	joined = append(joined, '[')
	for i, r := range replies {
		if i > 0 {
			joined = append(joined, ',')
		}
		joined = append(joined, r...)
	}
	return status, append(joined, ']')
}

// mayWait reports whether req will run a handler that may wait: one that
// exists, is allowed and is not Inline.
func (s *Server) mayWait(roles Role, req *jrpc2.ParsedRequest) bool {
	_, ok := s.methods[req.Method]
	return ok && req.Error == nil && !s.inline[req.Method] && allows(roles, req.Method)
}

// dispatch runs one request and returns its encoded response, nil for a
// notification.
func (s *Server) dispatch(ctx context.Context, req *jrpc2.ParsedRequest) json.RawMessage {
	var result json.RawMessage
	var rerr *Error
	switch h, ok := s.methods[req.Method]; {
	case req.Error != nil:
		rerr = &Error{Code: int(req.Error.Code), Message: req.Error.Message}
	case !allowed(ctx, req.Method):
		s.log.Warn("rpc: method refused: token does not allow it", "method", req.Method, "remote", callerAddr(ctx))
		rerr = Errorf(CodeUnauthorized, "unauthorized: the token presented does not allow %s", req.Method)
	case !ok:
		rerr = Errorf(CodeMethodNotFound, "no method %q", req.Method)
	default:
		// The address's slot first: a caller waiting for its own holds
		// none of the server's.
		host := hostOf(callerAddr(ctx))
		if !s.hostSlots.acquire(ctx, host) {
			rerr = Errorf(CodeUnavailable, "server busy or shutting down")
			break
		}
		select {
		case s.slots <- struct{}{}:
			result, rerr = s.call(ctx, req.Method, h, req.Params)
			<-s.slots
		case <-ctx.Done():
			rerr = Errorf(CodeUnavailable, "server busy or shutting down")
		}
		s.hostSlots.release(host)
	}
	if req.ID == "" && req.Error == nil {
		return nil
	}
	if rerr == nil && result != nil && isDecimal(req.ID) {
		// The usual reply: a numeric id and a result dispatch's call just
		// encoded, put together without encoding/json scanning the result
		// again. Same bytes as the general form below.
		body := make([]byte, 0, 32+len(req.ID)+len(result))
		body = append(body, `{"jsonrpc":"2.0","id":`...)
		body = append(body, req.ID...)
		body = append(body, `,"result":`...)
		body = append(body, result...)
		return append(body, '}')
	}
	id := json.RawMessage(req.ID)
	if req.ID == "" {
		id = json.RawMessage("null")
	}
	resp := struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Result  json.RawMessage `json:"result,omitempty"`
		Error   *Error          `json:"error,omitempty"`
	}{"2.0", id, result, rerr}
	if rerr == nil && result == nil {
		resp.Result = json.RawMessage("null")
	}
	body, err := json.Marshal(resp)
	if err != nil {
		body = []byte(`{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal error"}}`)
	}
	return body
}

// isDecimal reports whether id is a plain non-negative integer, as every
// tpcd client sends.
func isDecimal(id string) bool {
	if id == "" || len(id) > 20 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < '0' || id[i] > '9' {
			return false
		}
	}
	return true
}

// writeError answers with a JSON-RPC error response whose id is null, as the
// specification requires when the request id could not be determined.
func writeError(w http.ResponseWriter, status int, e *Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(errorBody(e))
}

// errorBody encodes a JSON-RPC error response with a null id.
func errorBody(e *Error) []byte {
	body, err := json.Marshal(struct {
		JSONRPC string `json:"jsonrpc"`
		ID      any    `json:"id"`
		Error   *Error `json:"error"`
	}{"2.0", nil, e})
	if err != nil {
		// An *Error built here always encodes; keep the reply valid anyway.
		body = []byte(`{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal error"}}`)
	}
	return body
}

// call runs a handler: it recovers panics, encodes the result itself so an
// unencodable result is a clear CodeInternal, and maps errors to the codes
// promised by the package.
func (s *Server) call(ctx context.Context, name string, h Handler, params json.RawMessage) (result json.RawMessage, rerr *Error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("rpc handler panicked", "method", name, "panic", p, "stack", string(debug.Stack()))
			result, rerr = nil, Errorf(CodeInternal, "handler for %s panicked: %v", name, p)
		}
	}()
	v, err := h(ctx, params)
	if err != nil {
		return nil, s.toWire(ctx, name, err)
	}
	data, err := json.Marshal(v)
	if err != nil {
		s.log.Error("rpc handler result not encodable", "method", name, "err", err)
		return nil, Errorf(CodeInternal, "encode result of %s: %v", name, err)
	}
	return data, nil
}

func (s *Server) toWire(ctx context.Context, name string, err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		out := *e
		if out.Message == "" {
			// The specification requires a message.
			out.Message = fmt.Sprintf("error %d", e.Code)
		}
		s.log.Debug("rpc handler error", "method", name, "code", e.Code, "err", err)
		return &out
	}
	level := slog.LevelWarn
	if ctx.Err() != nil {
		// The caller left or shutdown cut the handler short: expected.
		level = slog.LevelDebug
	}
	s.log.Log(ctx, level, "rpc handler failed", "method", name, "err", err)
	return Errorf(CodeInternal, "%s", err.Error())
}

func allowed(ctx context.Context, method string) bool {
	c, ok := CallerOf(ctx)
	return ok && allows(c.Roles, method)
}

func callerAddr(ctx context.Context) string {
	c, _ := CallerOf(ctx)
	return c.Addr
}
