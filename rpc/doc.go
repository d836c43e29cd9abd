// Package rpc is the JSON-RPC 2.0 transport between tpcd nodes and towards
// operators and clients.
//
// The Server answers on one endpoint (default "/rpc") in three ways, all
// on the same port: a request body POSTed over HTTP/1.1 (so that curl and
// any HTTP client work), the same over unencrypted HTTP/2 with prior
// knowledge (h2c), and batch streams (stream.go): an HTTP/1.1 connection
// upgraded (StreamProtocol) to carry request bodies and their replies as
// length-prefixed, checksummed frames, one each way per exchange, or one
// way only for a batch of notifications whose sender waits for nothing
// (Client.NotifyBatch). With
// ServerOptions.TLS the same three run over TLS (HTTP/2 by ALPN).
//
// The Client sends in one of three ways, chosen by ClientOptions:
//
//   - default: POSTs over one HTTP/2 connection per peer (h2c, or h2 over
//     TLS) shared by any number of concurrent calls, with PINGs that notice
//     a peer that vanished. tpcd client uses it, because its calls have no
//     deadline (a commit waits for votes).
//   - Stream: every call and batch is a frame on a batch stream, one stream
//     per call in flight, kept for the next. It spares both ends a request
//     line and headers, the cheapest way to call. Nodes call each other
//     only this way; a server that does not serve streams is an error, not
//     a reason to fall back to HTTP.
//   - HTTP1: POSTs over HTTP/1.1 through net/http's transport, one
//     kept-alive connection per call in flight, as most HTTP clients send
//     them (tpcd bench --transport http).
//
// Connections are dialled lazily and re-dialled after they break.
//
// The server uses github.com/creachadair/jrpc2 to parse and validate
// requests (single and batch), except bodies in the exact form this
// package's Client writes, which parse.go takes apart in one pass with the
// same result; it dispatches each request to its handler itself, on that
// request's goroutine. DecodeParams decodes params with json/v2 where that
// reads them as encoding/json would, and with encoding/json otherwise.
// jrpc2's HTTP bridge was tried first: it funnels every request through
// one in-memory channel, so handlers that wait (a commit waiting for
// votes) held up the very votes that would end the wait, and 64 concurrent
// clients stalled until timeouts. The client
// side is a thin layer over net/http and the stream framing rather than
// jrpc2's HTTP channel, because that channel stops the whole jrpc2 client
// when any single HTTP exchange fails and reports the failure as a
// server-style internal error; tpcd needs per-call failures, cancellation
// that reaches the wire, and a clear split between "the server answered
// with an error" (*Error) and "no answer arrived" (IsTransport).
//
// Security (auth.go, tls.go): a Server may require bearer tokens, one for
// client methods and one for node-to-node methods (PeerMethodPrefix),
// compared in constant time before the body is read (for a stream, once,
// on the upgrade); it may serve TLS and require client certificates
// (mutual TLS). The Client sends its Token and speaks TLS when given a TLS
// config. Handlers learn who called through CallerOf.
//
// Limits (conns.go, hostslots.go, strict.go): a Server keeps at most
// MaxConns connections open, MaxConnsPerHost of one remote IP (a batch
// stream is a connection), closing idle ones to make room; it runs at most
// MaxConcurrencyPerHost handlers for one address; and it refuses input
// that encoding/json or jrpc2 would quietly reinterpret (lone surrogate
// escapes, keys given twice, field names in another case, null params).
//
// The wire format, limits and error codes are described in docs/WIRE.md,
// security in docs/SECURITY.md.
package rpc
